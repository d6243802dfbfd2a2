"""Chapter 6 across "machines": two torchrun agents against one, and what a lost worker costs.

    python benchmarks/multinode.py                    # 200 steps, a checkpoint every 10
    python benchmarks/multinode.py --steps 400 --every 20 --kill-after 250 --repeats 3

On this machine's CPU (gloo), ``python -m course.scaling shapes`` runs:

1. on one machine, 2 processes (one agent, ``--nproc_per_node=2``);
2. on two rehearsed machines, 1 process each (two agents, c10d rendezvous on 127.0.0.1,
   ``course.distributed.run_local_nodes``);
3. the same, with ``--max-restarts=1``, the worker of rank 1 killed (SIGKILL by its pid)
   once it has finished ``--kill-after`` steps (this run's steps last at least
   ``--step-seconds``, so that the kill lands before the end: its wall time is not
   comparable with the others').

For each: the wall time of the whole command (start-up, rendezvous, training, exit), the
time of the training steps alone (from the processes' status files: step 0 written to
step N written) and whether the final weights equal run 1's bit for bit. For run 3: the
recovery time (the kill to the first step finished by the new workers), the steps lost
(finished before the kill and done again: the kill's step minus the checkpoint's) and the
extra wall time against run 2. Nothing here is asserted (tests/test_multinode.py asserts
the contracts); results go to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import tempfile
import time
from pathlib import Path

import torch

from course.distributed import launch_local_nodes, wait_local_nodes
from course.runstate import load_state
from course.scaling.programs import wait_for_step

PROGRAM = ("-m", "course.scaling")


def shapes_args(steps: int, folder: Path, every: int, step_seconds: float) -> list[str]:
    return [
        "shapes", "--steps", str(steps), "--batch-per-process", "32", "--samples", "2048",
        "--warmup-steps", "10", "--timeout", "60", "--out", str(folder / "weights.pt"),
        "--checkpoint", str(folder / "run.pt"), "--checkpoint-every", str(every),
        "--status-dir", str(folder / "status"), "--step-seconds", str(step_seconds),
    ]  # fmt: skip


def statuses(folder: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in (folder / "status").glob("rank*.json")]


class StepClock:
    """Polls the status files: when step 0 was first written (training starts) and
    when the last step was written (it ends)."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.start = folder, None

    def poll_start(self, deadline: float) -> None:
        while self.start is None and time.monotonic() < deadline:
            if (self.folder / "status" / "rank0.json").exists():
                self.start = time.time()
            else:
                time.sleep(0.005)

    def seconds(self) -> float:
        return max(r["time"] for r in statuses(self.folder)) - self.start


def same_weights(a: Path, b: Path) -> bool:
    wa, wb = load_state(a)["model"], load_state(b)["model"]
    return all(torch.equal(wa[k], wb[k]) for k in wa)


def timed_run(
    machines: int,
    steps: int,
    folder: Path,
    every: int,
    kill_after: int | None = None,
    step_seconds: float = 0.0,
) -> dict:
    """``machines`` agents of ``2 // machines`` processes each (one agent: one machine of
    two processes, the c10d rendezvous that ``--standalone`` also uses)."""
    start = time.perf_counter()
    agents = launch_local_nodes(
        machines,
        PROGRAM,
        shapes_args(steps, folder, every, step_seconds),
        nproc_per_node=2 // machines,
        max_restarts=1 if kill_after else 0,
        join_timeout=120,
    )
    clock = StepClock(folder)
    clock.poll_start(time.monotonic() + 300)
    record: dict = {}
    if kill_after:
        victim = wait_for_step(folder / "status", rank=1, step=kill_after, timeout=300)
        os.kill(victim["pid"], signal.SIGKILL)
        killed = time.time()
        first_new = None
        while first_new is None and any(a.process.poll() is None for a in agents):
            for r in statuses(folder):
                if (
                    r["pid"] != victim["pid"]
                    and r["resumed_from"]
                    and r["step"] > r["resumed_from"]
                ):
                    first_new = r
            time.sleep(0.005)
        record = {
            "killed_at_step": victim["step"],
            "resumed_from": first_new["resumed_from"],
            "steps_lost": victim["step"] - first_new["resumed_from"],
            "recovery": first_new["time"] - killed,
        }
    results = wait_local_nodes(agents, timeout=600)
    wall = time.perf_counter() - start
    for r in results:
        if r.returncode != 0:
            raise RuntimeError(r.stderr[-3000:])
    return {"wall": wall, "train": clock.seconds(), **record}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--every", type=int, default=10, help="steps between checkpoints")
    parser.add_argument("--kill-after", type=int, default=305)
    parser.add_argument(
        "--step-seconds",
        type=float,
        default=0.02,
        help="the killed run's shortest step: the kill must land before the run ends",
    )
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    rows: dict[str, list[dict]] = {"one": [], "two": [], "kill": []}
    equal = []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            folders = {k: Path(tmp) / k for k in rows}
            rows["one"].append(timed_run(1, args.steps, folders["one"], args.every))
            rows["two"].append(timed_run(2, args.steps, folders["two"], args.every))
            rows["kill"].append(
                timed_run(
                    2, args.steps, folders["kill"], args.every, args.kill_after, args.step_seconds
                )
            )
            equal.append(
                [same_weights(folders["one"] / "weights.pt", folders[k] / "weights.pt")
                 for k in ("two", "kill")]
            )  # fmt: skip
    med = {k: {f: statistics.median(r[f] for r in v) for f in v[0]} for k, v in rows.items()}
    print(f"{args.steps} steps of 2 x 32 images, a checkpoint every {args.every}; "
          f"medians of {args.repeats} (gloo, CPU, OMP_NUM_THREADS=1)")  # fmt: skip
    print(f"one machine, 2 processes:      wall {med['one']['wall']:.1f} s, "
          f"steps {med['one']['train']:.1f} s")  # fmt: skip
    print(f"two agents, 1 process each:    wall {med['two']['wall']:.1f} s, "
          f"steps {med['two']['train']:.1f} s")  # fmt: skip
    kill = med["kill"]
    print(f"two agents, rank 1 killed:     wall {kill['wall']:.1f} s, "
          f"steps {kill['train']:.1f} s, recovery {kill['recovery']:.1f} s, "
          f"steps lost {kill['steps_lost']:.0f} (killed after step "
          f"{kill['killed_at_step']:.0f}, resumed from {kill['resumed_from']:.0f})")  # fmt: skip
    print(f"final weights equal to one machine's, bit for bit (two, killed): {equal}")
    for key, values in rows.items():
        print(key, json.dumps(values))


if __name__ == "__main__":
    main()
