"""Execute the chapters' code cells without Jupyter and time each notebook.

    COURSE_PROFILE=gpu python benchmarks/run_notebooks.py notebooks/*.ipynb
    COURSE_PROFILE=gpu python benchmarks/run_notebooks.py --cpus 2 --t4 notebooks/*.ipynb

``--cpus N`` pins each notebook (and its DataLoader workers, which inherit it) to
N cores with ``os.sched_setaffinity``, as on a Colab T4 runtime with 2 vCPUs;
``--amp fp16|bf16|off`` sets ``COURSE_AMP`` (``course.train.precision``) for the
notebooks; ``--t4`` is ``--amp fp16`` (float16 with a gradient scaler, a T4's
numerics) on any GPU or on the CPU. Each notebook's line also gives the share of its
training time (``course.train.fit``) spent waiting for the data loader.

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
import json
import os
import subprocess
import sys
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


def execute(path: Path) -> None:
    """Run one notebook's code cells in this process (called in a subprocess)."""
    import course.train

    histories = []
    fit = course.train.fit

    def recording_fit(*args, **kwargs):
        histories.append(fit(*args, **kwargs))
        return histories[-1]

    course.train.fit = recording_fit  # before any module or cell imports it
    execute_cells(
        path, report=lambda i, seconds: print(f"    cell {i}: {seconds:.1f} s", flush=True)
    )
    train = sum(sum(h.seconds) for h in histories)
    wait = sum(sum(h.data_seconds) for h in histories)
    share = f"{100 * wait / train:.0f} %" if train else "-"
    print(
        f"    fit: {len(histories)} runs, {train:.1f} s of training, data wait {share}", flush=True
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="+")
    parser.add_argument("--cpus", type=int, default=None, help="pin to this many cores")
    parser.add_argument(
        "--amp", choices=("fp16", "bf16", "off"), help="COURSE_AMP for the notebooks"
    )
    parser.add_argument("--t4", action="store_true", help="--amp fp16: a T4's numerics")
    args = parser.parse_args(argv)
    if args.t4 and args.amp not in (None, "fp16"):
        parser.error("--t4 means --amp fp16")
    env = dict(os.environ)
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
        start = time.perf_counter()
        result = subprocess.run(
            [sys.executable, __file__, "--one", str(path)], cwd=path.parent, env=env, preexec_fn=pin
        )
        seconds = time.perf_counter() - start
        status = "ok" if result.returncode == 0 else f"FAILED (exit {result.returncode})"
        print(f"{path.name}: {seconds:.0f} s {status}", flush=True)
        failed += result.returncode != 0
    return 1 if failed else 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--one"]:
        sys.path.insert(0, str(ROOT / "src"))
        execute(Path(sys.argv[2]))
    else:
        sys.exit(main(sys.argv[1:]))
