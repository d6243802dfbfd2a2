"""The training loop shared by every chapter: fit, evaluate, predict.

What a GPU user expects, in one readable file:

- one mixed-precision policy (:func:`precision`): bf16 on CUDA cards that compute
  it natively, else fp16 with a gradient scaler; plain float32 on CPU so results
  there are exact; ``$COURSE_AMP=fp16|bf16|off`` overrides the default on any
  device (``fp16`` on a CPU rehearses a T4's numerics);
- channels_last memory format on CUDA and on CPU (faster convolutions on
  tensor cores, and with oneDNN on a laptop's cores, see :func:`channels_last_on`);
- non-blocking host-to-device copies (overlap with compute when the
  DataLoader uses ``pin_memory=True``);
- gradient accumulation (``grad_accum_steps``) to reach big batches on one GPU;
- the scheduler stepped once per optimizer step taken: a step the gradient scaler
  skips (float16 overflow) moves neither the weights, nor the schedule, nor the
  step count (:class:`OptimizerSteps`);
- one device rule (:func:`resolve_device`); :func:`evaluate` and :func:`predict`
  give the model back on its device and in its memory format (:func:`placed`);
- tqdm progress bars;
- data parallelism under ``torchrun``: the same call trains on every process
  (DistributedDataParallel, each process reading its share of every batch);
- the run's state written atomically after every epoch and resumed automatically
  (``course.runstate``), so an interrupted run loses at most one epoch and
  finishes with the same weights as an uninterrupted one.

Used in chapters 0, 1, 2, 3, 4 and 7.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.distributed as dist
from torch import nn
from tqdm.auto import tqdm

from course.config import amp_setting, capped
from course.distributed import (
    all_rng_states,
    global_sums,
    is_distributed,
    is_main_process,
    own_rng_state,
    process_device,
    shard,
)
from course.runstate import restore_rng_state, resume_run, save_run
from course.utils import eval_mode

LossFn = Callable[[Any, Any], torch.Tensor]
BEST_METRICS = ("val_loss", "val_acc")


class EpochResult(NamedTuple):
    """One training epoch, as :func:`fit` records it: mean loss and accuracy over every
    sample of every process (accuracy NaN when the outputs are not class logits), the
    seconds spent waiting for the loader, the seconds of the first step, and the number
    of optimizer steps taken (steps the gradient scaler skipped are not counted)."""

    loss: float
    accuracy: float
    data_seconds: float
    first_step: float
    steps: int = 0


@dataclass
class History:
    """Per-epoch metrics as plain lists of floats (NaN where not measured).

    ``steps``: the optimizer steps taken in each epoch (ints): one per group of
    ``grad_accum_steps`` batches, less the steps a float16 gradient scaler skipped
    because the gradients overflowed (:class:`OptimizerSteps`).
    """

    train_loss: list[float] = field(default_factory=list)
    train_acc: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_acc: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    data_seconds: list[float] = field(default_factory=list)  # waiting for the loader
    steps: list[int] = field(default_factory=list)  # optimizer steps taken

    @property
    def epochs(self) -> int:
        return len(self.train_loss)

    def best_epoch(self, metric: str = "val_loss") -> int:
        """The epoch (1-based) with the lowest ``"val_loss"`` or the highest ``"val_acc"``;
        the first one on ties."""
        if metric not in BEST_METRICS:
            raise ValueError(f"metric must be one of {BEST_METRICS}, got {metric!r}")
        values = torch.tensor(getattr(self, metric), dtype=torch.float64)
        if metric == "val_acc":
            values = -values
        if values.isnan().all():
            raise ValueError(f"no {metric} was measured: give fit a val_loader")
        return int(torch.nan_to_num(values, nan=math.inf).argmin()) + 1

    def record(
        self,
        train: EpochResult,
        val: Mapping[str, float] | None,
        lr: float,
        seconds: float,
    ) -> None:
        """Append one epoch: its training result, the validation metrics of
        :func:`evaluate` (NaN without a validation set), the lr and the duration."""
        self.train_loss.append(train.loss)
        self.steps.append(train.steps)
        self.train_acc.append(train.accuracy)
        self.data_seconds.append(train.data_seconds)
        self.val_loss.append(val["loss"] if val is not None else math.nan)
        self.val_acc.append(val["accuracy"] if val is not None else math.nan)
        self.lr.append(lr)
        self.seconds.append(seconds)

    def to_dict(self) -> dict[str, list[float]]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Sequence[float]]) -> History:
        history = cls(**{k: [float(v) for v in data.get(k, [])] for k in cls.__dataclass_fields__})
        history.steps = [int(v) for v in history.steps]
        return history


# ---------------------------------------------------------------------------
# Moving batches and computing metrics
# ---------------------------------------------------------------------------


def map_tensors(obj: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """``fn`` applied to every tensor in ``obj`` (tensors nested in lists, tuples, dicts);
    anything else is returned as it is."""
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if isinstance(obj, Mapping):
        return {k: map_tensors(v, fn) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(map_tensors(v, fn) for v in obj)
    return obj


def to_device(obj: Any, device: torch.device, channels_last: bool = False) -> Any:
    """Move a tensor, or tensors nested in lists/tuples/dicts, to ``device``.

    Copies are non-blocking (they overlap with compute when the source is in
    pinned memory). 4-d float tensors become channels_last when asked.
    """

    def move(t: torch.Tensor) -> torch.Tensor:
        if channels_last and t.ndim == 4 and t.is_floating_point():
            return t.to(device, non_blocking=True, memory_format=torch.channels_last)
        return t.to(device, non_blocking=True)

    return map_tensors(obj, move)


def channels_last_on(device: torch.device) -> bool:
    """Do the training loops store images and convolution weights channels_last on ``device``?

    On CUDA, convolutions in channels_last (N, H, W, C) use the tensor cores.
    On CPU, oneDNN's convolutions are faster in that layout too: on 2 cores a
    training step took 0.62x the time for chapter 6's small CNN at 16 px,
    0.80x for chapter 2's deep network and 0.94x for ResNet18 at 112 px
    (``benchmarks/memory_format.py``, results in benchmarks/RESULTS.md). The
    values are the same up to float32 rounding, though BatchNorm sums less
    accurately in this layout on CPU (relative error about 1e-5 instead of
    1e-7). Other devices (MPS) keep the default layout.
    """
    return device.type in ("cuda", "cpu")


def place(model: nn.Module, device: torch.device) -> bool:
    """Move ``model`` to ``device``, and to channels_last where :func:`channels_last_on`
    says so; returns whether the images must follow in that layout.

    The one placement rule of :func:`fit`, :func:`evaluate`, :func:`predict` and
    :func:`train_steps`: the model and its input images always share a memory format.
    """
    model.to(device)
    channels_last = channels_last_on(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    return channels_last


@contextmanager
def placed(model: nn.Module, device: torch.device) -> Iterator[bool]:
    """:func:`place` ``model`` for a block, then give it back as it was: the same
    device and memory format, its parameters and buffers the very tensors they were.

    :func:`evaluate` and :func:`predict` use it: evaluating a GPU model on the CPU (or a
    model in the default layout, which :func:`place` turns channels_last) must not
    move it or change its layout for good behind the caller's back. Yields whether the
    images must be channels_last. Nothing is copied back: the original tensors are
    kept and put back (their values cannot change in an evaluation without gradients).
    """
    kept = [
        (module, kind, name, tensor.data if kind == "_parameters" else tensor)
        for module in model.modules()
        for kind in ("_parameters", "_buffers")
        for name, tensor in getattr(module, kind).items()
        if tensor is not None
    ]
    try:
        yield place(model, device)
    finally:
        for module, kind, name, original in kept:
            current = getattr(module, kind)[name]
            if current is None or _same_tensor(current, original):
                continue
            if kind == "_parameters":
                current.data = original
            else:
                module._buffers[name] = original


def _same_tensor(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.device == b.device and a.data_ptr() == b.data_ptr() and a.stride() == b.stride()


def resolve_device(device: torch.device | str | None = None) -> torch.device:
    """The device a loop computes on: ``device`` when given, else this process's device
    (:func:`course.distributed.process_device`: its GPU under torchrun, else CUDA, then
    Apple's MPS, then the CPU).

    The one default of :func:`fit`, :func:`evaluate`, :func:`predict` and
    :func:`train_steps`: they never disagree on where a model computes.
    """
    return torch.device(device) if device is not None else process_device()


def _batch_size(target: Any) -> int:
    if isinstance(target, torch.Tensor):
        return target.shape[0]
    if isinstance(target, (list, tuple)):
        return len(target)
    raise TypeError(f"cannot tell the batch size of a target of type {type(target).__name__}")


def _correct(output: Any, target: Any) -> torch.Tensor | None:
    """Number of correct predictions (a 0-d tensor) for (N, C) logits and (N,) labels, else None."""
    if (
        isinstance(output, torch.Tensor)
        and isinstance(target, torch.Tensor)
        and output.ndim == 2
        and target.ndim == 1
        and not target.is_floating_point()
    ):
        return (output.argmax(dim=1) == target).sum()
    return None


#: What ``fit``, ``evaluate``, ``predict`` and ``train_steps`` accept as ``amp``.
Amp = bool | str | None
_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "off": torch.float32}


@dataclass(frozen=True)
class Precision:
    """The numerics of a loop on one device: the autocast dtype (float32: no autocast)
    and whether a gradient scaler guards float16's small range.

    Built by :func:`precision`, the one place that decides them; every loop of the
    package and the benchmarks take their autocast and their scaler from here.
    """

    device: torch.device
    dtype: torch.dtype

    @property
    def name(self) -> str:
        """``"fp16"``, ``"bf16"`` or ``"off"``, as ``$COURSE_AMP`` spells it."""
        return {v: k for k, v in _DTYPES.items()}[self.dtype]

    @property
    def scaled(self) -> bool:
        """float16 gradients underflow without loss scaling; bfloat16 has float32's range."""
        return self.dtype == torch.float16

    def autocast(self) -> AbstractContextManager:
        """The forward pass's context: autocast in :attr:`dtype`, or nothing for float32."""
        if self.dtype == torch.float32:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def scaler(self) -> torch.amp.GradScaler:
        """A new gradient scaler for a training run, enabled for float16 only (a disabled
        one passes ``step`` straight to the optimizer). On the CPU too, since torch 2.3."""
        return torch.amp.GradScaler(self.device.type, enabled=self.scaled)


def precision(device: torch.device | str, amp: Amp = None) -> Precision:
    """The :class:`Precision` of a loop on ``device`` given its ``amp`` argument.

    - ``"fp16"``: float16 autocast with a gradient scaler (a T4's numerics, also on a CPU);
    - ``"bf16"``: bfloat16 autocast, no scaler;
    - ``False`` (or ``"off"``): float32, no autocast;
    - ``True``: the device's mixed precision: bf16 on GPUs that compute it natively
      (compute capability >= 8.0: A100, L4, H100, RTX 30xx and later), fp16 on older
      cards such as Colab's and Kaggle's T4 (7.5), where bf16 would be emulated and
      slow (``torch.cuda.is_bf16_supported()`` counts emulation as support, so it is
      not the test to use); bf16 elsewhere (CPU autocast);
    - ``None``: ``$COURSE_AMP`` when set (:func:`course.config.amp_setting`), else the
      device's default: its mixed precision (above) on CUDA, float32 elsewhere, so
      that results on a CPU are exact.

    An explicit argument wins over ``$COURSE_AMP``, which replaces the default only.
    """
    device = torch.device(device)
    setting = amp_setting()  # read even when unused: a stale COURSE_AMP_DTYPE is reported
    if amp is None:
        amp = setting if setting is not None else device.type == "cuda"
    if amp is True:
        amp = "bf16"
        if device.type == "cuda" and torch.cuda.get_device_capability(device)[0] < 8:
            amp = "fp16"
    elif amp is False:
        amp = "off"
    if not isinstance(amp, str) or amp not in _DTYPES:
        raise ValueError(
            f"amp={amp!r}: use 'fp16', 'bf16', False (float32), True (the device's mixed "
            "precision) or None (the default, or $COURSE_AMP)"
        )
    return Precision(device, _DTYPES[amp])


def device_default_amp(device: torch.device | str) -> bool:
    """The ``amp`` argument that gives ``device``'s default precision whatever
    ``$COURSE_AMP`` says: mixed on CUDA, float32 elsewhere.

    For the models the course trains once and caches (``course.pretrained``): their
    cache file's name does not record a precision, so a model trained under
    ``COURSE_AMP=fp16`` would be served to float32 runs, and on a CPU, where float16 is
    emulated, that pretraining takes about 12 times as long (ResNet18, 2 cores).
    ``COURSE_AMP`` is then about the chapters' own training, which is what it tests.
    """
    return torch.device(device).type == "cuda"


def amp_dtype(device: torch.device | str) -> torch.dtype:
    """The autocast dtype of the default :func:`precision` on ``device`` (float32: none)."""
    return precision(device).dtype


# ---------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable,
    loss_fn: LossFn = nn.functional.cross_entropy,
    device: torch.device | str | None = None,
    amp: Amp = None,
    progress: bool = False,
) -> dict[str, float]:
    """Mean loss and accuracy of ``model`` over ``loader`` in eval mode.

    Returns ``{"loss": float, "accuracy": float}``; accuracy is NaN when the
    outputs are not class logits. ``device``: :func:`resolve_device`; ``amp``:
    :func:`precision`. The model is given back as it was: its train/eval mode,
    its device and its memory format (:func:`placed`).
    """
    device = resolve_device(device)
    numerics = precision(device, amp)
    total_loss, total_correct, total_seen, accuracy_known = 0.0, 0, 0, True
    with placed(model, device) as channels_last, eval_mode(model):
        for x, y in tqdm(loader, desc="eval", leave=False, disable=not progress):
            x, y = to_device(x, device, channels_last), to_device(y, device)
            with numerics.autocast():
                output = model(x)
                loss = loss_fn(output, y)
            n = _batch_size(y)
            total_loss += float(loss) * n
            total_seen += n
            correct = _correct(output, y)
            if correct is None:
                accuracy_known = False
            else:
                total_correct += int(correct)
    if total_seen == 0:
        raise ValueError("the loader is empty: nothing to evaluate")
    accuracy = total_correct / total_seen if accuracy_known else math.nan
    return {"loss": total_loss / total_seen, "accuracy": accuracy}


def _gather(parts: list) -> Any:
    """Concatenate per-batch tensors (on the CPU, float outputs in float32), or chain lists."""
    if all(isinstance(p, torch.Tensor) for p in parts):
        return torch.cat(parts)
    return [item for part in parts for item in part]


def _float32(t: torch.Tensor) -> torch.Tensor:
    return t.float() if t.is_floating_point() else t


@torch.no_grad()
def predict(
    model: nn.Module,
    loader: Iterable,
    device: torch.device | str | None = None,
    amp: Amp = None,
    postprocess: Callable[[Any], Any] | None = None,
) -> tuple[Any, Any]:
    """All outputs and targets of ``loader``, gathered on the CPU (floats in float32).

    Returns ``(outputs, targets)``: for a classifier, logits (N, C) and labels (N,),
    what a confusion matrix needs. ``postprocess`` maps each batch's raw output
    first, e.g. a detector's decoder, which turns heatmaps into one dict of boxes,
    scores and labels per image; per-image lists (detections, detection targets)
    are chained into one list, tensors concatenated. ``device`` and ``amp`` as in
    :func:`evaluate`; the model is given back as it was (mode, device, layout).
    """
    device = resolve_device(device)
    numerics = precision(device, amp)
    outputs, targets = [], []
    with placed(model, device) as channels_last, eval_mode(model):
        for x, y in loader:
            with numerics.autocast():
                out = model(to_device(x, device, channels_last))
            out = map_tensors(out, _float32)  # mixed-precision outputs back to float32
            if postprocess is not None:
                out = postprocess(out)
            outputs.append(map_tensors(out, torch.Tensor.cpu))
            targets.append(
                map_tensors(
                    torch.as_tensor(y) if isinstance(y, (int, float)) else y, torch.Tensor.cpu
                )
            )
    return _gather(outputs), _gather(targets)


# ---------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------


def fit(
    model: nn.Module,
    train_loader: Iterable,
    val_loader: Iterable | None = None,
    *,
    epochs: int,
    optimizer: torch.optim.Optimizer,
    scheduler: Any = None,
    loss_fn: LossFn = nn.functional.cross_entropy,
    device: torch.device | str | None = None,
    amp: Amp = None,
    grad_accum_steps: int = 1,
    checkpoint_path: str | os.PathLike | None = None,
    progress: bool = True,
    compile: bool = False,
    keep_best: str | None = None,
    augment: Callable[[Any, Any], tuple[Any, Any]] | None = None,
) -> History:
    """Train ``model`` for ``epochs`` epochs and return its :class:`History`.

    Args:
        model: maps a batch of inputs to outputs; ``loss_fn(outputs, targets)``
            must give a scalar mean loss.
        train_loader: yields ``(inputs, targets)``; tensors may be nested in
            lists, tuples or dicts.
        val_loader: evaluated after every epoch when given.
        optimizer: built over ``model``'s parameters.
        scheduler: stepped after every optimizer step taken (not every epoch, and
            not after a step the gradient scaler skipped: :class:`OptimizerSteps`).
        device: :func:`resolve_device` (this process's GPU, else CUDA, MPS or the CPU).
        amp: the precision, see :func:`precision`: ``"fp16"``, ``"bf16"``, ``False``
            (float32), ``True`` (the device's mixed precision) or ``None`` (default:
            ``$COURSE_AMP``, else mixed precision on CUDA and float32 elsewhere).
            Validation runs in the same precision.
        grad_accum_steps: micro-batches whose gradients are summed before one
            optimizer step. Each micro-batch loss is divided by the number of
            micro-batches in its group, so k micro-batches of n samples step
            like one batch of k*n samples (exactly, for a model without
            batch statistics). Under torchrun the gradients are averaged over
            the processes once per group, on its last micro-batch (``no_sync``
            on the others).
        checkpoint_path: written atomically after every epoch; when the file
            already exists, training resumes from it.
        progress: show tqdm bars.
        compile: ``torch.compile`` the model first. The first training step then
            includes the compilation; the epoch bar shows its duration
            (``first step``). It pays off on long runs on a GPU
            (``benchmarks/train_throughput.py`` measures when).
        keep_best: ``"val_loss"`` or ``"val_acc"``: at the end, ``model`` holds the
            weights of the epoch with the best validation value
            (:meth:`History.best_epoch`), not those of the last epoch: the model
            is *chosen* on the validation set, and the test set is left to measure
            it once. The best weights are kept on the CPU and in the checkpoint.
        augment: ``augment(inputs, targets) -> (inputs, targets)``, applied to every
            training batch on the device, after its transfer (not to validation):
            augmentation as batched tensor operations on the GPU, so that the
            loader only reads and stacks, and the speed does not depend on the
            number of CPU cores (:class:`course.data.augment.BatchAugmentation`,
            :class:`course.detection.BatchDetectionAugmentation`).

    ``History.data_seconds`` is the time spent waiting for the training loader:
    its share of ``History.seconds`` says whether the GPU starves for data;
    ``History.steps`` counts the optimizer steps taken (the progress bar shows them).
    With ``$COURSE_MAX_STEPS`` set (:func:`course.config.capped`), each epoch stops after
    that many batches: a rehearsal of the code paths, not a training run.

    Under ``torchrun`` (a process group initialised, :func:`is_distributed`), every
    process calls ``fit`` alike: the model is wrapped in DistributedDataParallel
    (gradients averaged over the processes during backward), the training loader
    is sharded (:func:`shard`, a new shuffle each epoch), the training metrics are
    averaged over all the samples of all the processes, validation runs on every
    process on the whole ``val_loader``, rank 0 alone writes the checkpoint (with
    every process's random state) and every process resumes from it. The device
    is then the process's GPU (``LOCAL_RANK``), or the CPU.
    """
    _validate_fit_arguments(epochs, grad_accum_steps, keep_best, val_loader)
    device = resolve_device(device)
    numerics = precision(device, amp)
    channels_last = place(model, device)
    scaler = numerics.scaler()
    progress = progress and is_main_process()

    history, start_epoch, best_state = History(), 0, None
    if checkpoint_path is not None and Path(checkpoint_path).exists():
        run = resume_run(
            checkpoint_path,
            model=model,
            optimizer=optimizer,
            scheduler=scheduler,
            scaler=scaler,
            map_location=device,
        )
        history, start_epoch = History.from_dict(run["history"]), run["epoch"]
        best_state = run["best_model"] if keep_best is not None else None
        restore_rng_state(own_rng_state(run["rng"]), train_loader)
        if progress:
            print(f"Resuming from {checkpoint_path} after epoch {start_epoch}/{epochs}.")

    net = model  # what trains: model itself, or wrapped in DDP and/or compiled
    no_sync: Callable[[], AbstractContextManager] = nullcontext
    if is_distributed():
        train_loader = shard(train_loader)
        ids = [device] if device.type == "cuda" else None
        net = nn.parallel.DistributedDataParallel(model, device_ids=ids)
        no_sync = net.no_sync  # gradients averaged on a group's last micro-batch only
    if compile:
        net = torch.compile(net)  # the checkpoint keeps saving `model`: the same keys

    steps = OptimizerSteps(optimizer, scaler, scheduler)
    epoch_bar = tqdm(range(start_epoch, epochs), desc="epochs", disable=not progress)
    compiling = math.nan  # the first step of this call: it includes the compilation
    try:
        for epoch in epoch_bar:
            start = time.perf_counter()
            if is_distributed():
                train_loader.sampler.set_epoch(epoch)  # the same new shuffle everywhere
            train = _train_one_epoch(
                net,
                train_loader,
                steps=steps,
                loss_fn=loss_fn,
                device=device,
                channels_last=channels_last,
                numerics=numerics,
                grad_accum_steps=grad_accum_steps,
                no_sync=no_sync,
                augment=augment,
                progress=progress,
                desc=f"epoch {epoch + 1}/{epochs}",
            )
            val = None
            if val_loader is not None:
                val = evaluate(model, val_loader, loss_fn, device=device, amp=numerics.name)
            lr = float(optimizer.param_groups[0]["lr"])
            history.record(train, val, lr, seconds=time.perf_counter() - start)
            if keep_best is not None and history.best_epoch(keep_best) == epoch + 1:
                best_state = {
                    k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()
                }
            compiling = train.first_step if epoch == start_epoch else compiling
            epoch_bar.set_postfix(
                _postfix(train, val, sum(history.steps), compiling if compile else None)
            )
            if checkpoint_path is not None:
                rng = all_rng_states(train_loader)  # every process takes part
                if is_main_process():
                    save_run(
                        checkpoint_path,
                        model=model,
                        optimizer=optimizer,
                        scheduler=scheduler,
                        scaler=scaler,
                        epoch=epoch + 1,
                        history=history.to_dict(),
                        rng=rng,
                        best_model=best_state,
                    )
                if is_distributed():
                    dist.barrier()  # no process goes on before the checkpoint is complete
    finally:
        steps.close()
    if keep_best is not None and best_state is not None:
        model.load_state_dict(best_state)
        if progress:
            print(
                f"Kept the weights of epoch {history.best_epoch(keep_best)}, the best {keep_best}."
            )
    return history


def _validate_fit_arguments(
    epochs: int, grad_accum_steps: int, keep_best: str | None, val_loader: Iterable | None
) -> None:
    if epochs < 0:
        raise ValueError(f"epochs must be >= 0, got {epochs}")
    if grad_accum_steps < 1:
        raise ValueError(f"grad_accum_steps must be >= 1, got {grad_accum_steps}")
    if keep_best is not None and (keep_best not in BEST_METRICS or val_loader is None):
        raise ValueError(f"keep_best must be one of {BEST_METRICS}, with a val_loader")


def _postfix(
    train: EpochResult, val: Mapping[str, float] | None, steps: int, first_step: float | None
) -> dict[str, str]:
    """The epoch bar's summary: loss, validation accuracy, the optimizer steps taken so
    far, and with ``torch.compile`` the duration of the call's first step, which
    includes the compilation."""
    postfix = {"loss": f"{train.loss:.3f}"}
    if val is not None:
        postfix["val_acc"] = f"{val['accuracy']:.3f}"
    postfix["steps"] = str(steps)
    if first_step is not None:
        postfix["first step (compiling)"] = f"{first_step:.1f} s"
    return postfix


class OptimizerSteps:
    """Steps an optimizer through its gradient scaler, then the scheduler, but only
    after a step the optimizer really took; :attr:`count` counts those steps.

    A float16 gradient scaler skips the optimizer's step when the gradients overflowed
    (and halves its scale): the weights stay as they were, and so must the learning
    rate, the schedule and the step count. (Hugging Face accelerate does the same;
    PyTorch warns only when the very first step is skipped, so silence proves nothing.)

    No wait for the GPU is added: ``scaler.step`` already reads on the host whether the
    gradients are finite (its one synchronisation) and calls ``optimizer.step()`` only
    if they are; an optimizer hook (``register_step_post_hook``) sees the call. A fused
    optimizer (``fused=True``) is called either way and skips on the device: for it the
    scale before and after ``scaler.update()`` is compared, one more synchronisation.

    Under torchrun every process skips alike: DDP averages the gradients over the
    processes before the scaler looks at them, so an overflow on one process is an
    overflow on all (an infinite or NaN term makes the average infinite or NaN).
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        scaler: torch.amp.GradScaler,
        scheduler: Any = None,
    ) -> None:
        self.optimizer, self.scaler, self.scheduler = optimizer, scaler, scheduler
        self.count = 0
        self._called = False
        self._skips_on_device = scaler.is_enabled() and getattr(
            optimizer, "_step_supports_amp_scaling", False
        )
        self._scale = scaler.get_scale() if self._skips_on_device else 0.0
        self._hook = optimizer.register_step_post_hook(self._on_step)

    def _on_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        self._called = True

    def step(self) -> bool:
        """One optimizer step on the gradients accumulated so far, which are then cleared;
        the scheduler steps only if the optimizer did. Returns whether it did."""
        self._called = False
        self.scaler.step(self.optimizer)
        self.scaler.update()
        stepped = self._called
        if self._skips_on_device:
            scale = self.scaler.get_scale()
            stepped, self._scale = scale >= self._scale, scale  # a skip lowers the scale
        self.optimizer.zero_grad(set_to_none=True)
        if stepped:
            self.count += 1
            if self.scheduler is not None:
                self.scheduler.step()
        return stepped

    def close(self) -> None:
        """Remove the hook from the optimizer."""
        self._hook.remove()


def _train_one_epoch(
    model: nn.Module,
    loader: Iterable,
    *,
    steps: OptimizerSteps,
    loss_fn: LossFn,
    device: torch.device,
    channels_last: bool,
    numerics: Precision,
    grad_accum_steps: int,
    no_sync: Callable[[], AbstractContextManager],
    augment: Callable[[Any, Any], tuple[Any, Any]] | None,
    progress: bool,
    desc: str,
) -> EpochResult:
    """One pass over ``loader`` (see :class:`EpochResult`).

    A diverged run is not stopped: its loss is recorded as NaN or Inf, which
    is itself a result (chapter 1 trains at learning rates that diverge).
    ``no_sync()`` wraps every micro-batch but the last of its group (DDP's: no
    averaging of gradients over the processes until the group is complete).
    """
    model.train()
    num_batches = capped(len(loader))  # type: ignore[arg-type]  # $COURSE_MAX_STEPS
    total_loss: Any = 0.0
    total_correct: Any = 0
    total_seen, accuracy_known = 0, True
    steps_before = steps.count
    steps.optimizer.zero_grad(set_to_none=True)
    bar = tqdm(loader, desc=desc, leave=False, disable=not progress)
    data_seconds, first_step = 0.0, math.nan
    batches = iter(bar)
    for i in range(num_batches):
        waiting = time.perf_counter()
        x, y = next(batches)
        data_seconds += time.perf_counter() - waiting
        x = to_device(x, device, channels_last=channels_last and augment is None)
        y = to_device(y, device)
        if augment is not None:
            x, y = augment(x, y)
            if channels_last and isinstance(x, torch.Tensor) and x.dim() == 4:
                x = x.contiguous(memory_format=torch.channels_last)
        group_start = (i // grad_accum_steps) * grad_accum_steps
        group_size = min(grad_accum_steps, num_batches - group_start)
        last_of_group = i - group_start + 1 == group_size
        with nullcontext() if last_of_group else no_sync():
            with numerics.autocast():
                output = model(x)
                loss = loss_fn(output, y)
            steps.scaler.scale(loss / group_size).backward()
        if last_of_group:
            steps.step()
        if i == 0:
            first_step = time.perf_counter() - waiting

        # Sums stay on the device: no GPU-to-CPU synchronisation per batch.
        n = _batch_size(y)
        total_loss = total_loss + loss.detach().float() * n
        total_seen += n
        correct = _correct(output, y)  # argmax carries no gradient
        if correct is None:
            accuracy_known = False
        else:
            total_correct = total_correct + correct
        if progress and i % 10 == 0:
            bar.set_postfix(loss=f"{float(loss.detach()):.3f}", steps=steps.count)
    if total_seen == 0:
        raise ValueError("the training loader is empty")
    total_loss, total_correct, total_seen = global_sums(total_loss, total_correct, total_seen)
    accuracy = total_correct / total_seen if accuracy_known else math.nan
    return EpochResult(
        total_loss / total_seen, accuracy, data_seconds, first_step, steps.count - steps_before
    )


def train_steps(
    model: nn.Module,
    loader: Iterable,
    optimizer: torch.optim.Optimizer,
    steps: int,
    scheduler: Any = None,
    loss_fn: LossFn = nn.functional.cross_entropy,
    device: torch.device | str | None = None,
    progress: bool = False,
    amp: Amp = False,
) -> list[float]:
    """``steps`` optimizer steps, cycling over ``loader``; returns the loss of every step.

    The short, step-level loop that learning-rate experiments need: a run
    that diverges stops early and its remaining losses are ``inf``, so curves
    of different runs keep the same length. ``device``: :func:`resolve_device`.

    Plain float32 unless asked (``amp``, as in :func:`precision`): the default is
    ``False``, not the device's, because these experiments compare curves and the
    step where a run diverges; ``$COURSE_AMP`` does not change it (a T4 runs it in
    float32 too). With ``amp="fp16"`` a step the scaler skips is still one of the
    ``steps`` (its loss is recorded) but the scheduler waits (:class:`OptimizerSteps`).
    With ``$COURSE_MAX_STEPS`` set (:func:`course.config.capped`) it takes at most that
    many steps, and returns that many losses.
    """
    steps = capped(steps)  # $COURSE_MAX_STEPS, a rehearsal: fewer steps
    device = resolve_device(device)
    numerics = precision(device, amp)
    channels_last = place(model, device)
    stepper = OptimizerSteps(optimizer, numerics.scaler(), scheduler)
    model.train()
    losses: list[float] = []
    batches = iter(loader)
    try:
        for _ in tqdm(range(steps), desc="steps", leave=False, disable=not progress):
            try:
                x, y = next(batches)
            except StopIteration:
                batches = iter(loader)
                x, y = next(batches)
            x = to_device(x, device, channels_last=channels_last)
            with numerics.autocast():
                loss = loss_fn(model(x), to_device(y, device))
            optimizer.zero_grad(set_to_none=True)
            stepper.scaler.scale(loss).backward()
            stepper.step()
            losses.append(float(loss.detach()))
            if not math.isfinite(losses[-1]):
                losses += [math.inf] * (steps - len(losses))
                break
    finally:
        stepper.close()
    return losses
