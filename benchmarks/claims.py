"""How robust is each claim a chapter asserts? Run the chapters over seeds and threads.

    python benchmarks/claims.py --profile smoke --seeds 5 --threads 1,2
    python benchmarks/claims.py --profile cpu --seeds 3 notebooks/03_*.ipynb

Every chapter asserts its lesson next to its explanation (``assert frozen > scratch``).
An assert that holds for the seed the chapter was written with may fail for another
draw of the data and the initial weights, or with another number of threads. This
script runs each notebook once per seed (``COURSE_SEED`` = 0, 1, ..., which moves
every seed the chapter draws: :func:`course.config.run_seed`) and per thread count
(``OMP_NUM_THREADS``), and reports for every ``assert``:

- how often it holds, over all runs;
- for a comparison (``assert a < b``, ``assert x >= 0.9``), the spread (min / median /
  max) of the numbers it compares and of its *margin*, the distance to failing
  (``b - a`` for ``a < b``): a claim whose smallest margin is near 0 is one seed
  away from failing;
- the spread of every value the chapter glues into its text (``course.utils.glue``).

How: each run executes the notebook's code cells in a fresh process, as
``run_notebooks.py`` does, with every ``assert`` statement rewritten into a call
that records its outcome and operands and goes on (so that one failed claim does
not hide the next ones). An exception in a cell is recorded as a failed pseudo-claim
``cell N raised``, and the run goes on with the next cell.

Prints one markdown table per notebook (claims, then glued values); ``--out DIR``
also writes them to ``DIR/claims-<profile>.md`` and the raw records to
``DIR/claims-<profile>.json``. Exit status 1 when any claim failed in any run.
``--dry-run`` checks the machinery on a tiny notebook in seconds (the tests run it).
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import operator
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run_notebooks import ROOT, execute_cells  # noqa: E402

_COMPARE = {
    "Lt": operator.lt,
    "LtE": operator.le,
    "Gt": operator.gt,
    "GtE": operator.ge,
    "Eq": operator.eq,
    "NotEq": operator.ne,
    "Is": operator.is_,
    "IsNot": operator.is_not,
    "In": lambda a, b: a in b,
    "NotIn": lambda a, b: a not in b,
}


# ---------------------------------------------------------------------------
# In the child: asserts that record instead of raising
# ---------------------------------------------------------------------------


class _AssertRecorder(ast.NodeTransformer):
    """``assert a < b, msg`` -> ``__claim__(key, "a < b", [a, b], ["Lt"])``."""

    def __init__(self, cell: int, source: str) -> None:
        self.cell, self.source = cell, source

    def visit_Assert(self, node: ast.Assert) -> ast.AST:
        test = node.test
        text = ast.get_source_segment(self.source, test) or ast.unparse(test)
        if isinstance(test, ast.Compare):
            operands = [test.left, *test.comparators]
            ops = [type(op).__name__ for op in test.ops]
        else:
            operands, ops = [test], None
        # each operand is evaluated lazily, in order, by a lambda: an error in one is
        # recorded as a failure of this claim, not of the cell
        thunks = ast.List(
            elts=[ast.Lambda(args=_no_args(), body=operand) for operand in operands],
            ctx=ast.Load(),
        )
        call = ast.Call(
            func=ast.Name("__claim__", ast.Load()),
            args=[
                ast.Constant(f"cell {self.cell}, line {node.lineno}"),
                ast.Constant(" ".join(text.split())),
                thunks,
                ast.Constant(tuple(ops) if ops else None),
            ],
            keywords=[],
        )
        return ast.copy_location(ast.Expr(call), node)


def _no_args() -> ast.arguments:
    return ast.arguments(
        posonlyargs=[], args=[], vararg=None, kwonlyargs=[], kw_defaults=[], kwarg=None, defaults=[]
    )


def _number(value: Any) -> float | None:
    """A float for a Python/NumPy number or a one-element tensor; None otherwise
    (``course.utils.plain_number`` turns the last two into Python numbers)."""
    from course.utils import plain_number

    value = plain_number(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


def _failure(text: str, error: str) -> dict:
    """The record of a claim that could not be checked: a cell or a process that died."""
    return {"text": text, "held": False, "values": [None], "margin": None, "error": error}


def _margin(values: list[float | None], ops: tuple[str, ...] | None) -> float | None:
    """How far the comparison is from failing (positive: holds), for <, <=, >, >=."""
    if not ops or any(v is None for v in values):
        return None
    margins = []
    for op, a, b in zip(ops, values, values[1:], strict=False):
        if op in ("Lt", "LtE"):
            margins.append(b - a)
        elif op in ("Gt", "GtE"):
            margins.append(a - b)
        else:
            return None
    return min(margins)


def record_claims(path: Path, out: Path) -> None:
    """Run ``path``'s cells with recording asserts and glue; write the records to ``out``."""
    import course.utils

    claims: dict[str, dict] = {}
    glued: dict[str, float] = {}

    def claim(key: str, text: str, thunks: list, ops: tuple[str, ...] | None) -> None:
        entry = claims.setdefault(key, {"text": text, "held": True, "values": None})
        try:
            values = [thunk() for thunk in thunks]
            if ops is None:
                held = bool(values[0])
            else:
                held = all(
                    bool(_COMPARE[op](a, b))
                    for op, a, b in zip(ops, values, values[1:], strict=False)
                )
            numbers = [_number(v) for v in values] if ops else [None]
            margin = _margin(numbers, ops)
        except Exception as error:  # an operand that cannot be computed: the claim fails
            held, numbers, margin = False, [None], None
            entry["error"] = f"{type(error).__name__}: {error}"[:200]
        entry["held"] = entry["held"] and held
        # a claim checked several times (in a loop) keeps its tightest evaluation
        if entry["values"] is None or (
            margin is not None and (entry.get("margin") is None or margin < entry["margin"])
        ):
            entry["values"], entry["margin"] = numbers, margin

    def glue(name: str, value: Any) -> None:
        number = _number(value)
        if number is not None:
            glued[name] = number

    course.utils.glue = glue

    def compile_cell(index: int, source: str):
        tree = _AssertRecorder(index, source).visit(ast.parse(source))
        return compile(ast.fix_missing_locations(tree), f"{path.name}[cell {index}]", "exec")

    def on_error(index: int, error: BaseException) -> None:
        claims[f"cell {index}, raised"] = _failure(
            f"cell {index} runs", f"{type(error).__name__}: {error}"[:200]
        )

    start = time.perf_counter()
    execute_cells(path, {"__claim__": claim}, compile_cell=compile_cell, on_error=on_error)
    record = {"claims": claims, "glued": glued, "seconds": time.perf_counter() - start}
    out.write_text(json.dumps(record))


# ---------------------------------------------------------------------------
# In the parent: runs and the report
# ---------------------------------------------------------------------------


def run_once(path: Path, profile: str, seed: int, threads: int) -> dict:
    """One run of ``path`` in a fresh process; returns its records (or the crash)."""
    env = dict(
        os.environ, COURSE_PROFILE=profile, COURSE_SEED=str(seed), OMP_NUM_THREADS=str(threads)
    )
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "record.json"
        result = subprocess.run(
            [sys.executable, __file__, "--one", str(path), str(out)],
            cwd=path.parent,
            env=env,
            capture_output=True,
            text=True,
        )
        if result.returncode != 0 or not out.exists():
            failure = _failure("the notebook's process ends normally", result.stderr[-300:])
            return {"claims": {"process": failure}, "glued": {}, "seconds": math.nan}
        return json.loads(out.read_text())


def _spread(values: list[float]) -> str:
    if not values:
        return ""
    return " / ".join(f"{v:.4g}" for v in (min(values), statistics.median(values), max(values)))


def report(notebook: str, runs: list[dict]) -> tuple[str, int]:
    """A markdown table for one notebook's runs, and the number of claims that failed."""
    keys: list[str] = []
    for run in runs:
        keys += [k for k in run["record"]["claims"] if k not in keys]
    lines = [
        f"#### {notebook}",
        "",
        "| claim | where | held | operands (min / median / max) | margin (min / median / max) |",
        "|---|---|---|---|---|",
    ]
    failed = 0
    for key in keys:
        entries = [r["record"]["claims"].get(key) for r in runs]
        present = [e for e in entries if e is not None]
        held = sum(e["held"] for e in present)
        failed += held < len(runs)
        text = present[0]["text"].replace("|", "\\|")
        width = max(len(e["values"]) for e in present)
        operands = []
        for i in range(width):
            numbers = [
                e["values"][i]
                for e in present
                if i < len(e["values"]) and e["values"][i] is not None
            ]
            if numbers:
                operands.append(_spread(numbers))
        margins = [e["margin"] for e in present if e.get("margin") is not None]
        where = key if len(key) < 40 else key[:40]
        mark = "" if held == len(runs) else " **FAILS**"
        errors = {e["error"] for e in present if "error" in e}
        error = f" ({'; '.join(sorted(errors))[:120]})" if errors else ""
        lines.append(
            f"| `{text}` | {where} | {held}/{len(runs)}{mark}{error} | "
            f"{' ; '.join(operands)} | {_spread(margins)} |"
        )
    names = sorted({name for r in runs for name in r["record"]["glued"]})
    if names:
        lines += ["", "| glued value | min / median / max |", "|---|---|"]
        for name in names:
            values = [r["record"]["glued"][name] for r in runs if name in r["record"]["glued"]]
            lines.append(f"| `{name}` | {_spread(values)} |")
    seconds = [r["record"]["seconds"] for r in runs if not math.isnan(r["record"]["seconds"])]
    lines += ["", f"{len(runs)} runs, {_spread(seconds)} s each.", ""]
    return "\n".join(lines), failed


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", help="default: every chapter")
    parser.add_argument("--profile", default="smoke", choices=("smoke", "cpu", "gpu"))
    parser.add_argument("--seeds", default="5", help="a count N (seeds 0..N-1) or a list 0,3,7")
    parser.add_argument("--threads", default="1", help="thread counts, e.g. 1,2")
    parser.add_argument("--jobs", type=int, default=None, help="runs at once (default: cores)")
    parser.add_argument("--out", type=Path, default=None, help="folder for the tables")
    parser.add_argument("--dry-run", action="store_true", help="a tiny notebook, seconds")
    args = parser.parse_args(argv)
    seeds = (
        [int(s) for s in args.seeds.split(",")]
        if "," in args.seeds
        else list(range(int(args.seeds)))
    )
    threads = [int(t) for t in args.threads.split(",")]
    if args.dry_run:
        notebooks = [_dry_run_notebook()]
    else:
        notebooks = [Path(n).resolve() for n in args.notebooks] or sorted(
            (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")
        )
    tasks = [(nb, seed, t) for nb in notebooks for t in threads for seed in seeds]
    cores = len(os.sched_getaffinity(0))
    jobs = args.jobs or max(1, cores // max(threads))
    print(
        f"{len(tasks)} runs ({len(notebooks)} notebooks x {len(seeds)} seeds x threads "
        f"{threads}), profile {args.profile}, {jobs} at a time",
        flush=True,
    )

    def one(task):
        nb, seed, t = task
        record = run_once(nb, args.profile, seed, t)
        bad = sum(not c["held"] for c in record["claims"].values())
        print(
            f"  {nb.name} seed {seed} threads {t}: {record['seconds']:.0f} s, "
            f"{len(record['claims'])} claims, {bad} failed",
            flush=True,
        )
        return {"notebook": nb.name, "seed": seed, "threads": t, "record": record}

    with ThreadPoolExecutor(jobs) as pool:
        results = list(pool.map(one, tasks))
    header = (
        f"### Claims under the {args.profile} profile: seeds {seeds}, threads {threads}\n\n"
        f"{time.strftime('%Y-%m-%d')}, {cores} cores, "
        f"`python benchmarks/claims.py --profile {args.profile} --seeds {args.seeds} "
        f"--threads {args.threads}`\n"
    )
    tables, failed = [header], 0
    for nb in notebooks:
        table, bad = report(nb.name, [r for r in results if r["notebook"] == nb.name])
        tables.append(table)
        failed += bad
    text = "\n".join(tables)
    print(text)
    print(f"{failed} claims failed in at least one run")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"claims-{args.profile}.md").write_text(text)
        (args.out / f"claims-{args.profile}.json").write_text(json.dumps(results))
    return 1 if failed else 0


DRY_RUN_CELLS = [
    "import torch\nfrom course import run_seed, seed_everything\nfrom course.utils import glue",
    "seed_everything(0)\nx = torch.rand(()).item()\nglue('x', x)\n"
    "assert 0 <= x < 1  # always\nassert x < 0.5  # depends on the seed",
    "for k in range(3):\n    assert k < 2 + x",
    "raise RuntimeError('a cell that breaks')",
    "assert undefined_name > 0",
]


def _dry_run_notebook() -> Path:
    cells = [
        {"cell_type": "code", "metadata": {}, "source": s, "outputs": [], "execution_count": None}
        for s in DRY_RUN_CELLS
    ]
    path = Path(tempfile.mkdtemp(prefix="claims-dry-run-")) / "dry_run.ipynb"
    path.write_text(
        json.dumps({"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5})
    )
    return path


if __name__ == "__main__":
    if sys.argv[1:2] == ["--one"]:
        sys.path.insert(0, str(ROOT / "src"))
        record_claims(Path(sys.argv[2]), Path(sys.argv[3]))
    else:
        sys.exit(main(sys.argv[1:]))
