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
included) loads with ``strict=True`` and gives identical outputs.

Used in chapters 2, 3, 4, 5, 6 and 7.
"""

from __future__ import annotations

import urllib.parse
import urllib.request
from pathlib import Path

import torch
from torch import nn
from torchvision.models import ResNet18_Weights

from course.config import weights_dir
from course.runstate import check_state_dict_compatible


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


class WeightsUnavailableError(RuntimeError):
    """The ImageNet weights are not cached and cannot be downloaded (no network)."""


def _imagenet_weights():
    return ResNet18_Weights.IMAGENET1K_V1


def imagenet_weights_path(weights=None) -> Path:
    """Where torchvision caches ``weights`` (default: ResNet18's IMAGENET1K_V1):
    ``<torch.hub.get_dir()>/checkpoints/<file name of the URL>``."""
    weights = weights if weights is not None else _imagenet_weights()
    return weights_dir() / Path(urllib.parse.urlparse(weights.url).path).name


def _unreachable(url: str, timeout: float = 5.0) -> str | None:
    """None when ``url`` answers an HTTP HEAD request, else the reason it does not.

    Goes through ``urllib`` like torch.hub's download, so HTTP(S)_PROXY is honoured.
    """
    try:
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout).close()
        return None
    except (OSError, ValueError) as error:  # URLError, HTTPError and timeouts are OSErrors
        return f"{type(error).__name__}: {error}"


def load_imagenet_state_dict(weights=None, progress: bool = True) -> dict[str, torch.Tensor]:
    """torchvision's ResNet18 ImageNet weights (``weights``, default IMAGENET1K_V1), from
    torchvision's cache or downloaded into it.

    The download is torchvision's own (``Weights.get_state_dict``): it creates the
    cache folder, shows a progress bar and checks the SHA-256 prefix that the file
    name carries, keeping nothing when it does not match. Loading uses
    ``weights_only=True``.

    Raises:
        WeightsUnavailableError: not cached and the server cannot be reached; the
            message says where to put the file.
        RuntimeError: the download or the cached file is corrupt; the message names
            the file and says what to delete.
    """
    weights = weights if weights is not None else _imagenet_weights()
    path = imagenet_weights_path(weights)
    if not path.is_file():
        reason = _unreachable(weights.url)
        if reason is not None:
            raise WeightsUnavailableError(
                f"The ImageNet weights of ResNet18 are not cached and {weights.url} cannot "
                f"be reached ({reason}).\n  Expected file: {path}\n"
                "  Download that URL on a machine with internet access and copy the file "
                "there (or set TORCH_HOME), or build the model with weights=None."
            )
        try:
            return weights.get_state_dict(progress=progress, check_hash=True, weights_only=True)
        except RuntimeError as error:
            if "invalid hash value" not in str(error):
                raise
            raise RuntimeError(
                f"The download of {weights.url} is corrupt ({error}); torchvision kept "
                f"nothing at {path}. Run the cell again; if a partial file {path}.*.partial "
                "is left in that folder, delete it first."
            ) from error
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise RuntimeError(
            f"The cached ImageNet weights {path} cannot be read ({type(error).__name__}: "
            f"{error}). The file is corrupt or truncated: delete it and run again to "
            "download it afresh."
        ) from error


def imagenet_weights_available() -> bool:
    """True when the ImageNet weights are cached or their server can be reached."""
    weights = _imagenet_weights()
    return imagenet_weights_path(weights).is_file() or _unreachable(weights.url) is None


def resnet18(num_classes: int = 1000, weights: str | None = None) -> ResNet18:
    """ResNet18 with torchvision's state_dict keys and shapes.

    Args:
        num_classes: size of the FC layer. With ``weights="imagenet"`` and a
            number other than 1000, the backbone gets the ImageNet weights and
            the new FC (num_classes x 512) keeps its random initialisation —
            the starting point of fine-tuning (chapter 3).
        weights: ``None`` (random) or ``"imagenet"`` (torchvision's IMAGENET1K_V1).
    """
    if weights not in (None, "imagenet"):
        raise ValueError(f"weights must be None or 'imagenet', got {weights!r}")
    model = ResNet18(num_classes)
    if weights == "imagenet":
        state = load_imagenet_state_dict()
        if num_classes != 1000:
            state = {k: v for k, v in state.items() if not k.startswith("fc.")}
            state.update({f"fc.{k}": v for k, v in model.fc.state_dict().items()})
        check_state_dict_compatible(model, state, f"the ImageNet weights {imagenet_weights_path()}")
        model.load_state_dict(state, strict=True)
    return model
