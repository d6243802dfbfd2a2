"""Large minibatches: the linear scaling rule, warmup and data-parallel training (chapter 6).

The slides' argument (Goyal et al., 2017). With plain SGD and learning rate
a, k steps on minibatches B_1..B_k of n samples give

    w_{t+k} = w_t - a * sum_j g_j(w_{t+j-1})        (g_j: mean gradient on B_j)

while one step on their union (k*n samples) with learning rate k*a gives

    w'_{t+1} = w_t - k*a * (1/k) sum_j g_j(w_t) = w_t - a * sum_j g_j(w_t).

They agree when g_j(w_{t+j-1}) ~ g_j(w_t): when the gradient changes little
over k steps. Hence: multiply the learning rate by k when the minibatch is
multiplied by k, and warm up (start small, grow linearly) during the first
iterations, where the gradient changes fast.

Run as a script, this module is the data-parallel example of the chapter::

    torchrun --standalone --nproc_per_node=2 -m course.scaling shapes --steps 100
    torchrun --standalone --nproc_per_node=2 -m course.scaling hornets --epochs 10

one process per GPU (nccl) or per CPU process (gloo); the DistributedSampler
gives each process its share of every global minibatch, and DDP averages the
gradients with an all-reduce during backward.

Used in chapter 6.
"""

from __future__ import annotations

import argparse
import copy
import functools
import math
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.optim.lr_scheduler import LambdaLR
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, TensorDataset
from torch.utils.data.distributed import DistributedSampler

from course.check import Report, run_checks
from course.config import run_seed
from course.data import make_shapes
from course.data.augment import BatchAugmentation
from course.data.hornets import hornet_recipe, load_hornet_data
from course.data.normalize import with_imagenet_normalization
from course.models import resnet18
from course.runstate import save_state
from course.train import History, LossFn, evaluate, fit, train_steps
from course.utils import seed_everything
from course.weights import imagenet_resnet18

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
# Data-parallel training with torch.distributed
# ---------------------------------------------------------------------------


def loopback_available() -> bool:
    """Can processes on this machine talk over TCP on 127.0.0.1 (which gloo needs)?

    False in a sandbox without a network, where the loopback interface is down.
    """
    try:
        with socket.socket() as server:
            server.bind(("127.0.0.1", 0))
            server.listen(1)
            with socket.create_connection(server.getsockname(), timeout=2):
                return True
    except OSError:
        return False


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
    """
    xs, ys = [], []
    for rank in range(world):
        sampler = DistributedSampler(data, num_replicas=world, rank=rank, shuffle=True, seed=seed)
        indices = list(sampler)[:batch_per_process]
        x, y = data[indices]
        xs.append(x)
        ys.append(y)
    return torch.cat(xs), torch.cat(ys)


def choose_backend(cuda_devices: int, local_processes: int) -> tuple[str, str | None]:
    """The process-group backend for ``local_processes`` processes on a machine with
    ``cuda_devices`` GPUs, and a warning when it is not the one asked for.

    One process per GPU with nccl; with fewer GPUs than processes (``torchrun
    --nproc_per_node=2`` on Colab's single GPU) every process would ask for a GPU
    that is not there, so all of them train on the CPU with gloo and the warning
    says which command uses the GPUs.
    """
    if cuda_devices >= local_processes:
        return "nccl", None
    if cuda_devices == 0:
        return "gloo", None
    return "gloo", (
        f"{local_processes} processes per machine but {cuda_devices} GPU(s): training on the "
        f"CPU with gloo. To train on the GPUs, start one process per GPU: torchrun "
        f"--standalone --nproc_per_node={cuda_devices} -m course.scaling"
    )


def join_process_group() -> torch.device:
    """Join torchrun's process group and return this process's device.

    nccl and the GPU ``LOCAL_RANK`` when there is one GPU per local process,
    else gloo on the CPU (with a warning that says what to type).
    """
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    cuda_devices = torch.cuda.device_count() if torch.cuda.is_available() else 0
    backend, warning = choose_backend(cuda_devices, int(os.environ.get("LOCAL_WORLD_SIZE", 1)))
    if warning is not None and local_rank == 0:
        print(f"warning: {warning}", flush=True)
    dist.init_process_group(backend=backend)
    if backend != "nccl":
        return torch.device("cpu")
    device = torch.device("cuda", local_rank)
    torch.cuda.set_device(device)
    return device


def rank_zero_first(fn: Callable[[], Any]) -> Any:
    """``fn()`` on rank 0 first, then on the other ranks: what rank 0 downloads or
    generates into a cache, the others then read from it instead of racing to write it."""
    if dist.get_rank() == 0:
        result = fn()
    dist.barrier()
    if dist.get_rank() != 0:
        result = fn()
    return result


def train_data_parallel(
    steps: int,
    batch_per_process: int,
    base_lr: float,
    base_batch_size: int,
    warmup_steps: int,
    out: Path | None,
    samples: int = 2048,
) -> None:
    """Body of ``python -m course.scaling shapes``, run by every process that torchrun starts.

    Each process: joins the process group (nccl on GPUs, gloo on CPU), builds
    the same model, wraps it in DistributedDataParallel, reads its shard of
    every global minibatch through a DistributedSampler, and trains with the
    linearly scaled lr and warmup. Rank 0 reports and saves the weights.
    SGD with momentum 0.9 and no weight decay: PyTorch's momentum buffer
    starts as the first gradient, so the first step is a plain SGD step and
    can be compared exactly with a single-process step.
    """
    device = join_process_group()
    rank, world = dist.get_rank(), dist.get_world_size()
    use_cuda = device.type == "cuda"
    local_rank = device.index or 0

    model = ddp_example_model().to(device)
    ddp = nn.parallel.DistributedDataParallel(model, device_ids=[local_rank] if use_cuda else None)
    data = ddp_example_data(samples)
    sampler = DistributedSampler(data, num_replicas=world, rank=rank, shuffle=True, seed=0)
    loader = DataLoader(data, batch_size=batch_per_process, sampler=sampler, drop_last=True)

    global_batch = batch_per_process * world
    lr = linear_scaled_lr(base_lr, global_batch, base_batch_size)
    optimizer = torch.optim.SGD(ddp.parameters(), lr=lr, momentum=0.9)
    scheduler = warmup_schedule(
        optimizer, warmup_steps, steps, decay="cosine", start_factor=0.0 if warmup_steps else 1.0
    )
    if rank == 0:
        print(
            f"{world} processes ({'nccl' if use_cuda else 'gloo'}), {batch_per_process} "
            f"samples each: global batch {global_batch}, peak lr {lr:g}",
            flush=True,
        )
    step, epoch, loss_sum, since = 0, 0, 0.0, 0
    while step < steps:
        sampler.set_epoch(epoch)  # a different shuffle every epoch, the same on all processes
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            loss = nn.functional.cross_entropy(ddp(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # DDP all-reduces (averages) the gradients here
            optimizer.step()
            scheduler.step()
            step += 1
            if rank == 0:
                loss_sum, since = loss_sum + loss.item(), since + 1
                if step % 20 == 0 or step == steps:
                    print(
                        f"step {step:4d}  mean loss of rank 0 over the last {since} steps "
                        f"{loss_sum / since:.4f}",
                        flush=True,
                    )
                    loss_sum, since = 0.0, 0
            if step == steps:
                break
        epoch += 1
    if rank == 0:
        x, y = data.tensors
        with torch.no_grad():
            accuracy = (model(x.to(device)).argmax(1).cpu() == y).float().mean().item()
        print(f"accuracy on the {len(y)} training images: {accuracy:.3f}", flush=True)
    if rank == 0 and out is not None:
        save_state(
            out,
            {
                "model": model.state_dict(),
                "world_size": world,
                "batch_per_process": batch_per_process,
                "steps": steps,
            },
        )
    dist.barrier()
    dist.destroy_process_group()


def train_resnet18_data_parallel(
    epochs: int,
    batch_per_process: int,
    base_lr: float,
    base_batch_size: int,
    warmup_epochs: int,
    image_size: int,
    max_images: int | None,
    imagenet: bool,
    checkpoint: Path | None,
) -> History:
    """Chapter 3's fine-tuning, data-parallel: ``python -m course.scaling hornets``.

    Every process loads the hornet data (rank 0 first: it generates the
    synthetic set or reads the photos into the cache), builds ResNet18 (with
    the ImageNet weights when ``imagenet``, downloaded by rank 0 first) with a
    new 2-class head, and calls ``course.train.fit``, which under torchrun
    wraps the model in DistributedDataParallel, shards the minibatches, averages
    the metrics, checkpoints from rank 0 and resumes on every rank. The
    learning rate follows the linear scaling rule for the global minibatch
    ``batch_per_process x processes``, with ``warmup_epochs`` of linear warmup,
    then a cosine. BatchNorm normalises over each process's own minibatch, as in
    Goyal et al. (32 images per GPU); ``nn.SyncBatchNorm`` would pool the
    statistics of all GPUs (CUDA only).
    """
    device = join_process_group()
    rank, world = dist.get_rank(), dist.get_world_size()
    # Each process its own random stream (augmentations); DDP copies rank 0's initial weights.
    seed_everything(rank)
    scale = hornet_recipe().synthetic_scale  # chapter 3's synthetic set, when no photos
    data = rank_zero_first(
        lambda: load_hornet_data(image_size, scale, max_images=max_images, progress=rank == 0)
    )
    net = rank_zero_first(lambda: imagenet_resnet18(2) if imagenet else resnet18(2))
    model = with_imagenet_normalization(net)
    train = data.loader("train", batch_per_process, shuffle=True)
    steps_per_epoch = len(train) // world  # fit shards the minibatches over the processes
    if steps_per_epoch == 0:
        raise ValueError(
            f"{len(data.train)} training images cannot feed {world} processes with "
            f"{batch_per_process} images each: lower --batch-per-process"
        )
    global_batch = batch_per_process * world
    lr = linear_scaled_lr(base_lr, global_batch, base_batch_size)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4)
    scheduler = warmup_schedule(
        optimizer, warmup_epochs * steps_per_epoch, epochs * steps_per_epoch, decay="cosine"
    )
    if rank == 0:
        print(
            f"{world} processes ({'nccl' if device.type == 'cuda' else 'gloo'}), "
            f"{batch_per_process} images each: global batch {global_batch}, peak lr {lr:g} "
            f"({base_lr:g} per {base_batch_size}), {warmup_epochs} warmup epochs; "
            f"{data.origin}",
            flush=True,
        )
    history = fit(
        model,
        train,
        data.loader("val", 256),
        epochs=epochs,
        optimizer=optimizer,
        scheduler=scheduler,
        loss_fn=data.weighted_loss(device),
        device=device,
        checkpoint_path=checkpoint,
        progress=False,
        augment=BatchAugmentation(),  # on each process's device, its own draws
    )
    if rank == 0:
        for epoch in range(history.epochs):
            print(
                f"epoch {epoch + 1}: train loss {history.train_loss[epoch]:.3f}  "
                f"val accuracy {history.val_acc[epoch]:.3f}  lr {history.lr[epoch]:.3g}",
                flush=True,
            )
    dist.barrier()
    dist.destroy_process_group()
    return history


def run_torchrun(
    nproc: int,
    args: Sequence[str],
    timeout: float = 600,
    program: Sequence[str] = ("-m", "course.scaling"),
) -> subprocess.CompletedProcess:
    """Launch ``torchrun --standalone --nproc_per_node=nproc -m course.scaling ARGS`` on CPU.

    What a student types in a terminal, from Python (the notebook and the
    tests use it). CUDA is hidden so that the processes use gloo on CPU;
    on a machine with N GPUs run torchrun yourself with ``--nproc_per_node=N``.
    ``program`` is what torchrun starts: this module, or a script's path.
    """
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        *program,
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="torchrun --standalone --nproc_per_node=N -m course.scaling",
        description="Data-parallel training with the linear scaling rule and warmup.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    small = commands.add_parser("shapes", help="a small CNN, step by step (the DDP exactness demo)")
    small.add_argument("--steps", type=int, default=100)
    small.add_argument("--batch-per-process", type=int, default=32)
    small.add_argument("--base-lr", type=float, default=0.4, help="lr for --base-batch-size")
    small.add_argument("--base-batch-size", type=int, default=256)
    small.add_argument("--warmup-steps", type=int, default=10)
    small.add_argument("--samples", type=int, default=2048)
    small.add_argument("--out", type=Path, default=None, help="save the final weights here")
    real = commands.add_parser("hornets", help="ResNet18 on chapter 3's data, with fit")
    real.add_argument("--epochs", type=int, default=10)
    real.add_argument("--batch-per-process", type=int, default=32)
    real.add_argument("--base-lr", type=float, default=0.1, help="lr for --base-batch-size")
    real.add_argument("--base-batch-size", type=int, default=256)
    real.add_argument("--warmup-epochs", type=int, default=1)
    real.add_argument("--image-size", type=int, default=224)
    real.add_argument("--max-images", type=int, default=None, help="a stratified subset")
    real.add_argument("--imagenet", action="store_true", help="start from the ImageNet weights")
    real.add_argument(
        "--checkpoint", type=Path, default=None, help="written every epoch; resumed when present"
    )
    args = parser.parse_args(argv)
    if "RANK" not in os.environ:
        parser.error(
            "run me with torchrun, e.g. "
            "torchrun --standalone --nproc_per_node=2 -m course.scaling hornets"
        )
    if args.command == "shapes":
        train_data_parallel(
            args.steps,
            args.batch_per_process,
            args.base_lr,
            args.base_batch_size,
            args.warmup_steps,
            args.out,
            args.samples,
        )
    else:
        train_resnet18_data_parallel(
            args.epochs,
            args.batch_per_process,
            args.base_lr,
            args.base_batch_size,
            args.warmup_epochs,
            args.image_size,
            args.max_images,
            args.imagenet,
            args.checkpoint,
        )


if __name__ == "__main__":
    main(sys.argv[1:])
