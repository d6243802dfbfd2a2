"""Small helpers every chapter uses: device, seeding, parameter counts, one timer, glue.

Used in every chapter.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn

from course.config import run_seed


def get_device(prefer: str | None = None) -> torch.device:
    """The device to compute on: ``prefer`` if given, else CUDA, else Apple MPS, else CPU."""
    if prefer is not None:
        return torch.device(prefer)
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int = 0) -> torch.Generator:
    """Seed Python, NumPy and torch (CPU and every CUDA device) with ``run_seed(seed)``.

    ``run_seed`` is ``seed`` itself unless ``$COURSE_SEED`` asks for another draw
    (:func:`course.config.run_seed`). Returns a CPU ``torch.Generator`` seeded the
    same way, handy for ``DataLoader(generator=...)`` and ``random_split``.

    It also sets ``$PYTHONHASHSEED``, which does nothing to this interpreter (its string
    hashes were fixed when it started) but fixes them in the interpreters it starts:
    DataLoader workers under the spawn start method (macOS, Windows), subprocesses,
    ``torchrun`` launched from a notebook. Forked workers share this interpreter's hashes.
    """
    seed = run_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - students' code uses the global NumPy RNG
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    # Not for this interpreter but for those it starts (see the docstring).
    os.environ["PYTHONHASHSEED"] = str(seed)
    return torch.Generator().manual_seed(seed)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of scalar parameters of ``model`` (shared tensors counted once)."""
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) in seen or (trainable_only and not p.requires_grad):
            continue
        seen.add(id(p))
        total += p.numel()
    return total


def model_device(model: nn.Module) -> torch.device:
    """The device of ``model``'s first parameter (the CPU for a model without parameters)."""
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode for a block, then restore the mode it had.

    Evaluation, prediction and attacks use it so that they never leave a model
    that was training in eval mode (or the reverse).
    """
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def synchronize(device: torch.device | str | None = None) -> None:
    """Wait for queued GPU work, so wall-clock timings measure the computation."""
    device = torch.device(device) if device is not None else get_device()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def _clock() -> float:
    """The clock of :func:`time_call`: waits for queued GPU work, then reads the time."""
    synchronize()
    return time.perf_counter()


def _quiet_benchmark_module():
    """``torch.utils.benchmark``, imported without its noise: it imports
    ``torch.utils.cpp_extension``, which logs "No CUDA runtime is found, using
    CUDA_HOME=..." on every machine without a GPU, a warning box on every page of the
    book built on a CPU."""
    logger = logging.getLogger("torch.utils.cpp_extension")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        import torch.utils.benchmark as benchmark
    finally:
        logger.setLevel(level)
    return benchmark


def time_call(fn: Callable[[], object], repeats: int = 3) -> float:
    """Mean wall time, in seconds, of one call of ``fn()`` over ``repeats`` calls.

    ``torch.utils.benchmark.Timer`` first calls ``fn`` twice, untimed (the first
    call of a GPU kernel pays for its selection and for memory allocation),
    then times ``repeats`` calls in one block, with a clock that synchronises
    the GPU: CUDA calls return before the work is done, so a timer that does
    not wait would measure only the launch. All of torch's threads are used,
    as in the code being timed (``Timer``'s default would be one).

    >>> time_call(lambda: torch.randn(64, 64) @ torch.randn(64, 64)) > 0
    True
    """
    if repeats < 1:
        raise ValueError(f"need repeats >= 1, got {repeats}")
    timer = _quiet_benchmark_module().Timer(
        stmt="fn()", globals={"fn": fn}, timer=_clock, num_threads=torch.get_num_threads()
    )
    return timer.timeit(repeats).mean


def glue(name: str, value: Any) -> None:
    """Hand ``value`` to the book's text: ``{glue:text}`name``` in a Markdown cell
    (``{glue:text}`name:.3f``` to format it) shows the value of this run.

    The numbers a chapter's prose quotes thus come from the run that the page
    shows, under every profile (myst-nb's ``glue``, recorded without being
    displayed). Without myst-nb (on Colab), nothing is recorded and the cell's
    printed output is where the value is read.
    """
    try:
        from myst_nb import glue as myst_glue
    except ImportError:
        return
    myst_glue(name, plain_number(value), display=False)


def plain_number(value: Any) -> Any:
    """A NumPy scalar or a one-element tensor as the Python ``int``/``float``/``bool`` it
    holds; anything else unchanged.

    The book formats glued values from their text form: ``np.float64(0.147)``
    (NumPy 2's repr) or ``tensor(0.147)`` cannot be read back as a number, and
    ``{glue:text}`name:.3f``` then fails the build.
    """
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    if isinstance(value, np.generic):
        return value.item()
    return value
