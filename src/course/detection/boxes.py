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

from course.check import Report, compare, run_checks


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


# ---------------------------------------------------------------------------
# Exercise: write IoU and NMS yourself
# ---------------------------------------------------------------------------


def _random_boxes(n: int, generator: torch.Generator) -> torch.Tensor:
    xy = torch.rand(n, 2, generator=generator) * 80
    wh = 5 + torch.rand(n, 2, generator=generator) * 40
    return torch.cat([xy, xy + wh], dim=1)


_PLUS_ONE = (
    "a +1 pixel convention (width = x2 - x1 + 1): boxes here are continuous, width = x2 - x1"
)


def _wrong_iou(
    a: torch.Tensor,
    b: torch.Tensor,
    *,
    plus_one: float = 0.0,
    clamp: str = "sides",
    divide_by: str = "union",
    corners: str = "overlap",
) -> torch.Tensor:
    """IoU with one of the usual mistakes switched on (the defaults give the right one):
    a +1 pixel, no clamp or a clamp of the product, another denominator, the enclosing
    box's corners instead of the overlap's."""
    pick_lt, pick_rb = (torch.max, torch.min) if corners == "overlap" else (torch.min, torch.max)
    lt = pick_lt(a[:, None, :2], b[None, :, :2])
    rb = pick_rb(a[:, None, 2:], b[None, :, 2:])
    wh = rb - lt + plus_one
    if clamp == "sides":
        wh = wh.clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    if clamp == "product":
        inter = inter.clamp(min=0)
    area_a = ((a[:, 2] - a[:, 0] + plus_one) * (a[:, 3] - a[:, 1] + plus_one))[:, None]
    area_b = ((b[:, 2] - b[:, 0] + plus_one) * (b[:, 3] - b[:, 1] + plus_one))[None]
    denominator = {
        "union": area_a + area_b - inter,
        "sum": area_a + area_b,
        "area_a": area_a.expand_as(inter),
        "smaller": torch.min(area_a, area_b),
    }[divide_by]
    return inter / denominator


#: The usual IoU mistakes, each with what to tell the student.
_IOU_MISTAKES = (
    ({"plus_one": 1.0}, _PLUS_ONE),
    (
        {"clamp": "product"},
        "clamp the intersection's width and height at 0 separately, before multiplying: "
        "two negatives multiply to a positive area",
    ),
    ({"clamp": "none"}, "IoUs outside [0, 1]: clamp the intersection's width and height at 0"),
    (
        {"divide_by": "sum"},
        "union = area(a) + area(b) - intersection: the intersection is counted twice",
    ),
    (
        {"divide_by": "area_a"},
        "you divided by area(a): IoU divides by the union, area(a) + area(b) - intersection",
    ),
    (
        {"divide_by": "smaller"},
        "you divided by the smaller box's area: IoU divides by the union, "
        "area(a) + area(b) - intersection",
    ),
    (
        {"corners": "enclosing"},
        "the overlap's top-left is the max of the top-lefts and its bottom-right the min "
        "of the bottom-rights (you took the enclosing box)",
    ),
)


def _xywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    return torch.cat([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], dim=1)


def check_box_iou(box_iou_fn) -> Report:
    """Check ``box_iou_fn(a, b) -> (N, M)``, the IoU of every box of ``a`` (N, 4) with
    every box of ``b`` (M, 4), xyxy, against ``torchvision.ops.box_iou``: random boxes
    (N = M, then N != M), disjoint boxes (IoU 0), a box inside another, identical boxes
    (IoU 1)."""
    import torchvision

    generator = torch.Generator().manual_seed(0)
    a, b = _random_boxes(6, generator), _random_boxes(6, generator)

    def pairs() -> str | None:
        got, want = box_iou_fn(a, b), torchvision.ops.box_iou(a, b)
        if not isinstance(got, torch.Tensor):
            return compare(got, want, "IoU of random boxes")
        if got.dim() == 1:
            return "returns one IoU per pair (a[i], b[i]): return the (N, M) matrix of all pairs"
        problem = compare(got, want, "IoU of random boxes")
        if problem is None or got.shape != want.shape:
            return problem
        got = got.detach()
        if torch.allclose(got, want.T, atol=1e-5):
            return "returns the (M, N) matrix: rows for the boxes of a, columns for those of b"
        for mistake, advice in _IOU_MISTAKES:
            if torch.allclose(got, _wrong_iou(a, b, **mistake), atol=1e-5, equal_nan=True):
                return advice
        inter = _wrong_iou(a, b, divide_by="sum") * (box_area(a)[:, None] + box_area(b)[None])
        flat_areas = inter / (box_area(a)[None, :] + box_area(b)[None, :] - inter)
        if torch.allclose(got, flat_areas, atol=1e-5):
            return (
                "the areas broadcast the wrong way: union = area(a)[:, None] + "
                "area(b)[None, :] - intersection, an (N, M) matrix"
            )
        if torch.allclose(got, torchvision.ops.box_iou(_xywh_to_xyxy(a), _xywh_to_xyxy(b))):
            return "the boxes are xyxy corners (x1, y1, x2, y2), not (x, y, w, h)"
        if (got < -1e-6).any() or (got > 1 + 1e-6).any():
            return "IoUs outside [0, 1]: clamp the intersection's width and height at 0"
        return problem

    def other_sizes() -> str | None:
        got = box_iou_fn(a[:5], b[:3])
        return compare(got, torchvision.ops.box_iou(a[:5], b[:3]), "IoU of 5 boxes with 3")

    def disjoint() -> str | None:
        left = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
        far = torch.tensor([[20.0, 30.0, 25.0, 40.0]])
        got = box_iou_fn(left, far)
        if isinstance(got, torch.Tensor) and got.numel() == 1 and got.item() != 0:
            return (
                f"two disjoint boxes have IoU {got.item():.3f}, not 0: clamp the "
                "intersection's width and height at 0 (two negatives multiply to a "
                "positive area)"
            )
        return compare(got, torch.zeros(1, 1), "IoU of disjoint boxes")

    def edge_cases() -> str | None:
        outer = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
        inner = torch.tensor([[2.0, 2.0, 7.0, 7.0], [0.0, 0.0, 10.0, 10.0]])
        got = box_iou_fn(outer, inner)
        if (
            isinstance(got, torch.Tensor)
            and got.shape == (1, 2)
            and abs(got[0, 1] - 100 / 121) < 1e-4
        ):
            return _PLUS_ONE
        return compare(got, torch.tensor([[0.25, 1.0]]), "a box inside another; identical boxes")

    return run_checks(
        "box_iou",
        [
            ("IoU of random boxes", pairs),
            ("N != M", other_sizes),
            ("disjoint boxes", disjoint),
            ("nested and identical boxes", edge_cases),
        ],
    )


def _wrong_nms(
    iou: torch.Tensor,
    scores: torch.Tensor,
    threshold: float,
    *,
    visit: str = "descending",
    against: str = "kept",
    discard: str = "greater",
) -> list[int]:
    """Greedy NMS with one of the usual mistakes switched on (the defaults give the
    right one): the visiting order, which boxes a box is compared with (the kept ones,
    only the last kept, or every higher-scoring one, suppressed or not: "fast" NMS),
    and the comparison that discards."""
    order = {
        "descending": scores.argsort(descending=True),
        "ascending": scores.argsort(),
        "index": torch.arange(len(scores)),
    }[visit]
    keep: list[int] = []
    seen: list[int] = []
    for i in order.tolist():
        others = {"kept": keep, "last": keep[-1:], "all_before": seen}[against]
        overlaps = [float(iou[i, j]) for j in others]
        drop = {
            "greater": any(v > threshold for v in overlaps),
            "greater_equal": any(v >= threshold for v in overlaps),
            "reversed": any(v <= threshold for v in overlaps),
        }[discard]
        if not drop:
            keep.append(i)
        seen.append(i)
    return keep


#: The usual NMS mistakes (as :func:`_wrong_nms`'s switches), each with its advice.
_NMS_MISTAKES = (
    (
        {"visit": "index"},
        "visit the boxes by decreasing score (argsort(descending=True)), not in index order",
    ),
    (
        {"visit": "ascending"},
        "visit the boxes by decreasing score (argsort(descending=True)), not increasing",
    ),
    (
        {"against": "all_before"},
        "a suppressed box still suppressed others: once discarded, a box no longer "
        "counts; compare each box only with the boxes kept so far",
    ),
    ({"against": "last"}, "compare each box with every kept box, not only the last one kept"),
    (
        {"discard": "reversed"},
        "the comparison is reversed: discard the boxes whose IoU > threshold with a kept "
        "box, keep the others",
    ),
    (
        {"discard": "greater_equal"},
        "a box whose IoU equals the threshold is discarded: discard only IoU > threshold",
    ),
)


def _diagnose_nms(got, boxes: torch.Tensor, scores: torch.Tensor, threshold: float) -> str | None:
    """The usual mistake that gives ``got`` (kept indices) on these boxes, if any."""
    if not isinstance(got, torch.Tensor) or got.dtype == torch.bool or got.dim() != 1:
        return None
    got_list = got.tolist()
    iou = box_iou(boxes, boxes)
    right = _wrong_nms(iou, scores, threshold)
    if got_list != right and sorted(got_list) == sorted(right):
        return "the right boxes, in the wrong order: return them by decreasing score"
    order = scores.argsort(descending=True).tolist()
    if got_list == [order.index(i) for i in right]:
        return (
            "returns positions in the sorted order: return the boxes' own indices, "
            "order[position] (order = scores.argsort(descending=True))"
        )
    for mistake, advice in _NMS_MISTAKES:
        if got_list == _wrong_nms(iou, scores, threshold, **mistake):
            return advice
    one = torch.tensor([0.0, 0.0, 1.0, 1.0])
    if got_list == _wrong_nms(box_iou(boxes + one, boxes + one), scores, threshold):
        return f"the kept boxes are those of an IoU with {_PLUS_ONE}"
    return None


def check_nms(nms_fn) -> Report:
    """Check ``nms_fn(boxes, scores, iou_threshold) -> kept indices``, greedy
    non-maximum suppression, against ``torchvision.ops.nms``: visit the boxes by
    decreasing score, keep one, discard every remaining box whose IoU with it is
    greater than the threshold; return the kept indices (int64), best first. Besides
    random boxes: a chain A-B-C where B overlaps both and A and C do not overlap (a
    discarded B must not discard C), and a box overlapping an earlier kept box but not
    the last one kept."""
    import torchvision

    generator = torch.Generator().manual_seed(1)
    boxes = _random_boxes(30, generator)
    scores = torch.rand(30, generator=generator)

    def case(boxes: torch.Tensor, scores: torch.Tensor, threshold: float, what: str):
        def check() -> str | None:
            got = nms_fn(boxes.clone(), scores.clone(), threshold)
            if isinstance(got, torch.Tensor) and got.dtype == torch.bool:
                return "returns a mask: return the indices of the kept boxes (int64), best first"
            problem = compare(got, torchvision.ops.nms(boxes, scores, threshold), what)
            if problem is None:
                return None
            return _diagnose_nms(got, boxes, scores, threshold) or problem

        return check

    # IoU(A, B) = IoU(B, C) = 1/3, IoU(A, C) = 0: B is discarded, C is kept
    chain = torch.tensor([[0.0, 0.0, 10.0, 10.0], [5.0, 0.0, 15.0, 10.0], [10.0, 0.0, 20.0, 10.0]])
    # the third box overlaps the first (kept), not the second (kept last)
    earlier = torch.tensor(
        [[0.0, 0.0, 10.0, 10.0], [50.0, 50.0, 60.0, 60.0], [2.0, 0.0, 12.0, 10.0]]
    )
    three = torch.tensor([0.9, 0.8, 0.7])

    def threshold() -> str | None:
        pair = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 5.0]])  # IoU exactly 0.5
        got = nms_fn(pair, torch.tensor([0.9, 0.8]), 0.5)
        want = torchvision.ops.nms(pair, torch.tensor([0.9, 0.8]), 0.5)
        if isinstance(got, torch.Tensor) and got.tolist() == [0]:
            return (
                "a box whose IoU equals the threshold is discarded: discard only "
                f"IoU > threshold (or your IoU is too large: {_PLUS_ONE})"
            )
        return compare(got, want, "IoU equal to the threshold")

    def empty() -> str | None:
        got = nms_fn(torch.zeros(0, 4), torch.zeros(0), 0.5)
        return compare(got, torch.zeros(0, dtype=torch.int64), "no box at all")

    return run_checks(
        "nms",
        [
            ("30 random boxes", case(boxes, scores, 0.3, "the kept indices")),
            ("a chain A-B-C", case(chain, three, 0.3, "the chain A-B-C")),
            ("an earlier kept box", case(earlier, three, 0.3, "an earlier kept box")),
            ("IoU equal to the threshold", threshold),
            ("no box at all", empty),
        ],
    )
