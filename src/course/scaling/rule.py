"""Large minibatches: the linear scaling rule and warmup (chapter 6).

The slides' argument (Goyal et al., 2017). With plain SGD and learning rate
a, k steps on minibatches B_1..B_k of n samples give

    w_{t+k} = w_t - a * sum_j g_j(w_{t+j-1})        (g_j: mean gradient on B_j)

while one step on their union (k*n samples) with learning rate k*a gives

    w'_{t+1} = w_t - k*a * (1/k) sum_j g_j(w_t) = w_t - a * sum_j g_j(w_t).

They agree when g_j(w_{t+j-1}) ~ g_j(w_t): when the gradient changes little
over k steps. Hence: multiply the learning rate by k when the minibatch is
multiplied by k, and warm up (start small, grow linearly) during the first
iterations, where the gradient changes fast.

This module holds the chapter's mathematics: the rule, warmup and the schedules,
k small steps against one big step, and the batch-size experiment. The two torchrun
programs of the chapter (``python -m course.scaling shapes|hornets``) are in
``course.scaling.programs``; the process-group plumbing they share with
``course.train.fit`` in ``course.distributed``.

Used in chapter 6.
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, TensorDataset
from torch.utils.data.distributed import DistributedSampler

from course.check import Report, run_checks
from course.config import run_seed
from course.data import make_shapes
from course.train import LossFn, evaluate, train_steps

DECAYS = ("cosine", "step", "none")

# ---------------------------------------------------------------------------
# The rule and the schedule
# ---------------------------------------------------------------------------


def linear_scaled_lr(base_lr: float, batch_size: int, base_batch_size: int = 256) -> float:
    """Goyal et al.'s rule: lr = base_lr * batch_size / base_batch_size.

    >>> linear_scaled_lr(0.1, 8192)  # ImageNet in one hour: 0.1 per 256 images
    3.2
    """
    if batch_size <= 0 or base_batch_size <= 0:
        raise ValueError("batch sizes must be positive")
    return base_lr * batch_size / base_batch_size


def warmup_factor(
    step: int,
    warmup_steps: int,
    total_steps: int,
    decay: str = "cosine",
    milestones: Sequence[int] = (),
    gamma: float = 0.1,
    start_factor: float = 0.0,
) -> float:
    """The learning-rate multiplier at optimizer step ``step`` (0-based).

    Linear warmup from ``start_factor`` at step 0 to exactly 1.0 at step
    ``warmup_steps``, then

    - ``"cosine"``: 0.5 * (1 + cos(pi * p)), p going from 0 at the end of
      warmup to 1 at ``total_steps`` (factor 0 there);
    - ``"step"``: multiplied by ``gamma`` at each of the ``milestones``
      (absolute step numbers, as in Goyal et al.'s epochs 30, 60, 80);
    - ``"none"``: constant 1.
    """
    if warmup_steps < 0 or total_steps < warmup_steps:
        raise ValueError(
            f"need 0 <= warmup_steps <= total_steps, got {warmup_steps} and {total_steps}"
        )
    if decay not in DECAYS:
        raise ValueError(f"decay must be one of {', '.join(map(repr, DECAYS))}, got {decay!r}")
    if step < warmup_steps:
        return start_factor + (1.0 - start_factor) * step / warmup_steps
    if decay == "cosine":
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if decay == "step":
        return gamma ** sum(step >= m for m in milestones)
    return 1.0  # "none"


def warmup_schedule(
    optimizer: torch.optim.Optimizer,
    warmup_steps: int,
    total_steps: int,
    decay: str = "cosine",
    **options: Any,
) -> LambdaLR:
    """A ``LambdaLR`` following :func:`warmup_factor`; call ``.step()`` after every optimizer step.

    The optimizer's lr is the peak learning rate (the linearly scaled one);
    ``options`` are :func:`warmup_factor`'s ``milestones``, ``gamma`` and
    ``start_factor``. Bad arguments are refused here, not when warmup ends in
    the middle of training.
    """
    factor = functools.partial(
        warmup_factor, warmup_steps=warmup_steps, total_steps=total_steps, decay=decay, **options
    )
    factor(0)
    return LambdaLR(optimizer, factor)


# ---------------------------------------------------------------------------
# k small steps against one big step
# ---------------------------------------------------------------------------


def sgd_step(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    lr: float,
    loss_fn: LossFn = nn.functional.cross_entropy,
) -> None:
    """One plain SGD step (no momentum) on the minibatch (x, y), in place."""
    model.zero_grad(set_to_none=True)
    loss_fn(model(x), y).backward()
    with torch.no_grad():
        for p in model.parameters():
            if p.grad is not None:
                p.sub_(lr * p.grad)


def check_scaling_rule(scaled_lr: Callable, warmup: Callable) -> Report:
    """Check the two functions of Goyal et al.'s recipe, written by the student:

    - ``scaled_lr(base_lr, batch_size, base_batch_size=256)``: the linear scaling rule,
      ``base_lr * batch_size / base_batch_size`` (against :func:`linear_scaled_lr`);
    - ``warmup(step, warmup_steps)``: the learning-rate factor of a linear warmup,
      0 at step 0, rising by ``1 / warmup_steps`` per step to exactly 1 at
      ``warmup_steps``, 1 afterwards, and 1 from the start when ``warmup_steps`` is 0
      (against :func:`warmup_factor` with no decay).
    """

    def rule() -> str | None:
        for base_lr, batch, base in ((0.1, 8192, 256), (0.1, 64, 256), (0.05, 100, 32)):
            got, want = scaled_lr(base_lr, batch, base), linear_scaled_lr(base_lr, batch, base)
            if got is None:
                return "scaled_lr returned None: return the learning rate"
            if math.isclose(got, want, rel_tol=1e-9):
                continue
            if math.isclose(got, base_lr * math.sqrt(batch / base), rel_tol=1e-9):
                return (
                    "that is the square-root rule; the linear rule multiplies the "
                    "learning rate by k = batch_size / base_batch_size"
                )
            if math.isclose(got, base_lr * base / batch, rel_tol=1e-9):
                return "the ratio is inverted: a k times larger batch gets a k times larger lr"
            if math.isclose(got, base_lr * (batch // base), rel_tol=1e-9):
                return "integer division (//) rounds k down: use batch_size / base_batch_size"
            if math.isclose(got, batch / base, rel_tol=1e-9):
                return "returns k = batch_size / base_batch_size alone: multiply base_lr by k"
            if base != 256 and math.isclose(got, base_lr * batch / 256, rel_tol=1e-9):
                return (
                    f"scaled_lr({base_lr}, {batch}, {base}) used 256: the base batch size "
                    "is hard-coded; divide by the base_batch_size argument"
                )
            return f"scaled_lr({base_lr}, {batch}, {base}) = {got}, expected {want}"
        return None

    def factor() -> str | None:
        steps = 10
        got = [warmup(t, steps) for t in range(steps + 6)]
        want = [warmup_factor(t, steps, steps + 6, decay="none") for t in range(steps + 6)]
        if got[0] is None:
            return "warmup returned None: return the factor"
        if all(math.isclose(g, w, abs_tol=1e-9) for g, w in zip(got, want, strict=True)):
            return None
        if all(math.isclose(g, min(1.0, (t + 1) / steps)) for t, g in enumerate(got)):
            return (
                "off by one step: the factor is 0 at step 0 and reaches 1 at step "
                "warmup_steps (factor = step / warmup_steps)"
            )
        if all(math.isclose(g, max(1.0, t / steps)) for t, g in enumerate(got)):
            return (
                "the factor is 1 during the warmup and grows past 1 after it: "
                "min(1.0, step / warmup_steps), not max"
            )
        if all(math.isclose(g, min(1.0, t / (steps - 1))) for t, g in enumerate(got)):
            return (
                "the factor reaches 1 one step early, at step warmup_steps - 1: divide by "
                "warmup_steps, not warmup_steps - 1"
            )
        if all(math.isclose(g, min(1, t // steps)) for t, g in enumerate(got)):
            return (
                "integer division (//): step // warmup_steps is 0 during the whole "
                "warmup; use step / warmup_steps"
            )
        if any(g > 1 + 1e-9 for g in got):
            return "the factor goes above 1 after the warmup: it stays at 1 (min(1, ...))"
        wrong = next(
            t for t, (g, w) in enumerate(zip(got, want, strict=True)) if not math.isclose(g, w)
        )
        return f"warmup({wrong}, {steps}) = {got[wrong]}, expected {want[wrong]}"

    def no_warmup() -> str | None:
        try:
            got = warmup(0, 0)
        except ZeroDivisionError:
            return "warmup(0, 0) divides by zero: without warmup, return 1 from the first step"
        if not math.isclose(got, 1.0):
            return f"warmup(0, 0) = {got}: without warmup the factor is 1 from the first step"
        return None

    return run_checks(
        "scaling rule and warmup",
        [
            ("the linear scaling rule", rule),
            ("the warmup factor", factor),
            ("no warmup (warmup_steps = 0)", no_warmup),
        ],
    )


def flat_parameters(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def small_steps_vs_big_step(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    k: int,
    lr: float,
    loss_fn: LossFn = nn.functional.cross_entropy,
) -> float:
    """Relative distance between k SGD steps (batch n, lr) and one step (batch k*n, k*lr).

    ``x`` and ``y`` hold the k*n samples; they are cut into k consecutive
    minibatches. Both runs start from ``model``'s weights (left unchanged).
    Returns ||w_small - w_big|| / ||w_small - w_0||: 0 when the linear scaling
    rule is exact, about 1 or more when it is meaningless.
    """
    if len(x) % k:
        raise ValueError(f"{len(x)} samples cannot be cut into {k} equal minibatches")
    w0 = flat_parameters(model)
    small, big = copy.deepcopy(model).train(), copy.deepcopy(model).train()
    for xb, yb in zip(x.chunk(k), y.chunk(k), strict=True):
        sgd_step(small, xb, yb, lr, loss_fn)
    sgd_step(big, x, y, k * lr, loss_fn)
    w_small, w_big = flat_parameters(small), flat_parameters(big)
    return float((w_small - w_big).norm() / (w_small - w0).norm().clamp_min(1e-30))


def accumulated_gradients(
    model: nn.Module,
    batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
    loss_fn: LossFn = nn.functional.cross_entropy,
) -> list[torch.Tensor]:
    """Gradients summed over micro-batches, each loss divided by their number.

    For equal micro-batches and a model without batch statistics this is the
    gradient of the mean loss over their union: a big batch on one GPU.
    ``course.train.fit(grad_accum_steps=k)`` does the same inside its loop.
    """
    model.zero_grad(set_to_none=True)
    for x, y in batches:
        (loss_fn(model(x), y) / len(batches)).backward()
    return [p.grad.detach().clone() for p in model.parameters()]


def synced_batch_norm_statistics(
    shards: Sequence[torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and (biased) variance of the union of the processes' minibatches
    ``shards`` (each (N_i, C, H, W)), computed as ``nn.SyncBatchNorm`` does it: each
    process contributes its count, sum and sum of squares, which an all-reduce adds up.

    Plain BN under DDP normalises every process's minibatch with that minibatch's own
    statistics; SyncBatchNorm with these, the same on every process: exactly the
    statistics of one big batch. (It runs on CUDA only; this is what it computes.)
    """
    counts = torch.stack([torch.tensor(float(s.numel() // s.shape[1])) for s in shards])
    sums = torch.stack([s.sum(dim=(0, 2, 3)) for s in shards])  # what is all-reduced
    squares = torch.stack([(s * s).sum(dim=(0, 2, 3)) for s in shards])
    n = counts.sum()
    mean = sums.sum(0) / n
    return mean, squares.sum(0) / n - mean * mean


# ---------------------------------------------------------------------------
# The batch-size experiment
# ---------------------------------------------------------------------------


@dataclass
class BatchSizeRun:
    """One training run of the batch-size experiment.

    ``val_accuracy[e]`` is measured after epoch ``e + 1``; ``losses`` holds the
    training loss of every optimizer step (``inf`` after a divergence).
    """

    batch_size: int
    lr: float
    warmup_epochs: int
    steps_per_epoch: int
    val_accuracy: list[float]
    losses: list[float]

    @property
    def final_accuracy(self) -> float:
        return self.val_accuracy[-1]

    def early_loss_peak(self, epochs: int = 2) -> float:
        """The highest training loss of the first ``epochs`` epochs (by default the warmup
        epoch and the next one, at the peak learning rate): the spike of too-large first steps.
        """
        return max(self.losses[: epochs * self.steps_per_epoch])


def train_at_batch_size(
    model: nn.Module,
    train_set: Dataset,
    val_set: Dataset,
    *,
    batch_size: int,
    lr: float,
    epochs: int,
    warmup_epochs: int = 0,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> BatchSizeRun:
    """Train ``model`` (in place) for ``epochs`` epochs of ``batch_size`` samples and peak ``lr``.

    SGD with momentum; the learning rate rises linearly from 0 during
    ``warmup_epochs`` epochs, then follows a cosine to 0 at the end
    (:func:`warmup_schedule`). The number of epochs, not of steps, is what
    runs at different batch sizes share: a batch ``k`` times larger makes
    ``k`` times fewer steps, as with ``k`` GPUs. Validation accuracy is
    measured after every epoch. ``train_set`` must accept a list of indices
    (a ``TensorDataset`` does): each minibatch is read in one indexing.
    """
    steps_per_epoch = len(train_set) // batch_size  # type: ignore[arg-type]
    if steps_per_epoch == 0:
        raise ValueError(f"batch size {batch_size} is larger than the {len(train_set)} samples")  # type: ignore[arg-type]
    generator = torch.Generator().manual_seed(run_seed(seed))
    batches = BatchSampler(RandomSampler(train_set, generator=generator), batch_size, True)
    loader = DataLoader(train_set, sampler=batches, batch_size=None)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay
    )
    scheduler = warmup_schedule(
        optimizer, warmup_epochs * steps_per_epoch, epochs * steps_per_epoch, decay="cosine"
    )
    val_loader = DataLoader(val_set, batch_size=1024)
    run = BatchSizeRun(batch_size, lr, warmup_epochs, steps_per_epoch, [], [])
    for _ in range(epochs):
        run.losses += train_steps(
            model, loader, optimizer, steps_per_epoch, scheduler, device=device
        )
        run.val_accuracy.append(
            evaluate(model, val_loader, device=device, progress=False)["accuracy"]
        )
        if not math.isfinite(run.losses[-1]):  # diverged: the weights are NaN from here on
            left = epochs - len(run.val_accuracy)
            run.val_accuracy += [run.val_accuracy[-1]] * left
            run.losses += [math.inf] * left * steps_per_epoch
            break
    return run


# ---------------------------------------------------------------------------
# What one data-parallel step computes
# ---------------------------------------------------------------------------


def ddp_example_model(seed: int = 0) -> nn.Module:
    """The small BN-free classifier that every process of the DDP example builds identically."""
    torch.manual_seed(run_seed(seed))
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, 4),
    )


def ddp_example_data(n: int, seed: int = 0) -> TensorDataset:
    """The data set of the DDP example: ``n`` 16x16 shape images (same on every process)."""
    return make_shapes(n, image_size=16, colored=False, seed=seed)


def first_global_batch(
    data: TensorDataset, world: int, batch_per_process: int, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """The samples that all ``world`` processes read at the first step, concatenated.

    One single-process SGD step on them, with the same lr, must give the
    weights of one DDP step: the all-reduce averages the per-process
    gradients, and the mean of equal-sized means is the mean of the union.
    The sampler's seed is ``run_seed(seed)``, as in ``python -m course.scaling shapes``.
    """
    xs, ys = [], []
    for rank in range(world):
        sampler = DistributedSampler(
            data, num_replicas=world, rank=rank, shuffle=True, seed=run_seed(seed)
        )
        indices = list(sampler)[:batch_per_process]
        x, y = data[indices]
        xs.append(x)
        ys.append(y)
    return torch.cat(xs), torch.cat(ys)
