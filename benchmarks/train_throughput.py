"""Training throughput of ResNet18: course.train.fit against a naive and a tuned loop.

    python benchmarks/train_throughput.py                       # CUDA: 224 px, batch 256
    python benchmarks/train_throughput.py --device cpu --batch 8 --image-size 64 --steps 3

Three loops train the same ResNet18 (SGD, momentum 0.9) on synthetic data
already on the device, so that only the training step is measured:

- naive: float32, NCHW, ``loss.backward(); optimizer.step()``;
- tuned: the same mixed precision as fit (``course.train.precision``: bf16 on
  cards that compute it natively, fp16 with a gradient scaler on a T4, or
  ``--amp``), channels_last, ``torch.compile`` (the reference that a GPU
  engineer would write by hand);
- course.train.fit: the loop every chapter uses (its mixed precision and
  channels_last), without and with ``compile=True``; the compiled fit is timed on its
  second epoch, and the first epoch's extra time is the compilation, from which
  the number of epochs after which compiling pays off follows.

Each runs ``--steps`` steps three times with ``course.utils.time_call``: twice to
warm up (and to compile), then once timed, synchronised.
Prints images/s and the ratios. Nothing is asserted; results go to
benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import sys

import torch
from torch import nn

from course.models import resnet18
from course.train import Precision, fit, precision
from course.utils import get_device, time_call


def batches(n: int, batch: int, size: int, device: torch.device, channels_last: bool = False):
    x = torch.rand(batch, 3, size, size, device=device)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (batch,), device=device)
    return [(x, y)] * n


def naive_loop(model, data, optimizer) -> None:
    for x, y in data:
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def tuned_step(model, optimizer, numerics: Precision):
    """One hand-written training step in ``numerics``' autocast, with its scaler."""
    scaler = numerics.scaler()

    def step(x, y):
        with numerics.autocast():
            loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    return step


def timed(run, steps: int, batch: int) -> float:
    """Images per second of ``run()``, which trains ``steps`` batches of ``batch`` images."""
    return steps * batch / time_call(run, repeats=1)


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=None)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--no-compile", action="store_true", help="tuned loop without compile")
    parser.add_argument("--amp", default=None, help="fp16, bf16 or off (default: the policy's)")
    args = parser.parse_args(argv)
    device = torch.device(args.device) if args.device else get_device()
    amp = {"off": False, None: None}.get(args.amp, args.amp)
    numerics = precision(device, amp)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        print(f"GPU: {torch.cuda.get_device_name(device)}, torch {torch.__version__}")
    b, s = args.batch, args.image_size
    results = {}

    def fresh(channels_last=False):
        torch.manual_seed(0)
        model = resnet18().to(device)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        return model, torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    model, opt = fresh()
    results["naive fp32 NCHW"] = timed(
        lambda: naive_loop(model, batches(args.steps, b, s, device), opt), args.steps, b
    )

    for compiled in [False] if args.no_compile else [False, True]:
        model, opt = fresh(channels_last=device.type == "cuda")
        step = tuned_step(model, opt, numerics)
        if compiled:
            step = torch.compile(step)
        data = batches(args.steps, b, s, device, channels_last=device.type == "cuda")
        # the key keeps its old name (tests/test_checkpointing.py reads it); the
        # precision is that of the header line
        name = "tuned bf16 + channels_last" + (" + compile" if compiled else "")
        results[name] = timed(
            lambda step=step, data=data: [step(x, y) for x, y in data], args.steps, b
        )

    model, opt = fresh()

    def run_fit(steps: int) -> None:
        batches_ = batches(steps, b, s, device)
        fit(model, batches_, epochs=1, optimizer=opt, device=device, amp=amp, progress=False)

    results["course.train.fit"] = timed(lambda: run_fit(args.steps), args.steps, b)

    compile_seconds = None
    if not args.no_compile:  # fit(compile=True): epoch 1 compiles, epoch 2 runs compiled
        model, opt = fresh()
        history = fit(
            model,
            batches(args.steps, b, s, device),
            epochs=2,
            optimizer=opt,
            device=device,
            amp=amp,
            progress=False,
            compile=True,
        )
        compiled_epoch = history.seconds[1]
        results["course.train.fit(compile=True)"] = args.steps * b / compiled_epoch
        compile_seconds = history.seconds[0] - compiled_epoch

    naive, tuned, ours = results["naive fp32 NCHW"], results[name], results["course.train.fit"]
    # ``name`` is the last tuned variant: the compiled one unless --no-compile
    print(f"ResNet18, {s} px, batch {b}, {args.steps} timed steps on {device}, {numerics.name}")
    for k, v in results.items():
        print(f"  {k:42s} {v:9.1f} images/s")
    print(
        f"  course.train.fit / tuned = {ours / tuned:.2f}   course.train.fit / naive = "
        f"{ours / naive:.2f}"
    )
    if compile_seconds is not None:
        fast = results["course.train.fit(compile=True)"]
        saved = args.steps * b * (1 / ours - 1 / fast)  # seconds saved per epoch of --steps
        payoff = f"{compile_seconds / saved:.0f} epochs" if saved > 0 else "never"
        print(
            f"  fit(compile=True) / tuned compiled = {fast / tuned:.2f}; compilation "
            f"{compile_seconds:.0f} s, paid back after {payoff} of {args.steps} steps"
        )
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
