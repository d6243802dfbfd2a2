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

Across machines: every machine runs one torchrun *agent* (``--nnodes=M``), and the agents
meet at a *rendezvous* (``--rdzv-backend=c10d --rdzv-endpoint=HOST:PORT``) that numbers
the processes of all of them. :func:`launch_local_nodes` starts M agents on this machine
(127.0.0.1 as the rendezvous host), which is how the tests and chapter 6 rehearse a
multi-machine run, a lost worker and ``--max-restarts`` on one CPU.

Every wait is bounded: the process group's collectives by :func:`join_process_group`'s
``timeout``, the rendezvous by ``join_timeout``, the agents by the caller's ``timeout``.

Used in chapter 6.
"""

from __future__ import annotations

import datetime
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, RandomSampler
from torch.utils.data.distributed import DistributedSampler

from course.config import run_seed
from course.runstate import capture_rng_state
from course.utils import get_device


def is_distributed() -> bool:
    """True in a process that ``torchrun`` started and that joined its process group."""
    return dist.is_available() and dist.is_initialized()


def is_main_process() -> bool:
    """Rank 0 under torchrun (the process that prints and writes files); True otherwise."""
    return not is_distributed() or dist.get_rank() == 0


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
    if not is_distributed():
        return get_device()
    if dist.get_backend() != "nccl":
        return torch.device("cpu")
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    torch.cuda.set_device(device)
    return device


def join_process_group(timeout: float | None = None) -> torch.device:
    """Join torchrun's process group and return this process's :func:`process_device`.

    nccl when there is one GPU per local process, else gloo on the CPU (with a
    warning that says what to type). ``timeout`` (seconds) bounds every collective
    operation (all-reduce, barrier): a process whose partner is gone raises an error
    after at most that long instead of waiting for torch's default (10 min with nccl,
    30 min with gloo). With gloo, a partner that dies closes its connections and the
    error comes at once.
    """
    cuda_devices = torch.cuda.device_count() if torch.cuda.is_available() else 0
    backend, warning = choose_backend(cuda_devices, int(os.environ.get("LOCAL_WORLD_SIZE", 1)))
    if warning is not None and int(os.environ.get("LOCAL_RANK", 0)) == 0:
        print(f"warning: {warning}", flush=True)
    if timeout is None:
        dist.init_process_group(backend=backend)
    else:
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout))
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


def shard(loader: DataLoader, seed: int | None = None) -> DataLoader:
    """``loader`` reading only this process's share of the data (``DistributedSampler``).

    Each process gets every ``world_size``-th sample of one permutation common to all
    (shuffled when ``loader`` shuffles; a new permutation each epoch once
    ``set_epoch`` is called), so the processes' batches together make one batch of
    ``world_size`` x ``batch_size`` samples. The permutation's seed is
    ``run_seed(0)`` unless ``seed`` is given: ``COURSE_SEED`` moves the training order
    under torchrun as it does in one process (:func:`course.config.run_seed`); every
    process reads the same environment, so they agree on it.
    """
    seed = run_seed(0) if seed is None else seed
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
    if is_distributed():
        backend_device = "cuda" if dist.get_backend() == "nccl" else "cpu"
        totals = totals.to(backend_device)
        dist.all_reduce(totals)
    return totals.cpu().tolist()


def all_rng_states(loader: Iterable) -> dict[str, Any]:
    """The random state to checkpoint: this process's (``course.runstate``), or under
    torchrun every process's, ``{"per_process": [...]}`` (each has its own stream: its
    augmentations). Every process must call it."""
    state = capture_rng_state(loader)
    if not is_distributed():
        return state
    streams: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(streams, state)
    return {"per_process": streams}


def own_rng_state(state: dict[str, Any]) -> dict[str, Any]:
    """This process's part of a state written by :func:`all_rng_states`."""
    if "per_process" not in state:
        return state
    streams = state["per_process"]
    return streams[dist.get_rank() % len(streams) if is_distributed() else 0]


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


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now: a rendezvous endpoint's."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def cpu_environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment with CUDA hidden and one thread per process (gloo
    on the CPU, as the tests and chapter 6 run torchrun), plus ``extra``."""
    return {
        **os.environ,
        "CUDA_VISIBLE_DEVICES": "",
        "OMP_NUM_THREADS": "1",
        **(extra or {}),
    }


def torchrun_command(
    nproc: int,
    program: Sequence[str],
    args: Sequence[str] = (),
    *,
    nnodes: int = 1,
    endpoint: str | None = None,
    run_id: str = "course",
    max_restarts: int = 0,
    hosts_rendezvous: bool | None = None,
    join_timeout: float = 600,
) -> list[str]:
    """The torchrun command line (as ``python -m torch.distributed.run``).

    One machine (``nnodes=1``, no ``endpoint``): ``--standalone``. Several:
    ``--nnodes --rdzv-backend=c10d --rdzv-endpoint=endpoint --rdzv-id=run_id``, the
    same on every machine; ``join_timeout`` bounds the wait for the other agents (a
    machine that never comes makes the rendezvous fail after that many seconds, not
    hang), and ``hosts_rendezvous`` says which agent serves it (True on the machine
    named by ``endpoint``; None lets torch guess from the host name).
    ``max_restarts``: how many times the agents restart the whole group of workers
    after one of them fails (torch's default is 0: a lost worker ends the run).
    """
    if nnodes == 1 and endpoint is None:
        launch = ["--standalone"]
    else:
        if endpoint is None:
            raise ValueError(f"{nnodes} machines need a rendezvous endpoint HOST:PORT")
        conf = f"join_timeout={join_timeout:g}"
        if hosts_rendezvous is not None:
            conf += f",is_host={int(hosts_rendezvous)}"
        host = endpoint.rsplit(":", 1)[0]
        launch = [
            f"--nnodes={nnodes}",
            "--rdzv-backend=c10d",
            f"--rdzv-endpoint={endpoint}",
            f"--rdzv-id={run_id}",
            f"--rdzv-conf={conf}",
            *(["--local-addr=127.0.0.1"] if host in ("127.0.0.1", "localhost") else []),
        ]
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        *launch,
        f"--nproc-per-node={nproc}",
        f"--max-restarts={max_restarts}",
        "--monitor-interval=0.5",
        *program,
        *args,
    ]


def run_torchrun(
    nproc: int, program: Sequence[str], args: Sequence[str] = (), timeout: float = 600
) -> subprocess.CompletedProcess:
    """Launch ``torchrun --standalone --nproc_per_node=nproc PROGRAM ARGS`` on CPU.

    What a student types in a terminal, from Python (the notebook and the tests use
    it); ``program`` is ``("-m", "course.scaling")`` or a script's path. CUDA is
    hidden so that the processes use gloo on CPU; on a machine with N GPUs run
    torchrun yourself with ``--nproc_per_node=N``.
    """
    cmd = torchrun_command(nproc, program, args)
    return subprocess.run(
        cmd, capture_output=True, text=True, env=cpu_environment(), timeout=timeout
    )


#: For the agents of a run that may restart: each rendezvous round gets a new store,
#: served by its rank 0 on a new port. By default the agents share their rendezvous
#: store with the workers, and it keeps the keys of the group before the restart: a new
#: worker can read the address of a worker that is gone, fail to connect and spend the
#: last restart (seen here: "Gloo connectFullMesh failed ... Connection refused").
FRESH_STORE_EACH_ROUND = {"TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}


@dataclass
class LocalAgent:
    """One torchrun agent started by :func:`launch_local_nodes`, and the files its
    output goes to."""

    process: subprocess.Popen
    stdout: IO[bytes]
    stderr: IO[bytes]


def launch_local_nodes(
    nnodes: int,
    program: Sequence[str],
    args: Sequence[str] = (),
    *,
    nproc_per_node: int = 1,
    max_restarts: int = 0,
    join_timeout: float = 60,
    env: Mapping[str, str] | None = None,
) -> list[LocalAgent]:
    """Start ``nnodes`` torchrun agents on this machine, as ``nnodes`` machines would run.

    Each agent runs ``nproc_per_node`` worker processes on the CPU (gloo); the agents
    meet at a c10d rendezvous on 127.0.0.1 (a free port; the first agent serves it)
    and number their workers 0 .. nnodes x nproc_per_node - 1 in the order they join.
    Output goes to temporary files that :func:`wait_local_nodes` reads back. ``env``
    is added to the agents' and workers' environment, after
    :data:`FRESH_STORE_EACH_ROUND`.
    """
    endpoint = f"127.0.0.1:{free_port()}"
    run_id = f"course-{os.getpid()}-{time.monotonic_ns()}"
    agents = []
    for node in range(nnodes):
        stdout, stderr = tempfile.TemporaryFile(), tempfile.TemporaryFile()
        cmd = torchrun_command(
            nproc_per_node,
            program,
            args,
            nnodes=nnodes,
            endpoint=endpoint,
            run_id=run_id,
            max_restarts=max_restarts,
            hosts_rendezvous=node == 0,
            join_timeout=join_timeout,
        )
        process = subprocess.Popen(
            cmd,
            stdout=stdout,
            stderr=stderr,
            env=cpu_environment({**FRESH_STORE_EACH_ROUND, **(env or {})}),
        )
        agents.append(LocalAgent(process, stdout, stderr))
        if node == 0:
            time.sleep(0.5)  # let the host agent open the rendezvous store first
    return agents


def wait_local_nodes(
    agents: Sequence[LocalAgent], timeout: float
) -> list[subprocess.CompletedProcess]:
    """Wait at most ``timeout`` seconds for the agents of :func:`launch_local_nodes`;
    return each one's exit status and output.

    Past the deadline, every agent still running is stopped (SIGTERM, which it passes on
    to its workers; SIGKILL after a grace period) and a ``subprocess.TimeoutExpired``
    carries what they printed.
    """
    deadline = time.monotonic() + timeout
    late = False
    for agent in agents:
        try:
            agent.process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            late = True
            break
    if late:
        _stop(agents)
    results = [
        subprocess.CompletedProcess(
            agent.process.args,
            agent.process.returncode,
            _read(agent.stdout),
            _read(agent.stderr),
        )
        for agent in agents
    ]
    if late:
        output = "\n".join(f"--- agent {i}:\n{r.stdout}{r.stderr}" for i, r in enumerate(results))
        raise subprocess.TimeoutExpired(agents[0].process.args, timeout, output=output[-6000:])
    return results


def _stop(agents: Sequence[LocalAgent], grace: float = 15) -> None:
    """SIGTERM to the agents still running (torchrun then stops its workers, which run in
    sessions of their own), SIGKILL to those still there after ``grace`` seconds."""
    running = [a.process for a in agents if a.process.poll() is None]
    for process in running:
        process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for process in running:
        try:
            process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _read(stream: Any) -> str:
    stream.seek(0)
    text = stream.read().decode(errors="replace")
    stream.close()
    return text


def run_local_nodes(
    nnodes: int, program: Sequence[str], args: Sequence[str] = (), *, timeout: float, **options: Any
) -> list[subprocess.CompletedProcess]:
    """:func:`launch_local_nodes` then :func:`wait_local_nodes`: a run of ``nnodes``
    rehearsed machines, bounded by ``timeout`` seconds."""
    return wait_local_nodes(launch_local_nodes(nnodes, program, args, **options), timeout)
