"""What each chapter was last run on: the "Run time" stamp, generated from recorded runs.

One data file, ``benchmarks/runs.json``, holds each chapter's last recorded run per
profile (``smoke``, ``cpu``, ``gpu``)::

    {"runs": {"03_finetuning_hornets": {"cpu": {
        "date": "2026-12-02", "commit": "f8e5819", "profile": "cpu",
        "device": "2-core CPU", "cores": 2, "amp": null,
        "torch": "2.14.1", "python": "3.11.9",
        "seconds": 112.0, "peak_bytes": 2147483648,
        "notebook_sha": "3f2a…"}}}}

``benchmarks/run_notebooks.py --record`` writes it (:func:`record`, one call per
notebook run); the GPU report's ``benchmarks/gpu_figures.json``
(``{"03": {"seconds", "peak_gpu_bytes", "device", "date", "commit", "notebook_sha",
...}}``, the chapter by number or by notebook name) is read too, as ``gpu`` runs: of
two runs of the same chapter and profile, the later one counts. A field that was not
recorded is ``null`` and the stamp says "not recorded".

``notebook_sha`` is :func:`notebook_sha`: a hash of the notebook's code cells (the
install cell left out, as ``run_notebooks.py`` skips it), so that a chapter whose code
changed after its run says so by itself ("before the chapter's last change"); a change
of the prose does not.

From it this script generates, and ``tests/test_stamp.py`` checks:

- the "**Run time**" paragraph of each notebook's first cell (the only text of the
  notebooks it writes);
- the last column of the home page's chapter table (``book/intro.md``, each row found by
  its link to the notebook) and, between ``<!-- stamp: runs -->`` and
  ``<!-- /stamp: runs -->`` markers where the page has them, the sentence under it;
- the table of every recorded run in ``benchmarks/RESULTS.md``, between
  ``<!-- stamp: runs-table -->`` and ``<!-- /stamp: runs-table -->``.

As a Sphinx extension it writes the same text into the pages as they are read, so the
site tells the truth even before the files are regenerated. Usage, like
``book/_ext/chapters.py``::

    python book/_ext/stamp.py            # what is out of date (exit 1 if anything)
    python book/_ext/stamp.py --write    # rewrite it
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RUNS = "benchmarks/runs.json"
GPU_FIGURES = "benchmarks/gpu_figures.json"
HOME = "book/intro.md"
PROFILES = ("cpu", "gpu")  # the profiles a stamp quotes (smoke runs are recorded too)
FIELDS = (
    "date",
    "commit",
    "profile",
    "device",
    "cores",
    "amp",
    "torch",
    "python",
    "seconds",
    "peak_bytes",
    "notebook_sha",
)
INSTALL_CELL = 'find_spec("course")'
PARAGRAPH = re.compile(r"^\*\*Run time\*\*.*?(?=\n\s*\n|\n```|\Z)", re.S | re.M)
ROW = re.compile(r"^(\|.*<\.\./notebooks/(\d\d_\w+)>`.*\| )([^|]*?)( \|)$", re.M)
RESULTS = "benchmarks/RESULTS.md"


def _markers(name: str) -> re.Pattern:
    """``<!-- stamp: NAME -->``, what it holds (maybe nothing), ``<!-- /stamp: NAME -->``:
    groups 1 and 2 are the markers, each content put between them ends with a newline."""
    return re.compile(rf"(<!-- stamp: {name} -->\n)(?:.*?\n)?(<!-- /stamp: {name} -->)", re.S)


NOTE, TABLE = _markers("runs"), _markers("runs-table")


# ---------------------------------------------------------------------------
# The data
# ---------------------------------------------------------------------------


def notebook_sha(notebook: dict) -> str:
    """The content hash of a notebook's code (12 hex digits): each code cell's source,
    in order, the install cell left out. Outputs, metadata and prose do not count."""
    code = [
        "".join(c["source"])
        for c in notebook["cells"]
        if c["cell_type"] == "code" and INSTALL_CELL not in "".join(c["source"])
    ]
    return hashlib.sha256(json.dumps(code).encode()).hexdigest()[:12]


def _read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error}); fix or delete it") from None


def _notebooks(root: Path) -> list[Path]:
    return sorted((root / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def load_runs(root: Path = ROOT) -> dict[str, dict[str, dict]]:
    """Chapter (notebook name) -> profile -> its last run, from ``runs.json`` and the GPU
    report's ``gpu_figures.json``."""
    runs = {k: dict(v) for k, v in _read_json(root / RUNS).get("runs", {}).items()}
    names = {p.stem[:2]: p.stem for p in _notebooks(root)}
    for key, figure in _read_json(root / GPU_FIGURES).items():
        if not isinstance(figure, dict):
            continue
        name = names.get(key[:2], key)
        run = {f: figure.get(f) for f in FIELDS}
        run["profile"] = figure.get("profile", "gpu")
        if run["peak_bytes"] is None:
            run["peak_bytes"] = figure.get("peak_gpu_bytes")
        previous = runs.setdefault(name, {}).get(run["profile"])
        if previous is None or str(run["date"] or "") >= str(previous.get("date") or ""):
            runs[name][run["profile"]] = run
    return runs


def write_text(path: Path, text: str) -> None:
    """Write ``path`` atomically (``course.runstate.atomic_write``): a reader, or a build
    running beside, never sees half a file. Used by every generator of book/_ext."""
    from course.runstate import atomic_write

    with atomic_write(path, durable=False) as f:
        f.write(text.encode())


def _git(root: Path, *args: str) -> str:
    try:
        result = subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return result.stdout.strip() if result.returncode == 0 else ""


def describe_machine(cores: int | None = None) -> dict:
    """The device a run uses now: the GPU's name when CUDA is available, else the CPU's
    model; ``cores`` (default: those this process may use); torch and Python versions."""
    import torch

    cores = cores or len(os.sched_getaffinity(0))
    if torch.cuda.is_available():
        device = torch.cuda.get_device_name()
    else:
        model = ""
        cpuinfo = Path("/proc/cpuinfo")
        if cpuinfo.is_file():
            found = re.search(r"^model name\s*:\s*(.+)$", cpuinfo.read_text(), re.M)
            model = found[1].strip() if found else ""
        device = f"{cores}-core CPU" + (f" ({model})" if model else "")
    return {
        "device": device,
        "cores": cores,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def record(
    notebook: Path,
    seconds: float,
    peak_bytes: int | None,
    *,
    profile: str,
    amp: str | None = None,
    machine: dict | None = None,
    root: Path = ROOT,
    runs_file: Path | None = None,
    now: datetime.datetime | None = None,
) -> dict:
    """Record a run of ``notebook`` (that passed) as its chapter's last run under
    ``profile`` in ``runs_file`` (default ``runs.json``; written atomically); returns the
    record. The commit is the clone's HEAD, with ``+changes`` when its notebooks or
    package differ from it."""
    runs_file = Path(runs_file) if runs_file else root / RUNS
    commit = _git(root, "rev-parse", "--short", "HEAD") or None
    if commit and _git(root, "status", "--porcelain", "--", "notebooks", "src"):
        commit += "+changes"
    run = {
        "date": (now or datetime.datetime.now(datetime.timezone.utc)).strftime("%Y-%m-%d"),
        "commit": commit,
        "profile": profile,
        "amp": amp,
        **(machine or describe_machine()),
        "seconds": round(float(seconds), 1),
        "peak_bytes": None if peak_bytes is None else int(peak_bytes),
        "notebook_sha": notebook_sha(json.loads(Path(notebook).read_text())),
    }
    data = _read_json(runs_file) or {"runs": {}}
    data.setdefault("runs", {}).setdefault(Path(notebook).stem, {})[profile] = {
        f: run.get(f) for f in FIELDS
    }
    data["runs"] = dict(sorted(data["runs"].items()))
    write_text(runs_file, json.dumps(data, indent=1, ensure_ascii=False) + "\n")
    return run


# ---------------------------------------------------------------------------
# The text
# ---------------------------------------------------------------------------


def _size(count: int | None) -> str:
    if count is None:
        return "not recorded"
    return f"{count / 2**30:.1f} GB" if count >= 2**30 else f"{count / 2**20:.0f} MB"


def is_fresh(run: dict, notebook: dict) -> bool:
    """Whether ``run`` executed the notebook's present code."""
    return run.get("notebook_sha") == notebook_sha(notebook)


def _cpu_or_device(run: dict) -> str:
    if run.get("profile") == "cpu" and run.get("cores"):
        return f"on {run['cores']} CPU cores"
    return f"on {run.get('device') or 'a machine not recorded'}"


def run_sentence(profile: str, run: dict | None, notebook: dict) -> str:
    """One profile's part of the stamp."""
    if run is None:
        return f"{profile} profile: no run recorded"
    when = [
        run.get("date") or "date not recorded",
        f"commit `{run['commit']}`" if run.get("commit") else "commit not recorded",
    ]
    if run.get("profile") == "cpu" or not run.get("device"):
        when.append(run.get("device") or "device not recorded")
    elif run.get("cores"):
        when.append(f"{run['cores']} CPU cores")
    when += [
        f"torch {run['torch']}" if run.get("torch") else "torch not recorded",
        f"Python {run['python']}" if run.get("python") else "Python not recorded",
    ]
    if run.get("amp"):
        when.append(f"COURSE_AMP={run['amp']}")
    text = (
        f"{profile} profile {_cpu_or_device(run)}: **{run['seconds']:.0f} s**, "
        f"peak memory {_size(run.get('peak_bytes'))} ({', '.join(when)})"
    )
    if not is_fresh(run, notebook):
        text += ", **before the chapter's code last changed** (not run since)"
    return text


def paragraph(notebook: dict, runs: dict[str, dict]) -> str:
    """The header's "Run time" paragraph from the chapter's runs (profile -> run)."""
    parts = "; ".join(run_sentence(p, runs.get(p), notebook) for p in PROFILES)
    return (
        f"**Run time** (its last recorded runs, from `{RUNS}`, written by "
        f"`book/_ext/stamp.py`): {parts}."
    )


def home_cell(notebook: dict, runs: dict[str, dict]) -> str:
    """The home page's "cpu · gpu" cell: seconds, "—" without a run, "†" after a run that
    predates the chapter's last change."""
    cells = []
    for profile in PROFILES:
        run = runs.get(profile)
        if run is None:
            cells.append("—")
        else:
            cells.append(f"{run['seconds']:.0f} s" + ("" if is_fresh(run, notebook) else "†"))
    return " · ".join(cells)


HOME_NOTE = (
    "Run times: each chapter's last recorded run under the cpu and the gpu profile "
    "(`{runs}`; the stamp in the chapter's header gives the machine, the date, the "
    'commit and the versions); "—" where no run is recorded, "†" where the chapter\'s '
    "code changed after the run ({stale})."
)


def home_note(stale: list[int]) -> str:
    """The sentence under the home page's table; ``stale``: the chapters marked †."""
    if not stale:
        return HOME_NOTE.format(runs=RUNS, stale="none today")
    names = ", ".join(map(str, stale))
    return HOME_NOTE.format(runs=RUNS, stale=f"chapter{'s' if len(stale) > 1 else ''} {names}")


def with_paragraph(source: str, text: str, name: str = "notebook") -> str:
    """``source`` (a header cell) with its "**Run time**" paragraph replaced by ``text``."""
    if not PARAGRAPH.search(source):
        raise ValueError(f"{name}: its first cell has no paragraph starting with **Run time**")
    return PARAGRAPH.sub(lambda _: text, source, count=1)


def stamped_notebook(notebook: dict, runs: dict[str, dict], name: str = "notebook") -> dict:
    """``notebook`` with its header's stamp as ``runs`` give it (other cells untouched)."""
    first = notebook["cells"][0]
    source = with_paragraph("".join(first["source"]), paragraph(notebook, runs), name)
    lines = source.splitlines(keepends=True)
    cells = [{**first, "source": lines}, *notebook["cells"][1:]]
    return {**notebook, "cells": cells}


def stamped_home(text: str, root: Path = ROOT) -> str:
    """The home page with each chapter row's last cell, and the note under the table
    (where its markers are), from the runs."""
    runs = load_runs(root)
    notebooks = {p.stem: json.loads(p.read_text()) for p in _notebooks(root)}
    stale = []
    for name, notebook in notebooks.items():
        if any(not is_fresh(r, notebook) for r in runs.get(name, {}).values() if r):
            stale.append(int(name[:2]))

    def row(match: re.Match) -> str:
        notebook = notebooks.get(match[2])
        if notebook is None:
            return match[0]
        return match[1] + home_cell(notebook, runs.get(match[2], {})) + match[4]

    text = ROW.sub(row, text)
    return NOTE.sub(lambda m: m[1] + home_note(stale) + "\n" + m[2], text)


def runs_table(root: Path = ROOT) -> str:
    """Every recorded run, one row per chapter and profile (for ``benchmarks/RESULTS.md``)."""
    runs = load_runs(root)
    rows = [
        "| chapter | profile | time | peak memory | device | cores | date | commit | torch "
        "| Python | code since |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for path in _notebooks(root):
        notebook = json.loads(path.read_text())
        for profile, run in sorted(runs.get(path.stem, {}).items()):
            cells = [
                path.stem[:2],
                profile + (f" ({run['amp']})" if run.get("amp") else ""),
                f"{run['seconds']:.0f} s",
                _size(run.get("peak_bytes")),
                run.get("device") or "not recorded",
                str(run.get("cores") or "not recorded"),
                run.get("date") or "not recorded",
                f"`{run['commit']}`" if run.get("commit") else "not recorded",
                run.get("torch") or "not recorded",
                run.get("python") or "not recorded",
                "unchanged" if is_fresh(run, notebook) else "changed",
            ]
            rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _dumps(notebook: dict) -> str:
    return json.dumps(notebook, indent=1, ensure_ascii=False) + "\n"


def generated(root: Path = ROOT) -> dict[str, str]:
    """Path (relative to ``root``) -> the content it must have."""
    runs = load_runs(root)
    files = {}
    for path in _notebooks(root):
        notebook = json.loads(path.read_text())
        stamped = stamped_notebook(notebook, runs.get(path.stem, {}), path.name)
        files[f"notebooks/{path.name}"] = _dumps(stamped)
    if (root / HOME).is_file():
        files[HOME] = stamped_home((root / HOME).read_text(), root)
    if (root / RESULTS).is_file():
        text = (root / RESULTS).read_text()
        files[RESULTS] = TABLE.sub(lambda m: m[1] + runs_table(root) + "\n" + m[2], text)
    return files


def _stale(root: Path) -> dict[str, str]:
    return {
        path: content
        for path, content in generated(root).items()
        if (root / path).read_text() != content
    }


def out_of_date(root: Path = ROOT) -> list[str]:
    """The files whose stamp differs from what the runs give."""
    return list(_stale(root))


def write(root: Path = ROOT) -> list[str]:
    """Rewrite the out-of-date files (atomically); returns their paths."""
    stale = _stale(root)
    for path, content in stale.items():
        write_text(root / path, content)
    return list(stale)


# ---------------------------------------------------------------------------
# The site: the stamp as of the build
# ---------------------------------------------------------------------------


def _source_read(app, docname: str, source: list[str]) -> None:
    root = Path(app.srcdir)
    path = Path(app.env.doc2path(docname))
    if path.suffix == ".ipynb" and path.parent.name == "notebooks":
        notebook = json.loads(source[0])
        runs = load_runs(root).get(path.stem, {})
        source[0] = json.dumps(stamped_notebook(notebook, runs, path.name))
    elif path.resolve() == (root / HOME).resolve():
        source[0] = stamped_home(source[0], root)


def setup(app) -> dict:
    # Before any other handler changes the notebook (solutions.py's removed mode drops
    # cells): the stamp compares the chapter's own code with the code that ran.
    app.connect("source-read", _source_read, priority=400)
    return {"parallel_read_safe": True, "parallel_write_safe": True}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help="rewrite the stamps")
    args = parser.parse_args(argv)
    from chapters import write_or_report  # book/_ext/chapters.py: the generators' CLI

    return write_or_report(args.write, write, out_of_date, "book/_ext/stamp.py")


if __name__ == "__main__":
    sys.exit(main())
