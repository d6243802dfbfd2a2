"""torchvision's ImageNet weights for ResNet18: where they are cached, whether they can
be had, and a ResNet18 that carries them.

The file is torchvision's own (``ResNet18_Weights.IMAGENET1K_V1``, ``resnet18-f37072fd.pth``
under ``<torch.hub.get_dir()>/checkpoints``), downloaded by torchvision with its hash
check. Every chapter that wants the weights asks this module; without a network,
:func:`imagenet_weights_available` says so and the chapters fall back on the stand-in
of ``course.pretrained``.

Used in chapters 3, 4, 6 and 7.
"""

from __future__ import annotations

import urllib.parse
import urllib.request
from pathlib import Path

import torch
from torchvision.models import ResNet18_Weights

from course.config import weights_dir
from course.models.resnet import ResNet18, resnet18
from course.runstate import validate_state_dict


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
                "there (or set TORCH_HOME). To go on without them: "
                "course.pretrained.pretrained_resnet18('synthetic') gives the stand-in "
                "pretrained on the synthetic task, course.models.resnet18(num_classes) a "
                "network with random weights."
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


def imagenet_resnet18(num_classes: int = 1000) -> ResNet18:
    """ResNet18 with torchvision's ImageNet weights (IMAGENET1K_V1), from the cache or
    downloaded (:func:`load_imagenet_state_dict`).

    With a ``num_classes`` other than 1000, the backbone gets the ImageNet weights
    and the new FC (num_classes x 512) keeps its random initialisation — the
    starting point of fine-tuning (chapter 3).

    Raises:
        WeightsUnavailableError: not cached and no network (see
            :func:`load_imagenet_state_dict`).
    """
    model = resnet18(num_classes)
    state = load_imagenet_state_dict()
    if num_classes != 1000:
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        state.update({f"fc.{k}": v for k, v in model.fc.state_dict().items()})
    validate_state_dict(model, state, f"the ImageNet weights {imagenet_weights_path()}")
    model.load_state_dict(state, strict=True)
    return model
