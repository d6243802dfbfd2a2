"""Deep plain and residual CNNs whose depth is a parameter.

The experiments of chapters 1 (BN at large learning rates), 2 (vanishing
gradients in plain vs residual nets) and 5 (memory of deep chains) train the
same family of networks::

    stem: 3x3 conv (3 -> width)
    depth x block, each either
        plain:     x -> relu(norm(conv3x3(x)))
        residual:  x -> relu(x + norm(conv3x3(relu(norm(conv3x3(x))))))  (ResBlock A)
    global average pool -> linear

A plain net of depth d has d + 1 conv layers; a residual one 2d + 1. The
resolution is halved (stride-2 conv) after a third and two thirds of the
blocks to keep the cost low.

Used in chapter 1 (chapter 2 builds them with ``course.residual.plain_and_residual``).
"""

from __future__ import annotations

import torch
from torch import nn


class PlainBlock(nn.Sequential):
    """conv3x3 -> (BN) -> ReLU; ``stride=2`` halves the resolution."""

    def __init__(self, channels: int, batch_norm: bool = True, stride: int = 1) -> None:
        super().__init__(
            nn.Conv2d(channels, channels, 3, stride=stride, padding=1, bias=not batch_norm),
            nn.BatchNorm2d(channels) if batch_norm else nn.Identity(),
            nn.ReLU(inplace=True),
        )


class ResidualBlock(nn.Module):
    """x + f(x) with f = conv -> (BN) -> ReLU -> conv -> (BN), then ReLU.

    With ``stride=2`` the shortcut is a 1x1 stride-2 conv, as in ResBlock B.
    """

    def __init__(self, channels: int, batch_norm: bool = True, stride: int = 1) -> None:
        super().__init__()

        def norm() -> nn.Module:
            return nn.BatchNorm2d(channels) if batch_norm else nn.Identity()

        self.f = nn.Sequential(
            nn.Conv2d(channels, channels, 3, stride=stride, padding=1, bias=not batch_norm),
            norm(),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1, bias=not batch_norm),
            norm(),
        )
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1:
            self.shortcut = nn.Sequential(
                nn.Conv2d(channels, channels, 1, stride=stride, bias=not batch_norm), norm()
            )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.shortcut(x) + self.f(x))


class DeepCNN(nn.Module):
    """``depth`` plain or residual blocks of ``width`` channels, input (N, 3, H, W).

    Attributes:
        blocks: the ``nn.Sequential`` of blocks, so that chapters can hook
            or checkpoint them one by one.
    """

    def __init__(
        self,
        depth: int,
        width: int = 16,
        num_classes: int = 4,
        residual: bool = False,
        batch_norm: bool = True,
    ) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self.depth, self.residual = depth, residual
        self.stem = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1, bias=not batch_norm),
            nn.BatchNorm2d(width) if batch_norm else nn.Identity(),
            nn.ReLU(inplace=True),
        )
        block = ResidualBlock if residual else PlainBlock
        downsample_at = {depth // 3, (2 * depth) // 3} - {0}
        self.blocks = nn.Sequential(
            *(block(width, batch_norm, stride=2 if i in downsample_at else 1) for i in range(depth))
        )
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


INITS = ("default", "kaiming", "small")


def init_conv_weights(model: nn.Module, scheme: str = "default") -> nn.Module:
    """Re-initialise every conv and linear weight of ``model`` (biases to zero).

    - ``"default"``: PyTorch's own (Kaiming-uniform with a = sqrt(5), i.e. a
      variance of 1 / (3 fan_in): too small to keep the signal alive through
      many ReLU layers without normalisation);
    - ``"kaiming"``: He et al.'s N(0, 2 / fan_in), which keeps the variance
      of the activations constant through ReLU layers;
    - ``"small"``: N(0, 0.01^2), a badly scaled initialisation.

    """
    if scheme not in INITS:
        raise ValueError(f"unknown init {scheme!r}; choose one of {INITS}")
    if scheme == "default":
        return model
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            if scheme == "kaiming":
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            else:
                nn.init.normal_(m.weight, 0.0, 0.01)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return model
