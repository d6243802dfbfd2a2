"""Textured backgrounds shared by the synthetic data sets (hornet photos and VOC scenes).

Foliage, sky, bark and flowers, drawn with PIL from a NumPy generator, so a
scene is deterministic from its seed. Used by ``course.data.hornets`` and
``course.data.voc``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

BACKGROUNDS = ("foliage", "sky", "bark", "flowers")


def jitter(rng: np.random.Generator, rgb: Sequence[int], amount: int = 25) -> tuple[int, ...]:
    """``rgb`` with each channel moved by a random integer in [-amount, amount], kept in 0-255."""
    return tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in rgb)


def draw_background(rng: np.random.Generator, kind: str, size: int) -> Image.Image:
    """A textured ``size`` x ``size`` RGB background: foliage, sky, bark or flowers."""
    image = Image.new("RGB", (size, size))
    draw = ImageDraw.Draw(image)
    s = size
    if kind == "sky":
        top, bottom = (
            np.array(jitter(rng, (90, 150, 230))),
            np.array(jitter(rng, (180, 210, 245))),
        )
        for row in range(s):
            draw.line(
                [(0, row), (s, row)], fill=tuple(int(v) for v in top + (bottom - top) * row / s)
            )
        for _ in range(rng.integers(1, 5)):  # clouds
            x, y, w, h = (
                rng.uniform(0, s),
                rng.uniform(0, s),
                rng.uniform(0.2, 0.5) * s,
                rng.uniform(0.08, 0.2) * s,
            )
            draw.ellipse([x - w, y - h, x + w, y + h], fill=jitter(rng, (240, 240, 245), 10))
        return image.filter(ImageFilter.GaussianBlur(s / 40))
    if kind == "bark":
        draw.rectangle([0, 0, s, s], fill=jitter(rng, (110, 80, 55), 10))
        for _ in range(int(s / 3)):
            x = rng.uniform(0, s)
            points = [
                (x + rng.normal(0, s / 60) + 4 * math.sin(y / 7), y) for y in range(0, s + 8, 8)
            ]
            draw.line(points, fill=jitter(rng, (70, 50, 35)), width=int(rng.integers(1, 3)))
        return image
    # foliage and flowers start from leaves
    draw.rectangle([0, 0, s, s], fill=jitter(rng, (60, 110, 50)))
    for _ in range(int(s * 0.8)):
        x, y = rng.uniform(0, s, 2)
        w, h = rng.uniform(0.03, 0.12) * s, rng.uniform(0.015, 0.05) * s
        draw.ellipse([x - w, y - h, x + w, y + h], fill=jitter(rng, (70, 130, 55), 40))
    image = image.filter(ImageFilter.GaussianBlur(s / 150))
    if kind == "flowers":
        draw = ImageDraw.Draw(image)
        for _ in range(rng.integers(3, 9)):
            _draw_flower(
                draw, rng, rng.uniform(0, s), rng.uniform(0, s), rng.uniform(0.04, 0.1) * s
            )
    return image


def _draw_flower(draw: ImageDraw.ImageDraw, rng, x: float, y: float, r: float) -> None:
    petal = jitter(
        rng,
        [(240, 240, 240), (230, 120, 180), (250, 220, 60), (160, 120, 220)][rng.integers(4)],
        15,
    )
    for k in range(6):
        a = 2 * math.pi * k / 6
        px, py = x + r * math.cos(a), y + r * math.sin(a)
        draw.ellipse([px - r * 0.6, py - r * 0.6, px + r * 0.6, py + r * 0.6], fill=petal)
    draw.ellipse([x - r * 0.45, y - r * 0.45, x + r * 0.45, y + r * 0.45], fill=(240, 190, 40))
