"""Every chapter's lab plan runs on its own.

The header of each chapter says what a 2–3 hour lab covers ("**In a lab of 2–3
hours**: sections ... and exercises ..."), and every cell off that path (optional
sections and their exercises) carries the cell tag ``off-plan``. A student who
follows the plan skips those cells, so the plan's cells must run by themselves,
in order: this test executes each notebook with its off-plan cells removed
(nbclient, smoke profile). A plan cell that uses a variable defined off the plan
fails with the NameError a student would meet.

A notebook without off-plan cells is executed whole by nbval already; only those
with some are executed here, one notebook per test id, each in its own xdist group
(``--dist loadgroup`` spreads them over the workers).
"""

import json
import re

import nbformat
import pytest

from tests.conftest import ROOT

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
PLAN = re.compile(r"^\*\*In a lab of 2–3 hours\*\*(?: \([^\n]*?\))?: \S.*$", re.M)
OFF_PLAN = "off-plan"


def _tags(cell) -> list[str]:
    return cell.get("metadata", {}).get("tags", [])


def _has_off_plan_cells(path) -> bool:
    return any(OFF_PLAN in _tags(c) for c in json.loads(path.read_text())["cells"])


def on_plan(nb):
    """A copy of notebook ``nb`` without its off-plan cells."""
    kept = nbformat.from_dict(nb)
    kept.cells = [c for c in nb.cells if OFF_PLAN not in _tags(c)]
    return kept


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_header_gives_a_lab_plan(path):
    header = "".join(json.loads(path.read_text())["cells"][0]["source"])
    match = PLAN.search(header)
    assert match, (
        f"{path.name}: the header has no lab-plan paragraph "
        "('**In a lab of 2–3 hours**: sections ... and exercises ...')"
    )
    assert "section" in match.group(0), f"{path.name}: the plan names no section"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_off_plan_cells_leave_a_plan(path):
    """The tag marks optional material, never the chapter's core: the plan keeps the
    header, the imports, and the write-it-yourself exercise's checker cell."""
    cells = json.loads(path.read_text())["cells"]
    off = [c.get("id") for c in cells if OFF_PLAN in _tags(c)]
    assert cells[0].get("id") not in off, f"{path.name}: the header is tagged off-plan"
    for cell in cells:
        if "Write it yourself" in "".join(cell["source"]):
            assert OFF_PLAN not in _tags(cell), f"{path.name}: the write-it-yourself exercise"


def test_on_plan_drops_exactly_the_tagged_cells():
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("a = 1"),
        nbformat.v4.new_code_cell("b = 2", metadata={"tags": [OFF_PLAN]}),
        nbformat.v4.new_code_cell("c = a", metadata={"tags": ["remove-cell"]}),
    ]
    assert [c.source for c in on_plan(nb).cells] == ["a = 1", "c = a"]
    assert len(nb.cells) == 3  # the original is untouched


@pytest.mark.parametrize(
    "path",
    [
        pytest.param(p, id=p.stem, marks=pytest.mark.xdist_group(f"lab-plan-{p.stem}"))
        for p in NOTEBOOKS
        if _has_off_plan_cells(p)
    ],
)
def test_plan_cells_run_on_their_own(path, monkeypatch):
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    monkeypatch.setenv("COURSE_PROFILE", "smoke")  # the kernel inherits the environment
    nb = on_plan(nbformat.read(path, as_version=4))
    client = NotebookClient(
        nb,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    )
    try:
        client.execute()
    except CellExecutionError as err:
        if err.ename == "NameError":
            pytest.fail(
                f"{path.name}: a cell of the lab plan uses a name that only an off-plan "
                f"cell defines — move the definition onto the plan, or tag the cell "
                f"off-plan too:\n{err}",
                pytrace=False,
            )
        raise
