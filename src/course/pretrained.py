"""Where a pretrained ResNet18 comes from: ImageNet, or offline a stand-in pretrained here.

Chapters 3 (fine-tuning) and 4 (attacking the fine-tuned classifier) start from a
pretrained ResNet18. :func:`pretrained_resnet18` gives torchvision's ImageNet
weights (``course.weights``) when they are cached or can be downloaded, else
(offline, as in CI) a ResNet18 pretrained once on a synthetic source task
(``course.data.hornets.make_insect_source_task``) and cached under
``$COURSE_CACHE`` (:func:`pretrain_on_synthetic`), and says which.

Used in chapter 3.
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader

from course.config import cache_dir, run_seed
from course.data.hornets import DISTRACTORS, GENERATOR_VERSION, make_insect_source_task
from course.data.normalize import with_imagenet_normalization
from course.models.resnet import ResNet18, resnet18
from course.runstate import load_state, save_state
from course.train import fit
from course.weights import WeightsUnavailableError, imagenet_resnet18, imagenet_weights_path

#: Bump when the synthetic pretraining or the classifiers cached from it change: the
#: cache files carry it in their names, so old files are never served again.
CACHE_VERSION = 2


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
    source task's 5-class head; call ``course.models.transfer.replace_head``.
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
