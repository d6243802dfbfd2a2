"""Transforms of detection images whose boxes move with the pixels (chapter 7).

:class:`DetectionResize` brings an image and its boxes to the model's square size
(what the loaders do for every split). The augmentation, a horizontal flip then a
random scale/crop resized back to a square, is :class:`BatchDetectionAugmentation`: a
whole batch at once on its device, each image with its own draws, for
``fit(augment=...)`` (no Python work per image on the CPU). It moves the boxes with
:func:`crop_flip_boxes`. Its readable per-image twin, which gives the same pixels and
boxes for the same draws, is kept in the tests as the reference it is checked against
(``tests/reference_transforms.py``), as torchvision keeps its reference NMS in its tests.

Used in chapter 7.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from course.detection.boxes import box_area

MIN_AREA_KEPT = 0.3  # a box with less than 30 % of its area left in the crop is dropped


def crop_flip_boxes(
    boxes: torch.Tensor,
    flip: torch.Tensor,
    x0: torch.Tensor,
    y0: torch.Tensor,
    cw: torch.Tensor,
    ch: torch.Tensor,
    width: int,
    size: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Boxes (N, 4) of images ``width`` pixels wide, mirrored where ``flip``, cropped to
    ``(x0, y0, x0 + cw, y0 + ch)`` and resized to ``size`` x ``size``.

    ``flip``, ``x0``, ``y0``, ``cw`` and ``ch`` are (N,) tensors, or 0-d ones for
    all the boxes: the draws of each box's image. Returns the new boxes (N, 4),
    clipped to the crop, and ``keep`` (N,): the boxes with at least
    :data:`MIN_AREA_KEPT` of their area left.
    """
    n, dtype = len(boxes), boxes.dtype

    def column(v: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(v, device=boxes.device).to(dtype).expand(n).reshape(n, 1)

    mirrored = torch.stack([width - boxes[:, 2], width - boxes[:, 0]], 1)
    flipped = torch.as_tensor(flip, device=boxes.device).bool().expand(n).reshape(n, 1)
    xs = torch.where(flipped, mirrored, boxes[:, 0::2])
    boxes = torch.stack([xs[:, 0], boxes[:, 1], xs[:, 1], boxes[:, 3]], 1)
    area = box_area(boxes)
    crop_w, crop_h = column(cw), column(ch)
    x = (boxes[:, 0::2] - column(x0)).clamp(min=0)
    y = (boxes[:, 1::2] - column(y0)).clamp(min=0)
    x, y = torch.minimum(x, crop_w), torch.minimum(y, crop_h)
    boxes = torch.stack([x[:, 0], y[:, 0], x[:, 1], y[:, 1]], 1)
    keep = box_area(boxes) >= MIN_AREA_KEPT * area
    scale = torch.cat([size / crop_w, size / crop_h], 1).repeat(1, 2)
    return boxes * scale, keep


def _select(target: dict, boxes: torch.Tensor, keep: torch.Tensor, size: tuple[int, int]) -> dict:
    """``target`` with new ``boxes``, keeping only the objects where ``keep``, for an image
    now of ``size`` (height, width)."""
    return {
        **target,
        "size": size,
        "boxes": boxes[keep],
        "labels": target["labels"][keep],
        "difficult": target["difficult"][keep],
    }


class DetectionResize:
    """Resize an image (3, H, W) in [0, 1] to ``size`` (an int: a square; or (height,
    width)), bilinear, as ``torchvision.transforms.v2.functional.resize`` without
    antialiasing, and scale its boxes (x1, y1, x2, y2 in pixels) alike; no box is clipped
    or dropped. The target's ``"size"`` becomes the new (height, width), which the
    encoders and losses read. The loaders' transform: validation images are only resized,
    and training images are augmented on the device afterwards
    (:class:`BatchDetectionAugmentation`).
    """

    def __init__(self, size: int | tuple[int, int]) -> None:
        self.size = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))

    def __call__(self, image: torch.Tensor, target: dict) -> tuple[torch.Tensor, dict]:
        _, h, w = image.shape
        height, width = self.size
        resized = F.interpolate(
            image[None], size=(height, width), mode="bilinear", align_corners=False
        )
        scale = torch.tensor([width / w, height / h] * 2, dtype=target["boxes"].dtype)
        resized_target = {**target, "boxes": target["boxes"] * scale, "size": (height, width)}
        return resized[0].clamp(0, 1), resized_target


class BatchDetectionAugmentation:
    """A horizontal flip and a random scale/crop (60 to 100 % of the side by default),
    moving the boxes with the pixels, for a whole batch on its device: square images
    (B, 3, S, S), already at the training size, and their list of B targets. Each image
    draws its own flip and crop; the crop is resized back to S x S.

    The crop is read with ``grid_sample`` at the very positions ``F.interpolate``
    reads on the cropped image, so that with the same draws it gives the pixels of a
    crop taken and resized image by image (the reference in the tests). Called as
    ``augment(images, targets) -> (images, targets)``, the form
    ``course.train.fit(augment=...)`` applies to every training batch after its
    transfer. Randomness comes from torch's generator of the batch's device.
    """

    def __init__(self, min_scale: float = 0.6) -> None:
        self.min_scale = min_scale

    def draw(self, n: int, size: int, device: torch.device) -> torch.Tensor:
        """The draws of ``n`` images of ``size`` x ``size``: (n, 5) int64 columns
        ``(flip, x0, y0, crop width, crop height)``: flip with probability 1/2, a square
        crop of ``min_scale`` to 1 times the side, at a uniform position inside the image."""
        u = torch.rand(n, 4, device=device, dtype=torch.float64)
        crop = (size * (self.min_scale + (1.0 - self.min_scale) * u[:, 1])).long()
        x0 = (u[:, 2] * (size - crop + 1)).long()
        y0 = (u[:, 3] * (size - crop + 1)).long()
        return torch.stack([(u[:, 0] < 0.5).long(), x0, y0, crop, crop], 1)

    def __call__(
        self, images: torch.Tensor, targets: list[dict]
    ) -> tuple[torch.Tensor, list[dict]]:
        return self.apply(images, targets, self.draw(len(images), images.shape[-1], images.device))

    def apply(
        self, images: torch.Tensor, targets: list[dict], draws: torch.Tensor
    ) -> tuple[torch.Tensor, list[dict]]:
        """Flip and crop every image and its target with given ``draws`` (B, 5)."""
        b, _, h, w = images.shape
        if h != w:
            raise ValueError(f"expected square images (resize them first), got {h} x {w}")
        device = images.device
        flip, x0, y0, cw, ch = draws.to(device).unbind(1)

        def read_at(start: torch.Tensor, length: torch.Tensor, mirror: torch.Tensor | None):
            # F.interpolate(align_corners=False) reads output pixel u of a crop of
            # `length` pixels at (u + 0.5) * length / size - 0.5, clamped to the crop.
            u = torch.arange(w, device=device, dtype=torch.float64)
            s = (u + 0.5) * (length[:, None].double() / w) - 0.5
            s = start[:, None] + torch.minimum(s.clamp(min=0), (length - 1)[:, None].double())
            if mirror is not None:  # the crop was taken from the mirrored image
                s = torch.where(mirror[:, None].bool(), w - 1 - s, s)
            return ((2 * s + 1) / w - 1).to(images.dtype)  # grid_sample's [-1, 1]

        gx, gy = read_at(x0, cw, flip), read_at(y0, ch, None)
        grid = torch.stack(torch.broadcast_tensors(gx[:, None, :], gy[:, :, None]), -1)
        out = F.grid_sample(images, grid, mode="bilinear", align_corners=False).clamp(0, 1)

        counts = [len(t["boxes"]) for t in targets]
        owner = torch.repeat_interleave(
            torch.arange(b, device=device), torch.tensor(counts, device=device)
        )
        boxes = torch.cat([t["boxes"].to(device).reshape(-1, 4) for t in targets])
        boxes, keep = crop_flip_boxes(
            boxes, flip[owner], x0[owner], y0[owner], cw[owner], ch[owner], w, w
        )
        out_targets = [
            _select(t, b_, k_, (h, w))
            for t, b_, k_ in zip(targets, boxes.split(counts), keep.split(counts), strict=True)
        ]
        return out, out_targets
