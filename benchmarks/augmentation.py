"""Augmentation: per image in Python (what a Dataset transform does) against a whole
batch on the device (``fit(augment=...)``).

    python benchmarks/augmentation.py                   # CUDA when present
    python benchmarks/augmentation.py --device cpu --batch 64 --image-size 112

Times, on one batch of random images, with ``course.utils.time_call``:

- classification (chapter 3): the slides' pipeline per image with
  ``torchvision.transforms.v2`` (flip, affine, colour jitter, noise, erasing), the
  former Dataset transform, against ``course.data.augment.BatchAugmentation``;
- detection (chapter 7): ``DetectionAugmentation`` per image (the reference kept in
  ``tests/reference_transforms.py``) against ``BatchDetectionAugmentation``, 3 boxes per
  image.

The per-image versions run on one CPU core, as in one loader worker (the
pipeline's cost per batch is then divided by the number of workers, at best);
the batch versions on ``--device``. Prints milliseconds per batch and images
per second; nothing is asserted; results go to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torchvision.transforms import v2

from course.data.augment import BatchAugmentation
from course.detection import BatchDetectionAugmentation
from course.utils import get_device, time_call

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' reference
from tests.reference_transforms import DetectionAugmentation  # noqa: E402


def per_image_pipeline() -> v2.Compose:
    """The slides' augmentations one image at a time, as the Dataset transform did."""
    return v2.Compose(
        [
            v2.RandomHorizontalFlip(),
            v2.RandomAffine(degrees=20, translate=(0.1, 0.1), scale=(0.85, 1.15)),
            v2.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.03),
            v2.Lambda(lambda x: (x + 0.03 * torch.randn_like(x)).clamp(0, 1)),
            v2.RandomErasing(p=0.25, scale=(0.02, 0.1)),
        ]
    )


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=None)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    device = torch.device(args.device) if args.device else get_device()
    b, size = args.batch, args.image_size
    g = torch.Generator().manual_seed(0)
    images = torch.rand(b, 3, size, size, generator=g)
    xy = torch.rand(b, 3, 2, generator=g) * size * 0.6
    boxes = torch.cat([xy, xy + size * 0.1 + torch.rand(b, 3, 2, generator=g) * size * 0.3], -1)
    targets = [
        {"boxes": boxes[i], "labels": torch.arange(3), "difficult": torch.zeros(3, dtype=bool)}
        for i in range(b)
    ]
    on_device = images.to(device)
    device_targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
    pipeline, batch_augment = per_image_pipeline(), BatchAugmentation()
    detection_one, detection_batch = DetectionAugmentation(size), BatchDetectionAugmentation()
    threads = torch.get_num_threads()

    def one_core(fn):
        def run():
            torch.set_num_threads(1)  # one loader worker
            try:
                return fn()
            finally:
                torch.set_num_threads(threads)

        return run

    rows = {
        "classification, v2 per image (1 core)": one_core(
            lambda: torch.stack([pipeline(x) for x in images])
        ),
        f"classification, BatchAugmentation ({device.type})": lambda: batch_augment.images(
            on_device
        ),
        "detection, per image (1 core)": one_core(
            lambda: [detection_one(x, t) for x, t in zip(images, targets, strict=True)]
        ),
        f"detection, BatchDetectionAugmentation ({device.type})": lambda: detection_batch(
            on_device, device_targets
        ),
    }
    print(f"{b} images of {size} px on {device}")
    results = {}
    for name, fn in rows.items():
        seconds = time_call(fn, repeats=args.repeats)
        results[name] = seconds
        print(f"  {name:48s} {1000 * seconds:9.1f} ms per batch {b / seconds:9.0f} images/s")
    return results


if __name__ == "__main__":
    main()
