"""A reference kept in the tests, not shipped: chapter 7's augmentation one image at a
time, in plain Python, against which the package's batched version is checked (as
torchvision keeps its reference NMS in its tests).

It moves its boxes with the package's own ``crop_flip_boxes``, so what the comparison
checks is the batched version's pixel reading (``grid_sample`` at ``F.interpolate``'s
positions) and its per-image draws.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from course.config import run_seed
from course.detection.transforms import _select, crop_flip_boxes


class DetectionAugmentation:
    """Horizontal flip and random scale/crop, moving the boxes with the pixels,
    then a resize to ``size`` x ``size``, one image at a time: the readable reference
    of ``course.detection.BatchDetectionAugmentation``, which must give the same pixels
    and boxes for the same draws (tests/test_detection.py, tests/test_augment.py) and
    which benchmarks/augmentation.py times against it.

    Boxes that leave the crop are clipped; those with less than 30 % of their
    area left are dropped. (To resize without augmenting: :class:`DetectionResize`.)

    Randomness comes from torch. Without ``seed``, from its global generator,
    which a DataLoader seeds anew in every worker and at every epoch, so that
    workers and epochs all see different flips and crops (reproducible with
    ``seed_everything`` and the loader's ``generator``). With ``seed``, from a
    private generator: the same draws every time, for figures.
    """

    def __init__(self, size: int, min_scale: float = 0.6, seed: int | None = None) -> None:
        self.size, self.min_scale = size, min_scale
        self.generator = torch.Generator().manual_seed(run_seed(seed)) if seed is not None else None

    def _uniform(self) -> float:
        return float(torch.rand((), generator=self.generator))

    def draw(self, height: int, width: int) -> tuple[bool, int, int, int, int]:
        """One image's draws: ``(flip, x0, y0, crop width, crop height)``."""
        flip = self._uniform() < 0.5
        scale = self.min_scale + (1.0 - self.min_scale) * self._uniform()
        cw, ch = int(width * scale), int(height * scale)
        x0, y0 = int(self._uniform() * (width - cw + 1)), int(self._uniform() * (height - ch + 1))
        return flip, x0, y0, cw, ch

    def __call__(self, image: torch.Tensor, target: dict) -> tuple[torch.Tensor, dict]:
        _, h, w = image.shape
        return self.apply(image, target, self.draw(h, w))

    def apply(
        self, image: torch.Tensor, target: dict, draws: tuple[bool, int, int, int, int]
    ) -> tuple[torch.Tensor, dict]:
        """Flip, crop and resize ``image`` (3, H, W) and its ``target`` with given draws."""
        flip, x0, y0, cw, ch = draws
        width = image.shape[-1]
        if flip:
            image = image.flip(-1)
        crop = image[None, :, y0 : y0 + ch, x0 : x0 + cw]
        image = F.interpolate(
            crop, size=(self.size, self.size), mode="bilinear", align_corners=False
        )[0]
        boxes, keep = crop_flip_boxes(
            target["boxes"],
            torch.tensor(flip),
            torch.tensor(x0),
            torch.tensor(y0),
            torch.tensor(cw),
            torch.tensor(ch),
            width,
            self.size,
        )
        return image.clamp(0, 1), _select(target, boxes, keep, (self.size, self.size))
