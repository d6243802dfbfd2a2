"""Checking a student's implementation: say *what* is wrong, not just "wrong".

Each chapter's "write it yourself" exercise ends with a call such as
``check_batch_norm(my_batch_norm)``. The checker runs the student's function on
random and edge-case inputs, compares it with the package's implementation (or
torch's), and returns a :class:`Report`: the checks passed so far, and the first
problem found, named as a mistake (a sign, a missing clamp, the wrong axes, a
forgotten ``zero_grad``) with what to change. A report shows itself in a notebook
and is true when every check passed, so a solution cell can ``assert`` it.

The checks themselves live beside what they check (``course.norm.check_batch_norm``,
``course.detection.boxes.check_box_iou``, ...); this module holds what they share:
:class:`Report`, :func:`run_checks` and :func:`compare`. The training-loop checker
of chapter 0, :func:`check_train_epoch`, is here too: its subject is the floor itself.

Used in chapter 0 (the other chapters reach it through their own modules' checkers).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

#: A check: its name, and a function returning None when it holds, else the problem.
Check = tuple[str, Callable[[], "str | None"]]


@dataclass
class Report:
    """What a checker found: ``passed`` (names of the checks that held) and ``problem``
    (the first that did not, with what to change; None when all held)."""

    name: str
    passed: list[str] = field(default_factory=list)
    problem: str | None = None

    def __bool__(self) -> bool:
        return self.problem is None

    def __repr__(self) -> str:
        if self.problem is None:
            return f"✓ {self.name}: all {len(self.passed)} checks passed."
        done = f" (passed before it: {', '.join(self.passed)})" if self.passed else ""
        return f"✗ {self.name}: {self.problem}{done}"


def run_checks(name: str, checks: Iterable[Check]) -> Report:
    """Run ``checks`` in order and stop at the first problem. An exception raised by the
    student's code becomes the problem, with its type and message."""
    report = Report(name)
    for check_name, check in checks:
        try:
            problem = check()
        except NotImplementedError:
            problem = "not written yet (the body still raises NotImplementedError)"
        except Exception as error:  # the student's code failed: say how
            problem = f"{check_name}: your code raised {type(error).__name__}: {error}"
        if problem is not None:
            report.problem = problem
            return report
        report.passed.append(check_name)
    return report


def compare(got, want: torch.Tensor, what: str, atol: float = 1e-5) -> str | None:
    """None when ``got`` equals ``want`` (within ``atol``), else what differs: not a
    tensor (``None`` when the body is still ``...``), shape, dtype, NaN, the opposite
    sign, a constant factor, or the largest difference."""
    if got is None:
        return f"{what}: your function returned None (write its body, and return the result)"
    if not isinstance(got, torch.Tensor):
        return f"{what}: expected a tensor, got {type(got).__name__}"
    if got.shape != want.shape:
        return f"{what}: shape {tuple(got.shape)}, expected {tuple(want.shape)}"
    if got.dtype != want.dtype:
        return f"{what}: dtype {got.dtype}, expected {want.dtype}"
    got, want = got.detach().double(), want.detach().double()
    if not torch.isfinite(got).all():
        return f"{what}: contains NaN or inf (a division by zero? a missing eps?)"
    if torch.allclose(got, want, atol=atol, rtol=1e-4):
        return None
    if want.abs().max() > atol and torch.allclose(got, -want, atol=atol, rtol=1e-4):
        return f"{what}: has the opposite sign of the expected result"
    nonzero = want.abs() > 1e-3
    if nonzero.any():
        ratio = got[nonzero] / want[nonzero]
        if ratio.std() < 1e-4 * ratio.abs().mean() + 1e-9:
            return f"{what}: is the expected result times {ratio.mean().item():.4g}"
    error = (got - want).abs().max().item()
    return f"{what}: differs from the expected result by up to {error:.3g}"


# ---------------------------------------------------------------------------
# Chapter 0: the training loop
# ---------------------------------------------------------------------------


def _loop_setup(seed: int = 0):
    """A small network with BatchNorm and a real DataLoader of 24 samples in batches of
    10, 10 and 4: the last batch is smaller, so a mean of the batch means is not the
    mean per sample, and ``len(loader.dataset)`` works as in a notebook."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    x, y = torch.randn(24, 4), torch.randint(0, 3, (24,))
    loader = DataLoader(TensorDataset(x, y), batch_size=10, shuffle=False)
    return model, loader


def _reference_epoch(model, loader, *, train=True) -> tuple[float, list[float], list[int]]:
    """The loop as chapter 0 writes it (``train=False``: the forgotten ``model.train()``).
    Returns the mean loss per sample, and each batch's mean loss and size."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model.train(train)
    means, sizes = [], []
    for x, y in loader:
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        means.append(loss.item())
        sizes.append(len(x))
    return sum(m * n for m, n in zip(means, sizes, strict=True)) / sum(sizes), means, sizes


def _reference_without_zero_grad(model, loader) -> None:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model.train()
    for x, y in loader:
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()


def _all_close(xs, ys) -> bool:
    """Every tensor of ``xs`` equals its partner in ``ys`` (to 1e-6)."""
    return all(torch.allclose(p, q, atol=1e-6) for p, q in zip(xs, ys, strict=True))


def check_train_epoch(train_epoch: Callable) -> Report:
    """Check ``train_epoch(model, loader, loss_fn, optimizer) -> float``: one epoch of
    training (train mode, for each batch: zero the gradients, forward, loss, backward,
    step) returning the mean loss per sample. Compared with chapter 0's loop on a small
    network with BatchNorm (so that train/eval mode matters; the model is in eval mode
    on entry), SGD with momentum, and a ``DataLoader`` whose last batch is smaller (so
    that the mean of the batch means is not the mean per sample)."""

    def student() -> tuple[nn.Module, object, torch.optim.Optimizer]:
        model, loader = _loop_setup()
        model.eval()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        loss = train_epoch(model, loader, nn.functional.cross_entropy, optimizer)
        return model, loss, optimizer

    state: dict = {}

    def same_weights(a: nn.Module, b: nn.Module) -> bool:  # parameters and BN's buffers
        return _all_close(a.state_dict().values(), b.state_dict().values())

    def weights() -> str | None:
        model, state["loss"], optimizer = student()
        initial, _ = _loop_setup()
        if _all_close(model.parameters(), initial.parameters()):
            if state["loss"] is None:
                return "your function returned None and trained nothing: write its body"
            return (
                "the weights did not change: call optimizer.step() after loss.backward(), "
                "and optimizer.zero_grad() before loss.backward() (zero_grad between "
                "backward and step throws the gradients away)"
            )
        if not optimizer.state:
            return (
                "the optimizer passed in never stepped: use the optimizer passed in "
                "(its learning rate and momentum), do not create your own"
            )
        no_zero_grad, loader = _loop_setup()
        _reference_without_zero_grad(no_zero_grad, loader)
        if same_weights(model, no_zero_grad):
            return (
                "gradients add up across batches: call "
                "optimizer.zero_grad() before each loss.backward()"
            )
        eval_trained, loader = _loop_setup()
        _reference_epoch(eval_trained, loader, train=False)
        if same_weights(model, eval_trained):
            return (
                "the model trained in eval mode: call model.train() "
                "first (BatchNorm then uses the batch's statistics)"
            )
        reference, loader = _loop_setup()
        state["want"] = _reference_epoch(reference, loader)
        if not same_weights(model, reference):
            if _all_close(model.parameters(), reference.parameters()):
                return (
                    "the parameters are right but BatchNorm's running statistics are not: "
                    "the model ran forward more than once per batch (a second forward to "
                    "get the loss's value?); use loss.item() of the loss you backpropagated"
                )
            return "the weights after one epoch differ from the reference loop's"
        return None

    def mean_loss() -> str | None:
        got, (want, means, sizes) = state["loss"], state["want"]
        if got is None:
            return "returns None: return the mean loss of the epoch"
        if isinstance(got, torch.Tensor):
            if got.requires_grad:
                return "returns a tensor that holds the graph: use loss.item()"
            got = got.item()
        if abs(got - want) < 1e-5:
            return None
        sample_sum = sum(m * n for m, n in zip(means, sizes, strict=True))
        for wrong, advice in (
            (
                sum(means) / len(means),
                "returns the mean of the batch means: the last batch is smaller (here "
                f"{sizes}), so weight each batch by its size (loss.item() * len(x)) "
                "and divide by the number of samples",
            ),
            (sum(means), "returns the sum of the batch losses: divide by the number of samples"),
            (
                sample_sum / len(sizes),
                "divides the summed loss by the number of batches: divide by the number "
                "of samples, not of batches (len(loader.dataset))",
            ),
            (sample_sum, "returns the summed loss: divide by the number of samples"),
            (
                sample_sum / (len(sizes) * sizes[0]),
                "divides by the number of batches times the batch size: the last batch "
                f"is smaller (here {sizes}); divide by the number of samples, "
                "len(loader.dataset)",
            ),
            (
                means[-1],
                "returns the last batch's loss: accumulate loss.item() * len(x) over the "
                "epoch and divide by the number of samples",
            ),
        ):
            if abs(got - wrong) < 1e-5:
                return advice
        return f"returns {got:.5f}, expected the mean loss per sample {want:.5f}"

    return run_checks(
        "train_epoch", [("weights after one epoch", weights), ("the returned mean loss", mean_loss)]
    )
