"""benchmarks/run_notebooks.py: Colab-class runs (2 pinned cores, a T4's numerics)."""

import json
import subprocess
import sys

from tests.conftest import ROOT

CELL = """import os, torch
from torch.utils.data import DataLoader, TensorDataset
from course.train import fit
print("cores", len(os.sched_getaffinity(0)), "amp", os.environ.get("COURSE_AMP"))
m = torch.nn.Linear(4, 2)
data = DataLoader(TensorDataset(torch.randn(64, 4), torch.randint(0, 2, (64,))), batch_size=8)
fit(m, data, epochs=2, optimizer=torch.optim.SGD(m.parameters(), lr=0.1), progress=False)
"""


def _benchmark(script: str, *args: str) -> subprocess.CompletedProcess:
    """``python benchmarks/SCRIPT ARGS``, its output captured."""
    command = [sys.executable, str(ROOT / "benchmarks" / script), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def test_pins_cores_forces_fp16_and_reports_the_data_wait(tmp_path):
    notebook = tmp_path / "tiny.ipynb"
    cell = {
        "cell_type": "code",
        "metadata": {},
        "source": CELL,
        "outputs": [],
        "execution_count": None,
    }
    notebook.write_text(
        json.dumps({"cells": [cell], "metadata": {}, "nbformat": 4, "nbformat_minor": 5})
    )
    result = _benchmark("run_notebooks.py", "--cpus", "1", "--t4", str(notebook))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "cores 1 amp fp16" in result.stdout
    assert "fit: 1 runs" in result.stdout and "data wait" in result.stdout
    assert "tiny.ipynb:" in result.stdout and " ok" in result.stdout


def test_claims_dry_run_reports_each_assert_its_spread_and_the_seed_moves_the_draw(tmp_path):
    """benchmarks/claims.py on its tiny notebook: every assert is a row with its pass
    count and the spread of what it compares; a cell that raises is a failed row; the
    glued value differs between seeds (COURSE_SEED moves seed_everything's draw)."""
    result = _benchmark("claims.py", "--dry-run", "--seeds", "3", "--out", str(tmp_path))
    assert result.returncode == 1, result.stderr[-2000:]  # the breaking cell fails
    table = (tmp_path / "claims-smoke.md").read_text()
    assert "| `0 <= x < 1` | cell 1, line 4 | 3/3 |" in table
    assert "| `cell 3 runs` | cell 3, raised | 0/3 **FAILS** (RuntimeError" in table
    assert "`undefined_name > 0`" in table and "NameError" in table
    assert "| `k < 2 + x` | cell 2, line 2 | 3/3 |" in table  # a loop: one row
    runs = json.loads((tmp_path / "claims-smoke.json").read_text())
    xs = {run["seed"]: run["record"]["glued"]["x"] for run in runs}
    assert sorted(xs) == [0, 1, 2] and len(set(xs.values())) == 3
    margins = [run["record"]["claims"]["cell 1, line 5"]["margin"] for run in runs]
    assert all(
        abs(m - (0.5 - xs[run["seed"]])) < 1e-9 for m, run in zip(margins, runs, strict=True)
    )


REHEARSAL = """import torch
from torch.utils.data import DataLoader, TensorDataset
from course.train import fit
m = torch.nn.Linear(4, 2)
data = DataLoader(TensorDataset(torch.randn(64, 4), torch.randint(0, 2, (64,))), batch_size=8)
history = fit(m, data, epochs=2, optimizer=torch.optim.SGD(m.parameters(), lr=0.1),
              progress=False)
assert history.steps == [8, 8], f"steps {history.steps}"
print("after the claim", history.steps)
"""


NEEDS_THE_CLAIM = """first = history.steps[0] if history.steps[0] == 8 else None
assert first is not None
print("doubled", first * 2)
"""


def _notebook(path, *sources):
    cells = [
        {"cell_type": "code", "metadata": {}, "source": s, "outputs": [], "execution_count": None}
        for s in sources
    ]
    path.write_text(
        json.dumps({"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5})
    )
    return path


def test_max_steps_rehearsal_caps_fit_lists_the_claims_it_misses_and_fails_on_errors(tmp_path):
    """--max-steps 3: fit takes 3 batches per epoch, the claim that needs 8 is listed and the
    cell goes on; a cell that raises after its claim was missed stops there and the next cell
    runs; an exception anywhere else still fails the notebook; without the cap every claim
    holds; a rehearsal is never --record'ed."""
    good = _notebook(tmp_path / "good.ipynb", REHEARSAL, NEEDS_THE_CLAIM, 'print("next cell ran")')
    result = _benchmark("run_notebooks.py", "--max-steps", "3", str(good))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "after the claim [3, 3]" in result.stdout
    assert (
        "claim not reached at COURSE_MAX_STEPS=3: cell 0 line 8: assert history.steps == [8, 8]"
        "  (steps [3, 3])" in result.stdout
    )
    assert "cell 1 stopped after its missed claim: TypeError" in result.stdout
    assert "next cell ran" in result.stdout and "doubled" not in result.stdout
    assert "claims not reached: 2" in result.stdout and "good.ipynb:" in result.stdout
    full = _benchmark("run_notebooks.py", str(good))
    assert full.returncode == 0 and "after the claim [8, 8]" in full.stdout
    assert "doubled 16" in full.stdout
    assert "claim not reached" not in full.stdout
    bad = _notebook(tmp_path / "bad.ipynb", REHEARSAL, "raise RuntimeError('a real bug')")
    result = _benchmark("run_notebooks.py", "--max-steps", "3", str(bad))
    assert result.returncode == 1 and "a real bug" in result.stderr
    refused = _benchmark("run_notebooks.py", "--max-steps", "3", "--record", str(good))
    assert refused.returncode == 2 and "not --record" in refused.stderr
