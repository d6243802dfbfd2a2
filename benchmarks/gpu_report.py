"""The GPU report: everything worth measuring during a short GPU loan, in parts of at
most 8 minutes each, most valuable first, each written down as soon as it is done.

    python benchmarks/gpu_report.py OUT                  # on the GPU machine
    python benchmarks/gpu_report.py OUT --resume         # after a cut: the rest only
    python benchmarks/gpu_report.py OUT --parts native    # only the parts whose name has it
    python benchmarks/gpu_report.py OUT --dry-run        # CPU, smoke sizes (make test)

The parts, in order of value:

1. ``native/NN``: chapter NN under ``COURSE_PROFILE=gpu`` in the card's own precision
   (``course.train.precision``'s default), executed by ``benchmarks/run_notebooks.py``
   (a failing ``assert`` fails it), pinned to ``--cpus`` cores (2, a Colab runtime's)
   with ``taskset``; wall time and peak GPU memory (``torch.cuda.max_memory_allocated``
   of the notebook's process: chapter 6's torchrun workers are not counted);
2. ``fp16/NN``: the same with ``COURSE_AMP=fp16``, a T4's numerics;
3. ``compile``: ``fit(compile=True)`` against the compiled reference loop
   (``benchmarks/train_throughput.py``);
4. ``encoders``: the batch target encoders of chapter 7 (``benchmarks/target_encoding.py``);
5. ``augmentation``: the batch augmentations (``benchmarks/augmentation.py``);
6. ``checkpointing``: chapter 5's memory figures (``benchmarks/checkpointing.py``).

Each part runs in a process of its own, killed after ``--part-timeout`` seconds (480).
After each part, OUT holds:

- ``chapters.md``: one row per chapter part (status, seconds, peak GPU memory, and
  whether the targets hold: 60 s on an H100 pinned to 2 cores, 12 GB so that a T4's
  15 GB holds it);
- ``NAME.md`` for each benchmark part: its command, duration and output;
- ``state.json``: every part's result; ``--resume`` skips the parts that passed;
- ``gpu_figures.json``: the chapters' figures (schema below), also merged into
  ``benchmarks/gpu_figures.json`` (``--figures``) unless ``--dry-run``.

``gpu_figures.json`` maps each chapter's file stem to its figures under its native
precision, the single source of the book's GPU numbers::

    {"03_finetuning_hornets": {
        "seconds": 41.2,                 # wall time of the whole notebook, pinned cores
        "peak_gpu_bytes": 3456789012,    # torch.cuda.max_memory_allocated; null on a CPU
        "device": "NVIDIA H100 80GB HBM3",  # torch.cuda.get_device_name(), or "cpu"
        "date": "2026-12-07T09:12:03Z",  # UTC, when the part finished
        "commit": "910d972...",          # git rev-parse HEAD of the measured tree
        "notebook_sha": "ab12cd34ef56",  # book/_ext/stamp.py's hash of the code cells
        "passed": true,                  # every cell ran, every assert held
        "amp": "bf16",                   # the precision of the run (COURSE_AMP's spelling)
        "profile": "gpu", "cpus": 2,
        "fp16": {"seconds": ..., "peak_gpu_bytes": ..., "passed": ...}  # once measured
    }}

A chapter whose code hash (``stamp.notebook_sha``) differs from ``notebook_sha`` changed
after it was measured; the chapter's stamp then says so by itself.

``--dry-run`` runs every part on the CPU at smoke sizes (``COURSE_PROFILE=smoke``,
tiny benchmark sizes) with a small stand-in notebook in place of the chapters, unless
``--notebooks`` names some, and without ``torch.compile`` (which takes minutes on a
2-core CPU), so that ``make test`` keeps the script working between loans in about two
minutes.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
FIGURES = HERE / "gpu_figures.json"
TARGET_SECONDS = 60  # per chapter, H100-class GPU pinned to 2 cores
TARGET_BYTES = 12 * 10**9  # per chapter, so that a T4's 15 GB holds it


@dataclass
class Part:
    """One part of the report: a chapter run or a benchmark script."""

    name: str  # "native/03_finetuning_hornets", "compile", ...
    command: list[str]
    env: dict[str, str] = field(default_factory=dict)
    notebook: Path | None = None  # chapter parts


# ---------------------------------------------------------------------------
# What runs in the child process of a chapter part
# ---------------------------------------------------------------------------


def run_chapter(notebook: Path, result_path: Path) -> int:
    """Execute ``notebook``'s code cells as benchmarks/run_notebooks.py does, then write
    ``{"seconds", "peak_gpu_bytes", "device", "passed", "error"}`` to ``result_path``."""
    sys.path.insert(0, str(ROOT / "src"))
    sys.path.insert(0, str(HERE))
    import run_notebooks
    import torch

    from course.train import precision

    os.chdir(notebook.parent)
    start, error = time.perf_counter(), None
    try:
        run_notebooks.execute(notebook)
    except BaseException as exc:  # an assert, an error, a KeyboardInterrupt
        error = f"{type(exc).__name__}: {exc}"[:500]
    seconds = time.perf_counter() - start
    cuda = torch.cuda.is_available()
    result = {
        "seconds": round(seconds, 1),
        "peak_gpu_bytes": torch.cuda.max_memory_allocated() if cuda else None,
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "amp": precision("cuda" if cuda else "cpu").name,
        "passed": error is None,
        "error": error,
    }
    result_path.write_text(json.dumps(result))
    print(json.dumps(result), flush=True)
    return 0 if error is None else 1


# ---------------------------------------------------------------------------
# The parts
# ---------------------------------------------------------------------------


def _smoke_notebook(folder: Path) -> Path:
    """A stand-in chapter for ``--dry-run``: imports the package, trains with ``fit``
    (in the run's precision), asserts a claim."""
    source = """import torch
from torch.utils.data import DataLoader, TensorDataset
from course.train import fit, precision
torch.manual_seed(0)
x = torch.randn(256, 8)
y = (x[:, 0] > 0).long()
model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
history = fit(model, DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True), epochs=3,
              optimizer=torch.optim.SGD(model.parameters(), lr=0.5), progress=False)
print(precision("cuda" if torch.cuda.is_available() else "cpu").name, history.train_acc)
assert history.train_acc[-1] > 0.8, "the stand-in chapter learns"
"""
    cell = {"cell_type": "code", "metadata": {}, "source": source, "outputs": []}
    notebook = folder / "99_stand_in.ipynb"
    notebook.write_text(json.dumps({"cells": [cell], "metadata": {}, "nbformat": 4}))
    return notebook


def parts(notebooks: list[Path], dry_run: bool, cpus: int) -> list[Part]:
    """Every part, most valuable first."""
    python = [sys.executable]
    if shutil.which("taskset") and len(os.sched_getaffinity(0)) >= cpus:
        cores = ",".join(str(c) for c in sorted(os.sched_getaffinity(0))[:cpus])
        python = ["taskset", "-c", cores, sys.executable]
    found = []
    for amp in ("native", "fp16"):
        env = {"COURSE_PROFILE": "smoke" if dry_run else "gpu", "OMP_NUM_THREADS": str(cpus)}
        if amp == "fp16":
            env["COURSE_AMP"] = "fp16"
        for notebook in notebooks:
            found.append(
                Part(
                    f"{amp}/{notebook.stem}",
                    [*python, __file__, "--chapter", str(notebook)],
                    env,
                    notebook,
                )
            )
    device = ["--device", "cpu"] if dry_run else []
    small = {
        # compiling ResNet18 takes minutes on a 2-core CPU: the dry run skips compile
        "compile": ["--batch", "2", "--image-size", "32", "--steps", "1", "--no-compile"],
        "encoders": ["--batch", "4", "--image-size", "32"],
        "augmentation": ["--batch", "4", "--image-size", "32", "--repeats", "1"],
        "checkpointing": [
            *("--depth", "4", "--width", "16", "--batch", "2"),
            *("--image-size", "32", "--repeats", "1"),
        ],
    }
    scripts = {
        "compile": "train_throughput.py",
        "encoders": "target_encoding.py",
        "augmentation": "augmentation.py",
        "checkpointing": "checkpointing.py",
    }
    for name, script in scripts.items():
        args = [*device, *small[name]] if dry_run else []
        found.append(Part(name, [sys.executable, str(HERE / script), *args]))
    return found


# ---------------------------------------------------------------------------
# Running them, writing as we go
# ---------------------------------------------------------------------------


def _commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def notebook_sha(path: Path) -> str:
    """The content hash of the notebook's code, as the chapters' stamps compute it
    (book/_ext/stamp.py's ``notebook_sha``: the code cells but the install cell), so that
    a change of prose does not mark a GPU figure as stale and a change of code does."""
    sys.path.insert(0, str(ROOT / "book" / "_ext"))
    import stamp

    return stamp.notebook_sha(json.loads(path.read_text()))


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _write(path: Path, text: str) -> None:
    """Atomic write: a report cut short keeps whole files."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def run_part(part: Part, out: Path, timeout: float) -> dict:
    """Run one part in its own process; its result (and, for a benchmark, its output)."""
    env = {**os.environ, **part.env, "PYTHONPATH": str(ROOT / "src")}
    command = list(part.command)
    result_file = out / "parts" / (part.name.replace("/", "-") + ".json")
    result_file.parent.mkdir(parents=True, exist_ok=True)
    result_file.unlink(missing_ok=True)
    if part.notebook is not None:
        command.append(str(result_file))
    start = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout)
        status = "passed" if done.returncode == 0 else f"failed (exit {done.returncode})"
        output = done.stdout + done.stderr
    except subprocess.TimeoutExpired as cut:
        status = f"timeout ({timeout:.0f} s)"
        output = (cut.stdout or b"").decode() if isinstance(cut.stdout, bytes) else cut.stdout
        output = output or ""
    result = {
        "status": status,
        "seconds": round(time.perf_counter() - start, 1),
        "date": _now(),
        "commit": _commit(),
        "command": " ".join(command),
        "env": part.env,
        "output": output[-6000:],
    }
    if part.notebook is not None:
        result["notebook_sha"] = notebook_sha(part.notebook)
        if result_file.exists():  # the chapter's own figures (the notebook's process)
            result.update(json.loads(result_file.read_text()))
        if not result.get("passed", False) and status == "passed":
            result["status"] = "failed"
    return result


def _gb(n: int | None) -> str:
    return "-" if n is None else f"{n / 1e9:.2f}"


def chapters_table(state: dict) -> str:
    rows = [
        "| part | status | seconds | peak GPU GB | device | within 60 s | within 12 GB |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in state.items():
        if "notebook_sha" not in r:
            continue
        peak = r.get("peak_gpu_bytes")
        rows.append(
            f"| {name} | {r['status']} | {r['seconds']} | {_gb(peak)} | {r.get('device', '?')} "
            f"| {'yes' if r['seconds'] <= TARGET_SECONDS else 'no'} "
            f"| {'-' if peak is None else ('yes' if peak <= TARGET_BYTES else 'no')} |"
        )
    return "\n".join(rows) + "\n"


def benchmark_page(name: str, r: dict) -> str:
    return (
        f"## {name}: {r['status']}, {r['seconds']} s, {r['date']}, commit {r['commit'][:10]}\n\n"
        f"`{r['command']}`\n\n```\n{r['output'].strip()}\n```\n"
    )


def figures(state: dict, profile: str, cpus: int) -> dict:
    """The chapters' figures (the module docstring's schema) from the state."""
    found: dict[str, dict] = {}
    for name, r in state.items():
        if "notebook_sha" not in r or "passed" not in r:
            continue
        amp, chapter = name.split("/", 1)
        figure = {
            "seconds": r["seconds"],
            "peak_gpu_bytes": r.get("peak_gpu_bytes"),
            "passed": r["passed"],
        }
        entry = found.setdefault(chapter, {})
        if amp == "native":
            entry.update(
                figure,
                device=r.get("device"),
                date=r["date"],
                commit=r["commit"],
                notebook_sha=r["notebook_sha"],
                amp=r.get("amp", "native"),
                profile=profile,
                cpus=cpus,
            )
        else:
            entry["fp16"] = figure
    return found


def merge_figures(path: Path, new: dict) -> None:
    """Merge ``new`` into the figures file at ``path`` chapter by chapter (a chapter
    measured again replaces its entry; the others stay)."""
    old = json.loads(path.read_text()) if path.exists() else {}
    for chapter, entry in new.items():
        old[chapter] = {**old.get(chapter, {}), **entry}
    _write(path, json.dumps(dict(sorted(old.items())), indent=1) + "\n")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder of the tables (created)")
    parser.add_argument("--resume", action="store_true", help="skip the parts that passed")
    parser.add_argument("--dry-run", action="store_true", help="CPU, smoke sizes")
    parser.add_argument("--parts", default="", help="run only parts whose name has this text")
    parser.add_argument("--notebooks", nargs="*", type=Path, help="default: every chapter")
    parser.add_argument("--cpus", type=int, default=2, help="cores the chapters are pinned to")
    parser.add_argument("--part-timeout", type=float, default=480.0, help="seconds per part")
    parser.add_argument("--figures", type=Path, default=None, help="default: " + str(FIGURES))
    args = parser.parse_args(argv)
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    state_path = out / "state.json"
    state = json.loads(state_path.read_text()) if args.resume and state_path.exists() else {}
    notebooks = args.notebooks
    if notebooks is None:
        notebooks = (
            [_smoke_notebook(out)]
            if args.dry_run
            else sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
        )
    notebooks = [n.resolve() for n in notebooks]
    if args.dry_run:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # the CPU, even on the GPU machine
    figures_path = args.figures or (out / "gpu_figures.json" if args.dry_run else FIGURES)
    profile = "smoke" if args.dry_run else "gpu"
    todo = [p for p in parts(notebooks, args.dry_run, args.cpus) if args.parts in p.name]
    failed = 0
    for part in todo:
        if state.get(part.name, {}).get("status") == "passed":
            print(f"{part.name}: done before, skipped", flush=True)
            continue
        result = run_part(part, out, args.part_timeout)
        state[part.name] = result
        print(f"{part.name}: {result['status']} in {result['seconds']} s", flush=True)
        failed += result["status"] != "passed"
        _write(state_path, json.dumps(state, indent=1) + "\n")
        _write(out / "chapters.md", chapters_table(state))
        if part.notebook is None:
            _write(out / f"{part.name}.md", benchmark_page(part.name, result))
        new = figures(state, profile, args.cpus)
        _write(out / "gpu_figures.json", json.dumps(new, indent=1) + "\n")
        if figures_path != out / "gpu_figures.json":
            merge_figures(figures_path, new)
    print(f"tables in {out}; {failed} part(s) failed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--chapter"]:  # NOTEBOOK RESULT.json, in the part's process
        sys.exit(run_chapter(Path(sys.argv[2]), Path(sys.argv[3])))
    sys.exit(main(sys.argv[1:]))
