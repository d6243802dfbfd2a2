"""course.distributed: one device rule for every process, the backend that keeps it
honest, and the random states a torchrun checkpoint holds. (Real two-process runs:
tests/test_train.py and tests/test_scaling.py, under torchrun.)"""

import tempfile

import pytest
import torch
import torch.distributed as dist

import course.distributed as distributed
from course.utils import get_device


@pytest.fixture
def cuda_cards(monkeypatch):
    """Pretend the machine has ``n`` CUDA cards (``cuda_cards(n)``); set_device does nothing."""

    def have(n: int) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: n > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: n)
        monkeypatch.setattr(torch.cuda, "set_device", lambda device: None)

    return have


@pytest.fixture
def group(monkeypatch):
    """A stand-in for torchrun's process group: records the backend it is joined with."""
    joined = {}
    monkeypatch.setattr(dist, "init_process_group", lambda backend: joined.update(b=backend))
    monkeypatch.setattr(dist, "is_initialized", lambda: "b" in joined)
    monkeypatch.setattr(dist, "get_backend", lambda: joined["b"])
    return joined


def test_outside_torchrun_the_device_is_get_devices():
    assert not distributed.is_distributed()
    assert distributed.process_device() == get_device()


def test_gloo_means_the_cpu_even_on_a_machine_with_a_gpu(cuda_cards, group, monkeypatch):
    """Two processes, one GPU (Colab): both train on the CPU with gloo. A rule that gave
    rank 0 the GPU would mix devices in one DDP group."""
    cuda_cards(1)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    for rank in ("0", "1"):
        group.clear()
        monkeypatch.setenv("LOCAL_RANK", rank)
        assert distributed.join_process_group() == torch.device("cpu")
        assert group["b"] == "gloo"
        assert distributed.process_device() == torch.device("cpu")  # what fit asks


def test_nccl_gives_each_process_its_gpu(cuda_cards, group, monkeypatch):
    cuda_cards(2)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert distributed.join_process_group() == torch.device("cuda", 1)
    assert group["b"] == "nccl"
    assert distributed.process_device() == torch.device("cuda", 1)


def test_a_resumed_process_takes_its_own_random_stream(monkeypatch):
    streams = {"per_process": [{"torch": 0}, {"torch": 1}, {"torch": 2}]}
    assert distributed.own_rng_state({"torch": 5}) == {"torch": 5}  # a one-process run
    assert distributed.own_rng_state(streams) == {"torch": 0}  # read by a single process
    monkeypatch.setattr(distributed, "is_distributed", lambda: True)
    monkeypatch.setattr(dist, "get_rank", lambda: 4)  # more processes than were saved
    assert distributed.own_rng_state(streams) == {"torch": 1}


def test_global_sums_without_a_group_are_the_values():
    assert distributed.global_sums(1.5, torch.tensor(2), 3) == [1.5, 2.0, 3.0]


@pytest.mark.skipif(not distributed.loopback_available(), reason="gloo needs 127.0.0.1")
def test_a_real_one_process_gloo_group_trains_on_the_cpu(cuda_cards):
    cuda_cards(1)
    store = tempfile.NamedTemporaryFile(delete=False).name
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=0, world_size=1)
    try:
        assert distributed.process_device() == torch.device("cpu")
        assert distributed.global_sums(2.0, 3) == [2.0, 3.0]
    finally:
        dist.destroy_process_group()


def test_shard_seeds_the_order_with_run_seed(monkeypatch):
    """COURSE_SEED moves the training order under torchrun, as in one process."""
    from torch.utils.data import DataLoader

    monkeypatch.setattr(distributed, "is_distributed", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda group=None: 2)
    monkeypatch.setattr(dist, "get_rank", lambda group=None: 1)
    loader = DataLoader(list(range(20)), batch_size=4, shuffle=True)
    monkeypatch.delenv("COURSE_SEED", raising=False)
    assert distributed.shard(loader).sampler.seed == 0
    monkeypatch.setenv("COURSE_SEED", "2")
    sharded = distributed.shard(loader)
    assert sharded.sampler.seed == 2000 and sharded.sampler.rank == 1
    assert distributed.shard(loader, seed=7).sampler.seed == 7  # an explicit seed wins


def test_the_commands_of_one_and_of_several_machines():
    one = distributed.torchrun_command(2, ("-m", "course.scaling"), ["shapes"])
    assert "--standalone" in one and "--nproc-per-node=2" in one and one[-1] == "shapes"
    assert "--max-restarts=0" in one
    two = distributed.torchrun_command(
        1, ("x.py",), nnodes=2, endpoint="127.0.0.1:29400", run_id="job1", max_restarts=1,
        hosts_rendezvous=True, join_timeout=30,
    )  # fmt: skip
    for flag in ("--nnodes=2", "--rdzv-backend=c10d", "--rdzv-endpoint=127.0.0.1:29400",
                 "--rdzv-id=job1", "--rdzv-conf=join_timeout=30,is_host=1", "--max-restarts=1",
                 "--local-addr=127.0.0.1"):  # fmt: skip
        assert flag in two
    assert "--standalone" not in two
    with pytest.raises(ValueError, match="HOST:PORT"):
        distributed.torchrun_command(1, ("x.py",), nnodes=2)


def test_join_process_group_bounds_the_collectives(group, monkeypatch):
    import datetime

    seen = {}
    monkeypatch.setattr(
        dist, "init_process_group", lambda backend, timeout=None: seen.update(b=backend, t=timeout)
    )
    monkeypatch.setattr(dist, "is_initialized", lambda: "b" in seen)
    monkeypatch.setattr(dist, "get_backend", lambda: seen["b"])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert distributed.join_process_group(timeout=12) == torch.device("cpu")
    assert seen["t"] == datetime.timedelta(seconds=12)
