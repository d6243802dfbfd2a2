"""Saving and resuming a training run: atomic writes, safe loading, random state.

:func:`course.train.fit` writes the whole state of a run (model, optimizer,
scheduler, gradient scaler, history, random generators) after every epoch
with :func:`save_state` and picks it up with :func:`load_state`, so an
interrupted run loses at most one epoch and ends with the same weights as an
uninterrupted one. (Not to be confused with *gradient checkpointing*, the
memory technique of chapter 5: ``course.checkpointing``.)

- :func:`save_state` never leaves a truncated file: the bytes go to a temporary
  file that replaces the target in one ``os.replace``;
- :func:`load_state` unpickles tensors and plain data only (``weights_only=True``)
  and names the keys that differ when a file comes from another model.

Used in chapters 0 and 6.
"""

from __future__ import annotations

import os
import random
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from torch import nn

# ---------------------------------------------------------------------------


@contextmanager
def atomic_write(path: str | os.PathLike, durable: bool = True) -> Iterator[BinaryIO]:
    """Write ``path`` so that it is always either absent, as it was, or complete.

    Yields a binary file open on a temporary file in the same folder (its name starts
    with a dot and ends in ``.tmp``, so readers that list images or checkpoints skip
    it); when the block ends without error, that file replaces ``path`` in one
    ``os.replace``; on an error it is deleted and ``path`` stays as it was. Two
    processes writing the same path each write their own temporary file, and the
    last complete one wins. ``durable`` also flushes the bytes to the disk first
    (``fsync``): for checkpoints, not for images that can be generated again.

    Every file the package shares between runs or processes is written this way:
    checkpoints, cached models, generated images, annotations and split lists.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_state(path: str | os.PathLike, state: Mapping[str, Any]) -> Path:
    """Write ``state`` (a dict of tensors and plain data) with ``torch.save``, atomically
    (:func:`atomic_write`): a crash mid-write leaves the previous checkpoint intact,
    never a truncated one."""
    with atomic_write(path) as f:
        torch.save(dict(state), f)
    return Path(path)


def filled_by_batchnorm(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> set[str]:
    """The ``num_batches_tracked`` keys that ``state_dict`` may lack because torch fills them.

    BatchNorm gained the counter in its version 2. When a BatchNorm layer's entry
    comes from an older file (the state dict's ``_metadata`` gives that layer no
    version, or a version below 2: torchvision's IMAGENET1K_V1 ResNet weights,
    or any plain dict), ``load_state_dict`` sets the missing counter itself
    (``_NormBase._load_from_state_dict``). A file saved by a current
    ``state_dict()`` records version 2, and then the key must be there.
    """
    metadata = getattr(state_dict, "_metadata", None) or {}
    filled = set()
    for name, module in model.named_modules():
        if not isinstance(module, nn.modules.batchnorm._NormBase):
            continue
        version = metadata.get(name, {}).get("version")
        if module.track_running_stats and (version is None or version < 2):
            filled.add(f"{name}.num_batches_tracked" if name else "num_batches_tracked")
    return filled


def validate_state_dict(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str = "checkpoint"
) -> None:
    """Raise a ValueError naming the keys that differ between ``model`` and ``state_dict``.

    Accepts exactly what ``model.load_state_dict(state_dict, strict=True)`` accepts,
    including :func:`filled_by_batchnorm`'s keys: torchvision's ImageNet ResNet
    files predate BatchNorm's ``num_batches_tracked`` counter, and torch fills it.
    """
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict) - filled_by_batchnorm(model, state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    wrong_shape = sorted(
        f"{k}: {tuple(state_dict[k].shape)} in {source}, {tuple(v.shape)} in the model"
        for k, v in expected.items()
        if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)
    )
    if missing or unexpected or wrong_shape:

        def show(keys: list[str]) -> str:
            return ", ".join(keys[:8]) + (f" ... ({len(keys)} in all)" if len(keys) > 8 else "")

        lines = [
            f"{source} does not match {type(model).__name__}: it was saved from another model."
        ]
        if missing:
            lines.append(f"  missing keys: {show(missing)}")
        if unexpected:
            lines.append(f"  unexpected keys: {show(unexpected)}")
        if wrong_shape:
            lines.append(f"  shape mismatches: {show(wrong_shape)}")
        lines.append(
            "  Build the model the checkpoint came from, or delete the file to start afresh."
        )
        raise ValueError("\n".join(lines))


def load_state(
    path: str | os.PathLike,
    model: nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    map_location: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Load a file written by :func:`save_state` (``fit`` writes them).

    Uses ``torch.load(weights_only=True)``: only tensors and plain data are
    unpickled, never arbitrary code. The states of ``model``, ``optimizer``
    and ``scheduler`` are restored when given; a model whose keys or shapes
    differ raises a ValueError naming them. Returns the whole checkpoint dict.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        raise ValueError(
            f"{path} is not a readable checkpoint ({type(err).__name__}: {err}). "
            "Delete it to train from scratch."
        ) from err
    if model is not None:
        model_state = state.get("model", state)
        validate_state_dict(model, model_state, source=f"checkpoint {path}")
        model.load_state_dict(model_state)
    if optimizer is not None and "optimizer" in state:
        optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state.get("scheduler") is not None:
        scheduler.load_state_dict(state["scheduler"])
    return state


def save_run(
    path: str | os.PathLike,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: torch.amp.GradScaler,
    epoch: int,
    history: Mapping[str, Any],
    rng: Mapping[str, Any],
    best_model: Mapping[str, torch.Tensor] | None,
) -> Path:
    """Write the whole state of a run after ``epoch`` epochs, atomically: what
    :func:`resume_run` needs to continue it as if it had never stopped. ``rng``: the
    random state (:func:`capture_rng_state`); ``best_model``: the weights ``fit``'s
    ``keep_best`` keeps, or None."""
    return save_state(
        path,
        {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "scaler": scaler.state_dict() if scaler.is_enabled() else None,
            "epoch": epoch,
            "history": dict(history),
            "rng": dict(rng),
            "best_model": best_model,
        },
    )


def resume_run(
    path: str | os.PathLike,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: torch.amp.GradScaler,
    map_location: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Restore a run written by :func:`save_run` into ``model``, ``optimizer``,
    ``scheduler`` and ``scaler``; returns the rest: ``{"epoch": int, "history": dict,
    "rng": dict, "best_model": dict | None}``. The random state is the caller's to
    restore (:func:`restore_rng_state`), once it knows which process it is."""
    state = load_state(path, model, optimizer, scheduler, map_location=map_location)
    if state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    return {
        "epoch": int(state["epoch"]),
        "history": state["history"],
        "rng": state["rng"],
        "best_model": state.get("best_model"),
    }


def capture_rng_state(loader: Iterable) -> dict[str, Any]:
    """Every random generator a training epoch draws from, as plain data: torch's (CPU and
    every CUDA device), Python's ``random``, NumPy's global generator (which
    :func:`course.utils.seed_everything` seeds because students' augmentations call
    ``np.random``) and the loader's sampler's generator when it has one."""
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": _numpy_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    generator = _sampler_generator(loader)
    if generator is not None:
        state["sampler"] = generator.get_state()
    return state


def restore_rng_state(state: Mapping[str, Any], loader: Iterable) -> None:
    """Put back what :func:`capture_rng_state` took (a state saved before NumPy's was
    recorded leaves NumPy's generator as it is)."""
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "numpy" in state:
        _set_numpy_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    generator = _sampler_generator(loader)
    if generator is not None and "sampler" in state:
        generator.set_state(state["sampler"])


def _numpy_state() -> dict[str, Any]:
    """NumPy's global generator (``np.random.get_state()``) as a tensor and numbers, which
    ``torch.load(weights_only=True)`` reads back (it refuses NumPy arrays)."""
    kind, keys, position, has_gauss, gauss = np.random.get_state()  # noqa: NPY002
    return {
        "kind": str(kind),
        "keys": torch.from_numpy(keys.astype(np.int64)),
        "position": int(position),
        "has_gauss": int(has_gauss),
        "gauss": float(gauss),
    }


def _set_numpy_state(state: Mapping[str, Any]) -> None:
    keys = state["keys"].numpy().astype(np.uint32)
    np.random.set_state(  # noqa: NPY002
        (state["kind"], keys, state["position"], state["has_gauss"], state["gauss"])
    )


def _sampler_generator(loader: Iterable) -> torch.Generator | None:
    sampler = getattr(loader, "sampler", None)
    generator = getattr(sampler, "generator", None)
    return generator if isinstance(generator, torch.Generator) else None
