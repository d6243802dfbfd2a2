"""CenterNet, "Objects as Points" (Zhou et al., 2019), with a ResNet18 backbone (chapter 7).

An object is the peak of a heatmap at its centre. On an output grid of stride
R = 4 (H/4 x W/4) the network predicts

- ``hm``:  C heatmaps, one per class (sigmoid of logits),
- ``reg``: 2 offsets, the sub-pixel part of the centre lost by the stride,
- ``wh``:  2 sizes, the box width and height (in output pixels).

Training targets: for each object, a Gaussian of radius
``gaussian_radius((h, w), 0.7)`` (the reference code's formula) drawn at its
centre cell with an element-wise max; loss = penalty-reduced pixel-wise
focal loss (alpha = 2, beta = 4) + 1 x L1(offset) + 0.1 x L1(size), the L1
losses only at object centres. Decoding: 3 x 3 max-pool keeps the local peaks
(it replaces NMS), then the top K = 100 scores.

Follows the paper and its reference implementation (xingyizhou/CenterNet:
msra_resnet.py, utils/image.py, models/losses.py, models/decode.py).

Used in chapter 7.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from course.data import IMAGENET_MEAN, IMAGENET_STD, Normalize
from course.detection.backbone import detection_backbone
from course.detection.boxes import clip_boxes_to_image
from course.models.resnet import ResNet18

STRIDE = 4
MAX_OBJECTS = 128
_TARGET_KEYS = ("hm", "wh", "reg", "ind", "mask")


class CenterNet(nn.Module):
    """ResNet18 -> 3 deconvolutions (stride 32 -> 4) -> heads ``hm``, ``wh``, ``reg``.

    The deconvolutions have 256, 128 and 64 channels, as the paper's ResNet
    variant ("to save computation"; the reference code's msra_resnet uses 256
    for all three); each head is 3x3 conv (64) -> ReLU -> 1x1 conv. With
    ``stages=2`` or ``3`` the backbone stops after layer2 or layer3 (stride 8
    or 16) and only the last one or two deconvolutions remain: the CPU
    profiles of chapter 7 use it on 64-pixel images.

    Input (N, 3, H, W) in [0, 1] (H, W multiples of 32; ImageNet
    normalisation inside); output a dict of (N, C, H/4, W/4), (N, 2, H/4, W/4)
    and (N, 2, H/4, W/4). ``hm`` holds logits; its bias starts at -2.19 so
    that sigmoid(hm) = 0.1 everywhere at initialisation (focal-loss prior).
    """

    def __init__(
        self,
        num_classes: int,
        backbone: ResNet18 | None = None,
        deconv_channels: Sequence[int] = (256, 128, 64),
        head_channels: int = 64,
        stages: int = 4,
    ):
        super().__init__()
        self.stages = stages
        deconv_channels = tuple(deconv_channels)[len(deconv_channels) - (stages - 1) :]
        self.num_classes = num_classes
        self.normalize = Normalize(IMAGENET_MEAN, IMAGENET_STD)
        self.backbone = detection_backbone(backbone, stages)
        layers: list[nn.Module] = []
        previous = (64, 128, 256, 512)[stages - 1]
        for channels in deconv_channels:  # each doubles the resolution
            layers += [
                nn.ConvTranspose2d(previous, channels, 4, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(channels),
                nn.ReLU(inplace=True),
            ]
            previous = channels
        self.upsample = nn.Sequential(*layers)

        def head(out_channels: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(previous, head_channels, 3, padding=1),
                nn.ReLU(inplace=True),
                nn.Conv2d(head_channels, out_channels, 1),
            )

        self.hm, self.wh, self.reg = head(num_classes), head(2), head(2)
        nn.init.constant_(self.hm[-1].bias, -2.19)  # -log((1 - 0.1) / 0.1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.upsample(self.backbone.features(self.normalize(x), self.stages))
        return {"hm": self.hm(features), "wh": self.wh(features), "reg": self.reg(features)}


# ---------------------------------------------------------------------------
# Targets
# ---------------------------------------------------------------------------


def gaussian_radius(det_size: tuple[float, float], min_overlap: float = 0.7) -> float:
    """The reference code's Gaussian radius for a box of ``det_size`` = (height, width)
    cells on the output grid: CornerNet's formula, three cases, the smallest wins.

    It is meant as the distance by which the box's corners may move while its IoU with
    the true box stays >= ``min_overlap``, but the formula does not solve its own
    equations (CornerNet issue #110, CenterNet issue #116): it gives about 0.27 x the
    side of a square box at 0.7, and a box moved by it keeps an IoU below 0.7 (chapter
    7 measures it; its exercise 7.6 derives the exact radius). Kept line for line,
    since every CenterNet trained with it."""
    height, width = (torch.tensor(float(v), dtype=torch.float64) for v in det_size)
    return float(gaussian_radii(height, width, min_overlap))


def gaussian_radii(
    height: torch.Tensor, width: torch.Tensor, min_overlap: float = 0.7
) -> torch.Tensor:
    """:func:`gaussian_radius` of many (height, width) pairs at once (float64 tensors)."""
    b1 = height + width
    c1 = width * height * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + (b1**2 - 4 * c1).sqrt()) / 2
    a2, b2 = 4, 2 * (height + width)
    c2 = (1 - min_overlap) * width * height
    r2 = (b2 + (b2**2 - 4 * a2 * c2).sqrt()) / 2
    a3, b3 = 4 * min_overlap, -2 * min_overlap * (height + width)
    c3 = (min_overlap - 1) * width * height
    r3 = (b3 + (b3**2 - 4 * a3 * c3).sqrt()) / 2
    return torch.minimum(torch.minimum(r1, r2), r3)


def gaussian_2d(radius: int) -> np.ndarray:
    """(2r+1, 2r+1) Gaussian with peak 1 and sigma = diameter / 6."""
    diameter = 2 * radius + 1
    sigma = diameter / 6
    y, x = np.ogrid[-radius : radius + 1, -radius : radius + 1]
    g = np.exp(-(x * x + y * y) / (2 * sigma * sigma))
    g[g < np.finfo(g.dtype).eps * g.max()] = 0
    return g


def draw_gaussian(heatmap: np.ndarray, center: tuple[int, int], radius: int) -> np.ndarray:
    """Draw a Gaussian peak at ``center`` = (x, y) with an element-wise max (overlapping
    objects keep both peaks), clipped at the borders. Modifies and returns ``heatmap``."""
    g = gaussian_2d(radius)
    x, y = center
    height, width = heatmap.shape
    left, right = min(x, radius), min(width - x, radius + 1)
    top, bottom = min(y, radius), min(height - y, radius + 1)
    region = heatmap[y - top : y + bottom, x - left : x + right]
    patch = g[radius - top : radius + bottom, radius - left : radius + right]
    if min(patch.shape) > 0 and min(region.shape) > 0:
        np.maximum(region, patch, out=region)
    return heatmap


def encode_centernet_targets(
    boxes: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    output_size: tuple[int, int],
    stride: int = STRIDE,
) -> dict:
    """Targets of one image. ``boxes`` (N, 4) xyxy input pixels -> dict of
    ``hm`` (C, H, W), ``wh`` (K, 2), ``reg`` (K, 2), ``ind`` (K,), ``mask`` (K,), K = 128."""
    height, width = output_size
    hm = np.zeros((num_classes, height, width), dtype=np.float32)
    wh = np.zeros((MAX_OBJECTS, 2), dtype=np.float32)
    reg = np.zeros((MAX_OBJECTS, 2), dtype=np.float32)
    ind = np.zeros(MAX_OBJECTS, dtype=np.int64)
    mask = np.zeros(MAX_OBJECTS, dtype=np.float32)
    for k, (box, label) in enumerate(
        zip(boxes.tolist()[:MAX_OBJECTS], labels.tolist(), strict=False)
    ):
        x1, y1, x2, y2 = (v / stride for v in box)
        x1, x2 = np.clip([x1, x2], 0, width - 1)
        y1, y2 = np.clip([y1, y2], 0, height - 1)
        h, w = y2 - y1, x2 - x1
        if h <= 0 or w <= 0:
            continue
        radius = max(0, int(gaussian_radius((math.ceil(h), math.ceil(w)))))
        center = np.array([(x1 + x2) / 2, (y1 + y2) / 2], dtype=np.float32)
        cell = center.astype(np.int32)
        draw_gaussian(hm[label], (int(cell[0]), int(cell[1])), radius)
        wh[k] = w, h
        ind[k] = cell[1] * width + cell[0]
        reg[k] = center - cell
        mask[k] = 1
    return {
        name: torch.from_numpy(a)
        for name, a in (("hm", hm), ("wh", wh), ("reg", reg), ("ind", ind), ("mask", mask))
    }


def _patch_radius(radius: torch.Tensor, output_size: tuple[int, int]) -> int:
    """Half-size of the square patches on which :func:`encode_centernet_batch` draws
    the Gaussians of objects of radii ``radius``. On the CPU, the largest radius
    (reading it costs nothing there). Elsewhere, the largest radius that any box
    clipped to the grid can have (the radius grows with the box): a bound known
    without reading the radii back, so the GPU is not waited for (on a 96 x 96 grid,
    patches of 53 x 53 cells: cheap on a GPU, several times slower than the largest
    radius on a CPU, benchmarks/RESULTS.md)."""
    if radius.device.type == "cpu":
        return int(radius.max())
    height, width = output_size
    return max(0, int(gaussian_radius((height - 1, width - 1))))


def encode_centernet_batch(
    targets: Sequence[dict],
    num_classes: int,
    output_size: tuple[int, int],
    stride: int = STRIDE,
    device: torch.device | str = "cpu",
) -> dict[str, torch.Tensor]:
    """The targets of a batch at once, on ``device``: the same as stacking
    :func:`encode_centernet_targets` of every image (``hm`` (N, C, H, W), ``wh`` and
    ``reg`` (N, K, 2), ``ind`` and ``mask`` (N, K)), with tensor operations instead
    of a Python loop over the objects (the loss calls it at every step).

    Every object's Gaussian is evaluated on a square patch around its centre
    cell and kept within its radius; the heatmap of each image and class is
    their element-wise max (``scatter_reduce`` with ``"amax"``). Nothing is read
    back from the device (no ``.item()``, no boolean-mask indexing): on a GPU the
    encoding never waits for the GPU, so it needs no synchronisation per step.
    """
    device = torch.device(device)
    n, (height, width), k = len(targets), output_size, MAX_OBJECTS
    out = {  # a spare row after the n * K slots: degenerate boxes write there
        "wh": torch.zeros(n * k + 1, 2, device=device),
        "reg": torch.zeros(n * k + 1, 2, device=device),
        "ind": torch.zeros(n * k + 1, dtype=torch.int64, device=device),
        "mask": torch.zeros(n * k + 1, device=device),
    }
    kept = [(t["boxes"][:k], t["labels"][: len(t["boxes"][:k])]) for t in targets]
    total = sum(len(b) for b, _ in kept)
    if total:
        boxes = torch.cat([b for b, _ in kept]).to(device, torch.float64) / stride
        labels = torch.cat([lab for _, lab in kept]).to(device)
        counts = torch.tensor([len(b) for b, _ in kept], device=device)
        image = torch.repeat_interleave(torch.arange(n, device=device), counts, output_size=total)
        slot = torch.arange(total, device=device) - (counts.cumsum(0) - counts)[image]
        x1, x2 = boxes[:, 0].clamp(0, width - 1), boxes[:, 2].clamp(0, width - 1)
        y1, y2 = boxes[:, 1].clamp(0, height - 1), boxes[:, 3].clamp(0, height - 1)
        w, h = x2 - x1, y2 - y1
        valid = (w > 0) & (h > 0)
        radius = gaussian_radii(h.ceil(), w.ceil()).clamp(min=0).floor()
        center = torch.stack([(x1 + x2) / 2, (y1 + y2) / 2], 1).float()
        cell = center.long()  # truncation, as the reference's astype(int32)
        # Each object's (2R+1)^2 patch around its cell (R from _patch_radius); the
        # Gaussian is kept within the object's own radius, inside the grid.
        big = _patch_radius(radius, output_size)
        offset = torch.arange(-big, big + 1, device=device)
        oy, ox = offset.view(1, -1, 1), offset.view(1, 1, -1)
        sigma = ((2 * radius + 1) / 6).view(-1, 1, 1)
        g = torch.exp(-(ox * ox + oy * oy) / (2 * sigma * sigma))  # (M, 2R+1, 2R+1)
        py, px = cell[:, 1].view(-1, 1, 1) + oy, cell[:, 0].view(-1, 1, 1) + ox
        r = radius.view(-1, 1, 1)
        keep = (oy.abs() <= r) & (ox.abs() <= r) & (g >= torch.finfo(torch.float64).eps)
        keep &= (py >= 0) & (py < height) & (px >= 0) & (px < width) & valid.view(-1, 1, 1)
        plane = (image * num_classes + labels).view(-1, 1, 1)
        # Cells outside an object's disc go to a spare patch after the heatmaps, each
        # patch position to its own cell (a GPU's atomic max would queue them all on
        # one address otherwise); the spare patch is dropped.
        spare = n * num_classes * height * width + (oy + big) * (2 * big + 1) + (ox + big)
        flat = torch.where(keep, (plane * height + py) * width + px, spare)
        hm = torch.zeros(n * num_classes * height * width + (2 * big + 1) ** 2, device=device)
        hm.scatter_reduce_(0, flat.flatten(), g.float().expand_as(flat).flatten(), "amax")
        out["hm"] = hm[: n * num_classes * height * width]
        at = torch.where(valid, image * k + slot, n * k)
        out["wh"][at] = torch.stack([w, h], 1).float()
        out["reg"][at] = center - cell
        out["ind"][at] = cell[:, 1] * width + cell[:, 0]
        out["mask"][at] = 1.0
    else:
        out["hm"] = torch.zeros(n * num_classes * height * width, device=device)
    return {
        "hm": out["hm"].reshape(n, num_classes, height, width),
        **{
            name: out[name][: n * k].reshape(n, k, -1).squeeze(-1)
            for name in ("wh", "reg", "ind", "mask")
        },
    }


# ---------------------------------------------------------------------------
# Losses
# ---------------------------------------------------------------------------


def focal_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Penalty-reduced pixel-wise focal loss (alpha = 2, beta = 4) of heatmap logits
    (N, C, H, W) against a target heatmap of the same shape, normalised by the number
    of objects (the pixels where the target heatmap is exactly 1).

    The reference ``_neg_loss`` (xingyizhou/CenterNet, models/losses.py) branches on
    ``num_pos == 0`` and then returns the negative term alone; dividing by
    ``max(num_pos, 1)`` gives the same value (the positive term is 0 then) and keeps
    the result on the device: no GPU-to-CPU synchronisation per step.
    """
    pred = torch.sigmoid(logits.float()).clamp(1e-4, 1 - 1e-4)
    positive = target.eq(1).float()
    negative_weight = (1 - target).pow(4)
    positive_loss = (torch.log(pred) * (1 - pred).pow(2) * positive).sum()
    negative_loss = (torch.log(1 - pred) * pred.pow(2) * negative_weight * (1 - positive)).sum()
    return -(positive_loss + negative_loss) / positive.sum().clamp(min=1)


def gather_at(feature: torch.Tensor, ind: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) and flat indices (N, K) -> (N, K, C): the features at those cells."""
    n, c = feature.shape[:2]
    flat = feature.reshape(n, c, -1).permute(0, 2, 1)
    return flat.gather(1, ind[..., None].expand(-1, -1, c))


def masked_l1(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """L1 at the object centres only, as the reference RegL1Loss (sum / (mask count + 1e-4))."""
    m = mask[..., None].expand_as(pred)
    return nn.functional.l1_loss(pred * m, target * m, reduction="sum") / (m.sum() + 1e-4)


class CenterNetLoss(nn.Module):
    """hm focal loss + ``wh_weight`` x L1(size) + ``off_weight`` x L1(offset).

    Called as ``loss(outputs, targets)`` with the model's outputs and a list
    of target dicts (``boxes``, ``labels``), so it plugs into
    ``course.train.fit``; it encodes the targets itself.

    After each call, ``last`` holds the three terms as detached 0-d tensors on
    the outputs' device (``"hm"``, ``"wh"``, ``"off"``): nothing is converted to a
    Python float during training, which would wait for the GPU at every step;
    ``float(loss.last["hm"])`` converts one when it is logged.
    """

    def __init__(
        self,
        num_classes: int,
        wh_weight: float = 0.1,
        off_weight: float = 1.0,
        stride: int = STRIDE,
    ) -> None:
        super().__init__()
        self.num_classes, self.wh_weight, self.off_weight = num_classes, wh_weight, off_weight
        self.stride = stride
        self.last: dict[str, torch.Tensor] = {}

    def forward(self, outputs: dict, targets: Sequence[dict]) -> torch.Tensor:
        size = tuple(outputs["hm"].shape[-2:])
        batch = encode_centernet_batch(
            targets, self.num_classes, size, self.stride, device=outputs["hm"].device
        )
        hm = focal_loss(outputs["hm"], batch["hm"])
        wh = masked_l1(gather_at(outputs["wh"].float(), batch["ind"]), batch["wh"], batch["mask"])
        off = masked_l1(
            gather_at(outputs["reg"].float(), batch["ind"]), batch["reg"], batch["mask"]
        )
        self.last = {"hm": hm.detach(), "wh": wh.detach(), "off": off.detach()}
        return hm + self.wh_weight * wh + self.off_weight * off


# ---------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------


@torch.no_grad()
def decode_centernet(
    outputs: dict,
    k: int = 100,
    stride: int = STRIDE,
    image_size: tuple[int, int] | None = None,
) -> list[dict]:
    """Detections of every image from the model's outputs (``hm`` logits (N, C, H, W),
    ``wh`` and ``reg`` (N, 2, H, W)): a list of dicts ``boxes`` (k, 4) xyxy input
    pixels, ``scores`` (k,) in [0, 1], ``labels`` (k,), sorted by score.

    A 3 x 3 max-pool keeps the cells that are local maxima of their heatmap
    (no NMS needed); the top ``k`` over all classes become boxes centred at
    (cell + offset) with the predicted width and height, times the stride.

    Every box is valid: a negative predicted width or height (the size head is a
    plain regression, and early in training it predicts some) counts as 0, and
    boxes are clipped to the image, ``image_size`` = (height, width), by default
    the heatmap's size times the stride.
    """
    heat = torch.sigmoid(outputs["hm"].float())
    n, c, h, w = heat.shape
    peaks = heat * (nn.functional.max_pool2d(heat, 3, stride=1, padding=1) == heat)
    scores, index = peaks.reshape(n, -1).topk(min(k, c * h * w))
    labels = index // (h * w)
    cells = index % (h * w)
    ys, xs = (cells // w).float(), (cells % w).float()
    reg = gather_at(outputs["reg"].float(), cells)
    wh = gather_at(outputs["wh"].float(), cells).clamp(min=0)
    cx, cy = xs + reg[..., 0], ys + reg[..., 1]
    boxes = (
        torch.stack(
            [cx - wh[..., 0] / 2, cy - wh[..., 1] / 2, cx + wh[..., 0] / 2, cy + wh[..., 1] / 2], -1
        )
        * stride
    )
    boxes = clip_boxes_to_image(boxes, image_size or (h * stride, w * stride))
    return [{"boxes": boxes[i], "scores": scores[i], "labels": labels[i]} for i in range(n)]


def centernet_output_from_targets(
    target: Mapping[str, torch.Tensor], eps: float = 1e-6
) -> dict[str, torch.Tensor]:
    """A "perfect" network output for encoded targets, the twin of
    :func:`course.detection.yolo.yolo_output_from_targets`: heatmap logits whose
    sigmoid is the target heatmap (clamped to [eps, 1 - eps]), and at every object's
    centre cell its size and offset (0 elsewhere). It checks encode -> decode round
    trips: :func:`decode_centernet` gives back the boxes (those inside the grid).

    ``target`` is one image's (:func:`encode_centernet_targets`: ``hm`` (C, H, W),
    ``wh`` and ``reg`` (K, 2), ``ind`` and ``mask`` (K,)), and the result is
    ``hm`` (C, H, W), ``wh`` and ``reg`` (2, H, W); or a batch's
    (:func:`encode_centernet_batch`, one more leading dimension N in and out).
    Slots whose ``mask`` is 0 are skipped; where two objects share a cell, the later
    one's size and offset are kept, as the encoder's loop would write them.
    """
    single = target["hm"].dim() == 3
    t = {name: target[name][None] if single else target[name] for name in _TARGET_KEYS}
    n, _, height, width = t["hm"].shape
    k = t["ind"].shape[1]
    slot = torch.arange(k, device=t["ind"].device).expand(n, k)
    real = t["mask"] > 0
    last = torch.full((n, height * width), -1, dtype=torch.int64, device=slot.device)
    last = last.scatter_reduce(1, t["ind"], torch.where(real, slot, -1), reduce="amax")
    wins = real & (last.gather(1, t["ind"]) == slot)
    index = torch.where(wins, t["ind"], height * width)[..., None].expand(-1, -1, 2)

    def on_grid(values: torch.Tensor) -> torch.Tensor:  # (N, K, 2) -> (N, 2, H, W)
        grid = torch.zeros(n, height * width + 1, 2, dtype=values.dtype, device=values.device)
        grid.scatter_(1, index, values)  # the losers land in the spare last column
        return grid[:, :-1].permute(0, 2, 1).reshape(n, 2, height, width)

    output = {
        "hm": torch.logit(t["hm"].clamp(eps, 1 - eps)),
        "wh": on_grid(t["wh"]),
        "reg": on_grid(t["reg"]),
    }
    return {name: v[0] for name, v in output.items()} if single else output
