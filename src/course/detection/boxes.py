"""Boxes: formats, IoU and non-maximum suppression (chapter 7).

Convention (torchvision's): a box is (x1, y1, x2, y2) in pixels, x to the
right, y down, with x1 <= x2 and y1 <= y2; area = (x2 - x1) * (y2 - y1).
Other formats say so in their names: ``cxcywh`` (centre, width, height) and
the YOLO txt format (class, cx, cy, w, h, all divided by the image size).

``box_iou`` and ``nms`` are re-implemented here to be read, and checked
against ``torchvision.ops`` in the tests.

Used in chapter 7.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """(..., 4) xyxy -> (...) areas, e.g. (N, 4) -> (N,)."""
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Intersection over union of every pair: (N, 4), (M, 4) xyxy -> (N, M).

    IoU = area(A ∩ B) / area(A ∪ B), in [0, 1]; the slides read 0.40 as poor,
    0.73 as good and 0.93 as excellent.
    """
    top_left = torch.max(a[:, None, :2], b[None, :, :2])  # (N, M, 2)
    bottom_right = torch.min(a[:, None, 2:], b[None, :, 2:])  # (N, M, 2)
    wh = (bottom_right - top_left).clamp(min=0)
    intersection = wh[..., 0] * wh[..., 1]
    union = box_area(a)[:, None] + box_area(b)[None, :] - intersection
    return intersection / union


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy non-maximum suppression: indices of the kept boxes, by decreasing score.

    Take the highest-scoring box, drop every remaining box whose IoU with it
    exceeds ``iou_threshold``, repeat. Same result as ``torchvision.ops.nms``.
    """
    order = scores.argsort(descending=True)
    iou = box_iou(boxes, boxes)
    suppressed = torch.zeros(len(boxes), dtype=torch.bool, device=boxes.device)
    keep = []
    for i in order.tolist():
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= iou[i] > iou_threshold
    return torch.tensor(keep, dtype=torch.long, device=boxes.device)


def batched_nms(
    boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, iou_threshold: float
) -> torch.Tensor:
    """NMS within each class only (boxes of different classes never suppress each other)."""
    if len(boxes) == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    offsets = labels.to(boxes) * (boxes.max() + 1)  # move each class far from the others
    return nms(boxes + offsets[:, None], scores, iou_threshold)


def clip_boxes_to_image(boxes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Boxes (..., 4) xyxy clipped to an image of ``size`` = (height, width), as
    ``torchvision.ops.clip_boxes_to_image``: x in [0, width], y in [0, height]."""
    height, width = size
    x = boxes[..., 0::2].clamp(0, width)
    y = boxes[..., 1::2].clamp(0, height)
    return torch.stack([x[..., 0], y[..., 0], x[..., 1], y[..., 1]], -1)


def xyxy_to_cxcywh(boxes: torch.Tensor) -> torch.Tensor:
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], -1)


def cxcywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1)


def voc_to_yolo(boxes: torch.Tensor, labels: torch.Tensor, width: int, height: int) -> str:
    """VOC boxes (pixels, xyxy) -> the lines of a YOLO txt file: ``class cx cy w h``,
    coordinates divided by the image width and height (the slides' annotation example)."""
    cxcywh = xyxy_to_cxcywh(boxes.double()) / torch.tensor([width, height, width, height])
    return "".join(
        f"{int(c)} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}\n"
        for c, (cx, cy, w, h) in zip(labels.tolist(), cxcywh.tolist(), strict=True)
    )


def yolo_to_voc(text: str, width: int, height: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The lines of a YOLO txt file -> (boxes (N, 4) xyxy in pixels, labels (N,))."""
    rows = [line.split() for line in text.splitlines() if line.strip()]
    for row in rows:
        if len(row) != 5:
            raise ValueError(f"a YOLO line has 5 fields 'class cx cy w h', got {' '.join(row)!r}")
    if not rows:
        return torch.zeros(0, 4), torch.zeros(0, dtype=torch.long)
    labels = torch.tensor([int(r[0]) for r in rows])
    cxcywh = torch.tensor([[float(v) for v in r[1:]] for r in rows], dtype=torch.float64)
    boxes = cxcywh_to_xyxy(cxcywh * torch.tensor([width, height, width, height]))
    return boxes.float(), labels


def anchor_boxes(
    grid: int, stride: float, sizes: Sequence[float], aspect_ratios: Sequence[float]
) -> torch.Tensor:
    """The anchors ("default boxes") of a ``grid`` x ``grid`` feature map of stride
    ``stride`` pixels: at the centre of every cell, one box per (size, aspect ratio),
    of area ``size**2`` and width / height = ratio (SSD, Faster R-CNN's RPN).

    Returns (grid * grid * len(sizes) * len(aspect_ratios), 4) xyxy boxes, cell by
    cell in row-major order.
    """
    s = torch.tensor(sizes, dtype=torch.float32)[:, None]
    r = torch.tensor(aspect_ratios, dtype=torch.float32)[None, :]
    w, h = (s * r.sqrt()).flatten(), (s / r.sqrt()).flatten()  # w * h = size**2
    centres = (torch.arange(grid, dtype=torch.float32) + 0.5) * stride
    cy, cx = torch.meshgrid(centres, centres, indexing="ij")
    cx, cy = cx.reshape(-1, 1), cy.reshape(-1, 1)
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1).reshape(-1, 4)
