"""Training step in NCHW against channels_last, for the course's models, on one device.

    python benchmarks/memory_format.py --device cpu            # what a laptop student runs
    python benchmarks/memory_format.py --device cuda

``course.train.fit`` and ``train_steps`` store images and convolution weights
channels_last (N, H, W, C) on CUDA and on CPU (``course.train.channels_last_on``).
This script times the same SGD steps in both layouts for the models the
chapters train on a laptop (the small CNN of chapters 0, 4 and 6, chapter 2's
deep network, ResNet18 at the cpu profile's sizes) and compares each
layout's first step with the same step in float64: both are float32
rounding away from it. Nothing about speed
is asserted; results go to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from course.models import DeepCNN, SmallCNN, resnet18
from course.utils import get_device, time_call


@dataclass
class Case:
    name: str
    model: Callable[[], nn.Module]
    batch: int
    image_size: int
    num_classes: int


CASES = [
    Case(
        "SmallCNN(16, 32, 32), chapter 6's sweep",
        lambda: SmallCNN(channels=(16, 32, 32)),
        1024,
        16,
        4,
    ),
    Case("SmallCNN, chapters 0 and 4", lambda: SmallCNN(num_classes=4), 128, 32, 4),
    Case("DeepCNN(depth 12, width 16), chapter 2", lambda: DeepCNN(12, width=16), 128, 32, 4),
    Case("ResNet18, chapter 3 (cpu: 112 px)", lambda: resnet18(num_classes=2), 32, 112, 2),
]


def train(case: Case, device: torch.device, layout: str, scale: int = 1):
    """A fresh model (seed 0) and a function that runs one SGD step on a fixed batch.

    ``layout`` is ``"nchw"``, ``"channels_last"`` or ``"float64"`` (NCHW in
    double precision, the reference). ``scale`` divides the batch and image
    size (for a quick test run).
    """
    torch.manual_seed(0)
    model = case.model().to(device)
    batch, size = max(2, case.batch // scale), max(16, case.image_size // scale)
    x = torch.rand(batch, 3, size, size, device=device)
    y = torch.randint(0, case.num_classes, (batch,), device=device)
    if layout == "channels_last":
        model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    elif layout == "float64":
        model, x = model.double(), x.double()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step() -> None:
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return model, step


def first_update(model: nn.Module, step: Callable[[], None]) -> list[torch.Tensor]:
    """How much one ``step()`` moves each parameter, in float64."""
    before = [p.detach().double().clone() for p in model.parameters()]
    step()
    return [p.detach().double() - b for p, b in zip(model.parameters(), before, strict=True)]


def compare(case: Case, device: torch.device, steps: int, scale: int = 1) -> dict[str, float]:
    """Seconds per step in each layout, and each layout's error on the first step.

    ``error_nchw`` and ``error_channels_last``: max |update - reference update|
    over max |reference update|, for one SGD step from the same weights on the
    same batch, against the step computed in float64. float32 rounding gives
    1e-7 to 1e-2 (BatchNorm over many pixels, amplified through deep
    networks at initialisation); a wrong layout conversion gives about 1.
    """
    reference = first_update(*train(case, device, "float64", scale))
    scale_of_step = max(u.abs().max().item() for u in reference)
    result: dict[str, float] = {}
    for layout in ("nchw", "channels_last"):
        model, step = train(case, device, layout, scale)
        update = first_update(model, step)
        error = max((u - r).abs().max().item() for u, r in zip(update, reference, strict=True))
        result[f"error_{layout}"] = error / scale_of_step
        result[f"{layout}_s"] = (
            time_call(lambda step=step: [step() for _ in range(steps)], 2) / steps
        )
    result["ratio"] = result["channels_last_s"] / result["nchw_s"]
    return result


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=None)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--scale", type=int, default=1, help="divide batch and image size")
    args = parser.parse_args(argv)
    device = torch.device(args.device) if args.device else get_device()
    print(f"{device}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    header = f"{'model':42s} {'NCHW':>9s} {'ch.last':>9s} {'ratio':>6s}"
    print(f"  {header}  first-step error vs float64")
    results = {}
    for case in CASES:
        r = compare(case, device, args.steps, args.scale)
        results[case.name] = r
        print(
            f"  {case.name:42s} {r['nchw_s'] * 1e3:6.0f} ms {r['channels_last_s'] * 1e3:6.0f} ms "
            f"{r['ratio']:6.2f}  NCHW {r['error_nchw']:.0e}, ch.last {r['error_channels_last']:.0e}"
        )
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
