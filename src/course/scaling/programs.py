"""Chapter 6's two torchrun programs: ``python -m course.scaling shapes|hornets``.

::

    torchrun --standalone --nproc_per_node=2 -m course.scaling shapes --steps 100
    torchrun --standalone --nproc_per_node=2 -m course.scaling hornets --epochs 10
    TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 torchrun --nnodes=2 --nproc_per_node=1 \\
        --rdzv_backend=c10d --rdzv_endpoint=HOST:29400 \\
        --rdzv_id=job1 --max-restarts=1 -m course.scaling shapes --checkpoint run.pt

one process per GPU (nccl) or per CPU process (gloo), each on the device that
``course.distributed.process_device`` gives it. ``shapes`` writes the data-parallel
loop out step by step (DistributedSampler, DDP, the linearly scaled learning rate and
warmup), so that its first step can be compared exactly with one single-process step
on the global batch; ``hornets`` fine-tunes chapter 3's ResNet18 with
``course.train.fit``, which does the same by itself under torchrun.

Across machines (the third command, on every machine), ``shapes --checkpoint`` makes
a lost worker cost at most ``--checkpoint-every`` steps: with ``--max-restarts`` torchrun
restarts the group and the run resumes; without, the survivors stop with a message
that says so (tests/test_multinode.py kills a worker to check both).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler

from course.config import run_seed
from course.data.augment import BatchAugmentation
from course.data.hornets import hornet_recipe, load_hornet_data
from course.data.normalize import with_imagenet_normalization
from course.distributed import all_rng_states, join_process_group, own_rng_state, rank_zero_first
from course.models import resnet18
from course.runstate import atomic_write, load_state, restore_rng_state, save_state
from course.scaling.rule import (
    ddp_example_data,
    ddp_example_model,
    linear_scaled_lr,
    warmup_schedule,
)
from course.train import History, fit
from course.utils import seed_everything
from course.weights import imagenet_resnet18


def train_shapes_data_parallel(
    steps: int,
    batch_per_process: int,
    base_lr: float,
    base_batch_size: int,
    warmup_steps: int,
    out: Path | None,
    samples: int = 2048,
    checkpoint: Path | None = None,
    checkpoint_every: int = 10,
    timeout: float = 300.0,
    status_dir: Path | None = None,
    step_seconds: float = 0.0,
) -> None:
    """Body of ``python -m course.scaling shapes``, run by every process that torchrun starts.

    Each process: joins the process group (nccl on GPUs, gloo on CPU; every
    collective bounded by ``timeout`` seconds), builds the same model, wraps it in
    DistributedDataParallel, reads its shard of every global minibatch through a
    DistributedSampler (seeded with ``run_seed(0)``: ``COURSE_SEED`` moves the order),
    and trains with the linearly scaled lr and warmup. Rank 0 reports and saves the
    weights. SGD with momentum 0.9 and no weight decay: PyTorch's momentum buffer
    starts as the first gradient, so the first step is a plain SGD step and can be
    compared exactly with a single-process step.

    With ``checkpoint``, rank 0 writes the run's state every ``checkpoint_every``
    steps (atomically; the others wait at a barrier until it is complete), and a run
    that finds the file resumes from it at the same step of the same epoch: a group
    that torchrun restarts after a lost worker (``--max-restarts``) ends with the
    weights of an uninterrupted run, having redone at most ``checkpoint_every - 1``
    steps. With ``status_dir``, every process writes ``rank<R>.json`` after each step
    (its pid, rank, step, restart count and time): how a test or a user picks a
    worker to stop, and how a restart's cost is measured. ``step_seconds`` makes each
    step last at least that long, to watch or interrupt a run at a chosen step.
    """
    if checkpoint_every < 1:
        raise ValueError(f"--checkpoint-every must be >= 1, got {checkpoint_every}")
    device = join_process_group(timeout)
    rank, world = dist.get_rank(), dist.get_world_size()
    use_cuda = device.type == "cuda"
    local_rank = device.index or 0

    model = ddp_example_model().to(device)
    ddp = nn.parallel.DistributedDataParallel(model, device_ids=[local_rank] if use_cuda else None)
    data = ddp_example_data(samples)
    sampler = DistributedSampler(
        data, num_replicas=world, rank=rank, shuffle=True, seed=run_seed(0)
    )
    loader = DataLoader(data, batch_size=batch_per_process, sampler=sampler, drop_last=True)
    if len(loader) == 0:
        raise ValueError(
            f"{samples} samples cannot feed {world} processes with {batch_per_process} each: "
            "lower --batch-per-process or raise --samples"
        )

    global_batch = batch_per_process * world
    lr = linear_scaled_lr(base_lr, global_batch, base_batch_size)
    optimizer = torch.optim.SGD(ddp.parameters(), lr=lr, momentum=0.9)
    scheduler = warmup_schedule(
        optimizer, warmup_steps, steps, decay="cosine", start_factor=0.0 if warmup_steps else 1.0
    )
    restart = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", 0))
    step = 0
    if checkpoint is not None and checkpoint.exists():
        step = _resume_shapes(checkpoint, model, optimizer, scheduler, global_batch, loader)
    if rank == 0:
        print(
            f"{world} processes ({'nccl' if use_cuda else 'gloo'}), {batch_per_process} "
            f"samples each: global batch {global_batch}, peak lr {lr:g}",
            flush=True,
        )
        if step:
            print(f"resuming from {checkpoint} after step {step}", flush=True)
    status = _StatusFile(status_dir, rank, restart, resumed_from=step)
    status.write(step)
    try:
        _shapes_steps(
            ddp, loader, sampler, optimizer, scheduler, device, step, steps,
            checkpoint=checkpoint, checkpoint_every=checkpoint_every, global_batch=global_batch,
            status=status, step_seconds=step_seconds,
        )  # fmt: skip
    except RuntimeError as err:
        if not _partner_lost(err):
            raise
        resume = (
            f"Run the same command again: it resumes from {checkpoint}"
            if checkpoint
            else "Give --checkpoint to be able to resume"
        )
        print(
            f"rank {rank}: another process of this run is gone ({type(err).__name__}: "
            f"{str(err).splitlines()[0][:200]}). Stopping after step {status.step}. {resume}; "
            "torchrun --max-restarts=N restarts the group by itself.",
            file=sys.stderr,
            flush=True,
        )
        _wait_for_a_restart(timeout)
        raise SystemExit(1) from err
    if rank == 0:
        x, y = data.tensors
        with torch.no_grad():
            accuracy = (model(x.to(device)).argmax(1).cpu() == y).float().mean().item()
        print(f"accuracy on the {len(y)} training images: {accuracy:.3f}", flush=True)
    if rank == 0 and out is not None:
        save_state(
            out,
            {
                "model": model.state_dict(),
                "world_size": world,
                "batch_per_process": batch_per_process,
                "steps": steps,
            },
        )
    dist.barrier()
    dist.destroy_process_group()


#: What a collective's error says when the process at the other end is gone: gloo's
#: closed or reset connection, or any backend's timeout (``join_process_group``'s).
_LOST_PARTNER = ("Connection reset", "Connection closed", "Broken pipe", "Timed out", "timed out")


def _partner_lost(err: RuntimeError) -> bool:
    """Did a collective fail because another process of the group stopped answering?"""
    return isinstance(err, dist.DistError) or any(s in str(err) for s in _LOST_PARTNER)


def _wait_for_a_restart(seconds: float) -> None:
    """When torchrun has a restart left (``--max-restarts``), wait at most ``seconds`` for
    it to stop this process and restart the group: a survivor that failed too would
    count as a second failure, on another machine, at the same moment, and the two
    agents could spend their restarts restarting each other. The agent of the lost
    worker asks for a new rendezvous, and this one's agent answers by restarting its
    healthy workers without counting a failure."""
    left = int(os.environ.get("TORCHELASTIC_MAX_RESTARTS", 0)) - int(
        os.environ.get("TORCHELASTIC_RESTART_COUNT", 0)
    )
    if left > 0:
        print(f"waiting up to {seconds:g} s for torchrun to restart the group", file=sys.stderr)
        time.sleep(seconds)


def wait_for_step(status_dir: Path, rank: int, step: int, timeout: float) -> dict:
    """The status record of process ``rank`` (``--status-dir``) once it has finished
    ``step`` steps: its pid, rank, restart count, step and time. Raises TimeoutError
    after ``timeout`` seconds."""
    path, deadline = Path(status_dir) / f"rank{rank}.json", time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            record = json.loads(path.read_text())
            if record["step"] >= step:
                return record
        time.sleep(0.01)
    raise TimeoutError(f"process {rank} did not reach step {step} in {timeout:g} s ({path})")


def _shapes_steps(
    ddp: nn.Module,
    loader: DataLoader,
    sampler: DistributedSampler,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    device: torch.device,
    step: int,
    steps: int,
    *,
    checkpoint: Path | None,
    checkpoint_every: int,
    global_batch: int,
    status: _StatusFile,
    step_seconds: float,
) -> None:
    """The steps ``step + 1 .. steps`` of the shapes run: epoch ``step // len(loader)``
    resumes at its batch ``step % len(loader)``, as the uninterrupted run reads it."""
    rank = dist.get_rank()
    epoch, skip = divmod(step, len(loader))
    loss_sum, since = 0.0, 0
    while step < steps:
        sampler.set_epoch(epoch)  # a different shuffle every epoch, the same on all processes
        for x, y in itertools.islice(loader, skip, None):
            started = time.perf_counter()
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            loss = nn.functional.cross_entropy(ddp(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # DDP all-reduces (averages) the gradients here
            optimizer.step()
            scheduler.step()
            step += 1
            if rank == 0:
                loss_sum, since = loss_sum + loss.item(), since + 1
                if step % 20 == 0 or step == steps:
                    print(
                        f"step {step:4d}  mean loss of rank 0 over the last {since} steps "
                        f"{loss_sum / since:.4f}",
                        flush=True,
                    )
                    loss_sum, since = 0.0, 0
            if checkpoint is not None and (step % checkpoint_every == 0 or step == steps):
                _save_shapes(
                    checkpoint, ddp.module, optimizer, scheduler, step, global_batch, loader
                )
            time.sleep(max(0.0, step_seconds - (time.perf_counter() - started)))
            status.write(step)
            if step == steps:
                break
        skip, epoch = 0, epoch + 1


def _save_shapes(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    step: int,
    global_batch: int,
    loader: DataLoader,
) -> None:
    """Rank 0 writes the run's state after ``step`` steps, atomically; every process takes
    part (its random state is gathered) and waits until the file is complete."""
    rng = all_rng_states(loader)
    if dist.get_rank() == 0:
        state = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "step": step,
            "global_batch": global_batch,
            "rng": rng,
        }
        save_state(path, state)
    dist.barrier()


def _resume_shapes(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    global_batch: int,
    loader: DataLoader,
) -> int:
    """Restore a state of :func:`_save_shapes` on this process; returns its step."""
    state = load_state(path, model, optimizer, scheduler)
    if state["global_batch"] != global_batch:
        raise ValueError(
            f"{path} was written by a run with a global batch of {state['global_batch']}, "
            f"not {global_batch}: use the same processes and --batch-per-process, or another "
            "--checkpoint"
        )
    restore_rng_state(own_rng_state(state["rng"]), loader)
    return int(state["step"])


class _StatusFile:
    """``DIR/rank<R>.json``: this process's pid, rank, restart count, the step it has
    finished and when (``time.time()``), and the step it resumed from; rewritten
    atomically after every step. Nothing when ``folder`` is None."""

    def __init__(self, folder: Path | None, rank: int, restart: int, resumed_from: int) -> None:
        self.path = None if folder is None else Path(folder) / f"rank{rank}.json"
        self.fields = {
            "pid": os.getpid(),
            "rank": rank,
            "restart": restart,
            "resumed_from": resumed_from,
        }
        self.step = resumed_from

    def write(self, step: int) -> None:
        self.step = step
        if self.path is None:
            return
        record = {**self.fields, "step": step, "time": time.time()}
        with atomic_write(self.path, durable=False) as f:
            f.write(json.dumps(record).encode())


def train_hornets_data_parallel(
    epochs: int,
    batch_per_process: int,
    base_lr: float,
    base_batch_size: int,
    warmup_epochs: int,
    image_size: int,
    max_images: int | None,
    imagenet: bool,
    checkpoint: Path | None,
    timeout: float | None = None,
) -> History:
    """Chapter 3's fine-tuning, data-parallel: ``python -m course.scaling hornets``.

    Every process loads the hornet data (rank 0 first: it generates the
    synthetic set or reads the photos into the cache), builds ResNet18 (with
    the ImageNet weights when ``imagenet``, downloaded by rank 0 first) with a
    new 2-class head, and calls ``course.train.fit``, which under torchrun
    wraps the model in DistributedDataParallel, shards the minibatches, averages
    the metrics, checkpoints from rank 0 and resumes on every rank. The
    learning rate follows the linear scaling rule for the global minibatch
    ``batch_per_process x processes``, with ``warmup_epochs`` of linear warmup,
    then a cosine. BatchNorm normalises over each process's own minibatch, as in
    Goyal et al. (32 images per GPU); ``nn.SyncBatchNorm`` would pool the
    statistics of all GPUs (CUDA only). ``timeout`` bounds every collective (torch's
    default when None: 30 min with gloo, 10 with nccl; rank 0's first download happens
    while the others wait at a barrier).
    """
    device = join_process_group(timeout)
    rank, world = dist.get_rank(), dist.get_world_size()
    # Each process its own random stream (augmentations); DDP copies rank 0's initial weights.
    seed_everything(rank)
    scale = hornet_recipe().synthetic_scale  # chapter 3's synthetic set, when no photos
    data = rank_zero_first(
        lambda: load_hornet_data(image_size, scale, max_images=max_images, progress=rank == 0)
    )
    net = rank_zero_first(lambda: imagenet_resnet18(2) if imagenet else resnet18(2))
    model = with_imagenet_normalization(net)
    train = data.loader("train", batch_per_process, shuffle=True, drop_last=True)
    steps_per_epoch = len(train) // world  # fit shards the minibatches over the processes
    if steps_per_epoch == 0:
        raise ValueError(
            f"{len(data.train)} training images cannot feed {world} processes with "
            f"{batch_per_process} images each: lower --batch-per-process"
        )
    global_batch = batch_per_process * world
    lr = linear_scaled_lr(base_lr, global_batch, base_batch_size)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4)
    scheduler = warmup_schedule(
        optimizer, warmup_epochs * steps_per_epoch, epochs * steps_per_epoch, decay="cosine"
    )
    if rank == 0:
        print(
            f"{world} processes ({'nccl' if device.type == 'cuda' else 'gloo'}), "
            f"{batch_per_process} images each: global batch {global_batch}, peak lr {lr:g} "
            f"({base_lr:g} per {base_batch_size}), {warmup_epochs} warmup epochs; "
            f"{data.origin}",
            flush=True,
        )
    history = fit(
        model,
        train,
        data.loader("val", 256),
        epochs=epochs,
        optimizer=optimizer,
        scheduler=scheduler,
        loss_fn=data.weighted_loss(device),
        device=device,
        checkpoint_path=checkpoint,
        progress=False,
        augment=BatchAugmentation(),  # on each process's device, its own draws
    )
    if rank == 0:
        for epoch in range(history.epochs):
            print(
                f"epoch {epoch + 1}: train loss {history.train_loss[epoch]:.3f}  "
                f"val accuracy {history.val_acc[epoch]:.3f}  lr {history.lr[epoch]:.3g}",
                flush=True,
            )
    dist.barrier()
    dist.destroy_process_group()
    return history


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="torchrun --standalone --nproc_per_node=N -m course.scaling",
        description="Data-parallel training with the linear scaling rule and warmup.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    small = commands.add_parser("shapes", help="a small CNN, step by step (the DDP exactness demo)")
    small.add_argument("--steps", type=int, default=100)
    small.add_argument("--batch-per-process", type=int, default=32)
    small.add_argument("--base-lr", type=float, default=0.4, help="lr for --base-batch-size")
    small.add_argument("--base-batch-size", type=int, default=256)
    small.add_argument("--warmup-steps", type=int, default=10)
    small.add_argument("--samples", type=int, default=2048)
    small.add_argument("--out", type=Path, default=None, help="save the final weights here")
    small.add_argument(
        "--checkpoint", type=Path, default=None, help="the run's state; resumed when present"
    )
    small.add_argument(
        "--checkpoint-every", type=int, default=10, help="steps between two checkpoints"
    )
    small.add_argument(
        "--timeout", type=float, default=300.0, help="seconds any collective may wait"
    )
    small.add_argument(
        "--status-dir", type=Path, default=None, help="each process writes rank<R>.json here"
    )
    small.add_argument(
        "--step-seconds", type=float, default=0.0, help="make every step last at least this long"
    )
    real = commands.add_parser("hornets", help="ResNet18 on chapter 3's data, with fit")
    real.add_argument("--epochs", type=int, default=10)
    real.add_argument("--batch-per-process", type=int, default=32)
    real.add_argument("--base-lr", type=float, default=0.1, help="lr for --base-batch-size")
    real.add_argument("--base-batch-size", type=int, default=256)
    real.add_argument("--warmup-epochs", type=int, default=1)
    real.add_argument("--image-size", type=int, default=224)
    real.add_argument("--max-images", type=int, default=None, help="a stratified subset")
    real.add_argument("--imagenet", action="store_true", help="start from the ImageNet weights")
    real.add_argument(
        "--checkpoint", type=Path, default=None, help="written every epoch; resumed when present"
    )
    real.add_argument("--timeout", type=float, default=None, help="seconds any collective may wait")
    args = parser.parse_args(argv)
    if "RANK" not in os.environ:
        parser.error(
            "run me with torchrun, e.g. "
            "torchrun --standalone --nproc_per_node=2 -m course.scaling hornets"
        )
    if args.command == "shapes":
        train_shapes_data_parallel(
            args.steps,
            args.batch_per_process,
            args.base_lr,
            args.base_batch_size,
            args.warmup_steps,
            args.out,
            args.samples,
            checkpoint=args.checkpoint,
            checkpoint_every=args.checkpoint_every,
            timeout=args.timeout,
            status_dir=args.status_dir,
            step_seconds=args.step_seconds,
        )
    else:
        train_hornets_data_parallel(
            args.epochs,
            args.batch_per_process,
            args.base_lr,
            args.base_batch_size,
            args.warmup_epochs,
            args.image_size,
            args.max_images,
            args.imagenet,
            args.checkpoint,
            args.timeout,
        )
