"""Batched, on-device augmentation: each operation equals torchvision's, image by image,
and every image of a batch draws its own parameters."""

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as TF

from course.data import augment as A
from course.detection import BatchDetectionAugmentation, DetectionResize
from course.train import fit
from tests.reference_transforms import DetectionAugmentation
from tests.test_detection import _random_targets


def _images(n=4, h=20, w=28, seed=0):
    return torch.rand(n, 3, h, w, generator=torch.Generator().manual_seed(seed))


def test_warp_affine_equals_torchvision_affine_image_by_image():
    x = _images()
    angle = torch.tensor([10.0, -15.0, 0.0, 33.0])
    shift = torch.tensor([[2.0, -1.0], [0.0, 3.0], [-2.0, 0.0], [1.0, 1.0]])
    scale = torch.tensor([0.9, 1.1, 1.0, 1.05])
    out = A.warp_affine(x, A.affine_matrices(angle, shift, scale))
    for i in range(len(x)):
        expected = TF.affine(
            x[i],
            angle=float(angle[i]),
            translate=shift[i].tolist(),
            scale=float(scale[i]),
            shear=[0.0, 0.0],
            interpolation=TF.InterpolationMode.BILINEAR,
        )
        torch.testing.assert_close(out[i], expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("ours", "theirs", "factors"),
    [
        (A.adjust_brightness, TF.adjust_brightness, [0.7, 1.3, 1.0, 0.9]),
        (A.adjust_contrast, TF.adjust_contrast, [0.7, 1.3, 1.0, 0.0]),
        (A.adjust_saturation, TF.adjust_saturation, [0.7, 1.3, 1.0, 0.0]),
        (A.adjust_hue, TF.adjust_hue, [0.03, -0.03, 0.2, -0.5]),
    ],
)
def test_colour_operations_equal_torchvision_image_by_image(ours, theirs, factors):
    x = _images()
    x[0, :, :4] = 0.5  # grey pixels: no hue
    out = ours(x, torch.tensor(factors))
    for i, f in enumerate(factors):
        torch.testing.assert_close(out[i], theirs(x[i], f), atol=1e-5, rtol=0)


def test_every_image_of_a_batch_draws_its_own_augmentation():
    torch.manual_seed(0)
    one = _images(1, 32, 32)
    batch = one.repeat(64, 1, 1, 1)
    out = A.BatchAugmentation().images(batch)
    assert out.shape == batch.shape and 0 <= out.min() and out.max() <= 1
    assert len({tuple(o.flatten()[::7].tolist()) for o in out}) == 64
    flipped = A.random_flip(batch)
    mirrored = (flipped == one.flip(-1)).flatten(1).all(1)
    assert 16 < int(mirrored.sum()) < 48  # p = 0.5, not all or none


@pytest.mark.parametrize(
    "operation",
    [
        A.random_affine,
        lambda x: A.random_color_jitter(x, brightness=0.3, contrast=0, saturation=0, hue=0),
        lambda x: A.random_color_jitter(x, brightness=0, contrast=0.3, saturation=0, hue=0),
        lambda x: A.random_color_jitter(x, brightness=0, contrast=0, saturation=0.3, hue=0),
        lambda x: A.random_color_jitter(x, brightness=0, contrast=0, saturation=0, hue=0.03),
        A.random_noise,
        lambda x: A.random_erasing(x, p=1.0),
    ],
    ids=["affine", "brightness", "contrast", "saturation", "hue", "noise", "erasing"],
)
def test_each_operation_draws_per_image(operation):
    torch.manual_seed(0)
    out = operation(_images(1, 32, 32).repeat(32, 1, 1, 1))
    assert len({tuple(o.flatten().tolist()) for o in out}) == 32


def test_random_affine_and_erasing_draw_within_their_ranges():
    torch.manual_seed(0)
    ones = torch.ones(500, 1, 40, 40)
    erased = A.random_erasing(ones, p=1.0, scale=(0.02, 0.1)).mean(dim=(1, 2, 3))
    fraction = 1 - erased
    assert (fraction >= 0.01).all() and (fraction <= 0.12).all()  # rounding of the sides
    kept = A.random_erasing(ones, p=0.25)
    untouched = (kept == 1).flatten(1).all(1).float().mean()
    assert 0.65 < float(untouched) < 0.85
    # a shift of 10 % at most: a centred dot moves by at most 4 pixels
    dot = torch.zeros(200, 1, 41, 41)
    dot[:, :, 20, 20] = 1
    moved = A.random_affine(dot, degrees=0.0, translate=(0.1, 0.1), scale=(1.0, 1.0))
    rows, cols = (
        moved.flatten(2).argmax(-1).div(41, rounding_mode="floor"),
        moved.flatten(2).argmax(-1) % 41,
    )
    assert (rows - 20).abs().max() <= 4 and (cols - 20).abs().max() <= 4
    assert (rows - 20).abs().max() >= 3  # and it does move


def test_detection_resize_is_torchvisions_resize_of_the_image_and_its_boxes():
    """The loaders' transform against torchvision's v2 resize (no antialiasing) of the
    image and of its boxes as a ``tv_tensors.BoundingBoxes``: a non-square image, the
    boxes scaled, none clipped or dropped."""
    image = _images(1, 30, 50, 0)[0]  # (3, 30, 50)
    target = _random_targets(0, 4, 30)[3]  # 7 boxes, some over the border
    out, resized = DetectionResize(40)(image, target)
    torch.testing.assert_close(out, TF.resize(image, [40, 40], antialias=False), atol=1e-6, rtol=0)
    boxes = tv_tensors.BoundingBoxes(target["boxes"], format="XYXY", canvas_size=(30, 50))
    torch.testing.assert_close(
        resized["boxes"], TF.resize(boxes, [40, 40]).as_subclass(torch.Tensor)
    )
    assert len(resized["boxes"]) == 7 and torch.equal(resized["labels"], target["labels"])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_batch_detection_augmentation_equals_the_per_image_one(seed):
    size = 48
    images, targets = _images(8, size, size, seed), _random_targets(seed, 8, size)
    batch = BatchDetectionAugmentation(min_scale=0.5)
    torch.manual_seed(seed)
    draws = batch.draw(8, size, torch.device("cpu"))
    out, out_targets = batch.apply(images, targets, draws)
    one = DetectionAugmentation(size)
    for i in range(8):
        flip, x0, y0, cw, ch = draws[i].tolist()
        image, target = one.apply(images[i], targets[i], (bool(flip), x0, y0, cw, ch))
        torch.testing.assert_close(out[i], image, atol=1e-5, rtol=0)
        for key in ("boxes", "labels", "difficult"):
            torch.testing.assert_close(out_targets[i][key], target[key])
    assert bool(draws[:, 0].any()) and not bool(draws[:, 0].all())  # both flips seen


def test_batch_detection_augmentation_moves_the_boxes_with_the_pixels():
    """Solid rectangles on black: after the augmentation each kept box still frames
    its rectangle's pixels (to a pixel), and a dropped box has lost most of them."""
    torch.manual_seed(3)
    size, n = 64, 16
    images = torch.zeros(n, 3, size, size)
    box = torch.tensor([[12.0, 20.0, 36.0, 44.0]])
    images[:, 0, 20:44, 12:36] = 1.0
    targets = [
        {"boxes": box.clone(), "labels": torch.tensor([3]), "difficult": torch.tensor([False])}
        for _ in range(n)
    ]
    out, out_targets = BatchDetectionAugmentation(min_scale=0.6)(images, targets)
    for image, target in zip(out, out_targets, strict=True):
        red = image[0] > 0.5
        if len(target["boxes"]) == 0:
            assert red.float().sum() < 0.3 * 24 * 24 * (size / (0.6 * size)) ** 2
            continue
        ys, xs = torch.nonzero(red, as_tuple=True)
        found = torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]).float()
        torch.testing.assert_close(target["boxes"][0], found, atol=1.5, rtol=0)
        assert target["labels"].tolist() == [3]


def test_batch_detection_augmentation_rejects_non_square_batches():
    with pytest.raises(ValueError, match="square"):
        BatchDetectionAugmentation()(torch.zeros(2, 3, 32, 48), _random_targets(0, 2, 32))


def test_fit_augments_training_batches_on_the_device_and_never_validation():
    seen = []

    def augment(x, y):
        seen.append((x.device.type, x.shape[0]))
        return x + 0.01 * torch.randn_like(x), y

    torch.manual_seed(0)
    data = TensorDataset(torch.randn(40, 6), torch.randint(0, 3, (40,)))
    model = torch.nn.Linear(6, 3)
    fit(
        model,
        DataLoader(data, batch_size=8, shuffle=True),
        DataLoader(data, batch_size=20),
        epochs=2,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        device="cpu",
        progress=False,
        augment=augment,
    )
    assert seen == [("cpu", 8)] * 10  # 5 training batches per epoch, no validation batch
    assert torch.isfinite(model.weight).all()


def test_augmentation_benchmark_runs_at_a_small_size():
    import runpy
    from pathlib import Path

    script = Path(__file__).parents[1] / "benchmarks" / "augmentation.py"
    main = runpy.run_path(str(script), run_name="benchmark")["main"]
    results = main(["--device", "cpu", "--batch", "4", "--image-size", "32", "--repeats", "1"])
    assert len(results) == 4 and all(s > 0 for s in results.values())
