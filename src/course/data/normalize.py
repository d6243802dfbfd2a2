"""The normalisation module placed at the front of every model.

Used in chapters 3 and 4.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Normalize(nn.Module):
    """Per-channel ``(x - mean) / std`` for images in [0, 1] of shape (N, C, H, W).

    ``mean`` and ``std`` are non-persistent buffers: they follow the model to
    its device but stay out of its ``state_dict``, so
    ``nn.Sequential(Normalize(), resnet18())`` saves the same keys (prefixed
    with ``1.``) as the bare network. Defaults are ImageNet's statistics.
    """

    def __init__(
        self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
    ) -> None:
        super().__init__()
        if len(mean) != len(std):
            raise ValueError(f"mean has {len(mean)} channels but std has {len(std)}")
        if any(s <= 0 for s in std):
            raise ValueError(f"std must be positive, got {tuple(std)}")
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.mean.shape[1]:
            raise ValueError(
                f"Normalize expects images of shape (N, {self.mean.shape[1]}, H, W), "
                f"got {tuple(x.shape)}"
            )
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def extra_repr(self) -> str:
        mean = ", ".join(f"{m:.3f}" for m in self.mean.flatten().tolist())
        std = ", ".join(f"{s:.3f}" for s in self.std.flatten().tolist())
        return f"mean=({mean}), std=({std})"


def with_imagenet_normalization(net: nn.Module) -> nn.Sequential:
    """``nn.Sequential(Normalize(ImageNet mean, std), net)``: the model takes [0, 1] images.

    The pretrained ResNet18s of chapters 3, 4 and 6 expect ImageNet-normalised inputs;
    with this module in front, attacks, plots and augmentations stay in pixel space.
    """
    return nn.Sequential(Normalize(IMAGENET_MEAN, IMAGENET_STD), net)
