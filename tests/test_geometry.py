"""The geometry follows the data (issue #43, point 7): the image size that turns pixel boxes
into YOLO's grid fractions, and back, comes with the batch.

Real VOC photos (500 x 375, 375 x 500, ...) are resized by the loaders (384 px in chapter 7's
gpu profile); every resizing transform must keep the target's ``"size"`` current, and the
encoder, loss and decoder must use it: with a loss that assumed 224 x 224, a detector trained
at 384 px learns boxes in the wrong places. Here a detector is trained briefly at 384 x 384 and
at 256 x 384 (not square) and its decoded boxes must land on the objects.

The detector is YOLO v1's output format and loss on a stand-in network small enough for a
test on two CPU cores (an MLP on the image pooled to 16 x 16): what is tested is the geometry,
which lives entirely in the transforms, ``encode_yolo_batch``, ``YOLOv1Loss`` and
``decode_yolo``; ``YOLOv1`` itself is checked to accept both sizes.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from course.config import run_seed
from course.detection import YOLOv1, YOLOv1Loss, box_iou, decode_yolo, encode_yolo_targets
from course.detection.transforms import (
    BatchDetectionAugmentation,
    DetectionResize,
)
from course.detection.yolo import encode_yolo_batch
from tests.reference_transforms import DetectionAugmentation

CLASSES, GRID, B = 2, 4, 2


def _photo(g: torch.Generator) -> tuple[torch.Tensor, dict]:
    """A VOC-sized photo (375 x 500 or 500 x 375) with one rectangle of class 0 or 1 (its
    colour), and its target as VOCDetection gives it: ``size`` is the photo's."""
    height, width = (375, 500) if torch.rand((), generator=g) < 0.5 else (500, 375)
    image = torch.full((3, height, width), 0.4)
    w, h = (0.3 + 0.3 * torch.rand(2, generator=g)).tolist()
    w, h = int(w * width), int(h * height)
    x1 = int(torch.randint(0, width - w, (), generator=g))
    y1 = int(torch.randint(0, height - h, (), generator=g))
    label = int(torch.randint(0, CLASSES, (), generator=g))
    image[:, y1 : y1 + h, x1 : x1 + w] = torch.tensor(
        [0.9, 0.1, 0.1] if label else [0.1, 0.2, 0.9]
    )[:, None, None]
    target = {
        "boxes": torch.tensor([[x1, y1, x1 + w, y1 + h]], dtype=torch.float32),
        "labels": torch.tensor([label]),
        "difficult": torch.tensor([False]),
        "size": (height, width),
    }
    return image, target


def _data(n: int, size, seed: int) -> tuple[torch.Tensor, list[dict]]:
    g = torch.Generator().manual_seed(run_seed(seed))
    resize = DetectionResize(size)
    pairs = [resize(*_photo(g)) for _ in range(n)]
    return torch.stack([p[0] for p in pairs]), [p[1] for p in pairs]


class _StandIn(nn.Module):
    """(N, 3, H, W) -> (N, S, S, 5B + C) with YOLOv1's activations (sigmoid, softmax): the
    image pooled to 16 x 16 (:meth:`pool`, a fixed first layer), then an MLP (:meth:`head`)."""

    def __init__(self) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Flatten(),
            nn.Linear(3 * 16 * 16, 256),
            nn.ReLU(),
            nn.Linear(256, GRID * GRID * (5 * B + CLASSES)),
        )

    @staticmethod
    def pool(x: torch.Tensor) -> torch.Tensor:
        return nn.functional.adaptive_avg_pool2d(x, (16, 16))

    def head(self, pooled: torch.Tensor) -> torch.Tensor:
        out = self.mlp(pooled).reshape(len(pooled), GRID, GRID, 5 * B + CLASSES)
        b = 5 * B
        return torch.cat([torch.sigmoid(out[..., :b]), torch.softmax(out[..., b:], -1)], -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(x))


def _train_and_decode(size) -> tuple[float, float, tuple[int, int]]:
    """Train at ``size``; return the share of held-out images whose best box has IoU > 0.5
    with the truth (and the right class), the same when decoded as if 224 x 224, and the
    images' (height, width)."""
    torch.manual_seed(run_seed(0))
    images, targets = _data(256, size, seed=0)
    held_images, held_targets = _data(64, size, seed=1)
    model, loss_fn = _StandIn(), YOLOv1Loss(CLASSES, GRID)  # no image size: the batch's
    pooled = model.pool(images)  # the fixed first layer once, not at every step
    optimizer = torch.optim.Adam(model.parameters(), 3e-3)
    for _ in range(600):
        k = torch.randint(0, len(images), (32,))
        loss = loss_fn(model.head(pooled[k]), [targets[i] for i in k.tolist()])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    hw = tuple(held_images.shape[-2:])
    with torch.no_grad():
        out = model(held_images)

    def share(image_size) -> float:
        hits = 0
        for d, t in zip(decode_yolo(out, GRID, B, image_size), held_targets, strict=True):
            best = d["scores"].argmax()
            iou = box_iou(d["boxes"][best : best + 1], t["boxes"])[0, 0]
            hits += int(iou > 0.5 and d["labels"][best] == t["labels"][0])
        return hits / len(held_targets)

    return share(hw), share((224, 224)), hw


@pytest.mark.parametrize("size", [384, (256, 384)], ids=["384x384", "256x384"])
def test_trained_at_a_size_boxes_land_on_the_objects(size):
    right, as_if_224, hw = _train_and_decode(size)
    print(f"{hw}: {right:.0%} of the boxes on their objects, {as_if_224:.0%} decoded as 224 px")
    assert hw == ((size, size) if isinstance(size, int) else size)
    assert right >= 0.8, f"only {right:.0%} of the boxes on their objects at {hw}"
    assert as_if_224 <= 0.3  # the test can fail: the wrong size puts the boxes elsewhere


def test_yolov1_takes_both_sizes():
    model = YOLOv1(CLASSES, grid=GRID, stages=2).eval()
    with torch.no_grad():
        for hw in ((384, 384), (256, 384)):
            assert model(torch.rand(1, 3, *hw)).shape == (1, GRID, GRID, 5 * B + CLASSES)


def test_every_resizing_transform_keeps_size_current():
    g = torch.Generator().manual_seed(run_seed(0))
    image, target = _photo(g)
    for transform, expected in (
        (DetectionResize(384), (384, 384)),
        (DetectionResize((256, 384)), (256, 384)),
        (DetectionAugmentation(96, seed=0), (96, 96)),
    ):
        out, out_target = transform(image, target)
        assert out_target["size"] == tuple(out.shape[-2:]) == expected
    square, square_target = DetectionResize(128)(image, target)
    images, targets = BatchDetectionAugmentation()(square.repeat(3, 1, 1, 1), [square_target] * 3)
    assert all(t["size"] == tuple(images.shape[-2:]) == (128, 128) for t in targets)
    # the boxes scale with the image: an x of the photo maps to x * 384 / width
    resized = DetectionResize((256, 384))(image, target)[1]["boxes"]
    height, width = target["size"]
    expected = target["boxes"] * torch.tensor([384 / width, 256 / height] * 2)
    torch.testing.assert_close(resized, expected)


def test_the_batch_encoder_reads_each_images_size():
    g = torch.Generator().manual_seed(run_seed(0))
    targets = [_photo(g)[1] for _ in range(6)]  # 375 x 500 and 500 x 375 mixed
    expected = torch.stack(
        [encode_yolo_targets(t["boxes"], t["labels"], CLASSES, GRID, t["size"]) for t in targets]
    )
    torch.testing.assert_close(encode_yolo_batch(targets, CLASSES, GRID), expected)


def test_a_missing_or_stale_size_is_an_error_not_a_default():
    boxes, labels = torch.tensor([[10.0, 10, 50, 50]]), torch.tensor([0])
    loss_fn = YOLOv1Loss(CLASSES, GRID)
    outputs = torch.rand(1, GRID, GRID, 5 * B + CLASSES)
    with pytest.raises(ValueError, match="no 'size'"):
        loss_fn(outputs, [{"boxes": boxes, "labels": labels}])
    stale = YOLOv1Loss(CLASSES, GRID, image_size=(224, 224))
    with pytest.raises(ValueError, match="384 x 384 image, but image_size is \\(224, 224\\)"):
        stale(outputs, [{"boxes": boxes, "labels": labels, "size": (384, 384)}])
    # given explicitly and agreeing, or for targets without a size, it is used
    assert stale(outputs, [{"boxes": boxes, "labels": labels}]) > 0
