"""Residual connections and the gradients they carry (chapter 2).

A residual block computes x1 = x0 + f(x0), so that

    dx1/dx0 = I + df/dx0:

the identity term carries the gradient back to the first layers whatever
df/dx0 does, where a plain block (x1 = f(x0)) multiplies it by df/dx0 at
every layer. :func:`block_gradient_norms` measures that gradient, block by
block, in the deep plain and residual networks of ``course.models.DeepCNN``,
built in pairs with as many convolutions each (:func:`plain_and_residual`);
:func:`shape_table` runs ResNet18 (``course.models.resnet18``) on an image
and lists the shape after each stage: the slides' table.
:func:`midpoint_nonlinearity` measures how far a map is from linear, to
compare a stack of plain layers with a stack of residual blocks built from
the same layers (:func:`mlp_stack`): the slides' "more linear" residual function.

Used in chapter 2.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from course.check import Report, compare, run_checks
from course.config import run_seed
from course.models.deep import DeepCNN, init_conv_weights


def mlp_stack(depth: int, width: int = 64, *, residual: bool, seed: int = 0) -> nn.Sequential:
    """``depth`` maps f(x) = W2 relu(W1 x) on vectors of size ``width``, plain or residual.

    The weights are He-initialised (W1 ~ N(0, 2/width), W2 ~ N(0, 1/width), no
    bias) and drawn from ``run_seed(seed)`` whatever ``residual`` is: the plain
    stack computes f_L(...f_1(x)), the residual one (x + f_L)(...(x + f_1)(x)),
    with the same f_i. Input and output (N, width).
    """
    generator = torch.Generator().manual_seed(run_seed(seed))
    blocks: list[nn.Module] = []
    for _ in range(depth):
        f = nn.Sequential(
            nn.Linear(width, width, bias=False), nn.ReLU(), nn.Linear(width, width, bias=False)
        )
        with torch.no_grad():
            f[0].weight.copy_(torch.randn(width, width, generator=generator) * (2 / width) ** 0.5)
            f[2].weight.copy_(torch.randn(width, width, generator=generator) * (1 / width) ** 0.5)
        blocks.append(_Residual(f) if residual else f)
    return nn.Sequential(*blocks)


class _Residual(nn.Module):
    """x -> x + f(x)."""

    def __init__(self, f: nn.Module) -> None:
        super().__init__()
        self.f = f

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.f(x)


@torch.no_grad()
def midpoint_nonlinearity(
    fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, x2: torch.Tensor
) -> float:
    """Mean over the rows of |g(m) - (g(x) + g(x2))/2| / |g(x) - g(x2)|, m = (x + x2)/2.

    0 for an affine map g (and for no other continuous one over all pairs); the
    larger, the more g bends between the two points, relative to how far it
    moves them. ``x`` and ``x2`` are (N, D) batches of pairs.
    """
    gx, gx2, gm = fn(x), fn(x2), fn((x + x2) / 2)
    bend = (gm - (gx + gx2) / 2).flatten(1).norm(dim=1)
    return float((bend / (gx - gx2).flatten(1).norm(dim=1)).mean())


def plain_and_residual(
    num_convs: int,
    *,
    width: int = 16,
    batch_norm: bool = True,
    init: str = "default",
    seed: int = 0,
) -> dict[str, DeepCNN]:
    """A plain and a residual ``DeepCNN`` with the same number of 3x3 conv layers, ``num_convs``.

    Both start with the stem's conv; the plain net then has ``num_convs - 1``
    blocks of one conv, the residual net ``(num_convs - 1) / 2`` blocks of two
    (so ``num_convs`` must be odd), plus the two 1x1 projection shortcuts where
    the resolution halves: a comparison of the architectures, not of the
    number of layers. Weights are drawn from ``seed`` with ``init``
    (``course.models.init_conv_weights``: ``"default"`` or ``"kaiming"``...).

    Returns ``{"plain": ..., "residual": ...}``.
    """
    if num_convs < 3 or num_convs % 2 == 0:
        raise ValueError(f"num_convs must be odd and >= 3 (stem + blocks), got {num_convs}")
    nets = {}
    for kind, depth in (("plain", num_convs - 1), ("residual", (num_convs - 1) // 2)):
        torch.manual_seed(run_seed(seed))
        net = DeepCNN(depth, width=width, residual=kind == "residual", batch_norm=batch_norm)
        nets[kind] = init_conv_weights(net, init)
    return nets


def block_gradient_norms(
    model: DeepCNN, x: torch.Tensor, y: torch.Tensor, loss_fn=nn.functional.cross_entropy
) -> list[float]:
    """L2 norm of the loss gradient wrt the first conv weight of every block, input to output.

    One backward pass in train mode; the model's ``.grad`` fields are left
    untouched (``torch.autograd.grad``).
    """
    weights = [next(b.parameters()) for b in model.blocks]  # first conv of each block
    loss = loss_fn(model(x), y)
    grads = torch.autograd.grad(loss, weights)
    return [float(g.norm()) for g in grads]


def shape_table(model: nn.Module, x: torch.Tensor) -> list[tuple[str, tuple[int, ...]]]:
    """Output shape (without the batch dimension) of each top-level child of ``model``.

    A real forward pass with forward hooks; ``("input", ...)`` comes first.
    For ResNet18 and a 3x224x224 image this is the slides' table.
    """
    rows: list[tuple[str, tuple[int, ...]]] = [("input", tuple(x.shape[1:]))]
    hooks = [
        child.register_forward_hook(
            lambda _m, _i, out, name=name: rows.append((name, tuple(out.shape[1:])))
        )
        for name, child in model.named_children()
    ]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return rows


# ---------------------------------------------------------------------------
# Exercise: write a residual block with its projection shortcut yourself
# ---------------------------------------------------------------------------

#: The attribute names the exercise asks for (torchvision's, with ``shortcut`` for its
#: ``downsample``), so that the block can take torchvision's weights.
BLOCK_NAMES = ("conv1", "bn1", "conv2", "bn2", "shortcut")


def _torchvision_block(in_channels: int, out_channels: int, stride: int) -> nn.Module:
    from torchvision.models.resnet import BasicBlock

    downsample = None
    if stride != 1 or in_channels != out_channels:
        downsample = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
            nn.BatchNorm2d(out_channels),
        )
    return BasicBlock(in_channels, out_channels, stride, downsample)


def check_basic_block(block_class: type[nn.Module]) -> Report:
    """Check ``block_class(in_channels, out_channels, stride=1)``, ResNet18's basic
    block: conv3x3(stride)-BN-ReLU-conv3x3-BN, plus a shortcut that is the identity
    when the shapes match and a 1x1 convolution with the stride followed by BN when
    they do not, then ReLU *after* the addition. Its parameters are loaded into
    torchvision's ``BasicBlock`` and the two are compared, in training and eval mode,
    for the three cases of ResNet18: (64, 64, 1), (64, 128, 2), (128, 128, 1)."""

    def case(in_channels: int, out_channels: int, stride: int):
        def check() -> str | None:
            torch.manual_seed(0)
            block = block_class(in_channels, out_channels, stride)
            if block is None or not isinstance(block, nn.Module):
                return "the class must build an nn.Module (write __init__ and forward)"
            missing = [n for n in BLOCK_NAMES[:4] if not hasattr(block, n)]
            if missing:
                return f"name the layers {', '.join(BLOCK_NAMES)}; missing: {missing}"
            convs = [block.conv1, block.conv2]
            if any(getattr(c, "bias", None) is not None for c in convs):
                return "a convolution followed by BN needs no bias: bias=False"
            projects = stride != 1 or in_channels != out_channels
            shortcut = getattr(block, "shortcut", None)
            params = sum(p.numel() for p in shortcut.parameters()) if shortcut else 0
            if projects and params == 0:
                return (
                    f"({in_channels} -> {out_channels}, stride {stride}): the shapes change, "
                    "so the shortcut must project: nn.Sequential(nn.Conv2d(in, out, 1, "
                    "stride, bias=False), nn.BatchNorm2d(out))"
                )
            if not projects and params:
                return "when the shapes match the shortcut is the identity (no parameters)"
            reference = _torchvision_block(in_channels, out_channels, stride)
            ours = {k.replace("shortcut.", "downsample."): v for k, v in block.state_dict().items()}
            try:
                reference.load_state_dict(ours)
            except RuntimeError as error:
                first = str(error).splitlines()[1] if "\n" in str(error) else str(error)
                return f"the layers' shapes differ from ResNet18's block: {first.strip()}"
            x = torch.randn(2, in_channels, 16, 16)
            for training in (True, False):
                block.train(training)
                reference.train(training)
                mode = "training" if training else "eval"
                got, want = block(x), reference(x)
                if isinstance(got, torch.Tensor) and got.shape == want.shape and (got < 0).any():
                    return "the output has negative values: apply the last ReLU after the addition"
                problem = compare(
                    got,
                    want,
                    f"the output ({in_channels} -> {out_channels}, stride {stride}, {mode} mode)",
                    atol=1e-4,
                )
                if problem is not None:
                    if isinstance(got, torch.Tensor) and got.shape == want.shape:
                        no_skip = reference.bn2(
                            reference.conv2(reference.relu(reference.bn1(reference.conv1(x))))
                        ).relu()
                        if torch.allclose(got, no_skip, atol=1e-4):
                            return "the shortcut is not added: out = relu(f(x) + shortcut(x))"
                    return problem
            return None

        return check

    return run_checks(
        "basic block",
        [
            ("identity shortcut (64 -> 64)", case(64, 64, 1)),
            ("projection (64 -> 128, stride 2)", case(64, 128, 2)),
            ("identity shortcut (128 -> 128)", case(128, 128, 1)),
        ],
    )
