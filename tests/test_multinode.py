"""Chapter 6 beyond one machine, rehearsed on one: two torchrun agents meeting at a c10d
rendezvous on 127.0.0.1 (what two machines do over the network), a worker killed by its
own pid in the middle of the run, and the seed contract under torchrun.

Every wait is bounded: the agents by ``wait_local_nodes``'s timeout (which kills them and
shows what they printed), the rendezvous by ``join_timeout``, the collectives by the
program's ``--timeout``.
"""

import json
import os
import signal
import time

import pytest
import torch
from torch.utils.data.distributed import DistributedSampler

from course.distributed import (
    launch_local_nodes,
    loopback_available,
    run_local_nodes,
    run_torchrun,
    wait_local_nodes,
)
from course.runstate import load_state
from course.scaling.programs import wait_for_step
from tests.conftest import ROOT

pytestmark = pytest.mark.skipif(
    not loopback_available(), reason="gloo needs TCP on 127.0.0.1, which is down in this sandbox"
)

PROGRAM = ("-m", "course.scaling")
STEPS, EVERY, KILL_AFTER = 40, 5, 22  # 16 steps per epoch: the kill falls in epoch 2
RUN = [
    "shapes", "--steps", str(STEPS), "--batch-per-process", "8", "--samples", "256",
    "--base-lr", "0.4", "--base-batch-size", "16", "--warmup-steps", "5", "--timeout", "20",
]  # fmt: skip
AGENTS_TIMEOUT = 120  # seconds for a whole two-agent run, restart included
RENDEZVOUS_TIMEOUT = 30


def _weights(path):
    return load_state(path)["model"]


def _assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key} differs by {(a[key] - b[key]).abs().max()}"


def _statuses(folder):
    return {r["rank"]: r for r in (json.loads(p.read_text()) for p in folder.glob("rank*.json"))}


@pytest.fixture(scope="module")
def one_machine(tmp_path_factory):
    """The reference: the same run on one machine, 2 processes (torchrun --standalone)."""
    out = tmp_path_factory.mktemp("one") / "weights.pt"
    result = run_torchrun(2, PROGRAM, [*RUN, "--out", str(out)], timeout=AGENTS_TIMEOUT)
    assert result.returncode == 0, result.stderr[-3000:]
    return _weights(out)


def test_two_agents_on_one_machine_equal_one_machine(one_machine, tmp_path):
    """--nnodes=2, one process each, c10d rendezvous: the same weights, bit for bit (the
    same two gradients are averaged, in the same order of ranks). The checkpoints the run
    writes along the way do not change its numbers."""
    status = tmp_path / "status"
    results = run_local_nodes(
        2,
        PROGRAM,
        [*RUN, "--out", str(tmp_path / "w.pt"), "--checkpoint", str(tmp_path / "run.pt"),
         "--checkpoint-every", str(EVERY), "--status-dir", str(status)],
        timeout=AGENTS_TIMEOUT,
        join_timeout=RENDEZVOUS_TIMEOUT,
    )  # fmt: skip
    for result in results:
        assert result.returncode == 0, result.stderr[-3000:]
    printed = "".join(r.stdout for r in results)
    assert "2 processes (gloo)" in printed and f"step {STEPS:4d}" in printed
    _assert_same_weights(_weights(tmp_path / "w.pt"), one_machine)
    ranks = _statuses(status)
    assert sorted(ranks) == [0, 1] and ranks[0]["pid"] != ranks[1]["pid"]
    assert all(r["step"] == STEPS for r in ranks.values())
    assert load_state(tmp_path / "run.pt")["step"] == STEPS


def _kill_rank_one(tmp_path, max_restarts):
    """Start two agents, SIGKILL the worker of rank 1 (its pid, read from its status file)
    once it has finished KILL_AFTER steps; return (agents, its last status, kill time)."""
    status = tmp_path / "status"
    agents = launch_local_nodes(
        2,
        PROGRAM,
        [*RUN, "--out", str(tmp_path / "w.pt"), "--checkpoint", str(tmp_path / "run.pt"),
         "--checkpoint-every", str(EVERY), "--status-dir", str(status),
         "--step-seconds", "0.05"],
        max_restarts=max_restarts,
        join_timeout=RENDEZVOUS_TIMEOUT,
    )  # fmt: skip
    try:
        victim = wait_for_step(status, rank=1, step=KILL_AFTER, timeout=AGENTS_TIMEOUT)
    except TimeoutError:
        wait_local_nodes(agents, timeout=0)  # stops them, raises with what they printed
        raise
    os.kill(victim["pid"], signal.SIGKILL)
    return agents, victim, time.monotonic()


def test_a_lost_worker_is_restarted_and_the_run_resumes_to_the_same_weights(one_machine, tmp_path):
    """--max-restarts=1: torchrun restarts both workers, which resume from the last
    checkpoint (every 5 steps) and end with the uninterrupted run's weights, bit for bit."""
    agents, victim, _ = _kill_rank_one(tmp_path, max_restarts=1)
    results = wait_local_nodes(agents, timeout=AGENTS_TIMEOUT)
    for result in results:
        assert result.returncode == 0, result.stderr[-3000:]
    assert victim["step"] < STEPS  # killed mid-run
    ranks = _statuses(tmp_path / "status")
    assert all(r["step"] == STEPS for r in ranks.values())
    assert all(r["pid"] != victim["pid"] for r in ranks.values())  # new workers
    resumed = {r["resumed_from"] for r in ranks.values()}
    assert len(resumed) == 1  # both resumed from the same checkpoint
    (resumed,) = resumed
    assert resumed % EVERY == 0 and KILL_AFTER - EVERY < resumed <= victim["step"] + 1
    assert f"resuming from {tmp_path / 'run.pt'} after step {resumed}" in results[0].stdout + (
        results[1].stdout
    )
    _assert_same_weights(_weights(tmp_path / "w.pt"), one_machine)


def test_without_restarts_the_survivor_stops_with_a_clear_message(tmp_path):
    """--max-restarts=0: the surviving worker's next all-reduce fails (gloo: the connection
    is reset), it says what happened and how to resume, and both agents exit with an error,
    within the bound."""
    agents, victim, killed = _kill_rank_one(tmp_path, max_restarts=0)
    results = wait_local_nodes(agents, timeout=60)
    stopped_after = time.monotonic() - killed
    assert all(r.returncode != 0 for r in results)
    errors = "".join(r.stderr for r in results)
    assert "rank 0: another process of this run is gone" in errors, errors[-3000:]
    assert f"it resumes from {tmp_path / 'run.pt'}" in errors
    assert not (tmp_path / "w.pt").exists()
    assert _statuses(tmp_path / "status")[0]["step"] <= victim["step"] + 1
    assert stopped_after < 60


def _orders(tmp_path, seed, monkeypatch):
    monkeypatch.setenv("COURSE_SEED", str(seed))
    out = tmp_path / f"seed{seed}.pt"
    script = (str(ROOT / "tests" / "ddp_fit.py"),)
    result = run_torchrun(2, script, [str(out), "1"], timeout=AGENTS_TIMEOUT)
    assert result.returncode == 0, result.stderr[-3000:]
    return load_state(out)["orders"]


def test_course_seed_moves_the_training_order_under_torchrun(tmp_path, monkeypatch):
    """fit shards with the seed run_seed(0): under COURSE_SEED=k each process reads
    DistributedSampler's order for the seed 1000 k, and two k give two orders."""
    from tests import ddp_fit

    data = ddp_fit.data()
    orders = {seed: _orders(tmp_path, seed, monkeypatch) for seed in (0, 1)}
    for seed, per_rank in orders.items():
        for rank, order in enumerate(per_rank):
            sampler = DistributedSampler(data, num_replicas=2, rank=rank, seed=1000 * seed)
            assert order == list(sampler)
        assert sorted(per_rank[0] + per_rank[1]) == list(range(ddp_fit.SAMPLES))
    assert orders[0] != orders[1]
