"""Gradient checkpointing: activation memory and step time against the number of segments.

    python benchmarks/checkpointing.py                 # CPU or the first CUDA GPU
    python benchmarks/checkpointing.py --device cpu --depth 64 --batch 32

For a deep chain of Linear+ReLU layers and for ResNet18, it prints one row per
segment count: activation bytes kept after the forward pass and at the
backward peak (measured with saved-tensor hooks, see course.checkpointing),
the CUDA peak of one step above the memory already allocated before it
(torch.cuda.max_memory_allocated) on a GPU, the median
time of one forward + backward, and the overhead against the plain model
(Chen et al. 2016 report about 30 %, one extra forward pass).

Results are reported in benchmarks/RESULTS.md and chapter 5; nothing here is
asserted.
"""

from __future__ import annotations

import argparse
import sys

import torch

from course.checkpointing import (
    CheckpointedSequential,
    best_segments,
    deep_chain,
    peak_activation_bytes,
    peak_cuda_bytes,
    resnet18_layers,
    saved_activation_bytes,
    step_seconds,
)
from course.models import resnet18
from course.utils import get_device


def sweep(
    name: str, layers: list, x: torch.Tensor, counts: list[int], repeats: int
) -> dict[int, dict[str, float]]:
    """Prints one row per segment count and returns them: {segments: {column: value}}."""
    on_cuda = x.device.type == "cuda"
    print(
        f"\n{name}: {len(layers)} layers, input {tuple(x.shape)}, device {x.device}"
        f" (sqrt rule: {best_segments(len(layers))} segments)"
    )
    header = f"{'segments':>8} {'after fwd MB':>13} {'peak act MB':>12}"
    header += f" {'cuda peak MB':>13}" if on_cuda else ""
    print(header + f" {'step ms':>9} {'overhead':>9}")
    base, rows = None, {}
    for k in counts:
        model = CheckpointedSequential(layers, k)
        after = saved_activation_bytes(model, x) / 2**20
        peak = peak_activation_bytes(model, x) / 2**20
        row = f"{k:>8} {after:>13.1f} {peak:>12.1f}"
        if on_cuda:
            row += f" {peak_cuda_bytes(model, x) / 2**20:>13.1f}"
        ms = 1000 * step_seconds(model, x, repeats)
        base = base or ms
        print(row + f" {ms:>9.1f} {100 * (ms / base - 1):>8.0f}%")
        rows[k] = {"after_mb": after, "peak_mb": peak, "ms": ms}
    return rows


def main(argv: list[str] | None = None) -> dict[str, dict[int, dict[str, float]]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=None, help="cpu or cuda (default: best available)")
    parser.add_argument("--depth", type=int, default=64, help="layers of the deep chain")
    parser.add_argument("--width", type=int, default=1024, help="features of the deep chain")
    parser.add_argument("--batch", type=int, default=None, help="default 256 on CUDA, 16 on CPU")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)

    device = torch.device(args.device) if args.device else get_device()
    batch = args.batch or (256 if device.type == "cuda" else 16)
    torch.manual_seed(0)
    if device.type == "cuda":
        print(f"GPU: {torch.cuda.get_device_name(device)}, torch {torch.__version__}")

    n = args.depth
    chain = deep_chain(n, args.width).to(device)
    counts = sorted({1, 2, best_segments(n), n // 4, n // 2, n} - {0})
    chain_rows = sweep(
        "deep chain",
        list(chain),
        torch.randn(batch, args.width, device=device),
        counts,
        args.repeats,
    )

    model = resnet18(num_classes=1000).to(device)
    x = torch.rand(max(2, batch // 4), 3, args.image_size, args.image_size, device=device)
    resnet_rows = sweep("resnet18", resnet18_layers(model), x, [1, 2, 3, 4, 5, 10], args.repeats)
    return {"deep chain": chain_rows, "resnet18": resnet_rows}


if __name__ == "__main__":
    main(sys.argv[1:])
