"""Image augmentation for a whole batch at once, on the batch's device.

A per-image transform (``torchvision.transforms.v2`` in a ``Dataset``) runs in
Python on the CPU, one image at a time: on a Colab machine with 2 vCPUs it
starves the GPU. Here every operation is a tensor operation over the batch,
with *each image drawing its own parameters* (a v2 transform applied to a
batch would give every image the same flip and the same angle). Each function
matches its ``torchvision.transforms.v2.functional`` counterpart image by image
(tested), so the pictures are the ones torchvision would make.

Randomness comes from torch's generator of the batch's device (seeded by
``seed_everything``, saved in ``fit``'s checkpoints).

Used in chapter 3 (and by course.scaling's hornets script, chapter 6).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

GRAY = (0.2989, 0.587, 0.114)  # ITU-R 601 luma, as torchvision's rgb_to_grayscale


def uniform(low: float, high: float, n: int, device: torch.device) -> torch.Tensor:
    """``n`` draws from U(low, high) on ``device``."""
    return low + (high - low) * torch.rand(n, device=device)


# ---------------------------------------------------------------------------
# Geometry
# ---------------------------------------------------------------------------


def affine_matrices(
    angle: torch.Tensor, translate: torch.Tensor, scale: torch.Tensor
) -> torch.Tensor:
    """The (B, 2, 3) *inverse* affine maps of a rotation by ``angle`` degrees
    (B,), a translation by ``translate`` pixels (B, 2) and a ``scale`` (B,) about the
    image centre, as ``torchvision.transforms.v2.functional.affine`` builds them
    (no shear): they send an output pixel, in coordinates centred on the image,
    to the input pixel it is read from."""
    rot = torch.deg2rad(angle)
    cos, sin = torch.cos(rot) / scale, torch.sin(rot) / scale
    tx, ty = -translate[:, 0], -translate[:, 1]
    return torch.stack(
        [
            torch.stack([cos, sin, cos * tx + sin * ty], -1),
            torch.stack([-sin, cos, -sin * tx + cos * ty], -1),
        ],
        1,
    )


def warp_affine(images: torch.Tensor, matrices: torch.Tensor) -> torch.Tensor:
    """Resample ``images`` (B, C, H, W) through per-image inverse affine ``matrices``
    (B, 2, 3) in centred pixel coordinates (:func:`affine_matrices`); bilinear,
    zeros outside the image."""
    b, _, h, w = images.shape
    device, dtype = images.device, images.dtype
    xs = torch.arange(w, device=device, dtype=dtype) - (w - 1) / 2  # pixel centres
    ys = torch.arange(h, device=device, dtype=dtype) - (h - 1) / 2
    grid = torch.stack(torch.broadcast_tensors(xs[None, :], ys[:, None]) + (xs.new_ones(h, w),), -1)
    source = grid.reshape(1, h * w, 3) @ matrices.to(dtype).transpose(1, 2)  # (B, HW, 2)
    normalised = source / torch.tensor([w / 2, h / 2], device=device, dtype=dtype)
    return F.grid_sample(
        images, normalised.reshape(b, h, w, 2), mode="bilinear", align_corners=False
    )


def random_flip(images: torch.Tensor, p: float = 0.5) -> torch.Tensor:
    """Mirror each image left-right with probability ``p``."""
    flip = torch.rand(len(images), device=images.device) < p
    return torch.where(flip[:, None, None, None], images.flip(-1), images)


def random_affine(
    images: torch.Tensor,
    degrees: float = 20.0,
    translate: tuple[float, float] = (0.1, 0.1),
    scale: tuple[float, float] = (0.85, 1.15),
) -> torch.Tensor:
    """Each image rotated, shifted and scaled at random, as ``v2.RandomAffine``
    draws it: angle in [-degrees, degrees], shift of at most ``translate`` x the
    size (whole pixels), scale in ``scale``."""
    b, _, h, w = images.shape
    device = images.device
    angle = uniform(-degrees, degrees, b, device)
    shift = torch.stack(
        [
            torch.round(uniform(-translate[0] * w, translate[0] * w, b, device)),
            torch.round(uniform(-translate[1] * h, translate[1] * h, b, device)),
        ],
        1,
    )
    return warp_affine(images, affine_matrices(angle, shift, uniform(*scale, b, device)))


# ---------------------------------------------------------------------------
# Colour
# ---------------------------------------------------------------------------


def _per_image(factor: torch.Tensor) -> torch.Tensor:
    return factor.reshape(-1, 1, 1, 1)


def grayscale(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) -> (B, 1, H, W) luma."""
    r, g, b = images.unbind(1)
    return (GRAY[0] * r + GRAY[1] * g + GRAY[2] * b).unsqueeze(1)


def adjust_brightness(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Multiply image i by ``factor[i]``."""
    return (images * _per_image(factor)).clamp(0, 1)


def adjust_contrast(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend image i with its mean grey level: 0 gives a flat grey, 1 the image."""
    mean = grayscale(images).mean(dim=(1, 2, 3), keepdim=True)
    f = _per_image(factor)
    return (f * images + (1 - f) * mean).clamp(0, 1)


def adjust_saturation(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend image i with its grey version: 0 gives black and white, 1 the image."""
    f = _per_image(factor)
    return (f * images + (1 - f) * grayscale(images)).clamp(0, 1)


def adjust_hue(images: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Turn the hue of image i by ``shift[i]`` of a full turn (in [-0.5, 0.5])."""
    maxc, argmax = images.max(1)
    minc = images.min(1).values
    chroma = maxc - minc
    safe = torch.where(chroma > 0, chroma, torch.ones_like(chroma))
    r, g, b = images.unbind(1)
    hue = torch.stack([(g - b) / safe, (b - r) / safe + 2, (r - g) / safe + 4], 1)
    hue = hue.gather(1, argmax.unsqueeze(1)).squeeze(1)  # in sixths of a turn
    hue = torch.where(chroma > 0, hue / 6, torch.zeros_like(hue))
    hue = (hue + shift.reshape(-1, 1, 1)) % 1.0
    # HSV -> RGB: channel n is v - v s clamp(min(k, 4 - k), 0, 1), k = (n + 6 h) mod 6
    value, sat = maxc, chroma / torch.where(maxc > 0, maxc, torch.ones_like(maxc))
    n = torch.tensor([5.0, 3.0, 1.0], device=images.device, dtype=images.dtype).reshape(1, 3, 1, 1)
    k = (n + 6 * hue.unsqueeze(1)) % 6
    ramp = torch.minimum(k, 4 - k).clamp(0, 1)
    return (value.unsqueeze(1) * (1 - sat.unsqueeze(1) * ramp)).clamp(0, 1)


def random_color_jitter(
    images: torch.Tensor,
    brightness: float = 0.3,
    contrast: float = 0.3,
    saturation: float = 0.3,
    hue: float = 0.03,
) -> torch.Tensor:
    """Brightness, contrast and saturation factors in [1 - x, 1 + x] and a hue shift in
    [-hue, hue], drawn for each image (``v2.ColorJitter``'s ranges; applied in this
    fixed order, where ColorJitter shuffles it per call)."""
    b, device = len(images), images.device
    images = adjust_brightness(images, uniform(1 - brightness, 1 + brightness, b, device))
    images = adjust_contrast(images, uniform(1 - contrast, 1 + contrast, b, device))
    images = adjust_saturation(images, uniform(1 - saturation, 1 + saturation, b, device))
    return adjust_hue(images, uniform(-hue, hue, b, device))


# ---------------------------------------------------------------------------
# Noise and erasing
# ---------------------------------------------------------------------------


def random_noise(images: torch.Tensor, sigma: float = 0.03) -> torch.Tensor:
    """Add N(0, sigma^2) to every pixel (the slides' *bruit*) and clamp to [0, 1]."""
    return (images + sigma * torch.randn_like(images)).clamp(0, 1)


def random_erasing(
    images: torch.Tensor,
    p: float = 0.25,
    scale: tuple[float, float] = (0.02, 0.1),
    ratio: tuple[float, float] = (0.3, 3.3),
) -> torch.Tensor:
    """With probability ``p``, set a rectangle of each image to 0 (``v2.RandomErasing``'s
    draws: area a fraction ``scale`` of the image, aspect ratio log-uniform in
    ``ratio``; a rectangle larger than the image is clipped instead of redrawn)."""
    b, _, h, w = images.shape
    device = images.device
    area = uniform(*scale, b, device) * h * w
    aspect = torch.exp(uniform(math.log(ratio[0]), math.log(ratio[1]), b, device))
    eh = torch.sqrt(area * aspect).round().clamp(1, h)
    ew = torch.sqrt(area / aspect).round().clamp(1, w)
    top = torch.floor(torch.rand(b, device=device) * (h - eh + 1))
    left = torch.floor(torch.rand(b, device=device) * (w - ew + 1))
    rows = torch.arange(h, device=device).reshape(1, h, 1)
    cols = torch.arange(w, device=device).reshape(1, 1, w)
    inside = (
        (rows >= top.reshape(-1, 1, 1))
        & (rows < (top + eh).reshape(-1, 1, 1))
        & (cols >= left.reshape(-1, 1, 1))
        & (cols < (left + ew).reshape(-1, 1, 1))
    )
    erase = (torch.rand(b, device=device) < p).reshape(-1, 1, 1) & inside
    return images.masked_fill(erase.unsqueeze(1), 0.0)


class BatchAugmentation:
    """The slides' augmentations for a batch of float images in [0, 1], on its device:
    mirror, affine (rotation, translation, scale), colour jitter, noise and random
    erasing, each image with its own draws.

    Called as ``augment(images, labels) -> (images, labels)``: the form
    ``course.train.fit(augment=...)`` applies to every training batch after its
    transfer to the device. The ranges are those of the former per-image pipeline
    (``v2.RandomAffine(20, (0.1, 0.1), (0.85, 1.15))``, ``v2.ColorJitter(0.3, 0.3,
    0.3, 0.03)``, ``v2.RandomErasing(0.25, (0.02, 0.1))``).
    """

    def __init__(
        self,
        degrees: float = 20.0,
        translate: tuple[float, float] = (0.1, 0.1),
        scale: tuple[float, float] = (0.85, 1.15),
        jitter: float = 0.3,
        hue: float = 0.03,
        noise: float = 0.03,
        erase: float = 0.25,
    ) -> None:
        self.degrees, self.translate, self.scale = degrees, translate, scale
        self.jitter, self.hue, self.noise, self.erase = jitter, hue, noise, erase

    def images(self, x: torch.Tensor) -> torch.Tensor:
        """Augment a batch (B, 3, H, W) of float images in [0, 1]."""
        x = random_flip(x)
        x = random_affine(x, self.degrees, self.translate, self.scale)
        x = random_color_jitter(x, self.jitter, self.jitter, self.jitter, self.hue)
        x = random_noise(x, self.noise)
        return random_erasing(x, self.erase)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images(x), y
