"""A pretrained ResNet18, and chapter 3's hornet classifier built on it, trained once.

Chapters 3 (fine-tuning) and 4 (attacking the fine-tuned classifier) start from a
pretrained ResNet18. :func:`pretrained_resnet18` gives torchvision's ImageNet
weights (``course.weights``) when they are cached or can be downloaded, else
(offline, as in CI) a ResNet18 pretrained once on a synthetic source task
(``course.data.hornets.make_insect_source_task``, :func:`pretrain_on_synthetic`),
and says which.

:func:`hornet_classifier` is chapter 3's variant (a), a frozen backbone and a new
2-class head trained on its features (:func:`train_linear_probe`), with chapter 3's
data, split and budget (``course.data.hornets.hornet_recipe``): chapter 3 trains
it, chapter 4 attacks the same model.

Both are trained once and reused through one cache, :func:`train_once`: a file under
``$COURSE_CACHE`` whose name carries everything the model depends on, written
atomically, loaded with ``weights_only=True``.

Used in chapters 3 and 4.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from course.config import cache_dir, data_paths, max_steps, run_seed
from course.data.hornets import (
    DISTRACTORS,
    GENERATOR_VERSION,
    HornetData,
    HornetRecipe,
    hornet_image_size,
    hornet_recipe,
    make_insect_source_task,
)
from course.data.normalize import with_imagenet_normalization
from course.models.resnet import ResNet18, resnet18
from course.models.transfer import freeze_backbone, replace_head
from course.runstate import load_state, save_state
from course.train import History, device_default_amp, fit, resolve_device
from course.weights import (
    WeightsUnavailableError,
    imagenet_resnet18,
    imagenet_weights_available,
    imagenet_weights_path,
)

#: Bump when the synthetic pretraining or the classifiers cached from it change: the
#: cache files carry it in their names, so old files are never served again.
CACHE_VERSION = 2


# ---------------------------------------------------------------------------
# Train once, reuse
# ---------------------------------------------------------------------------


def train_once(
    path: Path, model: nn.Module, train: Callable[[], Mapping[str, Any]]
) -> tuple[dict[str, Any], str]:
    """The course's one cache for models that are trained once and reused.

    When ``path`` exists, load ``model``'s weights from it; else call ``train()``,
    which trains ``model`` in place and returns plain data to keep beside the weights
    (a history, a description), and save both atomically. Returns that plain data
    and a sentence saying which happened. ``path``'s name must carry everything the
    result depends on (versions, sizes, seed, a fingerprint of the data): a file is
    never checked against its key, only found or not. Under ``$COURSE_MAX_STEPS`` (a
    rehearsal, :func:`course.config.max_steps`) the name also carries the cap, so that a
    model trained a few steps never stands in for the real one.
    """
    cap = max_steps()
    if cap is not None:
        path = path.with_name(f"{path.stem}_max{cap}steps{path.suffix}")
    if path.exists():
        state = load_state(path, model)
        return {k: v for k, v in state.items() if k != "model"}, f"loaded from {path}"
    extra = dict(train())
    save_state(path, {"model": model.state_dict(), **extra})
    return extra, f"trained and saved to {path}"


def weights_fingerprint(model: nn.Module) -> str:
    """A short digest of ``model``'s state (names, shapes, values): the key of a cache
    that depends on the weights a model starts from, wherever they came from."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(f"{name}{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:12]


# ---------------------------------------------------------------------------
# The pretrained backbone
# ---------------------------------------------------------------------------


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
    it (:func:`train_once`); later calls with the same arguments load it. The
    returned model has the source task's 5-class head; call
    ``course.models.transfer.replace_head``.
    """
    seed = run_seed(seed)  # COURSE_SEED: another stand-in, as another pretraining run would be
    path = cache_dir() / (
        f"resnet18_insects_v{CACHE_VERSION}.{GENERATOR_VERSION}_{image_size}px_"
        f"{samples}x{epochs}_seed{seed}.pt"
    )
    model = resnet18(num_classes=len(DISTRACTORS))

    def train() -> dict[str, Any]:
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
            amp=device_default_amp(resolve_device(device)),  # cached: not per COURSE_AMP
            progress=progress,
        )
        return {"source": "synthetic insects", "image_size": image_size}

    train_once(path, model, train)
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
            model = imagenet_resnet18()
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


def recipe_backbone(
    recipe: HornetRecipe, device: torch.device | str | None = None, progress: bool = True
) -> tuple[ResNet18, str]:
    """The pretrained ResNet18 of chapters 3 and 4 on this profile: ImageNet's weights
    when available, else the synthetic stand-in at the recipe's sizes."""
    return pretrained_resnet18(
        "imagenet" if imagenet_weights_available() else "synthetic",
        hornet_image_size(False, False),
        recipe.pretrain_samples,
        recipe.pretrain_epochs,
        device=device,
        progress=progress,
    )


# ---------------------------------------------------------------------------
# Chapter 3's variant (a): a head trained on the frozen backbone's features
# ---------------------------------------------------------------------------


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
    with torch.no_grad():
        for x, y in loader:
            x = model[0](x.to(device))
            feats.append(torch.flatten(net.avgpool(net.features(x)), 1).cpu())
            labels.append(y)
    return torch.cat(feats), torch.cat(labels)


def train_linear_probe(
    net: ResNet18,
    data: HornetData,
    epochs: int,
    batch_size: int = 64,
    lr: float = 1e-2,
    device: torch.device | str | None = None,
    progress: bool = True,
    keep_best: str | None = "val_loss",
    amp: bool | str | None = None,
) -> History:
    """Variant (a): freeze ``net``'s backbone and train its ``fc`` on the extracted features.

    ``epochs`` epochs of ``batch_size`` features: as many optimizer steps as
    ``fit`` makes on the images with the same two numbers, so that the three
    variants of chapter 3 get the same budget. ``keep_best`` is ``fit``'s.
    Returns the :class:`course.train.History` of the head; ``net`` (frozen
    backbone + trained head) is ready to classify images. ``amp`` is ``fit``'s.
    """
    device = resolve_device(device)
    freeze_backbone(net)
    train_f = TensorDataset(*extract_features(net, data.loader("train", 256), device))
    val_f = TensorDataset(*extract_features(net, data.loader("val", 256), device))
    optimizer = torch.optim.AdamW(net.fc.parameters(), lr=lr, weight_decay=1e-3)
    return fit(
        net.fc,
        DataLoader(
            train_f,
            batch_size=batch_size,
            shuffle=True,
            drop_last=True,  # as the images' training loader: the same steps per epoch
            generator=torch.Generator().manual_seed(run_seed(0)),
        ),
        DataLoader(val_f, batch_size=512),
        epochs=epochs,
        optimizer=optimizer,
        loss_fn=data.weighted_loss(device),
        device=device,
        amp=amp,
        progress=progress,
        keep_best=keep_best,
    )


@dataclass
class HornetClassifier:
    """Chapter 3's frozen-backbone classifier, as :func:`hornet_classifier` returns it.

    Attributes:
        model: ``Normalize -> ResNet18`` taking [0, 1] images (N, 3, S, S), giving
            2 logits (absence, presence); in eval mode, on the CPU.
        data: the images and the split it was trained, validated and tested on.
        history: the head's training :class:`course.train.History`.
        description: where the weights and the data come from, and whether the
            classifier was trained now or loaded from the cache.
    """

    model: nn.Sequential
    data: HornetData
    history: History
    description: str

    @property
    def net(self) -> ResNet18:
        """The ResNet18 itself, without the normalisation in front."""
        return self.model[1]


def hornet_classifier(
    recipe: HornetRecipe | None = None,
    data: HornetData | None = None,
    backbone: ResNet18 | None = None,
    device: torch.device | str | None = None,
    progress: bool = True,
) -> HornetClassifier:
    """Chapter 3's variant (a), the hornet classifier chapter 4 attacks, trained once and cached.

    A copy of the pretrained ``backbone`` (default: :func:`recipe_backbone`) with a new
    2 x 512 head, backbone frozen, the head trained on its features by
    :func:`train_linear_probe` with the recipe's budget (``epochs`` epochs of
    ``batch_size``), the class-weighted loss and the epoch of lowest validation loss
    kept; on ``data`` (default: ``recipe.load_data`` at :func:`hornet_image_size`),
    ``recipe`` defaulting to :func:`course.data.hornets.hornet_recipe`. Chapter 3
    passes its own data and backbone, chapter 4 none: they get the same model.

    The cache file's name carries a fingerprint of the backbone's weights and of the
    data (files, labels, image size, split), the budget and the seed, so a classifier
    trained on other weights, images or split is never served.
    """
    recipe = recipe if recipe is not None else hornet_recipe()
    origin = "given backbone"
    if backbone is None:
        backbone, origin = recipe_backbone(recipe, device=device, progress=progress)
    if data is None:
        photos = data_paths()["hornets"].is_dir()
        size = hornet_image_size(imagenet_weights_available(), photos)
        data = recipe.load_data(size, progress=progress)
    seed = run_seed(0)
    path = cache_dir() / (
        f"hornet_classifier_v{CACHE_VERSION}_{weights_fingerprint(backbone)}_"
        f"{data.fingerprint()}_{recipe.epochs}x{recipe.batch_size}_seed{seed}.pt"
    )
    torch.manual_seed(seed)  # the new head's initial weights
    net = replace_head(copy.deepcopy(backbone), 2)  # the given backbone stays as it was
    model = with_imagenet_normalization(freeze_backbone(net))

    def train() -> dict[str, Any]:
        history = train_linear_probe(
            net,
            data,
            epochs=recipe.epochs,
            batch_size=recipe.batch_size,
            device=device,
            amp=device_default_amp(resolve_device(device)),  # cached: not per COURSE_AMP
            progress=progress,
        )
        return {"history": history.to_dict()}

    kept, how = train_once(path, model, train)
    description = (
        f"weights: {origin}\ndata: {data.origin}\n"
        f"frozen backbone, new head ({recipe.epochs} epochs of {recipe.batch_size}) {how}"
    )
    return HornetClassifier(
        model.cpu().eval(), data, History.from_dict(kept["history"]), description
    )
