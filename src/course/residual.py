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
    """Mean over the rows of ``||g(m) - (g(x) + g(x2)) / 2|| / ||g(x) - g(x2)||``, with
    ``m = (x + x2) / 2``.

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


def _shortcut_problem(shortcut: nn.Module, stride: int) -> str | None:
    """What is wrong with a projection shortcut's layers (None when it is a 1x1
    convolution with the stride, without bias, followed by BatchNorm2d)."""
    convs = [m for m in shortcut.modules() if isinstance(m, nn.Conv2d)]
    if len(convs) != 1:
        return None  # the shapes' comparison below says what differs
    conv = convs[0]
    if conv.kernel_size != (1, 1):
        return (
            f"the projection shortcut's convolution is {conv.kernel_size[0]}x"
            f"{conv.kernel_size[1]}: it is 1x1 (nn.Conv2d(in, out, 1, stride, bias=False))"
        )
    if conv.stride != (stride, stride):
        return (
            f"the shortcut's 1x1 convolution has stride {conv.stride[0]}: it takes the "
            f"block's stride ({stride}) too, so that both branches have the same size"
        )
    if not any(isinstance(m, nn.BatchNorm2d) for m in shortcut.modules()):
        return (
            "the projection shortcut is a 1x1 convolution followed by nn.BatchNorm2d(out): "
            "its BatchNorm2d is missing"
        )
    return None


def _wrong_blocks(reference: nn.Module, x: torch.Tensor, stride: int) -> dict[str, torch.Tensor]:
    """The outputs of the usual wrong blocks, with ``reference``'s weights, in training
    mode (on a copy: the reference's BN statistics stay as they are)."""
    import copy

    import torch.nn.functional as F

    r = copy.deepcopy(reference).train()
    skip = r.downsample(x) if r.downsample is not None else x

    def conv(layer: nn.Conv2d, z: torch.Tensor, s: int) -> torch.Tensor:
        return F.conv2d(z, layer.weight, None, s, 1)

    with torch.no_grad():
        f = r.bn2(r.conv2(r.bn1(r.conv1(x)).relu()))
        moved = r.bn2(conv(r.conv2, r.bn1(conv(r.conv1, x, 1)).relu(), stride))
        return {
            "the shortcut is not added: out = relu(f(x) + shortcut(x))": f.relu(),
            "ReLU is applied twice, before and after the addition: apply it only after "
            "the addition": (f.relu() + skip).relu(),
            "the ReLU between bn1 and conv2 is missing: conv1 -> bn1 -> ReLU -> conv2 -> bn2": (
                r.bn2(r.conv2(r.bn1(r.conv1(x)))) + skip
            ).relu(),
            "the ReLU comes before bn1: conv1 -> bn1 -> ReLU (ReLU after bn1), not "
            "conv1 -> ReLU -> bn1": (r.bn2(r.conv2(r.bn1(r.conv1(x).relu()))) + skip).relu(),
            "the stride belongs to the first convolution (conv1), not to conv2": (
                moved + skip
            ).relu(),
        }


def _as_torchvision_names(block: nn.Module) -> dict[str, torch.Tensor]:
    """The block's state dict under torchvision's names: ``shortcut.*`` becomes
    ``downsample.0.*`` (its convolution) and ``downsample.1.*`` (its BN), whatever the
    student named the two layers inside the shortcut."""
    state = {k: v for k, v in block.state_dict().items() if not k.startswith("shortcut.")}
    shortcut = getattr(block, "shortcut", None)
    if shortcut is not None:
        layers = [m for m in shortcut.modules() if isinstance(m, (nn.Conv2d, nn.BatchNorm2d))]
        if [type(m) for m in layers] == [nn.Conv2d, nn.BatchNorm2d]:
            for index, layer in enumerate(layers):
                for name, value in layer.state_dict().items():
                    state[f"downsample.{index}.{name}"] = value
        else:
            state.update(
                {
                    k.replace("shortcut.", "downsample."): v
                    for k, v in block.state_dict().items()
                    if k.startswith("shortcut.")
                }
            )
    return state


def check_basic_block(block_class: type[nn.Module]) -> Report:
    """Check ``block_class(in_channels, out_channels, stride=1)``, ResNet18's basic
    block: conv3x3(stride)-BN-ReLU-conv3x3-BN, plus a shortcut that is the identity
    when the shapes match and a 1x1 convolution with the stride followed by BN when
    they do not, then ReLU *after* the addition. Its parameters are loaded into
    torchvision's ``BasicBlock`` and the two are compared, in training and eval mode,
    for the three cases of ResNet18, (64, 64, 1), (64, 128, 2), (128, 128, 1), and the
    two where only one of channels and stride changes, (64, 128, 1) and (64, 64, 2)."""

    def case(in_channels: int, out_channels: int, stride: int):
        def check() -> str | None:
            torch.manual_seed(0)
            block = block_class(in_channels, out_channels, stride)
            if block is None or not isinstance(block, nn.Module):
                return "the class must build an nn.Module (write __init__ and forward)"
            missing = [n for n in BLOCK_NAMES[:4] if not hasattr(block, n)]
            if len(missing) == 4:
                return (
                    "not written yet: build the layers conv1, bn1, conv2, bn2 and shortcut "
                    "in __init__, then write forward"
                )
            if missing:
                return f"name the layers {', '.join(BLOCK_NAMES)}; missing: {missing}"
            convs = [block.conv1, block.conv2]
            if any(getattr(c, "bias", None) is not None for c in convs):
                return "a convolution followed by BN needs no bias: bias=False"
            where = f"({in_channels} -> {out_channels} channels, stride {stride})"
            changed = [
                what
                for what, changes in (
                    ("the channels", in_channels != out_channels),
                    ("the stride", stride != 1),
                )
                if changes
            ]
            projects = bool(changed)
            shortcut = getattr(block, "shortcut", None)
            params = sum(p.numel() for p in shortcut.parameters()) if shortcut else 0
            if projects and params == 0:
                return (
                    f"{where}: {' and '.join(changed)} change, so the shortcut must "
                    "project: nn.Sequential(nn.Conv2d(in, out, 1, stride, bias=False), "
                    "nn.BatchNorm2d(out)), whenever stride != 1 or the channels change"
                )
            if not projects and params:
                return (
                    f"{where}: when the shapes match the shortcut is the identity (no parameters)"
                )
            if projects:
                problem = _shortcut_problem(shortcut, stride)
                if problem is not None:
                    return f"{where}: {problem}"
            reference = _torchvision_block(in_channels, out_channels, stride)
            ours = _as_torchvision_names(block)
            try:
                reference.load_state_dict(ours)
            except RuntimeError as error:
                first = str(error).splitlines()[1] if "\n" in str(error) else str(error)
                first = first.strip().replace("downsample.", "shortcut.")
                return f"{where}: the layers' shapes differ from ResNet18's block: {first}"
            x = torch.randn(2, in_channels, 16, 16)
            for training in (True, False):
                block.train(training)
                reference.train(training)
                mode = "training" if training else "eval"
                wrong = _wrong_blocks(reference, x, stride) if training else {}
                got, want = block(x), reference(x)
                shapes_match = isinstance(got, torch.Tensor) and got.shape == want.shape
                if shapes_match and (got < 0).any():
                    return "the output has negative values: apply the last ReLU after the addition"
                problem = compare(got, want, f"the output {where}, {mode} mode", atol=1e-4)
                if problem is not None:
                    if shapes_match:
                        for mistake, output in wrong.items():
                            if torch.allclose(got, output, atol=1e-4):
                                return f"{where}: {mistake}"
                    return problem
            return None

        return check

    return run_checks(
        "basic block",
        [
            ("identity shortcut (64 -> 64)", case(64, 64, 1)),
            ("projection (64 -> 128, stride 2)", case(64, 128, 2)),
            ("identity shortcut (128 -> 128)", case(128, 128, 1)),
            ("projection for the channels only (64 -> 128, stride 1)", case(64, 128, 1)),
            ("projection for the stride only (64 -> 64, stride 2)", case(64, 64, 2)),
        ],
    )
