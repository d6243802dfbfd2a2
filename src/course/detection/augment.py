"""Detection-aware augmentation: the boxes move with the pixels (chapter 7).

Used in chapter 7.
"""

from __future__ import annotations

import torch

from course.detection.boxes import box_area


class DetectionAugmentation:
    """Horizontal flip and random scale/crop, moving the boxes with the pixels,
    then a resize to ``size`` x ``size``.

    Boxes that leave the crop are clipped; those with less than 30 % of their
    area left are dropped. Without ``train`` it only resizes.

    Randomness comes from torch. Without ``seed``, from its global generator,
    which a DataLoader seeds anew in every worker and at every epoch, so that
    workers and epochs all see different flips and crops (reproducible with
    ``seed_everything`` and the loader's ``generator``). With ``seed``, from a
    private generator: the same draws every time, for figures.
    """

    def __init__(
        self, size: int, train: bool = True, min_scale: float = 0.6, seed: int | None = None
    ) -> None:
        self.size, self.train, self.min_scale = size, train, min_scale
        self.generator = torch.Generator().manual_seed(seed) if seed is not None else None

    def _uniform(self) -> float:
        return float(torch.rand((), generator=self.generator))

    def __call__(self, image: torch.Tensor, target: dict) -> tuple[torch.Tensor, dict]:
        _, h, w = image.shape
        boxes, keep = target["boxes"].clone(), torch.ones(len(target["boxes"]), dtype=torch.bool)
        if self.train:
            if self._uniform() < 0.5:
                image = image.flip(-1)
                boxes[:, [0, 2]] = w - boxes[:, [2, 0]]
            scale = self.min_scale + (1.0 - self.min_scale) * self._uniform()
            cw, ch = int(w * scale), int(h * scale)
            x0, y0 = int(self._uniform() * (w - cw + 1)), int(self._uniform() * (h - ch + 1))
            image = image[:, y0 : y0 + ch, x0 : x0 + cw]
            area = box_area(boxes)
            boxes -= torch.tensor([x0, y0, x0, y0], dtype=boxes.dtype)
            boxes[:, 0::2] = boxes[:, 0::2].clamp(0, cw)
            boxes[:, 1::2] = boxes[:, 1::2].clamp(0, ch)
            keep = box_area(boxes) >= 0.3 * area
            h, w = ch, cw
        image = torch.nn.functional.interpolate(
            image[None], size=(self.size, self.size), mode="bilinear", align_corners=False
        )[0]
        boxes = boxes * torch.tensor([self.size / w, self.size / h] * 2, dtype=boxes.dtype)
        target = {
            **target,
            "boxes": boxes[keep],
            "labels": target["labels"][keep],
            "difficult": target["difficult"][keep],
        }
        return image.clamp(0, 1), target
