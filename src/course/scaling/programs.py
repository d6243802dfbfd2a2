"""Chapter 6's two torchrun programs: ``python -m course.scaling shapes|hornets``.

::

    torchrun --standalone --nproc_per_node=2 -m course.scaling shapes --steps 100
    torchrun --standalone --nproc_per_node=2 -m course.scaling hornets --epochs 10

one process per GPU (nccl) or per CPU process (gloo), each on the device that
``course.distributed.process_device`` gives it. ``shapes`` writes the data-parallel
loop out step by step (DistributedSampler, DDP, the linearly scaled learning rate and
warmup), so that its first step can be compared exactly with one single-process step
on the global batch; ``hornets`` fine-tunes chapter 3's ResNet18 with
``course.train.fit``, which does the same by itself under torchrun.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler

from course.data.augment import BatchAugmentation
from course.data.hornets import hornet_recipe, load_hornet_data
from course.data.normalize import with_imagenet_normalization
from course.distributed import join_process_group, rank_zero_first
from course.models import resnet18
from course.runstate import save_state
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
) -> None:
    """Body of ``python -m course.scaling shapes``, run by every process that torchrun starts.

    Each process: joins the process group (nccl on GPUs, gloo on CPU), builds
    the same model, wraps it in DistributedDataParallel, reads its shard of
    every global minibatch through a DistributedSampler, and trains with the
    linearly scaled lr and warmup. Rank 0 reports and saves the weights.
    SGD with momentum 0.9 and no weight decay: PyTorch's momentum buffer
    starts as the first gradient, so the first step is a plain SGD step and
    can be compared exactly with a single-process step.
    """
    device = join_process_group()
    rank, world = dist.get_rank(), dist.get_world_size()
    use_cuda = device.type == "cuda"
    local_rank = device.index or 0

    model = ddp_example_model().to(device)
    ddp = nn.parallel.DistributedDataParallel(model, device_ids=[local_rank] if use_cuda else None)
    data = ddp_example_data(samples)
    sampler = DistributedSampler(data, num_replicas=world, rank=rank, shuffle=True, seed=0)
    loader = DataLoader(data, batch_size=batch_per_process, sampler=sampler, drop_last=True)

    global_batch = batch_per_process * world
    lr = linear_scaled_lr(base_lr, global_batch, base_batch_size)
    optimizer = torch.optim.SGD(ddp.parameters(), lr=lr, momentum=0.9)
    scheduler = warmup_schedule(
        optimizer, warmup_steps, steps, decay="cosine", start_factor=0.0 if warmup_steps else 1.0
    )
    if rank == 0:
        print(
            f"{world} processes ({'nccl' if use_cuda else 'gloo'}), {batch_per_process} "
            f"samples each: global batch {global_batch}, peak lr {lr:g}",
            flush=True,
        )
    step, epoch, loss_sum, since = 0, 0, 0.0, 0
    while step < steps:
        sampler.set_epoch(epoch)  # a different shuffle every epoch, the same on all processes
        for x, y in loader:
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
            if step == steps:
                break
        epoch += 1
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
    statistics of all GPUs (CUDA only).
    """
    device = join_process_group()
    rank, world = dist.get_rank(), dist.get_world_size()
    # Each process its own random stream (augmentations); DDP copies rank 0's initial weights.
    seed_everything(rank)
    scale = hornet_recipe().synthetic_scale  # chapter 3's synthetic set, when no photos
    data = rank_zero_first(
        lambda: load_hornet_data(image_size, scale, max_images=max_images, progress=rank == 0)
    )
    net = rank_zero_first(lambda: imagenet_resnet18(2) if imagenet else resnet18(2))
    model = with_imagenet_normalization(net)
    train = data.loader("train", batch_per_process, shuffle=True)
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
        )
