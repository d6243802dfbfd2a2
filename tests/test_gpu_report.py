"""benchmarks/gpu_report.py: parts written as they finish, --resume, the figures file.

(``make test`` runs the whole script with ``--dry-run``; these check its bookkeeping
on two tiny notebooks, the chapter parts only.)"""

import json
import subprocess
import sys

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "book" / "_ext"))
import stamp  # noqa: E402

SCRIPT = ROOT / "benchmarks" / "gpu_report.py"


def _notebook(path, source):
    cell = {"cell_type": "code", "metadata": {}, "source": source, "outputs": []}
    path.write_text(json.dumps({"cells": [cell], "metadata": {}, "nbformat": 4}))
    return path


def _report(*args):
    return subprocess.run(
        [sys.executable, str(SCRIPT), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_chapters_are_recorded_as_they_pass_or_fail_and_resume_skips_the_passed(tmp_path):
    good = _notebook(
        tmp_path / "01_good.ipynb",
        "import os\nfrom course.train import precision\n"
        "print('amp', os.environ.get('COURSE_AMP'), precision('cpu').name)\n",
    )
    bad = _notebook(tmp_path / "02_bad.ipynb", "assert 1 + 1 == 3, 'a claim that fails'\n")
    out, figures = tmp_path / "out", tmp_path / "figures.json"
    figures.write_text(json.dumps({"00_other": {"seconds": 1.0}}))
    args = [out, "--notebooks", good, bad, "--parts", "/", "--figures", figures]
    first = _report(*args)
    assert first.returncode == 1, first.stderr[-2000:]  # one chapter failed
    state = json.loads((out / "state.json").read_text())
    assert list(state) == ["native/01_good", "native/02_bad", "fp16/01_good", "fp16/02_bad"]
    assert state["native/01_good"]["status"] == "passed"
    assert "amp None off" in state["native/01_good"]["output"]
    assert "amp fp16 fp16" in state["fp16/01_good"]["output"]  # COURSE_AMP=fp16 reached it
    assert state["native/02_bad"]["status"].startswith("failed")
    assert "a claim that fails" in state["native/02_bad"]["error"]
    table = (out / "chapters.md").read_text()
    assert "| native/01_good | passed |" in table and "| fp16/02_bad | failed" in table

    saved = json.loads(figures.read_text())
    assert saved["00_other"] == {"seconds": 1.0}  # other chapters' figures are kept
    entry = saved["01_good"]
    assert set(entry) >= {"seconds", "peak_gpu_bytes", "device", "date", "commit"}
    # the chapters' stamps compare it with their own hash of the code (book/_ext/stamp.py)
    assert entry["notebook_sha"] == stamp.notebook_sha(json.loads(good.read_text()))
    assert entry["peak_gpu_bytes"] is None and entry["device"] == "cpu"
    assert entry["passed"] and entry["fp16"]["passed"] and not saved["02_bad"]["passed"]
    assert json.loads((out / "gpu_figures.json").read_text())["01_good"] == entry

    _notebook(bad, "print('fixed')\n")
    second = _report(*args, "--resume")
    assert second.returncode == 0, second.stdout[-2000:]
    assert second.stdout.count("done before, skipped") == 2  # the good chapter's parts
    state = json.loads((out / "state.json").read_text())
    assert {r["status"] for r in state.values()} == {"passed"}


def test_a_part_that_runs_too_long_is_cut_and_recorded(tmp_path):
    slow = _notebook(tmp_path / "03_slow.ipynb", "import time\ntime.sleep(60)\n")
    out = tmp_path / "out"
    result = _report(
        out, "--notebooks", slow, "--parts", "native", "--part-timeout", "5", "--dry-run"
    )
    assert result.returncode == 1
    state = json.loads((out / "state.json").read_text())
    assert state["native/03_slow"]["status"] == "timeout (5 s)"
    assert not (ROOT / "benchmarks" / "gpu_figures.json.tmp").exists()
