"""benchmarks/run_notebooks.py: Colab-class runs (2 pinned cores, a T4's numerics)."""

import json
import subprocess
import sys

from tests.conftest import ROOT

CELL = """import os, torch
from torch.utils.data import DataLoader, TensorDataset
from course.train import fit
print("cores", len(os.sched_getaffinity(0)), "amp", os.environ.get("COURSE_AMP_DTYPE"))
m = torch.nn.Linear(4, 2)
data = DataLoader(TensorDataset(torch.randn(64, 4), torch.randint(0, 2, (64,))), batch_size=8)
fit(m, data, epochs=2, optimizer=torch.optim.SGD(m.parameters(), lr=0.1), progress=False)
"""


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
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "run_notebooks.py"),
            "--cpus",
            "1",
            "--t4",
            str(notebook),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "cores 1 amp float16" in result.stdout
    assert "fit: 1 runs" in result.stdout and "data wait" in result.stdout
    assert "tiny.ipynb:" in result.stdout and " ok" in result.stdout
