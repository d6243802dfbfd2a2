"""Every setting a user can change, and the profiles: one notebook, three sizes.

The same notebook runs in CI (``smoke``: seconds on a 2-core CPU), on a
laptop (``cpu``: a few minutes, results already meaningful) and on a CUDA
GPU (``gpu``: real sizes). Notebooks size every experiment with :func:`pick`::

    epochs = pick(smoke=1, cpu=5, gpu=20)

This module is the only one that reads the environment variables listed in
:data:`SETTINGS`; :func:`data_paths` is the one place that says where each
data set, cache and weight file is looked for (book/setup.md lists the same
paths, and a test keeps the two in step).

Used in every chapter.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TypeVar

import torch

PROFILES = ("smoke", "cpu", "gpu")
ENV_VAR = "COURSE_PROFILE"

#: The environment variables that change what the course does, and what each one does.
SETTINGS = {
    "COURSE_PROFILE": "smoke, cpu or gpu; default: gpu when CUDA is available, else cpu",
    "COURSE_DATA": "the folder of the data sets (real and generated); default: data/ at "
    "the root of the repository when run from a clone, else ./data",
    "COURSE_CACHE": "where the course caches models it trains once (the synthetic stand-ins "
    "of the ImageNet weights, chapter 4's classifier); default: $XDG_CACHE_HOME/course, "
    "i.e. ~/.cache/course",
    "TORCH_HOME": "torchvision's cache, where the ImageNet weights are downloaded "
    "(hub/checkpoints/); default: $XDG_CACHE_HOME/torch, i.e. ~/.cache/torch",
    "XDG_CACHE_HOME": "the base of the two caches above when they are not set; default: ~/.cache",
    "COURSE_SEED": "an integer k: every seed the chapters draw (initial weights, training "
    "order, generated data, splits, torchrun processes) moves by 1000 k, to see which results "
    "hold for another draw; default: 0, the seeds the book was written with",
    "COURSE_AMP": "fp16, bf16 or off: the precision of fit, evaluate and predict when they "
    "are not told one, on any device; fp16 is float16 autocast with a gradient scaler, a "
    "T4's numerics (on a CPU too); default: bf16 on GPUs that compute it natively (compute "
    "capability 8 and later), fp16 on older ones (T4), off (float32) on the CPU",
    "COURSE_MAX_STEPS": "a positive integer n: every loop of the package that trains or attacks "
    "stops each pass after n batches (fit, train_steps, the adversarial patch, "
    "accuracy_under_attack), to rehearse a profile's "
    "code paths in bounded time (the gpu profile on a CPU); the results then say nothing and "
    "the chapters' claims are not expected to hold; default: unset, no cap",
}

T = TypeVar("T")


def profile() -> str:
    """The current profile: ``$COURSE_PROFILE`` if set, else ``"gpu"`` when
    CUDA is available, else ``"cpu"``.

    Raises:
        ValueError: ``COURSE_PROFILE`` holds something else than a profile name.
    """
    value = os.environ.get(ENV_VAR, "").strip().lower()
    if value:
        if value not in PROFILES:
            raise ValueError(
                f"{ENV_VAR}={os.environ[ENV_VAR]!r} is not a profile; "
                f"valid profiles are {', '.join(PROFILES)} "
                f"(or unset it to choose automatically)."
            )
        return value
    return "gpu" if torch.cuda.is_available() else "cpu"


#: The values of ``$COURSE_AMP``: float16 autocast with a gradient scaler, bfloat16
#: autocast, or float32 (no autocast).
AMP_MODES = ("fp16", "bf16", "off")


def amp_setting() -> str | None:
    """``$COURSE_AMP`` (``"fp16"``, ``"bf16"`` or ``"off"``), or None when unset.

    ``course.train.precision`` applies it; this function only reads it.

    Raises:
        ValueError: ``COURSE_AMP`` holds something else, or the old ``COURSE_AMP_DTYPE``
            is set (it was replaced by ``COURSE_AMP``; the error says what to set).
    """
    old = os.environ.get("COURSE_AMP_DTYPE", "").strip()
    if old:
        new = {"float16": "fp16", "bfloat16": "bf16"}.get(old.lower(), "fp16, bf16 or off")
        raise ValueError(
            f"COURSE_AMP_DTYPE={old!r} is no longer read: COURSE_AMP replaces it, on every "
            f"device. Unset COURSE_AMP_DTYPE and set COURSE_AMP={new} instead."
        )
    value = os.environ.get("COURSE_AMP", "").strip().lower()
    if not value:
        return None
    if value not in AMP_MODES:
        raise ValueError(
            f"COURSE_AMP={os.environ['COURSE_AMP']!r} is not a precision; use "
            f"{', '.join(AMP_MODES)} (or unset it for the device's default)."
        )
    return value


def max_steps() -> int | None:
    """``$COURSE_MAX_STEPS`` (a positive integer), or None when unset: the most batches a
    training loop (or an attack's evaluation) takes per pass (:func:`capped`).

    A rehearsal setting, not a way to train: ``COURSE_PROFILE=gpu COURSE_MAX_STEPS=2``
    runs every code path of the gpu profile, at its sizes, on a CPU in bounded time.

    Raises:
        ValueError: ``COURSE_MAX_STEPS`` is not a positive integer.
    """
    value = os.environ.get("COURSE_MAX_STEPS", "").strip()
    if not value:
        return None
    try:
        steps = int(value)
    except ValueError:
        steps = 0
    if steps < 1:
        raise ValueError(
            f"COURSE_MAX_STEPS={value!r} is not a positive integer; set it to the most "
            "batches per epoch a training loop may take (e.g. 2), or unset it."
        )
    return steps


def capped(batches: int) -> int:
    """``batches``, or :func:`max_steps` when that is set and smaller: how many batches
    (or steps) a training loop that would take ``batches`` takes in this run."""
    cap = max_steps()
    return batches if cap is None else min(batches, cap)


#: How far apart the seeds of two values of ``COURSE_SEED`` are: the notebooks draw with
#: small base seeds (0, 1, 2, 100 + i, ...), so a stride of 1000 keeps every shifted
#: seed distinct from every other base seed (a shifted training set never equals the
#: unshifted validation set).
SEED_STRIDE = 1000


def seed_offset() -> int:
    """``$COURSE_SEED`` (an integer, default 0).

    Raises:
        ValueError: ``COURSE_SEED`` is not an integer.
    """
    value = os.environ.get("COURSE_SEED", "").strip()
    if not value:
        return 0
    try:
        return int(value)
    except ValueError:
        raise ValueError(
            f"COURSE_SEED={value!r} is not an integer; set it to 0, 1, 2, ... "
            "(or unset it for the book's own seeds)."
        ) from None


def run_seed(base: int = 0) -> int:
    """The seed to use for the draw a chapter numbers ``base`` in this run:
    ``base + 1000 * COURSE_SEED``.

    Notebooks and the package seed every random draw that is part of an experiment
    through this function (``seed_everything`` calls it), so ``COURSE_SEED=1`` reruns
    a chapter on another draw of everything while keeping two draws with different
    ``base`` distinct. Unset, it returns ``base``: the book's own seeds.
    """
    return base + SEED_STRIDE * seed_offset()


def pick(*, smoke: T, cpu: T, gpu: T) -> T:
    """Return the value given for the current :func:`profile`."""
    return {"smoke": smoke, "cpu": cpu, "gpu": gpu}[profile()]


# ---------------------------------------------------------------------------
# Where things are
# ---------------------------------------------------------------------------


def project_root(start: str | os.PathLike | None = None) -> Path | None:
    """The clone of the course repository that ``start`` (default: the working
    directory) lies in, or None (e.g. on Colab, where only the package is installed).

    A clone is recognised by its ``_toc.yml`` next to ``src/course``. The
    notebooks' kernel runs in ``notebooks/`` under ``make lab`` and at the root
    elsewhere; both find the same root, hence the same data folder.
    """
    here = Path(start if start is not None else Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "_toc.yml").is_file() and (folder / "src" / "course").is_dir():
            return folder
    return None


def data_root() -> Path:
    """The data folder, as an absolute path: ``$COURSE_DATA`` if set, else ``data/`` at the
    root of the clone (:func:`project_root`), else ``./data``."""
    value = os.environ.get("COURSE_DATA", "").strip()
    if value:
        return Path(value).expanduser().resolve()
    root = project_root()
    return (root if root is not None else Path.cwd()).resolve() / "data"


def _xdg_cache_home() -> Path:
    value = os.environ.get("XDG_CACHE_HOME", "").strip()
    return Path(value).expanduser() if value else Path.home() / ".cache"


def cache_dir() -> Path:
    """Where the course caches the models it trains once: ``$COURSE_CACHE``, else
    ``$XDG_CACHE_HOME/course`` (``~/.cache/course``)."""
    value = os.environ.get("COURSE_CACHE", "").strip()
    return Path(value).expanduser() if value else _xdg_cache_home() / "course"


def weights_dir() -> Path:
    """torchvision's weight cache, ``hub/checkpoints`` under ``$TORCH_HOME``, else under
    ``$XDG_CACHE_HOME/torch`` (exactly where torchvision downloads: ``torch.hub.get_dir``)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def data_paths() -> dict[str, Path]:
    """Where each data set is looked for, and where the generated ones and caches go.

    - ``hornets``: the hornet photos, ``DATA/hornets/{presence,absence}/*.jpg`` (chapter 3, 4);
    - ``voc``: Pascal VOC 2007, ``DATA/VOCdevkit/VOC2007`` (chapter 7);
    - ``synthetic``: the generated stand-ins, ``DATA/synthetic``;
    - ``cache``: :func:`cache_dir`; ``weights``: :func:`weights_dir`.

    ``DATA`` is :func:`data_root`. A real data set is used when its folder exists.
    """
    root = data_root()
    return {
        "hornets": root / "hornets",
        "voc": root / "VOCdevkit" / "VOC2007",
        "synthetic": root / "synthetic",
        "cache": cache_dir(),
        "weights": weights_dir(),
    }


def describe_paths() -> str:
    """A few lines for a notebook to print: each path of :func:`data_paths`, and whether
    it exists."""
    return "\n".join(
        f"{name:9s} {path}{'' if path.exists() else '  (not there)'}"
        for name, path in data_paths().items()
    )
