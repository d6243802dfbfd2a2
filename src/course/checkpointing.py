"""Gradient checkpointing: memory against recomputation (chapter 5).

Backpropagation needs, for every operation, some of its inputs or outputs
(the weights of a Linear need its input; a ReLU needs its output). Autograd
keeps them alive from the forward pass until the backward pass reaches that
operation: for a chain of n layers, n activations at once.

Checkpointing (Chen et al., 2016) cuts the chain into k segments and keeps only
each segment's input; during the backward pass each segment is run forward
again to rebuild the activations it needs. Memory ~ k + n/k activations
(minimised at k = sqrt(n)) for about one extra forward pass.

Everything here measures rather than estimates: :func:`saved_activation_bytes`
counts the bytes that autograd actually keeps, through saved-tensor hooks, so
the chapter's memory curves are real on a CPU as well as on a GPU.

Used in chapter 5.
"""

from __future__ import annotations

import contextlib
import gc
import math
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import matplotlib.colors
import numpy as np
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from course.check import Report, compare, run_checks
from course.utils import time_call

# ---------------------------------------------------------------------------
# Measuring what autograd keeps
# ---------------------------------------------------------------------------


def _storage_key(t: torch.Tensor) -> tuple[str, int]:
    storage = t.untyped_storage()
    return (str(t.device), storage.data_ptr())


def saved_activation_bytes(model: nn.Module, *inputs: torch.Tensor) -> int:
    """Run ``model(*inputs)`` and return the bytes autograd keeps for the backward pass.

    Every tensor that an operation saves for backward passes through the
    ``pack`` hook of :func:`torch.autograd.graph.saved_tensors_hooks`. A
    storage is counted once even when several operations save views of it
    (a ReLU's output is also the next Linear's input), and the model's own
    parameters and buffers are excluded: they stay in memory anyway.

    Under non-reentrant checkpointing, the tensors saved inside a segment are
    replaced by placeholders and never reach this hook; the segment's inputs,
    which checkpointing keeps for the recomputation, do. So the count is the
    memory that checkpointing really saves.

    Returns:
        Bytes held by saved activations at the end of the forward pass
        (the output itself is not counted unless an operation saved it).
    """
    own = {_storage_key(t) for t in list(model.parameters()) + list(model.buffers())}
    seen: dict[tuple[str, int], int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        key = _storage_key(t)
        if key not in own:
            seen[key] = t.untyped_storage().nbytes()
        # Not ``t`` itself: a saved output that holds its own grad_fn would make a
        # reference cycle outside Python's garbage collector, and every call would leak
        # the activations it measures (165 MiB per call for ResNet18 on 8 images at 224 px;
        # pytorch/pytorch#115255: the documented pack hooks detach too).
        return t.detach()

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(*inputs)
    del out
    return sum(seen.values())


def peak_cuda_bytes(model: nn.Module, *inputs: torch.Tensor) -> int:
    """GPU memory that one forward + backward adds at its peak, in bytes.

    ``torch.cuda.max_memory_allocated`` during the step minus what was
    allocated just before it (the weights, the inputs, anything left over),
    so it counts activations, gradients and the kernels' workspace, which
    :func:`saved_activation_bytes` leaves out. CUDA only.
    """
    device = inputs[0].device
    if device.type != "cuda":
        raise ValueError("peak_cuda_bytes needs CUDA tensors; on CPU use saved_activation_bytes")
    model.zero_grad(set_to_none=True)
    gc.collect()  # earlier graphs held in reference cycles would still count
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    model(*inputs).float().sum().backward()
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) - before
    model.zero_grad(set_to_none=True)
    return peak


# ---------------------------------------------------------------------------
# The schedule of a chain, step by step (the slides' figure)
# ---------------------------------------------------------------------------


@dataclass
class Step:
    """One step of forward/backward on a chain: which activations are in memory after it.

    ``phase`` is "forward", "recompute" or "backward"; ``layer`` the layer
    computed (forward, recompute) or back-propagated (backward), 1..n;
    ``alive`` the indices of the activations a_0..a_n held in memory.
    """

    phase: str
    layer: int
    alive: frozenset[int]


def backprop_schedule(n: int, checkpoints: Sequence[int] | None = None) -> list[Step]:
    """Simulate backpropagation through layers a_i = f_i(a_{i-1}), i = 1..n.

    Without ``checkpoints`` every activation is kept until the backward pass
    has used it. With checkpoints (activation indices to keep, e.g. the
    slides' (2, 4)) the chain is cut into segments at them, and the schedule
    is that of ``torch.utils.checkpoint.checkpoint_sequential``: every segment
    but the last keeps only its input (a_0 or a checkpoint) during the forward
    pass, and is recomputed in full (each of its layers run a second time)
    when the backward pass reaches it; the last segment, whose backward comes
    first, keeps its activations and is never recomputed. The backward step
    of layer i needs a_{i-1} (for the weight gradient); after it, a_i is freed.

    So with k segments the recomputed layers are those of the first k - 1
    segments: n minus the length of the last segment.
    """
    keep_all = checkpoints is None
    kept = set(range(n + 1)) if keep_all else {0, *checkpoints}
    if not keep_all and not all(0 < c < n for c in kept - {0}):
        raise ValueError(f"checkpoints must lie strictly between 0 and {n}")
    last_input = max(kept)  # the last segment, a_last .. a_n, is not checkpointed
    steps: list[Step] = []
    alive = {0}
    for i in range(1, n + 1):
        alive.add(i)
        steps.append(Step("forward", i, frozenset(alive)))
        if i - 1 not in kept and i - 1 < last_input:
            alive.discard(i - 1)
    for i in range(n, 0, -1):
        if not keep_all and i in kept:  # i ends a checkpointed segment: rerun it in full
            start = max(c for c in kept if c < i)
            for j in range(start + 1, i + 1):
                alive.add(j)
                steps.append(Step("recompute", j, frozenset(alive)))
        alive.discard(i)
        steps.append(Step("backward", i, frozenset(alive)))
    return steps


def draw_schedule(ax, steps: list[Step], n: int, title: str = "") -> None:
    """One row per step, one column per activation a_0..a_n; colour = phase."""
    colours = {"forward": 1, "recompute": 2, "backward": 3}
    grid = np.zeros((len(steps), n + 1))
    for row, step in enumerate(steps):
        for j in step.alive:
            grid[row, j] = colours[step.phase]
    cmap = matplotlib.colors.ListedColormap(["white", "tab:blue", "tab:orange", "tab:green"])
    ax.imshow(grid, cmap=cmap, vmin=0, vmax=3, aspect="auto", interpolation="nearest")
    ax.set_xticks(range(n + 1), [f"$a_{{{j}}}$" for j in range(n + 1)])
    ax.set_yticks(range(len(steps)), [f"{s.phase[:3]} {s.layer}" for s in steps], fontsize=7)
    peak = max(len(s.alive) for s in steps)
    recomputed = sum(s.phase == "recompute" for s in steps)
    ax.set_title(f"{title}\npeak {peak} activations, {recomputed} recomputed layers")


# ---------------------------------------------------------------------------
# Checkpointed models
# ---------------------------------------------------------------------------


def split_into_segments(n: int, segments: int) -> list[range]:
    """Split layer indices 0..n-1 into ``segments`` contiguous, nearly equal ranges.

    >>> split_into_segments(10, 3)
    [range(0, 4), range(4, 7), range(7, 10)]
    """
    if not 1 <= segments <= n:
        raise ValueError(f"segments must be between 1 and the number of layers {n}, got {segments}")
    sizes = [n // segments + (i < n % segments) for i in range(segments)]
    starts = [sum(sizes[:i]) for i in range(segments)]
    return [range(start, start + size) for start, size in zip(starts, sizes, strict=True)]


@contextlib.contextmanager
def keep_batchnorm_statistics(module: nn.Module) -> Iterator[None]:
    """Restore the running statistics of every BN layer in ``module`` on exit.

    The recomputation of a checkpointed segment runs its BN layers forward a
    second time in training mode, which updates ``running_mean``,
    ``running_var`` and ``num_batches_tracked`` twice per step. Wrapping the
    recomputation in this context undoes the second update; the outputs are
    unaffected because in training mode BN normalises with the batch
    statistics, not the running ones.
    """
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [
        {k: v.clone() for k, v in m.named_buffers(recurse=False) if v is not None} for m in norms
    ]
    try:
        yield
    finally:
        with torch.no_grad():
            for m, buffers in zip(norms, saved, strict=True):
                for name, value in buffers.items():
                    getattr(m, name).copy_(value)


class CheckpointedSequential(nn.Module):
    """Run ``layers`` in ``segments`` checkpointed segments.

    Only the input of each segment is kept for backward; the segment is
    recomputed when the backward pass reaches it. As in
    ``torch.utils.checkpoint.checkpoint_sequential``, the last segment is not
    checkpointed: its backward comes first, so recomputing it would save
    nothing. ``segments=1`` is therefore the plain model.

    The layers are shared, not copied: wrapping a model does not change its
    parameters or its state_dict keys (they gain a ``layers.`` prefix only).

    Args:
        layers: the modules, applied in order.
        segments: number of segments, 1 <= segments <= len(layers).
        preserve_rng_state: replay the random state during recomputation, so
            that dropout draws the same mask twice (leave it True).
        fix_batchnorm: undo the second update of BN running statistics made by
            the recomputation (see :func:`keep_batchnorm_statistics`).
    """

    def __init__(
        self,
        layers: Sequence[nn.Module],
        segments: int,
        preserve_rng_state: bool = True,
        fix_batchnorm: bool = True,
    ) -> None:
        super().__init__()
        self.layers = nn.Sequential(*layers)
        self.segments = split_into_segments(len(self.layers), segments)
        self.preserve_rng_state = preserve_rng_state
        self.fix_batchnorm = fix_batchnorm

    def _run(self, indices: range, x: torch.Tensor) -> torch.Tensor:
        for i in indices:
            x = self.layers[i](x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        *checkpointed, last = self.segments
        for indices in checkpointed:
            if not torch.is_grad_enabled():
                x = self._run(indices, x)
                continue
            segment = self.layers[indices.start : indices.stop]

            def contexts(segment: nn.Module = segment):
                recompute = (
                    keep_batchnorm_statistics(segment)
                    if self.fix_batchnorm
                    else contextlib.nullcontext()
                )
                return contextlib.nullcontext(), recompute

            x = checkpoint(
                self._run,
                indices,
                x,
                use_reentrant=False,
                preserve_rng_state=self.preserve_rng_state,
                context_fn=contexts,
            )
        return self._run(last, x)


def peak_activation_bytes(model: CheckpointedSequential, x: torch.Tensor) -> int:
    """Activation bytes alive at the worst moment of a checkpointed forward + backward.

    Two moments compete: the end of the forward pass (the segment inputs plus
    the last, non-checkpointed segment: :func:`saved_activation_bytes`) and
    the backward pass through segment j, when the inputs of segments 0..j are
    still kept and segment j's activations have been recomputed. Each term is
    measured with :func:`saved_activation_bytes`; for a chain of n equal
    layers in k segments the result is about k + n/k activations.
    BN running statistics are left as they were.
    """
    with keep_batchnorm_statistics(model):
        peak = saved_activation_bytes(model, x)
        *checkpointed, _ = model.segments
        kept, h = 0, x
        for indices in checkpointed:
            segment = model.layers[indices.start : indices.stop]
            h = h.detach().requires_grad_(x.requires_grad)
            peak = max(peak, kept + saved_activation_bytes(segment, h))
            kept += h.untyped_storage().nbytes()
            with torch.no_grad():
                h = segment(h)
    return peak


def deep_chain(depth: int, width: int, activation: type[nn.Module] = nn.ReLU) -> nn.Sequential:
    """``depth`` blocks of Linear(width, width) + activation: the slides' chain of layers."""
    return nn.Sequential(
        *[nn.Sequential(nn.Linear(width, width), activation()) for _ in range(depth)]
    )


def resnet18_layers(model: nn.Module) -> list[nn.Module]:
    """ResNet18 as a list of 10 modules (stem, 8 residual blocks, head), sharing its weights.

    Checkpoint boundaries fall between blocks, never inside a residual
    connection.
    """
    stem = nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool)
    blocks = [*model.layer1, *model.layer2, *model.layer3, *model.layer4]
    head = nn.Sequential(model.avgpool, nn.Flatten(1), model.fc)
    return [stem, *blocks, head]


def best_segments(n: int) -> int:
    """The segment count that minimises k + n/k: the integer nearest sqrt(n)."""
    root = math.sqrt(n)
    candidates = {max(1, math.floor(root)), min(n, math.ceil(root))}
    return min(candidates, key=lambda k: (k + n / k, k))


def step_seconds(model: nn.Module, x: torch.Tensor, repeats: int = 3) -> float:
    """Mean wall time of one forward + backward over ``repeats`` runs (``time_call``,
    which warms up first)."""

    def step() -> None:
        model.zero_grad(set_to_none=True)
        model(x).float().sum().backward()

    return time_call(step, repeats=repeats)


def largest_batch(bytes_per_sample: float, budget_bytes: float, fixed_bytes: float = 0.0) -> int:
    """The largest batch whose activations fit ``budget_bytes`` (activations grow linearly)."""
    if bytes_per_sample <= 0:
        raise ValueError("bytes_per_sample must be positive")
    return max(0, int((budget_bytes - fixed_bytes) // bytes_per_sample))


# ---------------------------------------------------------------------------
# Exercise: two-segment checkpointing with torch.utils.checkpoint, yourself
# ---------------------------------------------------------------------------


def check_two_segments(forward) -> Report:
    """Check ``forward(layers, x) -> y``: ``layers`` (an ``nn.Sequential``) cut at
    ``len(layers) // 2``; the first half run under
    ``torch.utils.checkpoint.checkpoint(..., use_reentrant=False)`` as *one* segment
    (only its input is kept, it is recomputed during backward), the second half run
    plainly. The output and every gradient must equal the plain model's; each layer of
    the first half must run twice per step, each of the second once, and the first half
    must be recomputed in one piece (not layer by layer). The chain has an odd number
    of layers (7), so that ``len(layers) // 2`` differs from rounding up; the input is
    an image batch that does not require grad, as in training."""
    state: dict = {}

    def setup():
        torch.manual_seed(0)
        layers = deep_chain(depth=7, width=8)
        calls = [0] * len(layers)
        order: list[int] = []

        def count(i: int) -> None:
            calls[i] += 1
            order.append(i)

        for i, layer in enumerate(layers):
            # a pre-hook: recomputation stops as soon as backward has what it needs
            # (non-reentrant checkpoint's early stop), before a segment's last forward ends
            layer.register_forward_pre_hook(lambda *_, i=i: count(i))
        return layers, torch.randn(5, 8), calls, order

    def output() -> str | None:
        layers, x, calls, order = setup()
        with torch.no_grad():
            want = layers(x)
        calls[:] = [0] * len(calls)
        got = forward(layers, x)
        state.update(got=got, layers=layers, x=x, calls=calls, order=order)
        problem = compare(got, want, "the output")
        if problem is not None and isinstance(got, torch.Tensor) and got.shape == want.shape:
            k = len(layers) // 2
            with torch.no_grad():
                if torch.allclose(got, layers[k:](x), atol=1e-6):
                    return (
                        "the second half ran on x: feed it the first half's output, "
                        "layers[k:](checkpoint(layers[:k], x, use_reentrant=False))"
                    )
        return problem

    def gradients() -> str | None:
        layers, got = state["layers"], state["got"]
        if not got.requires_grad:
            return "the output has no graph: do not run the segments under torch.no_grad()"
        del state["order"][:]  # from here on: the calls made during backward
        got.square().sum().backward()
        reference, x, _, _ = setup()
        reference(x).square().sum().backward()
        for (name, p), q in zip(layers.named_parameters(), reference.parameters(), strict=True):
            if p.grad is None:
                return f"{name} got no gradient: {_why_no_gradient(forward)}"
            problem = compare(p.grad, q.grad, f"the gradient of {name}")
            if problem is not None:
                return problem
        return None

    def recomputation() -> str | None:
        calls, half = state["calls"], len(state["calls"]) // 2
        rest = len(calls) - half
        if calls == [1] * len(calls):
            return (
                "nothing was recomputed: run the first half through "
                "torch.utils.checkpoint.checkpoint(layers[:k], x, use_reentrant=False)"
            )
        if calls == [2] * len(calls):
            return (
                "the second half is recomputed too: run it plainly; its activations "
                "are the first that backward needs, so checkpointing it saves nothing"
            )
        if calls == [1] * half + [2] * rest:
            return (
                "the second half is checkpointed and the first half run plainly: "
                "checkpoint the first half, layers[:k], and run the second half plainly"
            )
        if calls != [2] * half + [1] * rest:
            return f"layer calls per step {calls}: cut at len(layers) // 2 = {half}"
        recomputed = [i for i in state["order"] if i < half]
        if recomputed != sorted(recomputed):
            return (
                f"the layers of the first half were checkpointed one by one (recomputed "
                f"in the order {recomputed}, one at a time): each layer's input is then "
                "kept and nothing is saved; checkpoint the whole half as one segment, "
                "checkpoint(layers[:k], x, use_reentrant=False)"
            )
        return None

    return run_checks(
        "two segments",
        [
            ("the output", output),
            ("every gradient", gradients),
            ("the first half recomputed, the second not", recomputation),
        ],
    )


def _why_no_gradient(forward) -> str:
    """Why the first half got no gradient: the same forward with an input that requires
    grad tells use_reentrant=True (gradients then flow) from a cut graph (they do not)."""
    torch.manual_seed(0)
    layers = deep_chain(depth=7, width=8)
    x = torch.randn(5, 8, requires_grad=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            forward(layers, x).square().sum().backward()
    except RuntimeError:
        pass
    if next(layers.parameters()).grad is not None:
        return (
            "with use_reentrant=True and an input that does not require grad (an image "
            "batch) the checkpointed segment is cut off from backward; pass "
            "use_reentrant=False"
        )
    return (
        "the first half is cut off from the graph (a .detach(), torch.no_grad() or "
        ".data between the halves, or use_reentrant=True): pass the first half's output "
        "on as it is, with use_reentrant=False"
    )
