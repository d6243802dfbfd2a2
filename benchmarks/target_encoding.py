"""Encoding detection targets: the per-image loops against the batch encoders.

    python benchmarks/target_encoding.py                  # CUDA when present
    python benchmarks/target_encoding.py --device cpu --batch 64

The YOLO and CenterNet losses encode their targets at every training step.
``encode_yolo_targets`` and ``encode_centernet_targets`` (the chapter's
readable versions) loop over the objects of one image in Python, on the CPU;
``encode_yolo_batch`` and ``encode_centernet_batch`` encode the whole batch
with tensor operations on the device. Both are timed on the same batch of
synthetic boxes (3 objects per image, 128-px images: chapter 7's sizes) with
``course.utils.time_call``, the loops including the copy to the device that
the loss needed. Prints milliseconds per batch; nothing is asserted; results
go to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse

import torch

from course.detection.centernet import encode_centernet_batch, encode_centernet_targets
from course.detection.yolo import encode_yolo_batch, encode_yolo_targets
from course.utils import get_device, time_call


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=None)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--objects", type=int, default=3)
    args = parser.parse_args()
    device = torch.device(args.device) if args.device else get_device()
    size, classes = args.image_size, 4
    g = torch.Generator().manual_seed(0)
    targets = []
    for _ in range(args.batch):
        xy = torch.rand(args.objects, 2, generator=g) * size * 0.7
        wh = 8 + torch.rand(args.objects, 2, generator=g) * size * 0.3
        boxes = torch.cat([xy, xy + wh], 1)
        targets.append({"boxes": boxes.to(device), "labels": torch.arange(args.objects) % 4})
    grid, out = 7, (size // 4, size // 4)

    def yolo_loop():
        cpu = [
            encode_yolo_targets(t["boxes"].cpu(), t["labels"], classes, grid, (size, size))
            for t in targets
        ]
        return torch.stack(cpu).to(device)

    def centernet_loop():
        cpu = [
            encode_centernet_targets(t["boxes"].cpu(), t["labels"], classes, out) for t in targets
        ]
        return {k: torch.stack([e[k] for e in cpu]).to(device) for k in cpu[0]}

    rows = {
        "YOLO, per-image loop": yolo_loop,
        "YOLO, encode_yolo_batch": lambda: encode_yolo_batch(
            targets, classes, grid, (size, size), device
        ),
        "CenterNet, per-image loop": centernet_loop,
        "CenterNet, encode_centernet_batch": lambda: encode_centernet_batch(
            targets, classes, out, device=device
        ),
    }
    print(f"{args.batch} images of {size} px, {args.objects} objects each, on {device}")
    for name, fn in rows.items():
        print(f"  {name:36s} {1000 * time_call(fn, repeats=20):8.2f} ms per batch")


if __name__ == "__main__":
    main()
