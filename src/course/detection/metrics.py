"""Pascal VOC average precision and mAP (chapter 7).

The rules of the VOC devkit (``voc_eval.py``): per class, all detections of
all images are sorted by decreasing score; each is a true positive if its
IoU with a ground truth of that class in the same image exceeds the threshold
and that ground truth was not already matched (a duplicate is a false
positive); ground truths marked "difficult" neither count as positives nor
penalise a detection that matches them. AP is the area under the
precision/recall curve made monotone (2010+), or the mean of the precision
at 11 recall levels 0, 0.1, ..., 1 (VOC2007's ``use_07_metric``).
Coordinates are continuous (torchvision's convention): the devkit's "+1"
pixel in widths is not added.

Used in chapter 7.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from course.detection.boxes import box_iou


def voc_ap(recall: np.ndarray, precision: np.ndarray, use_07_metric: bool = False) -> float:
    """Average precision from a recall/precision curve (detections sorted by score)."""
    recall, precision = np.asarray(recall, float), np.asarray(precision, float)
    if use_07_metric:
        return float(
            np.mean(
                [
                    precision[recall >= t].max() if (recall >= t).any() else 0.0
                    for t in np.linspace(0, 1, 11)
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
    """mAP over ``num_classes`` classes, VOC rules.

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
            if iou[best] > iou_threshold:  # the devkit's strict inequality
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
