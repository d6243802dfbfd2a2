"""Each chapter's "Run time" stamp (book/_ext/stamp.py): generated from the recorded runs
(benchmarks/runs.json, written by ``benchmarks/run_notebooks.py --record``, and the GPU
report's benchmarks/gpu_figures.json), never typed; a chapter whose code changed after
its run says so by itself; the home page's table reads the same data."""

from __future__ import annotations

import json
import platform
import re
import shutil
import subprocess
import sys

import pytest

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "book" / "_ext"))
import stamp  # noqa: E402

NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def _header(path) -> str:
    return "".join(json.loads(path.read_text())["cells"][0]["source"])


def test_the_stamps_are_up_to_date():
    assert stamp.out_of_date() == [], "run: python book/_ext/stamp.py --write"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_each_header_states_what_its_chapter_was_last_run_on(path):
    """Date, commit, profile, device, torch and Python versions, time and peak memory of
    each recorded run, or that none is recorded; in the header's one paragraph."""
    runs = stamp.load_runs().get(path.stem, {})
    header = _header(path)
    assert header.count("**Run time**") == 1
    line = next(line for line in header.splitlines() if line.startswith("**Run time**"))
    for profile in stamp.PROFILES:
        run = runs.get(profile)
        if run is None:
            assert f"{profile} profile: no run recorded" in line
            continue
        for field, label in (("date", "date"), ("commit", "commit"), ("torch", "torch")) + (
            ("python", "Python"),
        ):
            expected = str(run[field]) if run[field] else f"{label} not recorded"
            assert expected in line, f"{path.name}: the stamp lacks {expected!r}"
        assert f"{profile} profile on " in line and f"**{run['seconds']:.0f} s**" in line
        assert "peak memory " in line


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_the_home_page_reads_the_same_runs(path):
    home = (ROOT / "book" / "intro.md").read_text()
    row = re.search(rf"^\|.*<\.\./notebooks/{path.stem}>`.*\| ([^|]*) \|$", home, re.M)
    assert row, f"book/intro.md has no row for {path.stem}"
    notebook = json.loads(path.read_text())
    assert row[1] == stamp.home_cell(notebook, stamp.load_runs().get(path.stem, {}))


def _chapter(root, source_cells=("x = 1",)):
    """A one-chapter book under ``root``: a header with a Run time paragraph, the install
    cell, code cells; the home page's row."""
    cells = [
        {
            "cell_type": "markdown",
            "id": "head",
            "metadata": {},
            "source": "# 9. Topic\n\n**Run time**: typed by hand, 12 s.\n\nMore prose.",
        },
        {
            "cell_type": "code",
            "id": "install",
            "metadata": {},
            "source": 'if find_spec("course") is None: pass',
            "outputs": [],
            "execution_count": None,
        },
    ]
    cells += [
        {
            "cell_type": "code",
            "id": f"c{i}",
            "metadata": {},
            "source": text,
            "outputs": [],
            "execution_count": None,
        }
        for i, text in enumerate(source_cells)
    ]
    notebook = {"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    (root / "notebooks").mkdir(parents=True)
    (root / "notebooks" / "09_topic.ipynb").write_text(stamp._dumps(notebook))
    (root / "book").mkdir()
    (root / "book" / "intro.md").write_text(
        "| | chapter | run time |\n|---|---|---|\n"
        "| x | {doc}`9. Topic <../notebooks/09_topic>` | 12 s · — |\n\n"
        "<!-- stamp: runs -->\ntyped\n<!-- /stamp: runs -->\n"
    )
    return root / "notebooks" / "09_topic.ipynb"


def _run(sha: str, **fields) -> dict:
    return {
        "date": "2026-12-07",
        "commit": "abc1234",
        "profile": "cpu",
        "device": "2-core CPU",
        "cores": 2,
        "amp": None,
        "torch": "2.11.0",
        "python": "3.13.1",
        "seconds": 41.6,
        "peak_bytes": 3 * 2**30,
        "notebook_sha": sha,
        **fields,
    }


def test_a_chapter_changed_after_its_run_says_so_by_itself(tmp_path):
    path = _chapter(tmp_path)
    sha = stamp.notebook_sha(json.loads(path.read_text()))
    (tmp_path / "benchmarks").mkdir()
    runs = {"runs": {"09_topic": {"cpu": _run(sha)}}}
    (tmp_path / stamp.RUNS).write_text(json.dumps(runs))
    results = tmp_path / stamp.RESULTS
    results.write_text("# Results\n\n<!-- stamp: runs-table -->\n<!-- /stamp: runs-table -->\n")
    written = ["notebooks/09_topic.ipynb", "book/intro.md", "benchmarks/RESULTS.md"]
    assert stamp.write(tmp_path) == written
    assert stamp.out_of_date(tmp_path) == []
    row = "| 09 | cpu | 42 s | 3.0 GB | 2-core CPU | 2 | 2026-12-07 | `abc1234` | 2.11.0 | 3.13.1 |"
    assert f"{row} unchanged |\n<!-- /stamp" in results.read_text()
    header = _header(path)
    assert (
        "**Run time** (its last recorded runs, from `benchmarks/runs.json`, written by "
        "`book/_ext/stamp.py`): cpu profile on 2 CPU cores: **42 s**, peak memory 3.0 GB "
        "(2026-12-07, commit `abc1234`, 2-core CPU, torch 2.11.0, Python 3.13.1); "
        "gpu profile: no run recorded.\n\nMore prose." in header
    )
    home = (tmp_path / "book" / "intro.md").read_text()
    assert "| 42 s · — |" in home and "(none today)" in home
    # the prose changes: still the code that ran
    notebook = json.loads(path.read_text())
    notebook["cells"][0]["source"] = (_header(path) + "\n\nA new.").splitlines(keepends=True)
    notebook["cells"][1]["source"] = 'if find_spec("course") is None: print("v2")'
    path.write_text(stamp._dumps(notebook))
    assert stamp.out_of_date(tmp_path) == []
    # a code cell changes: the header and the home page say so, once regenerated
    notebook["cells"][2]["source"] = "x = 2"
    path.write_text(stamp._dumps(notebook))
    assert stamp.out_of_date(tmp_path) == written
    stamp.write(tmp_path)
    assert f"{row} changed |" in results.read_text()
    assert "**42 s**" in _header(path)
    assert "**before the chapter's code last changed** (not run since)" in _header(path)
    home = (tmp_path / "book" / "intro.md").read_text()
    assert "| 42 s† · — |" in home and "(chapter 9)" in home


def test_the_gpu_reports_figures_are_read_as_gpu_runs(tmp_path):
    path = _chapter(tmp_path)
    sha = stamp.notebook_sha(json.loads(path.read_text()))
    (tmp_path / "benchmarks").mkdir()
    figure = {
        "seconds": 17.2,
        "peak_gpu_bytes": 5 * 2**30,
        "device": "NVIDIA H100 80GB HBM3",
        "date": "2026-12-08",
        "commit": "def5678",
        "notebook_sha": sha,
        "cores": 2,
        "torch": "2.11.0+cu130",
        "python": "3.12.3",
    }
    older = _run(sha, profile="gpu", device="NVIDIA T4", date="2026-12-01", seconds=99)
    runs = {"runs": {"09_topic": {"gpu": older}}}
    (tmp_path / stamp.RUNS).write_text(json.dumps(runs))
    (tmp_path / stamp.GPU_FIGURES).write_text(json.dumps({"09": figure}))
    gpu = stamp.load_runs(tmp_path)["09_topic"]["gpu"]
    assert gpu["seconds"] == 17.2 and gpu["peak_bytes"] == 5 * 2**30  # the later run
    stamp.write(tmp_path)
    assert (
        "gpu profile on NVIDIA H100 80GB HBM3: **17 s**, peak memory 5.0 GB (2026-12-08, "
        "commit `def5678`, 2 CPU cores, torch 2.11.0+cu130, Python 3.12.3)." in _header(path)
    )
    assert "| — · 17 s |" in (tmp_path / "book" / "intro.md").read_text()


def test_a_header_without_its_run_time_paragraph_is_named(tmp_path):
    path = _chapter(tmp_path)
    notebook = json.loads(path.read_text())
    notebook["cells"][0]["source"] = "# 9. Topic\n\nNo stamp here."
    path.write_text(stamp._dumps(notebook))
    with pytest.raises(ValueError, match="09_topic.ipynb: its first cell has no paragraph"):
        stamp.out_of_date(tmp_path)


def test_run_notebooks_records_the_run_that_the_stamp_quotes(tmp_path):
    """``benchmarks/run_notebooks.py --record`` on a small notebook: the run's facts,
    measured, in the runs file (the real one is not touched)."""
    path = _chapter(tmp_path, ["import torch\nx = torch.zeros(2**25)  # 128 MiB\nprint(x.sum())"])
    runs_file = tmp_path / "runs.json"
    command = [
        sys.executable,
        str(ROOT / "benchmarks" / "run_notebooks.py"),
        "--record",
        "--runs-file",
        str(runs_file),
        str(path),
    ]
    env = {"PATH": "/usr/bin:/bin", "COURSE_PROFILE": "smoke", "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = str(ROOT / "src")
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    run = json.loads(runs_file.read_text())["runs"]["09_topic"]["smoke"]
    import torch

    assert run["profile"] == "smoke" and run["seconds"] > 0
    assert run["python"] == platform.python_version() and run["torch"] == torch.__version__
    assert run["peak_bytes"] > 128 * 2**20  # the tensor's 128 MiB, at least
    assert run["notebook_sha"] == stamp.notebook_sha(json.loads(path.read_text()))
    head = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    assert run["commit"].startswith(head) and re.fullmatch(r"\d{4}-\d\d-\d\d", run["date"])
    assert run["cores"] >= 1 and run["device"]


def test_the_student_edition_and_the_site_take_the_stamp_from_the_same_code(tmp_path):
    """The site's pages get the stamp as they are read (source-read), so a build shows it
    even before the files are regenerated."""
    path = _chapter(tmp_path)
    shutil.copy(path, tmp_path / "copy.ipynb")

    class Env:
        @staticmethod
        def doc2path(docname):
            return str(tmp_path / f"{docname}.ipynb")

    class App:
        srcdir = str(tmp_path)
        env = Env()

    source = [path.read_text()]
    stamp._source_read(App(), "notebooks/09_topic", source)
    header = "".join(json.loads(source[0])["cells"][0]["source"])
    assert "cpu profile: no run recorded; gpu profile: no run recorded." in header


def test_the_site_stamps_a_chapter_before_its_solutions_are_removed():
    """Both extensions change a notebook as it is read; the stamp must see the chapter's
    whole code (Sphinx calls the lower priority first; the default is 500)."""
    connected = {}

    class App:
        def connect(self, event, handler, priority=500):
            connected[handler.__module__, event] = priority

        def add_config_value(self, *args, **kwargs):
            pass

        def add_transform(self, *args):
            pass

    import solutions

    stamp.setup(App())
    solutions.setup(App())
    assert connected["stamp", "source-read"] < connected["solutions", "source-read"]
