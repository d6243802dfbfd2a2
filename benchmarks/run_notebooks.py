"""Execute the chapters' code cells without Jupyter and time each notebook.

    COURSE_PROFILE=gpu python benchmarks/run_notebooks.py notebooks/*.ipynb
    COURSE_PROFILE=gpu python benchmarks/run_notebooks.py --cpus 2 --t4 notebooks/*.ipynb

``--cpus N`` pins each notebook (and its DataLoader workers, which inherit it) to
N cores with ``os.sched_setaffinity``, as on a Colab T4 runtime with 2 vCPUs;
``--amp fp16|bf16|off`` sets ``COURSE_AMP`` (``course.train.precision``) for the
notebooks; ``--t4`` is ``--amp fp16`` (float16 with a gradient scaler, a T4's
numerics) on any GPU or on the CPU. Each notebook's line also gives the share of its
training time (``course.train.fit``) spent waiting for the data loader.
``--max-steps N`` sets ``COURSE_MAX_STEPS`` (every loop that trains or attacks stops
each pass after N batches: :func:`course.config.capped`), a rehearsal of a profile's
code paths in bounded time, e.g. the gpu profile on a CPU; a claim (an ``assert``
statement of a cell) that does not hold is then listed and the run goes on, since a few
steps cannot reach the chapter's results; so does a cell that raises after one of its
claims was missed. Any other exception fails the notebook.
``--record`` writes each notebook that passed into ``benchmarks/runs.json`` (date,
commit, profile, device, cores, torch and Python versions, seconds, peak memory: the
GPU's ``max_memory_allocated`` when CUDA was used, else the largest resident set of
the notebook's processes), from which ``book/_ext/stamp.py`` writes each chapter's
"Run time" stamp.

For machines that have PyTorch but no Jupyter kernel (a bare GPU box): each
notebook's code cells run in order in a fresh namespace (in a subprocess),
with matplotlib's Agg backend; the install cell is skipped (the package is
imported from ``src/``). When ipywidgets is missing, a stand-in whose
``interact`` does nothing lets the widget cells pass. A failing ``assert``
fails the notebook, as under ``pytest --nbval-lax``. Prints one line per
notebook with its wall time; exit status 1 if any failed.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _widgets_stand_in() -> None:
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        stub = types.ModuleType("ipywidgets")

        def widget(*args, **kwargs):
            return None

        def module_getattr(name: str):
            if name[:1].isupper():  # IntSlider, Dropdown, ...
                return widget
            raise AttributeError(name)

        stub.interact = widget
        stub.__getattr__ = module_getattr
        sys.modules["ipywidgets"] = stub


def execute_cells(
    path: Path,
    namespace: dict | None = None,
    compile_cell=None,
    on_error=None,
    report=None,
) -> None:
    """Run ``path``'s code cells in order in one namespace, with matplotlib's Agg
    backend and the widgets stand-in; the install cell is skipped.

    ``compile_cell(index, source)`` compiles a cell (default: as written);
    ``on_error(index, exception)``, when given, is called for a cell that raises and
    the run goes on (default: the exception propagates); ``report(index, seconds)``
    is called after each cell.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.show = lambda *args, **kwargs: plt.close("all")
    _widgets_stand_in()
    cells = json.loads(path.read_text())["cells"]
    namespace = {"__name__": "__main__", **(namespace or {})}
    for i, cell in enumerate(cells):
        source = "".join(cell["source"])
        if cell["cell_type"] != "code" or 'find_spec("course")' in source:
            continue
        start = time.perf_counter()
        code = (
            compile_cell(i, source)
            if compile_cell
            else compile(source, f"{path.name}[cell {i}]", "exec")
        )
        try:
            exec(code, namespace)
        except Exception as error:
            if on_error is None:
                raise
            on_error(i, error)
        if report is not None:
            report(i, time.perf_counter() - start)


RECORD_FILE = "RUN_NOTEBOOKS_RECORD_FILE"  # where a child writes what --record needs


def _stamp_module():
    sys.path.insert(0, str(ROOT / "book" / "_ext"))
    import stamp  # book/_ext/stamp.py: the runs' data file and the chapters' stamps

    return stamp


def _write_run_facts() -> None:
    """In the child, after its notebook passed: the profile, the machine (as pinned) and
    the GPU's peak memory, for ``--record`` (to the file named by ``$RECORD_FILE``)."""
    target = os.environ.get(RECORD_FILE)
    if not target:
        return
    import torch

    from course.config import profile

    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    facts = {
        "profile": profile(),
        "amp": os.environ.get("COURSE_AMP") or None,
        "machine": _stamp_module().describe_machine(),
        "peak_gpu_bytes": torch.cuda.max_memory_allocated() if cuda else None,
    }
    Path(target).write_text(json.dumps(facts))


def _run_measured(command: list[str], **kwargs) -> tuple[int, int]:
    """``subprocess.run(command, **kwargs)``, returning the exit status and the peak
    resident memory in bytes of the largest process of its tree (``os.wait4``)."""
    process = subprocess.Popen(command, **kwargs)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return process.returncode, usage.ru_maxrss * 1024  # Linux gives kilobytes


def _record(path: Path, seconds: float, peak_rss: int, facts_file: Path, runs: Path) -> None:
    """``--record``: the run of ``path`` (which passed) into ``runs`` (runs.json)."""
    facts = json.loads(facts_file.read_text())
    peak = facts["peak_gpu_bytes"] if facts["peak_gpu_bytes"] is not None else peak_rss
    run = _stamp_module().record(
        path,
        seconds,
        peak,
        profile=facts["profile"],
        amp=facts["amp"],
        machine=facts["machine"],
        runs_file=runs,
    )
    print(f"    recorded in {runs.name}: {run['profile']} on {run['device']}", flush=True)


class _AssertsGoOn(ast.NodeTransformer):
    """In cell ``cell``: ``assert test, msg`` -> ``if not test: __missed__(cell, line,
    "test", msg)`` (where the assert is written, even in a function called later)."""

    def __init__(self, cell: int) -> None:
        self.cell = cell

    def visit_Assert(self, node: ast.Assert) -> ast.AST:
        call = ast.Call(
            ast.Name("__missed__", ast.Load()),
            [
                ast.Constant(self.cell),
                ast.Constant(node.lineno),
                ast.Constant(ast.unparse(node.test)),
                node.msg or ast.Constant(None),
            ],
            [],
        )
        check = ast.If(ast.UnaryOp(ast.Not(), node.test), [ast.Expr(call)], [])
        return ast.copy_location(check, node)


class _Rehearsal:
    """Under ``COURSE_MAX_STEPS``: the claims (``assert`` statements) that did not hold are
    listed and the run goes on; so does a cell that raises *after* one of its claims was
    missed (its later lines may need that claim: chapter 6 glues the batch where the rule
    breaks, None when the short run finds none); any other exception fails the notebook."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.missed: list[tuple[int, int, str, str]] = []  # cell, line, test, message
        self.stopped: list[tuple[int, str]] = []  # cell, exception
        self.namespace = {"__missed__": self._record}

    def _record(self, cell: int, line: int, test: str, message: object) -> None:
        text = "" if message is None else str(message)[:160]
        self.missed.append((cell, line, test, text))

    def compile_cell(self, index: int, source: str):
        tree = ast.fix_missing_locations(_AssertsGoOn(index).visit(ast.parse(source)))
        return compile(tree, f"{self.path.name}[cell {index}]", "exec")

    def on_error(self, index: int, error: Exception) -> None:
        if not any(cell == index for cell, *_ in self.missed):
            raise error
        self.stopped.append((index, f"{type(error).__name__}: {error}"[:160]))

    def report(self, cap: int) -> None:
        for cell, line, test, message in self.missed:
            print(
                f"    claim not reached at COURSE_MAX_STEPS={cap}: cell {cell} line {line}: "
                f"assert {test}" + (f"  ({message})" if message else ""),
                flush=True,
            )
        for cell, error in self.stopped:
            print(f"    cell {cell} stopped after its missed claim: {error}", flush=True)
        print(f"    claims not reached: {len(self.missed)}", flush=True)


def execute(path: Path) -> None:
    """Run one notebook's code cells in this process (called in a subprocess)."""
    import course.train
    from course.config import max_steps

    histories = []
    fit = course.train.fit

    def recording_fit(*args, **kwargs):
        histories.append(fit(*args, **kwargs))
        return histories[-1]

    course.train.fit = recording_fit  # before any module or cell imports it
    rehearsal = None if max_steps() is None else _Rehearsal(path)
    execute_cells(
        path,
        rehearsal.namespace if rehearsal else None,
        compile_cell=rehearsal.compile_cell if rehearsal else None,
        on_error=rehearsal.on_error if rehearsal else None,
        report=lambda i, seconds: print(f"    cell {i}: {seconds:.1f} s", flush=True),
    )
    train = sum(sum(h.seconds) for h in histories)
    wait = sum(sum(h.data_seconds) for h in histories)
    share = f"{100 * wait / train:.0f} %" if train else "-"
    print(
        f"    fit: {len(histories)} runs, {train:.1f} s of training, data wait {share}", flush=True
    )
    if rehearsal is not None:
        rehearsal.report(max_steps())
    _write_run_facts()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="+")
    parser.add_argument("--cpus", type=int, default=None, help="pin to this many cores")
    parser.add_argument(
        "--amp", choices=("fp16", "bf16", "off"), help="COURSE_AMP for the notebooks"
    )
    parser.add_argument("--t4", action="store_true", help="--amp fp16: a T4's numerics")
    parser.add_argument(
        "--max-steps",
        type=int,
        help="COURSE_MAX_STEPS: each loop that trains or attacks stops after this many batches",
    )
    parser.add_argument(
        "--record", action="store_true", help="record each run that passed (--runs-file)"
    )
    parser.add_argument(
        "--runs-file",
        type=Path,
        default=ROOT / "benchmarks" / "runs.json",
        help="where --record writes (default: benchmarks/runs.json)",
    )
    args = parser.parse_args(argv)
    if args.t4 and args.amp not in (None, "fp16"):
        parser.error("--t4 means --amp fp16")
    if args.max_steps is not None and (args.record or args.max_steps < 1):
        parser.error("--max-steps takes a positive number and is a rehearsal: not --record")
    env = dict(os.environ)
    if args.max_steps is not None:
        env["COURSE_MAX_STEPS"] = str(args.max_steps)
    elif args.record and env.get("COURSE_MAX_STEPS"):
        parser.error("COURSE_MAX_STEPS is set: a rehearsal is not recorded (unset it)")
    if args.t4 or args.amp:
        env["COURSE_AMP"] = args.amp or "fp16"
    if args.cpus is not None:
        env["OMP_NUM_THREADS"] = str(args.cpus)
    cores = sorted(os.sched_getaffinity(0))[: args.cpus] if args.cpus else None

    def pin() -> None:  # in the child, before it starts
        if cores is not None:
            os.sched_setaffinity(0, cores)

    failed = 0
    for name in args.notebooks:
        path = Path(name).resolve()
        facts = Path(tempfile.mkdtemp(prefix="run-notebooks-")) / "facts.json"
        start = time.perf_counter()
        returncode, peak_rss = _run_measured(
            [sys.executable, __file__, "--one", str(path)],
            cwd=path.parent,
            env={**env, RECORD_FILE: str(facts)} if args.record else env,
            preexec_fn=pin,
        )
        seconds = time.perf_counter() - start
        status = "ok" if returncode == 0 else f"FAILED (exit {returncode})"
        print(f"{path.name}: {seconds:.0f} s {status}", flush=True)
        if args.record and returncode == 0:
            _record(path, seconds, peak_rss, facts, args.runs_file)
        shutil.rmtree(facts.parent, ignore_errors=True)
        failed += returncode != 0
    return 1 if failed else 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--one"]:
        sys.path.insert(0, str(ROOT / "src"))
        execute(Path(sys.argv[2]))
    else:
        sys.exit(main(sys.argv[1:]))
