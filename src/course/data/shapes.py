"""A synthetic image-classification task: coloured shapes on noisy backgrounds.

Small, deterministic from a seed, and hard enough that a linear model fails
but a small CNN learns it in seconds: the shape (not its colour, size or
place) decides the class. Beside it, :class:`Transformed` (a dataset that
applies a transform when an image is read) and :func:`slow_blur` (a transform
that costs a few milliseconds per image): chapter 0 times DataLoader workers
with them. They live in the package, not in the notebook, because workers
started by *spawn* (the default on macOS and Windows) import what they run.

Used in chapters 0, 1, 2, 4, 6 and 7.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch.utils.data import Dataset, TensorDataset

from course.config import run_seed

SHAPE_CLASSES = ("circle", "square", "triangle", "cross")


def render_shape(
    kind: str,
    size: int,
    center: tuple[float, float],
    radius: float,
    angle: float = 0.0,
) -> np.ndarray:
    """Boolean mask (size, size) of one shape.

    ``center`` is (cx, cy) in pixels, ``radius`` the half-extent in pixels,
    ``angle`` a rotation in radians (circles ignore it).
    """
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    dx, dy = xx - center[0], yy - center[1]
    c, s = np.cos(angle), np.sin(angle)
    u, v = c * dx + s * dy, -s * dx + c * dy  # coordinates in the shape's frame
    if kind == "circle":
        return dx**2 + dy**2 <= radius**2
    if kind == "square":
        half = radius / np.sqrt(2) * 1.2
        return (np.abs(u) <= half) & (np.abs(v) <= half)
    if kind == "triangle":
        # Equilateral triangle inscribed in the circle of `radius`, apex up.
        inside = np.ones_like(u, dtype=bool)
        for k in range(3):
            a = angle + np.pi / 2 + k * 2 * np.pi / 3
            nx, ny = np.cos(a + np.pi), -np.sin(a + np.pi)  # inward normals, y axis down
            inside &= dx * nx + dy * ny <= radius / 2
        return inside
    if kind == "cross":
        arm = radius * 0.35
        return ((np.abs(u) <= arm) & (np.abs(v) <= radius)) | (
            (np.abs(v) <= arm) & (np.abs(u) <= radius)
        )
    raise ValueError(f"unknown shape {kind!r}; choose one of {SHAPE_CLASSES}")


def make_shapes(
    n: int,
    image_size: int = 32,
    num_classes: int = 4,
    noise: float = 0.08,
    seed: int = 0,
    colored: bool = True,
) -> TensorDataset:
    """``n`` images (3, image_size, image_size) in [0, 1] with balanced labels.

    Each image holds one shape of class ``y`` (see :data:`SHAPE_CLASSES`) with
    a random colour, position, size and rotation on a random background
    colour plus Gaussian noise of std ``noise``. With ``colored=False`` the
    shape is light grey on a dark grey background: an easier task that deep
    networks start learning within a hundred steps (chapter 1's sweeps).

    Returns:
        ``TensorDataset(x, y)`` with x float32 (n, 3, H, W) and y int64 (n,).
    """
    if not 2 <= num_classes <= len(SHAPE_CLASSES):
        raise ValueError(f"num_classes must be in 2..{len(SHAPE_CLASSES)}, got {num_classes}")
    if image_size < 16:
        raise ValueError(f"image_size must be at least 16 pixels, got {image_size}")
    rng = np.random.default_rng(run_seed(seed))  # COURSE_SEED draws another set
    labels = np.arange(n) % num_classes
    rng.shuffle(labels)
    images = np.empty((n, 3, image_size, image_size), dtype=np.float32)
    for i, label in enumerate(labels):
        if colored:
            background = rng.uniform(0.0, 1.0, size=3)
            foreground = rng.uniform(0.0, 1.0, size=3)
            while np.abs(foreground - background).sum() < 0.6:  # keep the shape visible
                foreground = rng.uniform(0.0, 1.0, size=3)
        else:
            background = np.full(3, rng.uniform(0.0, 0.3))
            foreground = np.full(3, rng.uniform(0.7, 1.0))
        radius = rng.uniform(0.22, 0.38) * image_size
        center = rng.uniform(radius, image_size - radius, size=2)
        mask = render_shape(
            SHAPE_CLASSES[label],
            image_size,
            (center[0], center[1]),
            radius,
            angle=rng.uniform(-np.pi / 6, np.pi / 6),
        )
        image = np.where(mask[None], foreground[:, None, None], background[:, None, None])
        image = image + rng.normal(0.0, noise, size=image.shape)
        images[i] = np.clip(image, 0.0, 1.0)
    return TensorDataset(torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64)))


class Transformed(Dataset):
    """Apply ``transform`` to the images of ``base`` when they are read.

    ``base[i]`` is ``(image, label)``; ``Transformed(base, t)[i]`` is
    ``(t(image), label)``. Importable, hence picklable by reference: DataLoader
    workers started by *spawn* find the class (and ``transform``, when it is a
    module-level function such as :func:`slow_blur`, not a lambda or a
    function defined in a notebook).
    """

    def __init__(self, base: Dataset, transform: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.base, self.transform = base, transform

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.base[i]
        return self.transform(x), y


def slow_blur(image: torch.Tensor) -> torch.Tensor:
    """A deliberately expensive transform of one image (C, H, W): a few milliseconds.

    Upsamples 4x, applies a 31x31 Gaussian blur (sigma 6), and resizes back,
    so that the output has the input's shape and stays in [0, 1].
    """
    from torchvision.transforms.v2 import functional as TF

    height, width = image.shape[-2:]
    big = TF.resize(image, [4 * height, 4 * width], antialias=True)
    blurred = TF.gaussian_blur(big, kernel_size=31, sigma=6.0)
    return TF.resize(blurred, [height, width], antialias=True)
