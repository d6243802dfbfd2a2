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
    assert not distributed.distributed()
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
    monkeypatch.setattr(distributed, "distributed", lambda: True)
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
