"""YOLO v1 (Redmon et al., 2016) with a ResNet18 backbone (chapter 7).

The image is divided into an S x S grid. Each cell predicts B boxes, each
(x, y, sqrt(w), sqrt(h), confidence), and one set of C class probabilities:
an output of S x S x (5B + C). (x, y) is the centre's position inside the
cell, in [0, 1]; w and h are relative to the image; predicting their square
roots makes an error on a small box cost more than the same error on a large
one. The cell containing an object's centre is responsible for it, and among
its B boxes the one with the highest IoU with the object (the "responsible"
box) learns its coordinates and a confidence equal to that IoU.

Loss (sum of squared errors, per image)::

      lambda_coord * sum_resp [(x - x')^2 + (y - y')^2
                               + (sqrt w - sqrt w')^2 + (sqrt h - sqrt h')^2]
    + sum_resp (C - IoU)^2 + lambda_noobj * sum_not_resp C^2
    + sum_cells_with_object sum_c (p(c) - p'(c))^2

with lambda_coord = 5 and lambda_noobj = 0.5.

Used in chapter 7.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from course.check import Report, compare, run_checks
from course.data import IMAGENET_MEAN, IMAGENET_STD, Normalize
from course.detection.backbone import detection_backbone
from course.detection.boxes import batched_nms, box_area, clip_boxes_to_image, cxcywh_to_xyxy
from course.models.resnet import ResNet18


class YOLOv1(nn.Module):
    """ResNet18 features -> conv -> resize to S x S -> 1x1 conv to 5B + C channels.

    ``stages`` (2 to 4) cuts the backbone as in :class:`course.detection.CenterNet`.

    Input (N, 3, H, W) in [0, 1] (normalisation inside); output (N, S, S, 5B + C)
    with the box values and confidences through a sigmoid and the class
    probabilities through a softmax, as the paper's squared-error loss wants.
    """

    def __init__(
        self,
        num_classes: int,
        grid: int = 7,
        boxes_per_cell: int = 2,
        backbone: ResNet18 | None = None,
        stages: int = 4,
    ) -> None:
        super().__init__()
        self.num_classes, self.grid, self.boxes_per_cell = num_classes, grid, boxes_per_cell
        self.stages = stages
        self.normalize = Normalize(IMAGENET_MEAN, IMAGENET_STD)
        self.backbone = detection_backbone(backbone, stages)
        self.neck = nn.Sequential(
            nn.Conv2d((64, 128, 256, 512)[stages - 1], 256, 3, padding=1, bias=False),
            nn.BatchNorm2d(256),
            nn.LeakyReLU(0.1, inplace=True),
        )
        self.head = nn.Conv2d(256, 5 * boxes_per_cell + num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.neck(self.backbone.features(self.normalize(x), self.stages))
        f = nn.functional.interpolate(
            f, size=(self.grid, self.grid), mode="bilinear", align_corners=False
        )
        out = self.head(f).permute(0, 2, 3, 1)  # (N, S, S, 5B + C)
        b = 5 * self.boxes_per_cell
        return torch.cat([torch.sigmoid(out[..., :b]), torch.softmax(out[..., b:], -1)], -1)


def encode_yolo_targets(
    boxes: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    grid: int,
    image_size: tuple[int, int],
) -> torch.Tensor:
    """(S, S, 5 + C) target of one image: x, y (in the cell), w, h (of the image),
    objectness 1, one-hot class, in the cell holding each object's centre.

    One object per cell: when two centres fall in the same cell, the larger
    object is kept (on equal areas, the later one): YOLO v1's known limit on
    crowded scenes. :func:`encode_yolo_batch` is the same for a whole batch."""
    height, width = image_size
    target = torch.zeros(grid, grid, 5 + num_classes)
    areas = box_area(boxes)
    for i in areas.argsort(stable=True).tolist():  # small first: a larger object overwrites
        x1, y1, x2, y2 = boxes[i].tolist()
        cx, cy = (x1 + x2) / 2 / width, (y1 + y2) / 2 / height
        col, row = min(int(cx * grid), grid - 1), min(int(cy * grid), grid - 1)
        target[row, col, :5] = torch.tensor(
            [cx * grid - col, cy * grid - row, (x2 - x1) / width, (y2 - y1) / height, 1.0]
        )
        target[row, col, 5:] = 0
        target[row, col, 5 + int(labels[i])] = 1
    return target


def _image_index(targets: Sequence[dict], device: torch.device) -> torch.Tensor:
    """The image index of every object of a batch of target dicts, concatenated."""
    counts = torch.tensor([len(t["boxes"]) for t in targets], device=device)
    return torch.repeat_interleave(torch.arange(len(targets), device=device), counts)


def image_sizes(
    targets: Sequence[dict], image_size: tuple[int, int] | None = None
) -> list[tuple[int, int]]:
    """Each image's (height, width): its target's ``"size"`` (what the loader and every
    resizing transform keep current), checked against ``image_size`` when both are given.

    Raises:
        ValueError: a target without ``"size"`` and no ``image_size``, or a ``"size"``
            that differs from ``image_size`` (a stale setting: the images were resized
            to another size than the one the loss was told).
    """
    sizes = []
    for k, target in enumerate(targets):
        size = target.get("size")
        if size is None:
            if image_size is None:
                raise ValueError(
                    f"target {k} has no 'size' (height, width) and no image_size was given: "
                    "use a transform of course.detection.transforms (they keep 'size' "
                    "current) or pass image_size=(height, width)"
                )
            size = image_size
        size = (int(size[0]), int(size[1]))
        if image_size is not None and size != tuple(image_size):
            raise ValueError(
                f"target {k} is for a {size[0]} x {size[1]} image, but image_size is "
                f"{tuple(image_size)}: leave image_size out, the size comes with the targets"
            )
        sizes.append(size)
    return sizes


def encode_yolo_batch(
    targets: Sequence[dict],
    num_classes: int,
    grid: int,
    image_size: tuple[int, int] | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """(N, S, S, 5 + C) targets of a batch at once, on ``device``: the same as stacking
    :func:`encode_yolo_targets` of every image, with tensor operations instead of a
    Python loop over the objects (the loss calls it at every step).

    Each image's (height, width) is its target's ``"size"`` (:func:`image_sizes`), or
    ``image_size`` for targets without one. Where several centres fall in one cell, the
    largest object wins (on equal areas, the later one), as in the loop."""
    device = torch.device(device)
    n = len(targets)
    target = torch.zeros(n * grid * grid, 5 + num_classes, device=device)
    if n == 0 or sum(len(t["boxes"]) for t in targets) == 0:
        return target.reshape(n, grid, grid, 5 + num_classes)
    sizes = torch.tensor(image_sizes(targets, image_size), dtype=torch.float32, device=device)
    boxes = torch.cat([t["boxes"] for t in targets]).to(device, torch.float32)
    labels = torch.cat([t["labels"] for t in targets]).to(device)
    image = _image_index(targets, device)
    height, width = sizes[image, 0], sizes[image, 1]  # of each object's image
    cx = (boxes[:, 0] + boxes[:, 2]) / 2 / width
    cy = (boxes[:, 1] + boxes[:, 3]) / 2 / height
    col = (cx * grid).long().clamp(min=0, max=grid - 1)
    row = (cy * grid).long().clamp(min=0, max=grid - 1)
    cell = (image * grid + row) * grid + col
    # The winner of each cell: the highest rank in the loop's order (area, then position).
    order = torch.argsort(box_area(boxes), stable=True)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order), device=device)
    best = torch.full((n * grid * grid,), -1, dtype=rank.dtype, device=device)
    best = best.scatter_reduce(0, cell, rank, reduce="amax")
    win = best[cell] == rank
    row_values = torch.stack(
        [
            cx * grid - col,
            cy * grid - row,
            (boxes[:, 2] - boxes[:, 0]) / width,
            (boxes[:, 3] - boxes[:, 1]) / height,
            torch.ones_like(cx),
        ],
        1,
    )
    one_hot = nn.functional.one_hot(labels, num_classes).float()
    target[cell[win]] = torch.cat([row_values, one_hot], 1)[win]
    return target.reshape(n, grid, grid, 5 + num_classes)


def _cell_boxes_to_xyxy(xy: torch.Tensor, wh: torch.Tensor, grid: int) -> torch.Tensor:
    """(N, S, S, B, 2) cell offsets and (N, S, S, B, 2) relative sizes -> (N, S, S, B, 4)
    xyxy boxes in fractions of the image (row index = dim 1, column index = dim 2)."""
    index = torch.arange(grid, device=xy.device, dtype=xy.dtype)
    cx = (xy[..., 0] + index.view(1, 1, grid, 1)) / grid
    cy = (xy[..., 1] + index.view(1, grid, 1, 1)) / grid
    return cxcywh_to_xyxy(torch.stack([cx, cy, wh[..., 0], wh[..., 1]], -1))


class YOLOv1Loss(nn.Module):
    """The YOLO v1 loss for ``course.train.fit``: ``loss(outputs, targets)`` with the
    model's (N, S, S, 5B + C) output and a list of target dicts (``boxes``, ``labels``,
    ``size``).

    The size of each image, which turns its pixel boxes into the grid's fractions, comes
    with the batch: each target's ``"size"`` (height, width), which the loaders and every
    resizing transform of :mod:`course.detection.transforms` keep current. ``image_size``
    is only needed for targets without one; when given, it must agree with them.
    """

    def __init__(
        self,
        num_classes: int,
        grid: int,
        boxes_per_cell: int = 2,
        image_size: tuple[int, int] | None = None,
        lambda_coord: float = 5.0,
        lambda_noobj: float = 0.5,
    ) -> None:
        super().__init__()
        self.num_classes, self.grid, self.b = num_classes, grid, boxes_per_cell
        self.image_size, self.lambda_coord, self.lambda_noobj = (
            image_size,
            lambda_coord,
            lambda_noobj,
        )

    def forward(self, outputs: torch.Tensor, targets: Sequence[dict]) -> torch.Tensor:
        outputs = outputs.float()
        n, s = outputs.shape[0], self.grid
        if outputs.shape[1:3] != (s, s):
            raise ValueError(f"outputs are {tuple(outputs.shape[1:3])} cells, the loss's grid {s}")
        target = encode_yolo_batch(
            targets, self.num_classes, s, self.image_size, device=outputs.device
        )
        boxes = outputs[..., : 5 * self.b].reshape(n, s, s, self.b, 5)  # x, y, sqrt w, sqrt h, C
        has_object = target[..., 4] > 0  # (N, S, S)

        predicted = _cell_boxes_to_xyxy(boxes[..., :2], boxes[..., 2:4] ** 2, s)
        true = _cell_boxes_to_xyxy(target[..., None, :2], target[..., None, 2:4], s)
        iou = _paired_iou(predicted, true.expand_as(predicted)).detach()  # (N, S, S, B)
        responsible = nn.functional.one_hot(iou.argmax(-1), self.b).bool() & has_object[..., None]

        t = target[..., None, :].expand(-1, -1, -1, self.b, -1)
        coord = (
            (boxes[..., 0] - t[..., 0]) ** 2
            + (boxes[..., 1] - t[..., 1]) ** 2
            + (boxes[..., 2] - t[..., 2].sqrt()) ** 2
            + (boxes[..., 3] - t[..., 3].sqrt()) ** 2
        )
        confidence_obj = (boxes[..., 4] - iou) ** 2
        confidence_noobj = boxes[..., 4] ** 2
        classes = ((outputs[..., 5 * self.b :] - target[..., 5:]) ** 2).sum(-1)
        loss = (
            self.lambda_coord * coord[responsible].sum()
            + confidence_obj[responsible].sum()
            + self.lambda_noobj * confidence_noobj[~responsible].sum()
            + classes[has_object].sum()
        )
        return loss / n


def _paired_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of a[..., :] and b[..., :] element by element (same shapes (..., 4))."""
    top_left = torch.max(a[..., :2], b[..., :2])
    bottom_right = torch.min(a[..., 2:], b[..., 2:])
    inter = (bottom_right - top_left).clamp(min=0).prod(-1)
    return inter / (box_area(a) + box_area(b) - inter).clamp(min=1e-9)


@torch.no_grad()
def decode_yolo(
    outputs: torch.Tensor,
    grid: int,
    boxes_per_cell: int,
    image_size: tuple[int, int],
    score_threshold: float = 0.05,
    iou_threshold: float = 0.5,
) -> list[dict]:
    """Detections of every image: score = confidence x class probability, boxes in input
    pixels, then per-class NMS. Returns dicts ``boxes``, ``scores``, ``labels``.

    ``image_size`` = (height, width) of the network's input (required: the outputs are
    fractions of the image and cells, and only the caller knows the image). In the paper,
    YOLO v1's last layer is linear (no activation), so its confidences and class
    probabilities can leave [0, 1]; :class:`YOLOv1`'s heads end in a sigmoid (box values,
    confidences) and a softmax (class probabilities), so they cannot. The decoder still
    clamps both into [0, 1] (scores then lie in [0, 1] whatever head produced them) and
    clips boxes whose centre or size reach past the image.
    """
    n, s = outputs.shape[0], grid
    height, width = image_size
    boxes = outputs[..., : 5 * boxes_per_cell].reshape(n, s, s, boxes_per_cell, 5).float()
    probs = outputs[..., 5 * boxes_per_cell :].float().clamp(0, 1)
    xyxy = _cell_boxes_to_xyxy(boxes[..., :2], boxes[..., 2:4] ** 2, s)
    xyxy = xyxy * torch.tensor([width, height, width, height], device=outputs.device)
    xyxy = clip_boxes_to_image(xyxy, (height, width))
    class_prob, label = probs.max(-1)  # (N, S, S)
    scores = boxes[..., 4].clamp(0, 1) * class_prob[..., None]  # (N, S, S, B)
    labels = label[..., None].expand_as(scores)
    results = []
    for i in range(n):
        keep = scores[i].flatten() > score_threshold
        b, sc, lb = (
            xyxy[i].reshape(-1, 4)[keep],
            scores[i].flatten()[keep],
            labels[i].flatten()[keep],
        )
        kept = batched_nms(b, sc, lb, iou_threshold)
        results.append({"boxes": b[kept], "scores": sc[kept], "labels": lb[kept]})
    return results


def yolo_output_from_targets(target: torch.Tensor, boxes_per_cell: int) -> torch.Tensor:
    """A "perfect" network output for an encoded target (S, S, 5 + C): in a cell with an
    object, the first box equals it with confidence 1 and the others have confidence 0.
    Its loss is 0; it checks encode -> decode round trips."""
    box = torch.cat([target[..., :2], target[..., 2:4].sqrt(), target[..., 4:5]], -1)
    others = torch.zeros(*target.shape[:2], 5 * (boxes_per_cell - 1))
    return torch.cat([box, others, target[..., 5:]], -1)


# ---------------------------------------------------------------------------
# Exercise: write YOLO's target encoding yourself
# ---------------------------------------------------------------------------


def check_yolo_encoding(encode) -> Report:
    """Check ``encode(boxes, labels, num_classes, grid, image_size) -> (S, S, 5 + C)``,
    YOLO v1's target for one image (``image_size`` is (height, width), boxes xyxy in
    pixels, at most one object per cell here), against :func:`encode_yolo_targets`:
    the object goes to the cell (row, col) holding its centre; x, y are the centre's
    offsets inside that cell, in [0, 1); w, h are the box's size divided by the
    image's; then objectness 1 and the one-hot class."""
    image_size = (200, 300)  # not square: height and width must not be swapped
    boxes = torch.tensor(
        [
            [10.0, 20.0, 70.0, 60.0],  # centre (40, 40): row 1, col 0 on a 7 x 7 grid
            [150.0, 100.0, 290.0, 190.0],  # centre (220, 145): row 5, col 5
            [200.0, 5.0, 300.0, 40.0],  # centre (250, 22.5): row 0, col 5
            [0.0, 170.0, 300.0, 200.0],  # centre (150, 185): the last row
        ]
    )
    labels = torch.tensor([2, 0, 1, 2])

    def run(boxes, labels):
        got = encode(boxes.clone(), labels.clone(), 3, 7, image_size)
        return got, encode_yolo_targets(boxes, labels, 3, 7, image_size)

    def occupancy(
        size: tuple[int, int] = image_size, to_cell=math.floor, corner: bool = False
    ) -> torch.Tensor:
        """The cells a student's rule puts the objects in, (7, 7) bool."""
        height, width = size
        cells = torch.zeros(7, 7, dtype=torch.bool)
        for x1, y1, x2, y2 in boxes.tolist():
            cx, cy = (x1, y1) if corner else ((x1 + x2) / 2, (y1 + y2) / 2)
            row = min(to_cell(cy / height * 7), 6)
            col = min(to_cell(cx / width * 7), 6)
            cells[row, col] = True
        return cells

    def cells() -> str | None:
        got, want = run(boxes, labels)
        if got is None or not isinstance(got, torch.Tensor) or got.shape != want.shape:
            return compare(got, want, "the target")
        got = got.detach()
        occupied, expected = got[..., 4] == 1, want[..., 4] == 1
        if torch.equal(occupied, expected):
            return None
        filled = (got != 0).any(-1)
        objectness_set = bool((got[..., 4][filled] == 1).all())
        if not objectness_set and (
            torch.equal(filled, expected) or torch.equal(filled, expected.T)
        ):
            where = "channel 0" if (got[..., 0][expected] == 1).all() else "nowhere"
            return (
                "the objectness (channel 4) must be 1 in the cell of each object, after "
                f"x, y, w, h (x, y, w, h, objectness, classes); yours is at {where}"
            )
        if torch.equal(occupied, expected.T):
            return (
                "rows and columns are swapped: the target is indexed [row, col] = [y cell, x cell]"
            )
        if torch.equal(occupied, occupancy(to_cell=round)):
            return "a grid cell off by one: the cell index is floor(cx * S), not round(cx * S)"
        if torch.equal(occupied, occupancy(size=image_size[::-1])):
            return (
                "objects in the wrong cells: image_size is (height, width); you read it "
                "as (width, height)"
            )
        if torch.equal(occupied, occupancy(corner=True)):
            return (
                "objects in the wrong cells: the cell is the one of the box's centre, "
                "((x1 + x2) / 2, (y1 + y2) / 2), not of its top-left corner"
            )
        return (
            "objects in the wrong cells: the cell is (floor(cy * S), floor(cx * S)), "
            "with cx = centre x / width and cy = centre y / height"
        )

    def values() -> str | None:
        got, want = run(boxes, labels)
        got = got.detach()
        cell = want[..., 4] == 1
        classes, want_classes = got[cell][:, 5:], want[cell][:, 5:]
        if not torch.equal(classes, want_classes):
            if not classes.any():
                return (
                    "the one-hot class goes to channel 5 + label (after x, y, w, h and "
                    "the objectness), not to channel label"
                )
            one_hot = ((classes == 0) | (classes == 1)).all() and (classes.sum(1) == 1).all()
            if not one_hot:
                return "the class is one-hot: channel 5 + label is 1, the other classes 0"
            return "the wrong class is set: channel 5 + label, for the object's own label"
        offsets = got[cell][:, :2]
        rows_cols = cell.nonzero().flip(1).float()  # (col, row) of each object, row-major
        in_image = (rows_cols + want[cell][:, :2]) / 7
        if (
            torch.allclose(offsets, in_image, atol=1e-5)
            or (offsets < 0).any()
            or (offsets >= 1).any()
        ):
            return (
                "x, y must be the centre's offset inside its cell, in [0, 1): "
                "cx * S - col, not the position in the image"
            )
        problem = compare(got[cell][:, :2], want[cell][:, :2], "x, y (offsets in the cell)")
        if problem is not None:
            return problem
        wh, want_wh = got[cell][:, 2:4], want[cell][:, 2:4]
        if torch.allclose(wh, want_wh * 7, atol=1e-5):
            return "w, h are fractions of the image (w / width), not of a cell"
        if torch.allclose(wh, want_wh.sqrt(), atol=1e-5):
            return (
                "store w, h themselves (fractions of the image), not their square root: "
                "the loss takes the square root"
            )
        if torch.allclose(wh, want_wh * torch.tensor([image_size[1], image_size[0]]), atol=1e-3):
            return "w, h are in pixels: divide by the image's width and height"
        if torch.allclose(wh, want_wh.flip(1), atol=1e-5):
            return "w and h are swapped: image_size is (height, width)"
        return compare(got, want, "the whole target (x, y, w, h, objectness, one-hot class)")

    def edge() -> str | None:
        corner = torch.tensor([[250.0, 150.0, 300.0, 200.0]])  # centre (275, 175)
        edge_box = torch.tensor([[280.0, 180.0, 300.0, 200.0]])  # centre near the corner
        for box in (corner, edge_box):
            got, want = run(box, torch.tensor([1]))
            problem = compare(got, want, "an object in the bottom-right cell")
            if problem is not None:
                return problem
        return None

    return run_checks(
        "yolo encoding",
        [
            ("each object in the cell of its centre", cells),
            ("x, y, w, h, objectness and class", values),
            ("an object in the bottom-right cell", edge),
        ],
    )
