"""The book builds without a single Sphinx warning (notebooks not executed here)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT


def _toc_files(toc):
    files = [toc["root"]]
    for part in toc.get("parts", []):
        for chapter in part["chapters"]:
            files.append(chapter["file"])
            files += [s["file"] for s in chapter.get("sections", [])]
    return files


def test_toc_entries_exist():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    for name in _toc_files(toc):
        candidates = [ROOT / f"{name}{ext}" for ext in (".md", ".ipynb")]
        assert any(c.exists() for c in candidates), f"_toc.yml names {name}, which does not exist"


@pytest.mark.skipif(
    shutil.which("jupyter-book", path=str(Path(sys.executable).parent)) is None,
    reason="jupyter-book is not installed (pip install -e '.[dev]')",
)
def test_book_builds_with_warnings_as_errors(tmp_path):
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    config["execute"]["execute_notebooks"] = "off"
    extensions = config["sphinx"]["local_extensions"]  # relative to the book, not the copy
    config["sphinx"]["local_extensions"] = {k: str(ROOT / v) for k, v in extensions.items()}
    config_path = tmp_path / "_config.yml"
    config_path.write_text(yaml.safe_dump(config))
    jb = Path(sys.executable).parent / "jupyter-book"
    result = subprocess.run(
        [
            str(jb),
            "build",
            str(ROOT),
            "--config",
            str(config_path),
            "--path-output",
            str(tmp_path),
            "--warningiserror",
            "--keep-going",
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    html = tmp_path / "_build" / "html"
    assert (html / "index.html").exists()
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    for name in _toc_files(toc):
        page = html / f"{name}.html"
        assert page.exists(), f"{page} was not built"
    chapter0 = (html / "notebooks" / "00_pytorch_basics.html").read_text()
    assert "colab.research.google.com" in chapter0  # launch button
    assert "Paszke" in (html / "book" / "bibliography.html").read_text()
    api = (html / "book" / "api" / "finetune.html").read_text()  # generated from docstrings
    assert "balanced_accuracy" in api and 'href="../../notebooks/03_finetuning_hornets.html"' in api
