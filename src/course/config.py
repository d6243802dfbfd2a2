"""Profiles: one notebook, three sizes.

The same notebook runs in CI (``smoke``: seconds on a 2-core CPU), on a
laptop (``cpu``: a few minutes, results already meaningful) and on a CUDA
GPU (``gpu``: real sizes). Notebooks size every experiment with :func:`pick`::

    epochs = pick(smoke=1, cpu=5, gpu=20)

Used in every chapter.
"""

from __future__ import annotations

import os
from typing import TypeVar

import torch

PROFILES = ("smoke", "cpu", "gpu")
ENV_VAR = "COURSE_PROFILE"

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


def pick(*, smoke: T, cpu: T, gpu: T) -> T:
    """Return the value given for the current :func:`profile`."""
    return {"smoke": smoke, "cpu": cpu, "gpu": gpu}[profile()]
