"""Chapter 7: boxes, NMS, VOC metrics, VOC xml, synthetic VOC, CenterNet and YOLO v1."""

import numpy as np
import pytest
import torch
import torchvision

from course.data import SHAPE_CLASSES
from course.data.voc import (
    VOCAnnotationError,
    VOCDetection,
    make_synthetic_voc,
    parse_voc_xml,
)
from course.detection import (
    CenterNet,
    CenterNetLoss,
    YOLOv1,
    YOLOv1Loss,
    batched_nms,
    box_iou,
    centernet_output_from_targets,
    clip_boxes_to_image,
    decode_centernet,
    decode_yolo,
    draw_gaussian,
    encode_centernet_targets,
    encode_yolo_targets,
    focal_loss,
    gaussian_radius,
    nms,
    voc_ap,
    voc_map,
    voc_to_yolo,
    yolo_output_from_targets,
    yolo_to_voc,
)
from tests.reference_transforms import DetectionAugmentation


def random_boxes(n, seed, size=100.0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * size
    wh = torch.rand(n, 2, generator=g) * size / 3 + 1
    return torch.cat([xy, xy + wh], 1)


@pytest.mark.parametrize("seed", range(5))
def test_box_iou_equals_torchvision(seed):
    a, b = random_boxes(30, seed), random_boxes(20, seed + 100)
    torch.testing.assert_close(box_iou(a, b), torchvision.ops.box_iou(a, b))


def test_box_iou_hand_values():
    a = torch.tensor([[0.0, 0, 10, 10]])
    b = torch.tensor([[0.0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]])
    torch.testing.assert_close(box_iou(a, b), torch.tensor([[1.0, 50 / 150, 0.0]]))


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.7])
def test_nms_equals_torchvision(seed, threshold):
    boxes = random_boxes(200, seed, size=60.0)
    scores = torch.rand(200, generator=torch.Generator().manual_seed(seed))
    assert torch.equal(nms(boxes, scores, threshold), torchvision.ops.nms(boxes, scores, threshold))


def test_yolo_txt_round_trip_and_the_slides_example():
    boxes = torch.tensor([[48.0, 240, 195, 371], [8, 12, 352, 498]])
    labels = torch.tensor([11, 14])
    text = voc_to_yolo(boxes, labels, width=353, height=500)
    first = text.splitlines()[0].split()
    assert first[0] == "11" and float(first[1]) == pytest.approx((48 + 195) / 2 / 353, abs=1e-6)
    back, back_labels = yolo_to_voc(text, width=353, height=500)
    torch.testing.assert_close(back, boxes, atol=1e-3, rtol=0)
    assert torch.equal(back_labels, labels)
    with pytest.raises(ValueError, match="5 fields"):
        yolo_to_voc("3 0.5 0.5 0.2\n", 10, 10)


def test_voc_ap_known_values():
    assert voc_ap(np.array([0.5, 1.0]), np.array([1.0, 1.0])) == pytest.approx(1.0)
    # one TP then one FP then one TP: recall .5, .5, 1; precision 1, .5, 2/3
    ap = voc_ap(np.array([0.5, 0.5, 1.0]), np.array([1.0, 0.5, 2 / 3]))
    assert ap == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    ap07 = voc_ap(np.array([0.5, 0.5, 1.0]), np.array([1.0, 0.5, 2 / 3]), use_07_metric=True)
    assert ap07 == pytest.approx((6 * 1 + 5 * 2 / 3) / 11)


def gt(boxes, labels, difficult=None):
    d = {"boxes": torch.tensor(boxes, dtype=torch.float32), "labels": torch.tensor(labels)}
    if difficult is not None:
        d["difficult"] = torch.tensor(difficult)
    return d


def det(boxes, scores, labels):
    return {
        "boxes": np.array(boxes, dtype=np.float32),
        "scores": np.array(scores),
        "labels": np.array(labels),
    }


def test_voc_map_perfect_duplicate_and_difficult():
    truths = [gt([[0, 0, 10, 10], [20, 20, 40, 40]], [0, 1]), gt([[5, 5, 25, 25]], [0])]
    perfect = [
        det([[0, 0, 10, 10], [20, 20, 40, 40]], [0.9, 0.8], [0, 1]),
        det([[5, 5, 25, 25]], [0.7], [0]),
    ]
    result = voc_map(perfect, truths, num_classes=2)
    assert result["map"] == 1.0 and result["ap"] == [1.0, 1.0]
    # a duplicate of a matched object is a false positive (ranked above the second TP)
    duplicate = [
        det([[0, 0, 10, 10], [0, 0, 10, 10.5], [20, 20, 40, 40]], [0.9, 0.85, 0.8], [0, 0, 1]),
        det([[5, 5, 25, 25]], [0.7], [0]),
    ]
    assert voc_map(duplicate, truths, 2)["ap"][0] == pytest.approx(0.5 + 0.5 * 2 / 3)
    # difficult objects: not counted as positives, detecting them is no false positive
    hard = [gt([[0, 0, 10, 10], [50, 50, 60, 60]], [0, 0], [False, True])]
    assert voc_map([det([[0, 0, 10, 10]], [0.9], [0])], hard, 1)["map"] == 1.0
    assert (
        voc_map([det([[50, 50, 60, 60], [0, 0, 10, 10]], [0.95, 0.9], [0, 0])], hard, 1)["map"]
        == 1.0
    )
    # IoU exactly 0.5 is a match (VOCevaldet.m: ovmax >= minoverlap), just below is not
    half = [gt([[0, 0, 10, 10]], [0])]
    assert box_iou(torch.tensor([[0.0, 0, 10, 5]]), half[0]["boxes"]).item() == 0.5
    assert voc_map([det([[0, 0, 10, 5]], [0.9], [0])], half, 1)["map"] == 1.0
    assert voc_map([det([[0, 0, 10, 4.99]], [0.9], [0])], half, 1)["map"] == 0.0
    assert voc_map([det([[0, 0, 10, 5]], [0.9], [0])], half, 1, iou_threshold=0.51)["map"] == 0
    # a wrong class is a miss, a class without ground truth is left out of the mean
    result = voc_map([det([[0, 0, 10, 10]], [0.9], [1])], [gt([[0, 0, 10, 10]], [0])], 3)
    assert result["ap"][0] == 0.0 and np.isnan(result["ap"][2]) and result["map"] == 0.0


def test_parse_voc_xml_and_the_malformed_file_error(tmp_path):
    good = tmp_path / "000001.xml"
    good.write_text(
        "<annotation><filename>000001.jpg</filename><size><width>353</width>"
        "<height>500</height><depth>3</depth></size><object><name>dog</name>"
        "<difficult>0</difficult><bndbox><xmin>48</xmin><ymin>240</ymin>"
        "<xmax>195</xmax><ymax>371</ymax></bndbox></object><object><name>person"
        "</name><difficult>1</difficult><bndbox><xmin>8</xmin><ymin>12</ymin>"
        "<xmax>352</xmax><ymax>498</ymax></bndbox></object></annotation>"
    )
    target = parse_voc_xml(good)
    assert target["labels"].tolist() == [11, 14] and target["size"] == (500, 353)
    assert target["difficult"].tolist() == [False, True]
    torch.testing.assert_close(target["boxes"][0], torch.tensor([47.0, 239, 195, 371]))
    truncated = tmp_path / "000002.xml"
    truncated.write_text(good.read_text()[:120])
    with pytest.raises(VOCAnnotationError, match="000002.xml"):
        parse_voc_xml(truncated)
    missing = tmp_path / "000003.xml"
    missing.write_text("<annotation><object><name>dog</name></object></annotation>")
    with pytest.raises(VOCAnnotationError, match="000003.xml.*missing or malformed"):
        parse_voc_xml(missing)
    unknown = tmp_path / "000004.xml"
    unknown.write_text(good.read_text().replace("dog", "unicorn"))
    with pytest.raises(VOCAnnotationError, match="unknown class 'unicorn'"):
        parse_voc_xml(unknown)
    bomb = tmp_path / "000005.xml"
    bomb.write_text(
        '<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x "xxxxxxxx">]><annotation>&x;</annotation>'
    )
    with pytest.raises(VOCAnnotationError, match="000005.xml"):
        parse_voc_xml(bomb)


@pytest.fixture(scope="module")
def synthetic_voc(tmp_path_factory):
    return make_synthetic_voc(
        tmp_path_factory.mktemp("voc"), num_train=24, num_val=8, size=64, progress=False
    )


def test_synthetic_voc_is_read_by_the_real_loader(synthetic_voc):
    train = VOCDetection(synthetic_voc, image_set="train", classes=SHAPE_CLASSES)
    val = VOCDetection(synthetic_voc, image_set="val", classes=SHAPE_CLASSES)
    assert len(train) == 24 and len(val) == 8
    image, target = train[0]
    assert image.shape == (3, 64, 64) and 0 <= image.min() and image.max() <= 1
    assert target["boxes"].shape[1] == 4 and len(target["labels"]) >= 1
    difficult = torch.cat([train.target(i)["difficult"] for i in range(len(train))])
    counts = torch.cat([train.target(i)["labels"] for i in range(len(train))])
    assert 0 < difficult.sum() < len(difficult)  # some, not all, objects are difficult
    assert len(counts.unique()) == len(SHAPE_CLASSES)
    with pytest.raises(FileNotFoundError, match="make_synthetic_voc"):
        VOCDetection(synthetic_voc, image_set="test")


def test_detection_augmentation_moves_boxes_with_pixels():
    image = torch.zeros(3, 40, 60)
    image[:, 10:20, 5:15] = 1.0  # a white box at x 5..15, y 10..20
    target = {
        "boxes": torch.tensor([[5.0, 10, 15, 20]]),
        "labels": torch.tensor([2]),
        "difficult": torch.tensor([False]),
    }
    for seed in range(20):
        out, t = DetectionAugmentation(32, min_scale=0.8, seed=seed)(image, target)
        assert out.shape == (3, 32, 32)
        for box in t["boxes"]:
            x1, y1, x2, y2 = box.round().int().tolist()
            inside = out[0, y1:y2, x1:x2]
            assert inside.numel() and inside.mean() > 0.6  # the box still covers the white square
            assert out[0].sum() - inside.sum() < 0.2 * out[0].sum() + 2


def test_gaussian_radius_reference_value_and_draw_max():
    # values of the reference implementation (xingyizhou/CenterNet utils/image.py)
    # (the smallest of its three cases, worked out by hand: r3 here)
    assert gaussian_radius((10, 10)) == pytest.approx(2.7332, abs=1e-4)
    assert gaussian_radius((20, 40)) == pytest.approx(7.3559, abs=1e-4)
    heat = np.zeros((9, 9), np.float32)
    draw_gaussian(heat, (2, 2), 2)
    draw_gaussian(heat, (4, 2), 2)
    assert heat[2, 2] == 1 and heat[2, 4] == 1 and heat.max() == 1  # max, not sum
    draw_gaussian(heat, (0, 8), 3)  # clipped at the border
    assert heat[8, 0] == 1


def test_focal_loss_is_zero_for_a_perfect_heatmap_and_positive_otherwise():
    target = torch.zeros(1, 2, 8, 8)
    target[0, 1, 3, 4] = 1
    perfect = torch.where(target == 1, 20.0, -20.0)
    assert focal_loss(perfect, target) < 1e-3
    assert focal_loss(torch.zeros_like(target), target) > 0.1


def test_centernet_encode_decode_round_trip():
    # inside the output grid (the reference clips boxes at output_size - 1)
    boxes = torch.tensor([[8.0, 12, 40, 30], [30, 33, 58, 59], [2, 40, 21, 57]])
    labels = torch.tensor([0, 3, 1])
    t = encode_centernet_targets(boxes, labels, 4, (16, 16))
    assert t["mask"].sum() == 3 and t["hm"].max() == 1
    outputs = {name: v[None] for name, v in centernet_output_from_targets(t).items()}
    result = decode_centernet(outputs)[0]
    keep = result["scores"] > 0.99
    assert keep.sum() == 3
    order = result["labels"][keep].argsort()
    decoded = result["boxes"][keep][order]
    expected = boxes[labels.argsort()]
    torch.testing.assert_close(decoded, expected, atol=1e-4, rtol=0)  # offsets undo the stride


def test_centernet_output_from_targets_of_a_batch_equals_each_image():
    """The batch form equals the per-image one; a degenerate box (mask 0) in the middle
    of the slots is skipped, and of two objects in one cell the later one is kept."""
    from course.detection.centernet import encode_centernet_batch

    targets = _random_targets(3)
    batch = centernet_output_from_targets(encode_centernet_batch(targets, 4, (16, 16)))
    for i, t in enumerate(targets):
        single = centernet_output_from_targets(
            encode_centernet_targets(t["boxes"], t["labels"], 4, (16, 16))
        )
        for name in ("hm", "wh", "reg"):
            torch.testing.assert_close(batch[name][i], single[name])
    boxes = torch.tensor([[8.0, 8, 24, 24], [30, 30, 30, 50], [9, 9, 23, 23], [40, 36, 60, 60]])
    t = encode_centernet_targets(boxes, torch.tensor([0, 1, 2, 3]), 4, (16, 16))
    assert t["mask"][:4].tolist() == [1, 0, 1, 1] and t["ind"][0] == t["ind"][2]
    out = centernet_output_from_targets(t)
    for k in (2, 3):  # the later of the two objects in cell ind[0], and the last one
        cell = divmod(int(t["ind"][k]), 16)
        torch.testing.assert_close(out["wh"][:, cell[0], cell[1]], t["wh"][k])
        torch.testing.assert_close(out["reg"][:, cell[0], cell[1]], t["reg"][k])
    assert (out["wh"] != 0).any(0).sum() == 2  # two cells hold a size, nothing else


def test_centernet_shapes_bias_and_loss_decreases():
    torch.manual_seed(0)
    model = CenterNet(num_classes=4)
    out = model(torch.rand(2, 3, 64, 64))
    assert out["hm"].shape == (2, 4, 16, 16) and out["wh"].shape == (2, 2, 16, 16)
    torch.testing.assert_close(model.hm[-1].bias, torch.full((4,), -2.19))
    targets = [
        {"boxes": torch.tensor([[8.0, 8, 40, 40]]), "labels": torch.tensor([1])},
        {"boxes": torch.tensor([[20.0, 4, 60, 30]]), "labels": torch.tensor([2])},
    ]
    loss_fn = CenterNetLoss(4)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.rand(2, 3, 64, 64)
    losses = []
    for _ in range(15):
        loss = loss_fn(model(x), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    assert set(loss_fn.last) == {"hm", "wh", "off"}
    # the terms stay tensors (no GPU-to-CPU copy per step) and add up to the loss
    assert all(isinstance(v, torch.Tensor) and v.dim() == 0 for v in loss_fn.last.values())
    total = loss_fn.last["hm"] + 0.1 * loss_fn.last["wh"] + loss_fn.last["off"]
    torch.testing.assert_close(total, loss.detach())


def test_yolo_encode_decode_round_trip():
    boxes = torch.tensor([[8.0, 12, 40, 30], [30, 33, 62, 60], [2, 40, 20, 62]])
    labels = torch.tensor([0, 3, 1])
    target = encode_yolo_targets(boxes, labels, 4, grid=4, image_size=(64, 64))
    assert target[..., 4].sum() == 3
    output = yolo_output_from_targets(target, boxes_per_cell=2)[None]
    result = decode_yolo(
        output, grid=4, boxes_per_cell=2, image_size=(64, 64), score_threshold=0.5
    )[0]
    order = result["labels"].argsort()
    torch.testing.assert_close(result["boxes"][order], boxes[labels.argsort()], atol=1e-4, rtol=0)
    assert result["scores"].min() > 0.99


def test_yolo_loss_is_zero_for_the_perfect_output_and_trains():
    boxes = torch.tensor([[8.0, 12, 40, 30]])
    labels = torch.tensor([2])
    target = encode_yolo_targets(boxes, labels, 4, grid=4, image_size=(64, 64))
    perfect = yolo_output_from_targets(target, 2)[None]
    loss_fn = YOLOv1Loss(4, grid=4, image_size=(64, 64))
    targets = [{"boxes": boxes, "labels": labels}]
    assert loss_fn(perfect, targets) < 1e-6
    torch.manual_seed(0)
    model = YOLOv1(4, grid=4, stages=2)
    image = torch.rand(1, 3, 64, 64)
    out = model(image)
    assert out.shape == (1, 4, 4, 14)
    torch.testing.assert_close(out[..., 10:].sum(-1), torch.ones(1, 4, 4))
    # the loss's gradient trains the network: 30 steps on one image divide it by 5
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    first = loss_fn(model(image), targets).item()
    for _ in range(30):
        loss = loss_fn(model(image), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss_fn(model.eval()(image), targets).item() < first / 5


def test_batched_nms_equals_torchvision():
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(200, 2, generator=g) * 100
    boxes = torch.cat([xy, xy + torch.rand(200, 2, generator=g) * 50 + 1], 1)
    scores = torch.rand(200, generator=g)
    labels = torch.randint(0, 5, (200,), generator=g)
    for threshold in (0.3, 0.5, 0.7):
        ours = batched_nms(boxes, scores, labels, threshold)
        assert torch.equal(ours, torchvision.ops.batched_nms(boxes, scores, labels, threshold))
    assert len(batched_nms(boxes[:0], scores[:0], labels[:0], 0.5)) == 0


@pytest.mark.parametrize("stages", [2, 3, 4])
def test_truncated_backbones_keep_stride_4_and_only_used_weights(stages):
    model = CenterNet(4, stages=stages)
    out = model(torch.rand(1, 3, 64, 64))
    assert out["hm"].shape == (1, 4, 16, 16) and out["reg"].shape == (1, 2, 16, 16)
    out["hm"].sum().backward()
    unused = [
        n
        for n, p in model.named_parameters()
        if p.grad is None and "hm" not in n and not n.startswith(("wh.", "reg."))
    ]
    assert unused == []
    yolo = YOLOv1(4, grid=8, stages=stages)
    assert yolo(torch.rand(1, 3, 64, 64)).shape == (1, 8, 8, 14)
    with pytest.raises(ValueError, match="stages"):
        CenterNet(4, stages=1)


class _SameImage(torch.utils.data.Dataset):
    """Four copies of one image: any difference between items is the augmentation's."""

    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.image = torch.rand(3, 48, 64, generator=g)
        self.target = {
            "boxes": torch.tensor([[10.0, 8, 40, 30]]),
            "labels": torch.tensor([1]),
            "difficult": torch.tensor([False]),
        }
        self.augment = DetectionAugmentation(32)

    def __len__(self):
        return 4

    def __getitem__(self, i):
        return self.augment(self.image, self.target)[0]


def test_augmentation_differs_between_workers_and_between_epochs():
    """Each DataLoader worker holds a copy of the transform: its randomness must not be
    copied with it (every worker would replay the same flips and crops), and a new
    epoch must not replay the last one."""
    torch.manual_seed(0)
    loader = torch.utils.data.DataLoader(_SameImage(), batch_size=1, num_workers=2)
    first, second = [torch.cat(list(loader)) for _ in range(2)]
    assert not torch.equal(first[0], first[1])  # items 0 and 1: workers 0 and 1
    assert not torch.equal(first[0], first[2])  # the same worker, next item
    assert not torch.equal(first, second)  # the next epoch
    seeded = DetectionAugmentation(32, seed=3)
    again = DetectionAugmentation(32, seed=3)
    data = _SameImage()
    assert torch.equal(seeded(data.image, data.target)[0], again(data.image, data.target)[0])


def _random_targets(seed, images=6, size=64):
    """Batches with what a loader can hand the loss: empty images, crowded cells (equal
    boxes, equal areas), boxes over the border, degenerate and tiny boxes; the objects of
    class 3 are marked difficult."""
    g = torch.Generator().manual_seed(seed)
    targets = []
    for i in range(images):
        n = [0, 1, 3, 7][i % 4]
        xy = torch.rand(n, 2, generator=g) * size
        wh = torch.rand(n, 2, generator=g) * size / 2
        boxes = torch.cat([xy, xy + wh], 1)
        if n >= 3:
            boxes[1] = boxes[0]  # the same box twice: the later one wins its cell
            boxes[2] = torch.tensor([10.0, 10, 10, 30])  # zero width: no CenterNet target
        if n == 7:
            boxes[3] = torch.tensor([-5.0, 50, 20, 70])  # over the border
            boxes[4] = boxes[0] + torch.tensor([1.0, 0, 1, 0])  # same area, same cell
            centre = (boxes[0, :2] + boxes[0, 2:]) / 2
            boxes[5] = torch.cat([centre - 1, centre + 1])  # later but smaller: it loses
        labels = torch.randint(0, 4, (n,), generator=g)
        targets.append({"boxes": boxes, "labels": labels, "difficult": labels == 3})
    return targets


@pytest.mark.parametrize("seed", range(5))
def test_batch_encoders_equal_the_per_image_loops(seed):
    from course.detection.centernet import encode_centernet_batch
    from course.detection.yolo import encode_yolo_batch

    targets = _random_targets(seed)
    expected = torch.stack(
        [encode_yolo_targets(t["boxes"], t["labels"], 4, 4, (64, 64)) for t in targets]
    )
    torch.testing.assert_close(encode_yolo_batch(targets, 4, 4, (64, 64)), expected)
    per_image = [encode_centernet_targets(t["boxes"], t["labels"], 4, (16, 16)) for t in targets]
    batch = encode_centernet_batch(targets, 4, (16, 16))
    for key in ("hm", "wh", "reg", "ind", "mask"):
        torch.testing.assert_close(batch[key], torch.stack([e[key] for e in per_image]))
    assert batch["mask"].sum() < sum(len(t["boxes"]) for t in targets)  # degenerate boxes


def test_batch_encoders_handle_a_batch_without_objects():
    from course.detection.centernet import encode_centernet_batch
    from course.detection.yolo import encode_yolo_batch

    empty = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}] * 2
    assert encode_yolo_batch(empty, 4, 4, (64, 64)).abs().sum() == 0
    batch = encode_centernet_batch(empty, 4, (16, 16))
    assert batch["hm"].shape == (2, 4, 16, 16) and batch["mask"].shape == (2, 128)
    assert batch["hm"].sum() == 0 and batch["mask"].sum() == 0


def test_anchor_boxes_tile_every_cell_with_every_size_and_ratio():
    from course.detection import anchor_boxes, box_area, xyxy_to_cxcywh

    anchors = anchor_boxes(3, 16, sizes=(8, 32), aspect_ratios=(0.5, 1.0, 2.0))
    assert anchors.shape == (3 * 3 * 2 * 3, 4)
    cxcywh = xyxy_to_cxcywh(anchors).reshape(3, 3, 6, 4)
    torch.testing.assert_close(cxcywh[1, 2, :, :2], torch.tensor([[40.0, 24.0]]).expand(6, 2))
    torch.testing.assert_close(box_area(anchors[:6]), torch.tensor([64.0] * 3 + [1024.0] * 3))
    ratios = cxcywh[0, 0, :, 2] / cxcywh[0, 0, :, 3]
    torch.testing.assert_close(ratios, torch.tensor([0.5, 1.0, 2.0] * 2))
    # SSD300: 8732 default boxes over its six feature maps (Liu et al., 2016)
    maps = [(38, 4), (19, 6), (10, 6), (5, 6), (3, 4), (1, 4)]
    total = sum(len(anchor_boxes(g, 300 / g, [1.0] * (k // 2), [1.0, 2.0])) for g, k in maps)
    assert total == 8732


def _assert_valid(result: dict, height: int, width: int) -> None:
    boxes, scores = result["boxes"], result["scores"]
    assert torch.isfinite(boxes).all()
    assert (boxes[:, 2] >= boxes[:, 0]).all() and (boxes[:, 3] >= boxes[:, 1]).all()
    assert (boxes[:, 0::2] >= 0).all() and (boxes[:, 0::2] <= width).all()
    assert (boxes[:, 1::2] >= 0).all() and (boxes[:, 1::2] <= height).all()
    assert (scores >= 0).all() and (scores <= 1).all()


def test_clip_boxes_to_image_is_torchvisions():
    boxes = torch.randn(50, 4) * 80
    torch.testing.assert_close(
        clip_boxes_to_image(boxes, (48, 64)), torchvision.ops.clip_boxes_to_image(boxes, (48, 64))
    )


def test_centernet_decoding_of_hostile_outputs_gives_valid_boxes():
    """Early in training the size head predicts negative sizes and the offsets anything."""
    torch.manual_seed(0)
    n, c, h, w = 2, 3, 8, 12
    outputs = {
        "hm": torch.cat([torch.full((1, c, h, w), -40.0), torch.full((1, c, h, w), 40.0)]),
        "wh": torch.randn(n, 2, h, w) * 30 - 10,  # many negative widths and heights
        "reg": torch.randn(n, 2, h, w) * 20,  # far outside the cell
    }
    outputs["hm"][0, 1, 3, 4] = 5.0  # one clear peak among scores at 0 and 1
    for result in decode_centernet(outputs, k=50):
        _assert_valid(result, h * 4, w * 4)
    for result in decode_centernet(outputs, k=50, image_size=(30, 40)):
        _assert_valid(result, 30, 40)


def test_yolo_decoding_of_hostile_outputs_gives_valid_boxes():
    torch.manual_seed(0)
    grid, b, c = 4, 2, 3
    outputs = torch.randn(2, grid, grid, 5 * b + c) * 5  # offsets, sizes, scores far off
    outputs[0, ..., 4] = 3.0  # confidences above 1 ...
    outputs[1, ..., 4::5] = -2.0  # ... and below 0
    outputs[..., 5 * b :] = torch.randn(2, grid, grid, c) * 4
    high, low = decode_yolo(outputs, grid, b, (48, 64), score_threshold=0.0)
    for result in (high, low):
        _assert_valid(result, 48, 64)
    assert len(high["boxes"]) > 0 and len(low["boxes"]) == 0  # scores of 0 are not kept
