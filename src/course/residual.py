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

Used in chapter 2.
"""

from __future__ import annotations

import torch
from torch import nn

from course.config import run_seed
from course.models.deep import DeepCNN, init_conv_weights


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
