"""Data parallelism's plumbing: the process group, each process's device, sharded loaders.

``torchrun --nproc_per_node=N`` starts N copies of a program; each joins a process
group (:func:`join_process_group`) and trains on its own device, reading its share of
every global minibatch (:func:`shard`). :func:`course.train.fit` does all of this by
itself when it runs in such a process, so a torchrun program is an ordinary training
script (chapter 6's are in ``course.scaling.programs``).

One device rule for every process (:func:`process_device`): with the nccl backend the
GPU ``LOCAL_RANK``, with gloo the CPU, and outside torchrun
:func:`course.utils.get_device`. :func:`join_process_group` chooses the backend so that
the rule never asks for a GPU that is not there (:func:`choose_backend`).

Used in chapter 6.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, RandomSampler
from torch.utils.data.distributed import DistributedSampler

from course.runstate import capture_rng_state
from course.utils import get_device


def distributed() -> bool:
    """True in a process that ``torchrun`` started and that joined its process group."""
    return dist.is_available() and dist.is_initialized()


def is_main_process() -> bool:
    """Rank 0 under torchrun (the process that prints and writes files); True otherwise."""
    return not distributed() or dist.get_rank() == 0


def choose_backend(cuda_devices: int, local_processes: int) -> tuple[str, str | None]:
    """The process-group backend for ``local_processes`` processes on a machine with
    ``cuda_devices`` GPUs, and a warning when it is not the one asked for.

    One process per GPU with nccl; with fewer GPUs than processes (``torchrun
    --nproc_per_node=2`` on Colab's single GPU) every process would ask for a GPU
    that is not there, so all of them train on the CPU with gloo and the warning
    says which command uses the GPUs.
    """
    if cuda_devices >= local_processes:
        return "nccl", None
    if cuda_devices == 0:
        return "gloo", None
    return "gloo", (
        f"{local_processes} processes per machine but {cuda_devices} GPU(s): training on the "
        f"CPU with gloo. To train on the GPUs, start one process per GPU: torchrun "
        f"--standalone --nproc_per_node={cuda_devices} ..."
    )


def process_device() -> torch.device:
    """The device this process trains on.

    Under torchrun (a process group joined): the GPU ``LOCAL_RANK`` (made the current
    CUDA device) when the backend is nccl, the CPU otherwise (gloo). Outside torchrun:
    :func:`course.utils.get_device`. ``fit`` and the programs of chapter 6 both ask
    here, so they cannot disagree.
    """
    if not distributed():
        return get_device()
    if dist.get_backend() != "nccl":
        return torch.device("cpu")
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    torch.cuda.set_device(device)
    return device


def join_process_group() -> torch.device:
    """Join torchrun's process group and return this process's :func:`process_device`.

    nccl when there is one GPU per local process, else gloo on the CPU (with a
    warning that says what to type).
    """
    cuda_devices = torch.cuda.device_count() if torch.cuda.is_available() else 0
    backend, warning = choose_backend(cuda_devices, int(os.environ.get("LOCAL_WORLD_SIZE", 1)))
    if warning is not None and int(os.environ.get("LOCAL_RANK", 0)) == 0:
        print(f"warning: {warning}", flush=True)
    dist.init_process_group(backend=backend)
    return process_device()


def rank_zero_first(fn: Callable[[], Any]) -> Any:
    """``fn()`` on rank 0 first, then on the other ranks: what rank 0 downloads or
    generates into a cache, the others then read from it instead of racing to write it."""
    if dist.get_rank() == 0:
        result = fn()
    dist.barrier()
    if dist.get_rank() != 0:
        result = fn()
    return result


def shard(loader: DataLoader, seed: int = 0) -> DataLoader:
    """``loader`` reading only this process's share of the data (``DistributedSampler``).

    Each process gets every ``world_size``-th sample of one permutation common to all
    (shuffled when ``loader`` shuffles; a new permutation each epoch once
    ``set_epoch`` is called), so the processes' batches together make one batch of
    ``world_size`` x ``batch_size`` samples.
    """
    if not isinstance(loader, DataLoader):
        raise TypeError("under torchrun, fit needs a torch DataLoader to shard")
    sampler = DistributedSampler(
        loader.dataset,
        shuffle=isinstance(loader.sampler, RandomSampler),
        seed=seed,
        drop_last=loader.drop_last,
    )
    return DataLoader(
        loader.dataset,
        batch_size=loader.batch_size,
        sampler=sampler,
        num_workers=loader.num_workers,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory,
        drop_last=loader.drop_last,
        worker_init_fn=loader.worker_init_fn,
        persistent_workers=loader.persistent_workers,
    )


def global_sums(*values: Any) -> list[float]:
    """Sum each value over the processes (identity when not distributed)."""
    totals = torch.tensor([float(v) for v in values], dtype=torch.float64)
    if distributed():
        backend_device = "cuda" if dist.get_backend() == "nccl" else "cpu"
        totals = totals.to(backend_device)
        dist.all_reduce(totals)
    return totals.cpu().tolist()


def all_rng_states(loader: Iterable) -> dict[str, Any]:
    """The random state to checkpoint: this process's (``course.runstate``), or under
    torchrun every process's, ``{"per_process": [...]}`` (each has its own stream: its
    augmentations). Every process must call it."""
    state = capture_rng_state(loader)
    if not distributed():
        return state
    streams: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(streams, state)
    return {"per_process": streams}


def own_rng_state(state: dict[str, Any]) -> dict[str, Any]:
    """This process's part of a state written by :func:`all_rng_states`."""
    if "per_process" not in state:
        return state
    streams = state["per_process"]
    return streams[dist.get_rank() % len(streams) if distributed() else 0]


def loopback_available() -> bool:
    """Can processes on this machine talk over TCP on 127.0.0.1 (which gloo needs)?

    False in a sandbox without a network, where the loopback interface is down.
    """
    try:
        with socket.socket() as server:
            server.bind(("127.0.0.1", 0))
            server.listen(1)
            with socket.create_connection(server.getsockname(), timeout=2):
                return True
    except OSError:
        return False


def run_torchrun(
    nproc: int, program: Sequence[str], args: Sequence[str] = (), timeout: float = 600
) -> subprocess.CompletedProcess:
    """Launch ``torchrun --standalone --nproc_per_node=nproc PROGRAM ARGS`` on CPU.

    What a student types in a terminal, from Python (the notebook and the tests use
    it); ``program`` is ``("-m", "course.scaling")`` or a script's path. CUDA is
    hidden so that the processes use gloo on CPU; on a machine with N GPUs run
    torchrun yourself with ``--nproc_per_node=N``.
    """
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        *program,
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
