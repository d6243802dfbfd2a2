"""ResNet18 as the slides draw it, from ResBlock A and ResBlock B (chapter 2).

Shapes for a 3x224x224 image (the slides' table)::

    stem   7x7 conv/2 (no bias) -> BN -> ReLU      64 x 112 x 112
           3x3 max-pool/2                          64 x  56 x  56
    layer1 ResBlock A, ResBlock A                  64 x  56 x  56
    layer2 ResBlock B, ResBlock A                 128 x  28 x  28
    layer3 ResBlock B, ResBlock A                 256 x  14 x  14
    layer4 ResBlock B, ResBlock A                 512 x   7 x   7
    head   7x7 average pool -> FC                 512 -> 1000

The attribute names are torchvision's, so its state_dict (ImageNet weights
included) loads with ``strict=True`` and gives identical outputs. This module
holds the architecture only; the ImageNet weights (download, cache, checks)
are ``course.weights``'s.

Used in chapters 2, 3, 5 and 7.
"""

from __future__ import annotations

import torch
from torch import nn


class ResBlockA(nn.Module):
    """Keeps resolution and channels: relu(x + bn2(conv2(relu(bn1(conv1(x)))))).

    Input and output (N, channels, H, W).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(x + out)


class ResBlockB(nn.Module):
    """Halves the resolution and doubles the channels.

    Main path: 3x3 stride-2 conv -> BN -> ReLU -> 3x3 conv -> BN; the shortcut,
    which must match the new shape, is a 1x1 stride-2 conv + BN
    (``downsample``). Input (N, C, H, W), output (N, 2C, H/2, W/2).
    """

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        out_channels = 2 * in_channels
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.downsample = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 1, stride=2, bias=False),
            nn.BatchNorm2d(out_channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(self.downsample(x) + out)


class ResNet18(nn.Module):
    """Stem, four stages of two blocks, global average pool, FC. Input (N, 3, H, W)."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = nn.Sequential(ResBlockA(64), ResBlockA(64))
        self.layer2 = nn.Sequential(ResBlockB(64), ResBlockA(128))
        self.layer3 = nn.Sequential(ResBlockB(128), ResBlockA(256))
        self.layer4 = nn.Sequential(ResBlockB(256), ResBlockA(512))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes)
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def features(self, x: torch.Tensor, stages: int = 4) -> torch.Tensor:
        """The backbone used by detection heads: the stem, then the first ``stages`` stages.

        (N, 3, H, W) -> (N, 512, H/32, W/32) with all four stages; with 3 or 2,
        (N, 256, H/16, W/16) or (N, 128, H/8, W/8): finer maps and less compute,
        which small images on a CPU need (chapter 7).
        """
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4)[:stages]:
            x = layer(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.avgpool(self.features(x)), 1))


def resnet18(num_classes: int = 1000) -> ResNet18:
    """A randomly initialised ResNet18 with torchvision's state_dict keys and shapes and a
    ``num_classes`` x 512 FC. For the ImageNet weights, ``course.weights.imagenet_resnet18``."""
    return ResNet18(num_classes)
