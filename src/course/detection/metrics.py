"""Pascal VOC average precision and mAP (chapter 7).

The rules of the VOC devkit's evaluation (``VOCevaldet.m`` and ``VOCap.m`` of the
MATLAB devkit; ``voc_eval.py`` of py-faster-rcnn is its Python port): per class,
all detections of all images are sorted by decreasing score (ties keep their
order: image by image, then as listed); each detection is matched with the
ground truth of that class that it overlaps most in its image, and it is a true
positive if that IoU is at least the threshold (``ovmax >= minoverlap`` in
VOCevaldet.m, 0.5 by default) and that ground truth was not already matched (a
duplicate is a false positive); a detection matched with a ground truth marked
"difficult" is neither a true nor a false positive, and difficult objects do not
count as positives. AP is the area under the precision/recall curve made monotone
(VOC2010 on, ``VOCap.m``), or the mean of the best precision at recall >= 0, 0.1,
..., 1 (VOC2007's 11 points, ``use_07_metric``).

Two details differ from the devkit, on purpose. Coordinates are continuous
(torchvision's convention): the devkit's "+1" pixel in widths is not added. The
11 recall levels are exactly k / 10: MATLAB's ``0:0.1:1`` holds
0.30000000000000004, where a recall of exactly 3/10 misses the 0.3 level
(py-faster-rcnn's ``np.arange(0, 1.1, 0.1)`` also misses 0.6 and 0.7).
tests/test_detection_reference.py checks these rules against a transcription
of the devkit's loop.

Used in chapter 7.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from course.detection.boxes import box_iou

_RECALL_LEVELS = np.arange(11) / 10  # exactly 0, 0.1, ..., 1 (not 3 * 0.1)


def voc_ap(recall: np.ndarray, precision: np.ndarray, use_07_metric: bool = False) -> float:
    """Average precision from the recall and precision (M,) after each of M detections
    sorted by decreasing score: the area under the precision envelope, or with
    ``use_07_metric`` the mean of the best precision at recall >= 0, 0.1, ..., 1."""
    recall, precision = np.asarray(recall, float), np.asarray(precision, float)
    if use_07_metric:
        return float(
            np.mean(
                [
                    precision[recall >= t].max() if (recall >= t).any() else 0.0
                    for t in _RECALL_LEVELS
                ]
            )
        )
    r = np.concatenate([[0.0], recall, [1.0]])
    p = np.concatenate([[0.0], precision, [0.0]])
    p = np.maximum.accumulate(p[::-1])[::-1]  # precision envelope: max to the right
    steps = np.flatnonzero(r[1:] != r[:-1])
    return float(np.sum((r[steps + 1] - r[steps]) * p[steps + 1]))


def _tensor(x, dtype=None) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x, dtype=dtype)


def voc_map(
    detections: Sequence[Mapping],
    ground_truths: Sequence[Mapping],
    num_classes: int,
    iou_threshold: float = 0.5,
    use_07_metric: bool = False,
) -> dict:
    """mAP over ``num_classes`` classes, VOC rules: a detection is a true positive when
    its IoU with an unmatched ground truth is at least ``iou_threshold``.

    Args:
        detections: one dict per image with ``boxes`` (N, 4) xyxy, ``scores``
            (N,), ``labels`` (N,); tensors or numpy arrays.
        ground_truths: one dict per image with ``boxes``, ``labels`` and
            optionally ``difficult`` (bool, (M,)).
    Returns:
        ``{"map": float, "ap": [float per class]}``; a class without any
        (non-difficult) ground truth gets AP NaN and is left out of the mean.
    """
    if len(detections) != len(ground_truths):
        raise ValueError(f"{len(detections)} detection dicts for {len(ground_truths)} images")
    aps = []
    for c in range(num_classes):
        gts, n_positive = [], 0
        for gt in ground_truths:
            labels = _tensor(gt["labels"]).long().reshape(-1)
            boxes = _tensor(gt["boxes"], torch.float64).reshape(-1, 4)[labels == c]
            difficult = (
                _tensor(gt["difficult"]).bool().reshape(-1)[labels == c]
                if "difficult" in gt
                else torch.zeros(len(boxes), dtype=torch.bool)
            )
            gts.append((boxes, difficult, torch.zeros(len(boxes), dtype=torch.bool)))
            n_positive += int((~difficult).sum())
        records = []  # (score, image index, box)
        for i, det in enumerate(detections):
            labels = _tensor(det["labels"]).long().reshape(-1)
            boxes = _tensor(det["boxes"], torch.float64).reshape(-1, 4)[labels == c]
            scores = _tensor(det["scores"], torch.float64).reshape(-1)[labels == c]
            records += [(float(s), i, b) for s, b in zip(scores, boxes, strict=True)]
        if n_positive == 0:
            aps.append(float("nan"))
            continue
        records.sort(key=lambda r: -r[0])
        tp, fp = np.zeros(len(records)), np.zeros(len(records))
        for k, (_, i, box) in enumerate(records):
            gt_boxes, difficult, matched = gts[i]
            if len(gt_boxes) == 0:
                fp[k] = 1
                continue
            iou = box_iou(box[None], gt_boxes)[0]
            best = int(iou.argmax())
            if iou[best] >= iou_threshold:  # VOCevaldet.m: ovmax >= minoverlap
                if difficult[best]:
                    continue  # neither true nor false positive
                if not matched[best]:
                    tp[k], matched[best] = 1, True
                else:
                    fp[k] = 1  # a duplicate detection
            else:
                fp[k] = 1
        tp, fp = np.cumsum(tp), np.cumsum(fp)
        recall = tp / n_positive
        precision = tp / np.maximum(tp + fp, np.finfo(float).eps)
        aps.append(voc_ap(recall, precision, use_07_metric))
    valid = [a for a in aps if not np.isnan(a)]
    return {"map": float(np.mean(valid)) if valid else float("nan"), "ap": aps}
