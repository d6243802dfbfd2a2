"""Where a pretrained ResNet18 comes from, and how to put a new head on it.

Chapters 3 (fine-tuning), 4 (attacking the fine-tuned classifier) and 7
(detection backbones) start from a pretrained ResNet18:

- :func:`pretrained_resnet18` gives torchvision's ImageNet weights when they
  are cached or can be downloaded, else (offline) a ResNet18 pretrained once on
  a synthetic source task (``course.data.hornets.make_insect_source_task``,
  cached under ``$COURSE_CACHE``), and says which;
- :func:`replace_head` swaps the 1000-class FC for a new one;
- :func:`freeze_backbone` leaves only that head trainable;
- :func:`freeze_batchnorm` fixes the BN statistics for fine-tuning;
- :func:`with_imagenet_normalization` puts ImageNet's normalisation in front,
  so the model takes [0, 1] images.

Used in chapters 3 and 4.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader
from torchvision.ops.misc import FrozenBatchNorm2d

from course.config import cache_dir, run_seed
from course.data import IMAGENET_MEAN, IMAGENET_STD, Normalize
from course.data.hornets import DISTRACTORS, GENERATOR_VERSION, make_insect_source_task
from course.models.resnet import ResNet18, WeightsUnavailableError, imagenet_weights_path, resnet18
from course.runstate import load_state, save_state
from course.train import fit

#: Bump when the synthetic pretraining or the classifiers cached from it change: the
#: cache files carry it in their names, so old files are never served again.
CACHE_VERSION = 2


def replace_head(model: ResNet18, num_classes: int = 2) -> ResNet18:
    """Replace the final FC (1000 x 512 for ImageNet) by a new, randomly initialised
    ``num_classes`` x 512 one. Returns the same model."""
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    return model


def freeze_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm2d of ``module`` by torchvision's FrozenBatchNorm2d, in place.

    The pretrained statistics (and BN's scale and shift) are then fixed, in
    training mode too: fine-tuning on a few hundred images with small batches
    would otherwise replace running statistics estimated on a large data set
    by noisy ones (chapter 1). torchvision's detection models fine-tune this way.
    """
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
            frozen.weight.copy_(child.weight.detach())
            frozen.bias.copy_(child.bias.detach())
            frozen.running_mean.copy_(child.running_mean)
            frozen.running_var.copy_(child.running_var)
            setattr(module, name, frozen)
        else:
            freeze_batchnorm(child)
    return module


@torch.no_grad()
def freeze_backbone(model: ResNet18) -> ResNet18:
    """Make only ``model.fc`` trainable.

    The backbone's weights get ``requires_grad=False`` and its BN layers
    become ``FrozenBatchNorm2d``: otherwise, in training mode, BN would keep
    normalising with the new data's batch statistics and updating its running
    statistics — the "frozen" backbone would still change.
    """
    freeze_batchnorm(model)
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith("fc."))
    return model


def with_imagenet_normalization(net: nn.Module) -> nn.Sequential:
    """``nn.Sequential(Normalize(ImageNet mean, std), net)``: the model takes [0, 1] images."""
    return nn.Sequential(Normalize(IMAGENET_MEAN, IMAGENET_STD), net)


def pretrain_on_synthetic(
    image_size: int,
    samples: int,
    epochs: int,
    device: torch.device | str | None = None,
    seed: int = 0,
    progress: bool = True,
) -> ResNet18:
    """ResNet18 trained on the synthetic insect source task; cached on disk.

    The first call trains it (``samples`` images, ``epochs`` epochs) and saves
    it atomically under :func:`cache_dir`; later calls with the same
    arguments load it (``weights_only=True``). The returned model has the
    source task's 5-class head; call :func:`replace_head`.
    """
    seed = run_seed(seed)  # COURSE_SEED: another stand-in, as another pretraining run would be
    path = cache_dir() / (
        f"resnet18_insects_v{CACHE_VERSION}.{GENERATOR_VERSION}_{image_size}px_"
        f"{samples}x{epochs}_seed{seed}.pt"
    )
    model = resnet18(num_classes=len(DISTRACTORS))
    if path.exists():
        load_state(path, model)
        return model
    torch.manual_seed(seed)
    data = make_insect_source_task(samples, image_size, seed=seed)
    loader = DataLoader(
        data,
        batch_size=64,
        shuffle=True,
        drop_last=True,
        generator=torch.Generator().manual_seed(seed),
    )
    net = with_imagenet_normalization(model)
    optimizer = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=2e-3, total_steps=epochs * len(loader)
    )
    fit(
        net,
        loader,
        epochs=epochs,
        optimizer=optimizer,
        scheduler=scheduler,
        device=device,
        progress=progress,
    )
    save_state(
        path, {"model": model.state_dict(), "source": "synthetic insects", "image_size": image_size}
    )
    return model.cpu()


def pretrained_resnet18(
    source: str = "auto",
    image_size: int = 64,
    samples: int = 3000,
    epochs: int = 3,
    device: torch.device | str | None = None,
    progress: bool = True,
) -> tuple[ResNet18, str]:
    """A pretrained ResNet18 and a sentence saying where its weights come from.

    ``source``: ``"imagenet"`` (torchvision's IMAGENET1K_V1, downloaded and
    cached; raises offline), ``"synthetic"`` (:func:`pretrain_on_synthetic` at
    ``image_size``), or ``"auto"``: ImageNet when the weights are cached or can
    be downloaded, else synthetic. Only the absence of a network leads to the
    fallback: a corrupt file or a failed download raises, since the user has
    something to fix.
    """
    if source not in ("auto", "imagenet", "synthetic"):
        raise ValueError(f"source must be 'auto', 'imagenet' or 'synthetic', got {source!r}")
    if source in ("auto", "imagenet"):
        try:
            model = resnet18(weights="imagenet")
            return model, f"ImageNet-1k weights (torchvision, {imagenet_weights_path()})"
        except WeightsUnavailableError as error:
            if source == "imagenet":
                raise
            reason = str(error).splitlines()[0]
    else:
        reason = "synthetic source requested"
    model = pretrain_on_synthetic(image_size, samples, epochs, device=device, progress=progress)
    return model, (
        f"ImageNet weights unavailable ({reason}); using a ResNet18 pretrained on "
        f"the synthetic insect task ({samples} images at {image_size} px, {epochs} epochs, "
        f"cached in {cache_dir()})"
    )
