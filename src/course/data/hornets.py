"""The Asian-hornet presence/absence data set: real photos or a synthetic stand-in (chapter 3).

Layout, for real photos and for the generated set alike (an ImageFolder)::

    DATA/hornets/presence/*.jpg|png   1042 images in the slides
    DATA/hornets/absence/*.jpg|png    1844 images

``DATA`` is ``course.config.data_root()`` (``$COURSE_DATA``, or ``data/`` in
the clone); :func:`load_hornet_data` uses the photos when that folder exists.
:func:`make_synthetic_hornets` writes the same layout with the slides' class
ratio: textured backgrounds (foliage, sky, bark, flowers), Asian hornets
(Vespa velutina: dark thorax, dark abdomen with one orange band, yellow legs,
wings) at random pose, scale and position, and, in both classes, distractors
(honeybees, yellow-and-black wasps, flies, ladybirds, striped objects), so the task is not trivial.

:func:`load_hornet_images` reads either into memory, reporting unreadable
files by name; :func:`stratified_split` makes the train/validation/test split.

Used in chapters 3 and 4.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter, ImageOps, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from course.config import data_paths, pick, run_seed
from course.data.scenes import BACKGROUNDS, draw_background, jitter
from course.runstate import atomic_write

CLASSES = ("absence", "presence")  # label 0, label 1 (ImageFolder's alphabetical order)
SLIDES_COUNTS = {"presence": 1042, "absence": 1844}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
DISTRACTORS = ("bee", "wasp", "fly", "ladybird", "stripes")
#: Bump when the drawings change: generated folders carry it in their names, so a
#: changed generator never serves the files of the previous one.
GENERATOR_VERSION = 1


# ---------------------------------------------------------------------------
# Drawing
# ---------------------------------------------------------------------------


def _insect_layer(rng: np.random.Generator, kind: str, length: int) -> Image.Image:
    """An insect seen from above, head up, on a transparent RGBA layer of height ``length``."""
    w, h = length, length
    layer = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    d = ImageDraw.Draw(layer)
    cx = w / 2

    def ell(x, y, rx, ry, colour):
        d.ellipse([x - rx, y - ry, x + rx, y + ry], fill=colour)

    if kind == "ladybird":
        ell(cx, h * 0.55, w * 0.3, h * 0.33, jitter(rng, (200, 30, 30), 20) + (255,))
        ell(cx, h * 0.2, w * 0.14, h * 0.09, (20, 20, 20, 255))
        for _ in range(6):
            ell(
                cx + rng.uniform(-0.2, 0.2) * w,
                h * rng.uniform(0.35, 0.8),
                w * 0.05,
                w * 0.05,
                (15, 15, 15, 255),
            )
        return layer
    if kind == "stripes":  # a striped object, not an insect: yellow/black bands
        colours = [jitter(rng, (240, 200, 30), 15) + (255,), (20, 20, 20, 255)]
        band = h / rng.integers(6, 11)
        for i in range(int(h / band) + 1):
            d.rectangle([w * 0.2, i * band, w * 0.8, (i + 1) * band], fill=colours[i % 2])
        return layer

    palette = {
        # (head, thorax, abdomen base, band colour, number of bands, legs, wing alpha)
        "hornet": ((225, 140, 40), (35, 25, 20), (40, 28, 22), (235, 150, 30), 1, (230, 200, 60)),
        "bee": ((60, 45, 30), (120, 85, 40), (200, 140, 50), (60, 40, 25), 4, (60, 45, 30)),
        "wasp": ((240, 200, 30), (30, 25, 20), (240, 205, 30), (25, 20, 15), 4, (230, 190, 40)),
        "fly": ((150, 30, 30), (70, 70, 75), (80, 80, 85), (60, 60, 65), 2, (40, 40, 40)),
    }[kind]
    head, thorax, abdomen, band, n_bands, legs = (
        jitter(rng, palette[0], 15),
        jitter(rng, palette[1], 10),
        jitter(rng, palette[2], 15),
        jitter(rng, palette[3], 15),
        palette[4],
        jitter(rng, palette[5], 15),
    )
    for side in (-1, 1):  # three legs per side
        for k, y in enumerate((0.38, 0.45, 0.52)):
            d.line(
                [(cx, h * y), (cx + side * w * 0.3, h * (y + (k - 1) * 0.12 + 0.05))],
                fill=legs + (255,),
                width=max(1, int(w * 0.025)),
            )
    ab_top, ab_bottom = h * 0.42, h * 0.92 if kind != "fly" else h * 0.75
    ab_w = w * (0.17 if kind != "fly" else 0.15)
    ell(cx, (ab_top + ab_bottom) / 2, ab_w, (ab_bottom - ab_top) / 2, abdomen + (255,))
    if kind == "hornet":  # Vespa velutina: one orange band near the tip (4th segment)
        y0 = ab_top + (ab_bottom - ab_top) * 0.62
        d.rectangle(
            [cx - ab_w * 0.92, y0, cx + ab_w * 0.92, y0 + (ab_bottom - ab_top) * 0.16],
            fill=band + (255,),
        )
        d.rectangle(
            [
                cx - ab_w * 0.8,
                ab_top + (ab_bottom - ab_top) * 0.25,
                cx + ab_w * 0.8,
                ab_top + (ab_bottom - ab_top) * 0.28,
            ],
            fill=(180, 120, 40, 255),
        )
    else:
        for i in range(n_bands):
            y0 = ab_top + (ab_bottom - ab_top) * (0.15 + 0.2 * i)
            d.rectangle(
                [cx - ab_w * 0.9, y0, cx + ab_w * 0.9, y0 + (ab_bottom - ab_top) * 0.08],
                fill=band + (255,),
            )
    ell(cx, h * 0.36, w * 0.13, h * 0.1, thorax + (255,))
    ell(cx, h * 0.21, w * 0.1, h * 0.07, head + (255,))
    if kind == "fly":  # big red eyes
        ell(cx - w * 0.07, h * 0.2, w * 0.05, h * 0.05, (170, 20, 20, 255))
        ell(cx + w * 0.07, h * 0.2, w * 0.05, h * 0.05, (170, 20, 20, 255))
    wing = (200, 205, 215, int(rng.integers(110, 170)))
    wings = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    wd = ImageDraw.Draw(wings)
    spread = rng.uniform(0.05, 0.25) * w
    for side in (-1, 1):
        wx = cx + side * (w * 0.1 + spread)
        wd.ellipse([wx - w * 0.08, h * 0.3, wx + w * 0.08, h * 0.72], fill=wing)
    return Image.alpha_composite(layer, wings)


def _paste_insect(image: Image.Image, rng: np.random.Generator, kind: str, scale: float) -> None:
    size = image.size[0]
    length = max(8, int(scale * size))
    layer = _insect_layer(rng, kind, length).rotate(
        rng.uniform(0, 360), expand=True, resample=Image.BILINEAR
    )
    cx, cy = rng.uniform(0.2, 0.8, size=2) * size  # the insect's centre stays inside
    image.paste(layer, (int(cx - layer.size[0] / 2), int(cy - layer.size[1] / 2)), layer)


def render_hornet_scene(seed: int, presence: bool, size: int = 128) -> Image.Image:
    """One synthetic photo: background, 0-2 distractors, and a hornet when ``presence``.

    Deterministic from ``seed``. The hornet covers 25-50 % of the image
    side (the slides' trap photos are close-ups); distractors appear in both
    classes, so their presence says nothing about the label.
    """
    rng = np.random.default_rng(seed)
    image = draw_background(rng, BACKGROUNDS[rng.integers(len(BACKGROUNDS))], size)
    for _ in range(rng.choice(3, p=[0.35, 0.45, 0.2])):
        _paste_insect(
            image, rng, DISTRACTORS[rng.integers(len(DISTRACTORS))], rng.uniform(0.2, 0.45)
        )
    if presence:
        _paste_insect(image, rng, "hornet", rng.uniform(0.25, 0.5))
    image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0, size / 200)))
    noise = rng.normal(0, rng.uniform(2, 8), (size, size, 3))
    return Image.fromarray(
        np.clip(np.asarray(image, dtype=np.float32) + noise, 0, 255).astype(np.uint8)
    )


def make_synthetic_hornets(
    root: str | os.PathLike | None = None,
    scale: float = 1.0,
    size: int = 128,
    seed: int = 0,
    progress: bool = True,
) -> Path:
    """Write ``root/hornets/{presence,absence}/*.png`` with the slides' class ratio.

    ``scale`` multiplies the slides' counts (1042 presence, 1844 absence).
    Files that already exist are kept, so a second call is instant.
    Returns the ``hornets`` folder.
    """
    folder = Path(root if root is not None else data_paths()["synthetic"]) / "hornets"
    jobs = []
    for cls, count in SLIDES_COUNTS.items():
        (folder / cls).mkdir(parents=True, exist_ok=True)
        for i in range(max(1, round(count * scale))):
            jobs.append((cls, i))
    for cls, i in tqdm(jobs, desc="generating hornet photos", disable=not progress):
        path = folder / cls / f"{cls}_{i:05d}.png"
        if not path.exists():
            image_seed = seed * 1_000_003 + (i * 2 + (cls == "presence"))
            # never a half-written image, even with two notebooks generating at once
            with atomic_write(path, durable=False) as f:
                render_hornet_scene(image_seed, cls == "presence", size).save(f, format="PNG")
    return folder


# ---------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------


def find_hornet_images(folder: str | os.PathLike) -> tuple[list[Path], list[int]]:
    """Paths and labels (0 absence, 1 presence) of the images under ``folder``.

    Raises:
        FileNotFoundError: the folder, or one of its class folders, is missing
            or holds no image; the message gives the expected layout and how to
            generate the synthetic set.
    """
    folder = Path(folder)
    help_text = (
        f"Expected the layout\n  {folder}/presence/*.jpg\n  {folder}/absence/*.jpg\n"
        "Put the hornet photos there (set COURSE_DATA to the folder that holds 'hornets'), "
        "or generate the synthetic stand-in with\n"
        "  from course.data.hornets import make_synthetic_hornets; make_synthetic_hornets()"
    )
    if not folder.is_dir():
        raise FileNotFoundError(f"No folder {folder}. {help_text}")
    paths, labels = [], []
    for label, cls in enumerate(CLASSES):
        class_dir = folder / cls
        if not class_dir.is_dir():
            raise FileNotFoundError(f"No folder {class_dir}. {help_text}")
        found = sorted(p for p in class_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not found:
            raise FileNotFoundError(f"No image in {class_dir}. {help_text}")
        paths += found
        labels += [label] * len(found)
    return paths, labels


def _load_rgb(path: Path, size: int) -> np.ndarray:
    """Upright (EXIF orientation applied, as phones record it), RGB, short side resized to
    ``size`` and center-cropped: (size, size, 3) uint8."""
    with Image.open(path) as image:
        image = ImageOps.exif_transpose(image).convert("RGB")
        w, h = image.size
        r = size / min(w, h)
        image = image.resize((max(size, round(w * r)), max(size, round(h * r))), Image.BILINEAR)
        w, h = image.size
        left, top = (w - size) // 2, (h - size) // 2
        return np.asarray(image.crop((left, top, left + size, top + size)))


def stratified_subset(labels: Sequence[int], max_items: int, seed: int = 0) -> list[int]:
    """At most ``max_items`` indices, each class keeping its share (at least one item),
    chosen reproducibly from ``seed``; sorted."""
    labels = np.asarray(labels)
    if len(labels) <= max_items:
        return list(range(len(labels)))
    rng = np.random.default_rng(seed)
    keep: list[int] = []
    for cls in np.unique(labels):
        idx = np.flatnonzero(labels == cls)
        n = max(1, round(len(idx) * max_items / len(labels)))
        keep += rng.choice(idx, n, replace=False).tolist()
    return sorted(keep)


def load_hornet_images(
    folder: str | os.PathLike,
    size: int,
    progress: bool = True,
    max_images: int | None = None,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, list[Path]]:
    """Read the images into memory: uint8 (N, 3, size, size), labels (N,), paths.

    ``max_images`` caps N with a stratified, reproducible subset (the profiles'
    budgets); memory is N x 3 x size x size bytes: the slides' 2886 photos take
    434 MB at 224 px (2886 x 3 x 224 x 224 = 434.4e6 bytes). Unreadable or corrupt
    files are skipped with a warning that names each of them; they are never silently
    dropped.
    """
    paths, labels = find_hornet_images(folder)
    if max_images is not None:
        keep = stratified_subset(labels, max_images, seed)
        paths, labels = [paths[i] for i in keep], [labels[i] for i in keep]
    images, kept_labels, kept_paths, bad = [], [], [], []
    for path, label in tqdm(
        list(zip(paths, labels, strict=True)), desc="reading images", disable=not progress
    ):
        try:
            images.append(_load_rgb(path, size))
        except (OSError, UnidentifiedImageError, ValueError) as error:
            bad.append(f"{path} ({type(error).__name__})")
            continue
        kept_labels.append(label)
        kept_paths.append(path)
    if bad:
        warnings.warn(f"skipped {len(bad)} unreadable image(s): " + "; ".join(bad), stacklevel=2)
    if not images:
        raise FileNotFoundError(f"no readable image under {folder}")
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    return x, torch.tensor(kept_labels), kept_paths


def stratified_split(
    labels: Sequence[int] | torch.Tensor,
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
    seed: int = 0,
) -> tuple[list[int], list[int], list[int]]:
    """Train / validation / test indices with every class in the same proportions.

    Each class is shuffled (reproducibly from ``seed``) and cut by
    ``fractions``; the three lists are disjoint and cover every index.
    The slides' rule: choose on validation, confirm once on test.
    """
    if not math.isclose(sum(fractions), 1.0) or min(fractions) < 0:
        raise ValueError(f"fractions must be non-negative and sum to 1, got {fractions}")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    parts: tuple[list[int], list[int], list[int]] = ([], [], [])
    for cls in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        n_train = round(fractions[0] * len(idx))
        n_val = round(fractions[1] * len(idx))
        for part, chunk in zip(parts, np.split(idx, [n_train, n_train + n_val]), strict=True):
            part += chunk.tolist()
    return tuple(sorted(p) for p in parts)  # type: ignore[return-value]


class ImageTensorDataset(Dataset):
    """uint8 images in memory -> (float image in [0, 1], label), with an optional transform.

    The transform, if any, gets a float (3, H, W) tensor: a per-image transform run by
    the loader (``torchvision.transforms.v2``). Training augmentation is faster as a
    batch on the device: ``fit(augment=course.data.augment.BatchAugmentation())``.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform=None) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.images[i].float() / 255
        if self.transform is not None:
            x = self.transform(x)
        return x, self.labels[i]


def make_insect_source_task(n: int, size: int, seed: int = 0) -> torch.utils.data.TensorDataset:
    """A synthetic *source* task for pretraining: which insect or object is in the picture?

    Five classes (:data:`DISTRACTORS`: bee, wasp, fly, ladybird, stripes), one
    object per image on the same textured backgrounds, and no hornet: the
    network learns textures, stripes, colours and body plans, but never sees
    the target class. It stands in for ImageNet when the weights cannot be
    downloaded (chapter 3). Returns float images in [0, 1], (n, 3, size, size).
    """
    render = max(size, 64)  # draw at >= 64 px, then downsample (anti-aliasing)
    labels = np.arange(n) % len(DISTRACTORS)
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    for i, label in enumerate(labels):
        rng = np.random.default_rng(seed * 1_000_003 + 7919 * i + 1)
        image = draw_background(rng, BACKGROUNDS[rng.integers(len(BACKGROUNDS))], render)
        _paste_insect(image, rng, DISTRACTORS[label], rng.uniform(0.3, 0.55))
        images[i] = np.asarray(image.resize((size, size), Image.BILINEAR))
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    return torch.utils.data.TensorDataset(x, torch.from_numpy(labels.astype(np.int64)))


# ---------------------------------------------------------------------------
# The data set as chapters 3 and 4 use it
# ---------------------------------------------------------------------------


@dataclass
class HornetData:
    """Images in memory (uint8, N x 3 x S x S), labels, paths, split indices and origin.

    ``real`` tells whether the images are the user's photos (``DATA/hornets``) or
    the synthetic stand-in; ``origin`` says it in a sentence.
    """

    images: torch.Tensor
    labels: torch.Tensor
    paths: list[Path]
    train: list[int]
    val: list[int]
    test: list[int]
    origin: str
    real: bool

    def loader(
        self,
        split: str,
        batch_size: int,
        transform=None,
        shuffle: bool = False,
        drop_last: bool = False,
        seed: int = 0,
    ) -> DataLoader:
        """A DataLoader over one split ("train", "val" or "test") of float images in [0, 1].

        ``shuffle`` draws a new order each epoch from a generator seeded with
        ``run_seed(seed)``; ``drop_last`` leaves out an incomplete last batch (for
        training: every step then sees ``batch_size`` images, BN's statistics included).
        """
        idx = getattr(self, split)
        data = ImageTensorDataset(self.images[idx], self.labels[idx], transform)
        return DataLoader(
            data,
            batch_size=batch_size,
            shuffle=shuffle,
            drop_last=drop_last,
            generator=torch.Generator().manual_seed(run_seed(seed)),
        )

    def weighted_loss(self, device: torch.device | str) -> Callable:
        """Cross-entropy weighted by the inverse class frequency of the training split, so
        that the 1042 presence photos count as much as the 1844 absence ones."""
        counts = torch.bincount(self.labels[self.train], minlength=len(CLASSES)).double()
        weight = (counts.sum() / (len(counts) * counts)).float().to(device)
        return functools.partial(torch.nn.functional.cross_entropy, weight=weight)

    def fingerprint(self) -> str:
        """A short digest of the file names, labels, image size and split: the key of
        caches that depend on the data (chapter 3's classifier, which chapter 4 attacks)."""
        digest = hashlib.sha256(str(tuple(self.images.shape)).encode())
        for path, label in zip(self.paths, self.labels.tolist(), strict=True):
            digest.update(f"{path.parent.name}/{path.name}:{label};".encode())
        for split in (self.train, self.val, self.test):
            digest.update(f"{split};".encode())
        return digest.hexdigest()[:12]


def load_hornet_data(
    image_size: int,
    synthetic_scale: float = 1.0,
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
    seed: int = 0,
    progress: bool = True,
    max_images: int | None = None,
) -> HornetData:
    """The real photos under ``data_paths()["hornets"]`` when that folder exists, else the
    synthetic set.

    Real photos: any two-class folder ``{presence,absence}``, at most
    ``max_images`` of them (a stratified subset). The synthetic set
    (``synthetic_scale`` x the slides' counts) is generated once into
    ``DATA/synthetic/hornets-v<version>-...`` and reused; it is drawn at twice
    ``image_size`` (64 to 256 px) and downsampled when read.
    """
    seed = run_seed(seed)  # COURSE_SEED: another synthetic set, subset and split
    paths = data_paths()
    real = paths["hornets"]
    real_photos = real.is_dir()
    if real_photos:
        folder, origin = real, f"real photos from {real}"
    else:
        render = max(64, min(2 * image_size, 256))
        root = paths["synthetic"] / (
            f"hornets-v{GENERATOR_VERSION}-scale{synthetic_scale:g}-{render}px-seed{seed}"
        )
        folder = make_synthetic_hornets(
            root, scale=synthetic_scale, size=render, seed=seed, progress=progress
        )
        origin = f"synthetic photos generated in {folder} (no folder {real})"
    images, labels, files = load_hornet_images(
        folder, image_size, progress=progress, max_images=max_images, seed=seed
    )
    train, val, test = stratified_split(labels, fractions, seed)
    return HornetData(images, labels, files, train, val, test, origin, real_photos)


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


@dataclass(frozen=True)
class HornetRecipe:
    """The sizes of the hornet task that chapters 3, 4 and 6 share on one profile.

    Attributes:
        synthetic_scale: the share of the slides' 2886 images that the synthetic
            stand-in generates (when there are no photos).
        pretrain_samples: images of the synthetic source task that the stand-in for
            the ImageNet weights pretrains on (offline).
        pretrain_epochs: its pretraining epochs.
        synthetic_fractions: chapter 3's train / validation / test split of the
            synthetic set (real photos: :data:`PHOTO_FRACTIONS`), see :meth:`fractions`.
        max_images: at most this many images are read (a stratified subset), or all.
        epochs: the training budget of each of chapter 3's variants, in epochs ...
        batch_size: ... of minibatches of this size (the same number of steps for all).

    They are cache keys (the stand-in backbone, chapter 3's frozen-backbone classifier
    that chapter 4 attacks): defined here once, so that the chapters share their cached
    models. The image side is :func:`hornet_image_size`.
    """

    synthetic_scale: float
    pretrain_samples: int
    pretrain_epochs: int
    synthetic_fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
    max_images: int | None = None
    epochs: int = 5
    batch_size: int = 32

    def fractions(self, real_photos: bool) -> tuple[float, float, float]:
        """The split: :data:`PHOTO_FRACTIONS` for photos, ``synthetic_fractions`` else."""
        return PHOTO_FRACTIONS if real_photos else self.synthetic_fractions

    def load_data(self, image_size: int, progress: bool = True) -> HornetData:
        """Chapter 3's data: :func:`load_hornet_data` with this recipe's scale, split and cap
        (the photos under ``DATA/hornets`` when that folder exists)."""
        real_photos = data_paths()["hornets"].is_dir()
        return load_hornet_data(
            image_size,
            synthetic_scale=self.synthetic_scale,
            fractions=self.fractions(real_photos),
            progress=progress,
            max_images=self.max_images,
        )


#: The split of real photos on every profile: 70 % to train, 15 % to validate, 15 % to test.
PHOTO_FRACTIONS = (0.7, 0.15, 0.15)


def hornet_recipe() -> HornetRecipe:
    """The :class:`HornetRecipe` of the current profile.

    On the synthetic set, the smoke profile (CI) trains on 10 % of its 577 images and
    tests on 80 %, so that chapter 3's comparison and chapter 4's attacks are measured on
    enough images to hold for every seed; the gpu profile generates the slides' 2886
    images and trains on 20 % of them.
    """
    return HornetRecipe(
        synthetic_scale=pick(smoke=0.2, cpu=0.3, gpu=1.0),
        pretrain_samples=pick(smoke=1500, cpu=3000, gpu=6000),
        pretrain_epochs=pick(smoke=4, cpu=3, gpu=10),
        synthetic_fractions=pick(smoke=(0.1, 0.1, 0.8), cpu=PHOTO_FRACTIONS, gpu=(0.2, 0.1, 0.7)),
        max_images=pick(smoke=None, cpu=400, gpu=None),
        epochs=pick(smoke=8, cpu=5, gpu=10),
        batch_size=pick(smoke=16, cpu=32, gpu=64),
    )
