"""Residual connections and the gradients they carry (chapter 2).

A residual block computes x1 = x0 + f(x0), so that

    dx1/dx0 = I + df/dx0:

the identity term carries the gradient back to the first layers whatever
df/dx0 does, where a plain block (x1 = f(x0)) multiplies it by df/dx0 at
every layer. :func:`block_gradient_norms` measures that gradient, block by
block, in the deep plain and residual networks of ``course.models.DeepCNN``;
:func:`shape_table` runs ResNet18 (``course.models.resnet18``) on an image
and lists the shape after each stage: the slides' table.

Used in chapter 2.
"""

from __future__ import annotations

import torch
from torch import nn

from course.models.deep import DeepCNN


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
