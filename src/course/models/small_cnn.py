"""A small VGG-style CNN: the first network the course trains.

Used in chapters 0, 4 and 6.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class SmallCNN(nn.Module):
    """Blocks of [3x3 conv -> (BatchNorm) -> ReLU -> 2x2 max-pool], then a linear classifier.

    Input (N, in_channels, H, W); output logits (N, num_classes). Each block
    halves the resolution; global average pooling makes the head independent
    of the image size. With ``batch_norm=True`` the convolutions have no bias
    (BN's beta plays that role, chapter 1).
    """

    def __init__(
        self,
        num_classes: int = 4,
        channels: Sequence[int] = (16, 32, 64, 64),
        in_channels: int = 3,
        batch_norm: bool = True,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        previous = in_channels
        for width in channels:
            layers.append(nn.Conv2d(previous, width, 3, padding=1, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(width))
            layers += [nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            previous = width
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(previous, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))
