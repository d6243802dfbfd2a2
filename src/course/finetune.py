"""Fine-tuning a pretrained ResNet18: a new head, a frozen or trainable backbone (chapter 3).

The slides' recipe for the Asian-hornet task (1042 presence, 1844 absence
photos: far too few to train a deep CNN from scratch):

1. take a foundation model — ResNet18 pretrained on ImageNet-1k;
2. normalise the images with ImageNet's mean and std (a module at the front
   of the model, so everything else stays in pixel space);
3. replace the 1000 x 512 FC by a new 2 x 512 FC;
4. train (a) only the new head, the backbone frozen, or (b) the whole network
   with a smaller learning rate for the backbone; compare with (c) the same
   network trained from scratch.

Without a network connection the ImageNet weights cannot be downloaded; then
:func:`pretrained_resnet18` pretrains ResNet18 on a synthetic source task (see
``course.data.hornets.make_insect_source_task``) once and caches it, so the
comparison still runs and still teaches the same thing.

Used in chapters 3 and 4.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader
from torchvision.ops.misc import FrozenBatchNorm2d

from course.data import IMAGENET_MEAN, IMAGENET_STD, Normalize, data_root
from course.data.hornets import (
    DISTRACTORS,
    ImageTensorDataset,
    load_hornet_images,
    make_insect_source_task,
    make_synthetic_hornets,
    stratified_split,
)
from course.models.resnet import ResNet18, imagenet_weights_path, resnet18
from course.train import fit, load_checkpoint, save_checkpoint
from course.utils import get_device


def replace_head(model: ResNet18, num_classes: int = 2) -> ResNet18:
    """Replace the final FC (1000 x 512 for ImageNet) by a new, randomly initialised
    ``num_classes`` x 512 one. Returns the same model."""
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    return model


def _freeze_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm2d by torchvision's FrozenBatchNorm2d (fixed statistics)."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
            frozen.weight.copy_(child.weight.detach())
            frozen.bias.copy_(child.bias.detach())
            frozen.running_mean.copy_(child.running_mean)
            frozen.running_var.copy_(child.running_var)
            setattr(module, name, frozen)
        else:
            _freeze_batchnorm(child)
    return module


@torch.no_grad()
def freeze_backbone(model: ResNet18) -> ResNet18:
    """Make only ``model.fc`` trainable.

    The backbone's weights get ``requires_grad=False`` and its BN layers
    become ``FrozenBatchNorm2d``: otherwise, in training mode, BN would keep
    normalising with the new data's batch statistics and updating its running
    statistics — the "frozen" backbone would still change.
    """
    _freeze_batchnorm(model)
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith("fc."))
    return model


def param_groups(model: ResNet18, head_lr: float, backbone_lr: float) -> list[dict]:
    """Optimizer parameter groups: the new head at ``head_lr``, the backbone at ``backbone_lr``.

    Fine-tuning (b) uses a smaller lr for the pretrained layers, so that the
    large gradients of the random head do not wreck them in the first steps.
    """
    head = list(model.fc.parameters())
    head_ids = {id(p) for p in head}
    backbone = [p for p in model.parameters() if id(p) not in head_ids and p.requires_grad]
    return [{"params": head, "lr": head_lr}, {"params": backbone, "lr": backbone_lr}]


def with_imagenet_normalization(net: nn.Module) -> nn.Sequential:
    """``nn.Sequential(Normalize(ImageNet mean, std), net)``: the model takes [0, 1] images."""
    return nn.Sequential(Normalize(IMAGENET_MEAN, IMAGENET_STD), net)


def cache_dir() -> Path:
    """Where pretrained weights produced by the course are kept: ``$COURSE_CACHE`` or
    ``~/.cache/course``."""
    return Path(os.environ.get("COURSE_CACHE", Path.home() / ".cache" / "course"))


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
    path = cache_dir() / f"resnet18_insects_{image_size}px_{samples}x{epochs}_seed{seed}.pt"
    model = resnet18(num_classes=len(DISTRACTORS))
    if path.exists():
        load_checkpoint(path, model)
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
    save_checkpoint(
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
    cached; raises offline), ``"synthetic"`` (:func:`pretrain_on_synthetic`),
    or ``"auto"``: ImageNet when the weights are cached or can be
    downloaded, else synthetic.
    """
    if source not in ("auto", "imagenet", "synthetic"):
        raise ValueError(f"source must be 'auto', 'imagenet' or 'synthetic', got {source!r}")
    if source in ("auto", "imagenet"):
        try:
            return resnet18(weights="imagenet"), f"ImageNet-1k weights ({imagenet_weights_path()})"
        except (RuntimeError, OSError) as error:
            if source == "imagenet":
                raise
            reason = str(error).splitlines()[0]
    else:
        reason = "synthetic source requested"
    model = pretrain_on_synthetic(image_size, samples, epochs, device=device, progress=progress)
    return model, (
        f"ImageNet weights unavailable ({reason}); using a ResNet18 pretrained on "
        f"the synthetic insect task ({samples} images, {epochs} epochs, cached in "
        f"{cache_dir()})"
    )


# ---------------------------------------------------------------------------
# Metrics for imbalanced classes
# ---------------------------------------------------------------------------


def confusion_matrix(y_true: torch.Tensor, y_pred: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(num_classes, num_classes) counts; row = true class, column = predicted class."""
    index = torch.as_tensor(y_true).long() * num_classes + torch.as_tensor(y_pred).long()
    return torch.bincount(index, minlength=num_classes**2).reshape(num_classes, num_classes)


def per_class_recall(cm: torch.Tensor) -> torch.Tensor:
    """Recall of every class: diagonal / row sums (NaN for a class without samples)."""
    return cm.diag().double() / cm.sum(1).double()


def balanced_accuracy(y_true: torch.Tensor, y_pred: torch.Tensor, num_classes: int = 2) -> float:
    """Mean per-class recall: 0.5 for a classifier that always answers "absence",
    whereas its plain accuracy would be 1844/2886 = 0.64 on the slides' data."""
    recall = per_class_recall(confusion_matrix(y_true, y_pred, num_classes))
    return float(recall[~recall.isnan()].mean())


# ---------------------------------------------------------------------------
# The data and the three variants, as chapters 3 and 4 use them
# ---------------------------------------------------------------------------


@dataclass
class HornetData:
    """Images in memory (uint8, N x 3 x S x S), labels, paths, split indices and origin."""

    images: torch.Tensor
    labels: torch.Tensor
    paths: list[Path]
    train: list[int]
    val: list[int]
    test: list[int]
    origin: str

    def loader(
        self, split: str, batch_size: int, transform=None, shuffle: bool = False, seed: int = 0
    ) -> DataLoader:
        """A DataLoader over one split ("train", "val" or "test") of float images in [0, 1]."""
        idx = getattr(self, split)
        data = ImageTensorDataset(self.images[idx], self.labels[idx], transform)
        return DataLoader(
            data,
            batch_size=batch_size,
            shuffle=shuffle,
            drop_last=shuffle,
            generator=torch.Generator().manual_seed(seed),
        )


def load_hornet_data(
    image_size: int,
    synthetic_scale: float = 1.0,
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
    seed: int = 0,
    progress: bool = True,
) -> HornetData:
    """The real photos under ``DATA/hornets`` when that folder exists, else the synthetic set.

    The synthetic set (``synthetic_scale`` x the slides' counts) is generated
    once into ``DATA/synthetic/scale-<s>/hornets`` and reused; it is drawn at
    twice ``image_size`` (at least 64 px) and downsampled when read.
    """
    real = data_root() / "hornets"
    if real.exists():
        folder, origin = real, f"real photos from {real}"
    else:
        root = data_root() / "synthetic" / f"scale-{synthetic_scale:g}-{max(64, 2 * image_size)}px"
        folder = make_synthetic_hornets(
            root, scale=synthetic_scale, size=max(64, 2 * image_size), progress=progress
        )
        origin = f"synthetic photos generated in {folder} (no folder {real})"
    images, labels, paths = load_hornet_images(folder, image_size, progress=progress)
    train, val, test = stratified_split(labels, fractions, seed)
    return HornetData(images, labels, paths, train, val, test, origin)


def class_weighted_loss(labels: torch.Tensor, device: torch.device | str) -> Callable:
    """Cross-entropy weighted by inverse class frequency, so that the 1042 presence
    photos count as much as the 1844 absence ones."""
    counts = torch.bincount(torch.as_tensor(labels), minlength=2).double()
    weight = (counts.sum() / (len(counts) * counts)).float().to(device)
    return functools.partial(nn.functional.cross_entropy, weight=weight)


@torch.no_grad()
def extract_features(
    net: ResNet18, loader: DataLoader, device: torch.device | str
) -> tuple[torch.Tensor, torch.Tensor]:
    """The 512-d pooled features of a (frozen) ResNet18 for every image: (N, 512), labels (N,).

    A frozen backbone computes the same features at every epoch, so (without
    augmentation) they are computed once and only the head is trained on
    them — which makes variant (a) about 50x cheaper than (b) and (c).
    """
    model = with_imagenet_normalization(net).to(device).eval()
    feats, labels = [], []
    for x, y in loader:
        x = model[0](x.to(device))
        feats.append(torch.flatten(net.avgpool(net.features(x)), 1).cpu())
        labels.append(y)
    return torch.cat(feats), torch.cat(labels)


def train_linear_probe(
    net: ResNet18,
    data: HornetData,
    epochs: int,
    lr: float = 3e-3,
    device: torch.device | str | None = None,
    progress: bool = True,
):
    """Variant (a): freeze ``net``'s backbone and train its ``fc`` on the extracted features.

    Returns the :class:`course.train.History` of the head; ``net`` (frozen
    backbone + trained head) is ready to classify images.
    """
    from torch.utils.data import TensorDataset

    device = torch.device(device) if device is not None else get_device()
    freeze_backbone(net)
    train_f = TensorDataset(*extract_features(net, data.loader("train", 256), device))
    val_f = TensorDataset(*extract_features(net, data.loader("val", 256), device))
    optimizer = torch.optim.AdamW(net.fc.parameters(), lr=lr, weight_decay=1e-3)
    return fit(
        net.fc,
        DataLoader(
            train_f, batch_size=64, shuffle=True, generator=torch.Generator().manual_seed(0)
        ),
        DataLoader(val_f, batch_size=512),
        epochs=epochs,
        optimizer=optimizer,
        loss_fn=class_weighted_loss(data.labels[data.train], device),
        device=device,
        progress=progress,
    )


def cached_hornet_classifier(
    image_size: int,
    synthetic_scale: float,
    pretrain_samples: int,
    pretrain_epochs: int,
    probe_epochs: int = 30,
    device: torch.device | str | None = None,
    progress: bool = True,
) -> tuple[nn.Sequential, HornetData]:
    """Chapter 3's frozen-backbone hornet classifier, trained once and cached.

    ``Normalize -> ResNet18 (pretrained backbone, linear-probe head)``, taking
    [0, 1] images, in eval mode, with its data. Used by chapter 4 to attack
    the classifier of chapter 3 without running chapter 3's notebook.
    """
    data = load_hornet_data(image_size, synthetic_scale, progress=progress)
    source = "real" if data.origin.startswith("real") else f"synthetic{synthetic_scale:g}"
    path = cache_dir() / (
        f"hornet_probe_{source}_{image_size}px_{pretrain_samples}x"
        f"{pretrain_epochs}_{probe_epochs}.pt"
    )
    net, _ = pretrained_resnet18(
        "auto", image_size, pretrain_samples, pretrain_epochs, device=device, progress=progress
    )
    replace_head(net, 2)
    if path.exists():
        freeze_backbone(net)
        load_checkpoint(path, net)
    else:
        train_linear_probe(net, data, probe_epochs, device=device, progress=progress)
        save_checkpoint(path, {"model": net.state_dict()})
    return with_imagenet_normalization(net).cpu().eval(), data
