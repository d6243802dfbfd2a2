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
from collections.abc import Callable

import torch
from torch import nn
from torch.utils.data import DataLoader
from torchvision.ops.misc import FrozenBatchNorm2d

from course.config import cache_dir, data_paths, pick
from course.data import IMAGENET_MEAN, IMAGENET_STD, Normalize
from course.data.hornets import (
    DISTRACTORS,
    GENERATOR_VERSION,
    HornetData,
    load_hornet_data,
    make_insect_source_task,
)
from course.models.resnet import (
    ResNet18,
    WeightsUnavailableError,
    imagenet_weights_available,
    imagenet_weights_path,
    resnet18,
)
from course.runstate import load_state, save_state
from course.train import fit
from course.utils import get_device

#: Bump when the synthetic pretraining or the cached classifiers change: the cache
#: files carry it in their names, so old files are never served again.
CACHE_VERSION = 2


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


def hornet_image_size(imagenet_weights: bool, real_photos: bool) -> int:
    """The image side for chapters 3 and 4, which follows where weights and data come from.

    ImageNet weights were trained at 224 px, and photographs carry detail at that
    size: with either, 224 px on the gpu profile, 112 px on a CPU (the largest
    size whose three trainings fit the cpu budget) and 64 px in CI. The
    synthetic stand-ins (weights pretrained on drawn insects, drawn photos) keep
    their small sizes: 48 px (32 in CI), where their pictures are already legible.
    """
    if imagenet_weights or real_photos:
        return pick(smoke=64, cpu=112, gpu=224)
    return pick(smoke=32, cpu=48, gpu=48)


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
# The three variants, as chapters 3 and 4 use them
# ---------------------------------------------------------------------------


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
    synthetic_scale: float,
    pretrain_samples: int,
    pretrain_epochs: int,
    probe_epochs: int = 30,
    max_images: int | None = None,
    device: torch.device | str | None = None,
    progress: bool = True,
) -> tuple[nn.Sequential, HornetData, str]:
    """Chapter 3's frozen-backbone hornet classifier, trained once and cached.

    Returns ``Normalize -> ResNet18 (pretrained backbone, linear-probe head)``,
    taking [0, 1] images, in eval mode; its data; and a sentence saying where
    the weights and the data come from. The weights and the image size follow
    chapter 3's rules (:func:`pretrained_resnet18`, :func:`hornet_image_size`).
    The cache file's name carries the weights' origin and a fingerprint of the
    data (file names, labels, image size), so a classifier trained on other
    weights or other images is never reused. Used by chapter 4 to attack the
    classifier of chapter 3 without running chapter 3's notebook.
    """
    imagenet = imagenet_weights_available()
    real_photos = data_paths()["hornets"].is_dir()
    data = load_hornet_data(
        hornet_image_size(imagenet, real_photos),
        synthetic_scale,
        progress=progress,
        max_images=max_images,
    )
    net, weights_origin = pretrained_resnet18(
        "imagenet" if imagenet else "synthetic",
        hornet_image_size(False, False),
        pretrain_samples,
        pretrain_epochs,
        device=device,
        progress=progress,
    )
    weights_key = "imagenet" if imagenet else f"insects{pretrain_samples}x{pretrain_epochs}"
    path = cache_dir() / (
        f"hornet_probe_v{CACHE_VERSION}_{weights_key}_{data.fingerprint()}_{probe_epochs}ep.pt"
    )
    replace_head(net, 2)
    if path.exists():
        freeze_backbone(net)
        load_state(path, net)
        how = f"loaded from {path}"
    else:
        train_linear_probe(net, data, probe_epochs, device=device, progress=progress)
        save_state(path, {"model": net.state_dict()})
        how = f"trained and saved to {path}"
    description = (
        f"weights: {weights_origin}\ndata: {data.origin}\n"
        f"linear-probe head ({probe_epochs} epochs) {how}"
    )
    return with_imagenet_normalization(net).cpu().eval(), data, description
