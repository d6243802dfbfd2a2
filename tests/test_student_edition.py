"""The student edition (book/_ext/student.py): the notebooks without their solutions.

Static checks of what is removed and kept, of the book it writes (its Colab and Kaggle
links open the student copy), and of the site's one setting (book/_ext/solutions.py);
then each chapter's student copy executed under the smoke profile (one test per
notebook, so that ``pytest -n`` spreads them): every cell runs, and each "Write it
yourself" skeleton, left as the student finds it, answers with its checker's report
(what is not written yet), not a traceback, and the notebook goes on past it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from tests.book_build import ipc_kernel_manager
from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "book" / "_ext"))
import solutions  # noqa: E402
import stamp  # noqa: E402
import student  # noqa: E402

NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def _load(path):
    return json.loads(path.read_text())


def _source(cell) -> str:
    return "".join(cell["source"])


def _markdown(text: str, cell_id: str, **metadata) -> dict:
    return {"cell_type": "markdown", "id": cell_id, "metadata": metadata, "source": text}


def _code(text: str, cell_id: str) -> dict:
    return {
        "cell_type": "code",
        "id": cell_id,
        "metadata": {},
        "source": text,
        "outputs": [],
        "execution_count": None,
    }


TOY = [
    _markdown("# 9. A chapter", "head"),
    _code("x = 1", "body"),
    _markdown("::::{exercise} 9.1\n:label: ch9-ex1\n:nonumber:\n\nDo it.\n::::", "ex1"),
    _markdown("```{solution-start} ch9-ex1\n:class: dropdown\n```\n\nLike this:", "s1"),
    _code("# @title Solution\ny = 2", "s1-code"),
    _markdown("Done.\n\n```{solution-end}\n```", "s1-end"),
    _markdown("::::{exercise} 9.2\n:label: ch9-ex2\n:nonumber:\n\n**Write it yourself:**", "ex2"),
    _code("def f(x):\n    ...  # your code here\n\n\ncheck_f(f)", "skeleton"),
    _markdown("```{solution-start} ch9-ex2\n:class: dropdown\n```", "s2"),
    _code("def f(x):\n    return x", "s2-code"),
    _markdown("```{solution-end}\n```", "s2-end"),
    _code("print('a tagged solution')", "tagged"),
]
TOY[-1]["metadata"]["tags"] = ["solution"]


def test_strip_solutions_keeps_exercises_and_skeletons_and_drops_every_solution_cell():
    notebook = {"cells": TOY, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    stripped = student.strip_solutions(notebook)
    ids = [c["id"] for c in stripped["cells"]]
    assert ids == ["head", "body", "student-edition-note", "ex1", "ex2", "skeleton"]
    assert student.skeleton_cells(stripped) == [5]
    assert notebook["cells"] is TOY and len(TOY) == 12  # the original is left as it was
    assert [c["id"] for c in student.strip_solutions(notebook, note=False)["cells"]] == [
        "head",
        "body",
        "ex1",
        "ex2",
        "skeleton",
    ]


@pytest.mark.parametrize(
    "cells, message",
    [
        (TOY[:5], "the solution opened at cell 3 is never closed"),
        (TOY[:4] + TOY[8:], "cell 4 opens a solution inside the one opened at cell 3"),
        (TOY[:3] + TOY[5:], "cell 3 closes a solution that was never opened"),
    ],
)
def test_markers_that_do_not_pair_up_are_refused_with_the_cell(cells, message):
    with pytest.raises(ValueError, match=re.escape(f"09_toy.ipynb: {message}")):
        student.strip_solutions({"cells": cells}, "09_toy.ipynb")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_the_student_copy_of_a_chapter_has_no_solution_and_every_exercise(path):
    """What the site hides as a solution (source_hidden in Jupyter, a Colab form titled
    "Solution", a solution directive) is gone; the exercises, their hints and the
    skeletons are kept, with their cell ids, in order."""
    original = _load(path)
    stripped = student.strip_solutions(original, path.name)
    for cell in stripped["cells"]:
        text = _source(cell)
        assert not cell["metadata"].get("jupyter", {}).get("source_hidden"), text[:80]
        assert "{solution" not in text and not text.startswith("# @title Solution"), text[:80]
    kept = [c["id"] for c in stripped["cells"] if c["id"] != "student-edition-note"]
    visible = [
        c["id"]
        for c in original["cells"]
        if not c["metadata"].get("jupyter", {}).get("source_hidden")
    ]
    assert kept == visible  # every cell the student sees in Jupyter, and only those
    exercises = [c for c in stripped["cells"] if "{exercise}" in _source(c)]
    assert len(exercises) >= 3 and all("Hint" in _source(c) for c in exercises)
    skeletons = student.skeleton_cells(stripped)
    assert skeletons and all(
        re.search(r"\bcheck_\w+\(", _source(stripped["cells"][i])) for i in skeletons
    )
    first_exercise = stripped["cells"].index(exercises[0])
    assert stripped["cells"][first_exercise - 1]["id"] == "student-edition-note"


def test_the_edition_is_a_book_whose_links_open_the_student_copy(tmp_path):
    removed = student.write_edition(
        tmp_path, repository="https://github.com/a-teacher/dl-course/", branch="spring"
    )
    assert sorted(removed) == [p.name for p in NOTEBOOKS] and min(removed.values()) >= 5
    config = yaml.safe_load((tmp_path / "_config.yml").read_text())
    assert config["repository"] == {
        "url": "https://github.com/a-teacher/dl-course",
        "path_to_book": "",
        "branch": "spring",
    }  # the Colab button: colab_url/github/a-teacher/dl-course/blob/spring/notebooks/...
    assert config["launch_buttons"]["colab_url"] == "https://colab.research.google.com"
    assert config["sphinx"]["config"]["course_solutions"] == "removed"
    assert "stamp" not in config["sphinx"]["local_extensions"]  # the stamps, as written:
    runs = stamp.load_runs()  # from the chapters' runs, solutions included
    assert "student edition" in config["title"]
    assert (tmp_path / "_toc.yml").read_text() == (ROOT / "_toc.yml").read_text()
    setup = (tmp_path / "book" / "setup.md").read_text()
    assert "src=https://github.com/a-teacher/dl-course/blob/spring/notebooks/00_" in setup
    assert "/blob/main/notebooks/" not in setup
    for path in NOTEBOOKS:
        copy = tmp_path / "notebooks" / path.name
        stamped = stamp.stamped_notebook(_load(path), runs.get(path.stem, {}))
        assert copy.read_text() == student.dumps(student.strip_solutions(stamped))
    # the second run replaces the first, and the repository's own folder is refused
    assert student.write_edition(tmp_path) == removed
    assert yaml.safe_load((tmp_path / "_config.yml").read_text())["repository"]["branch"] == (
        "student"
    )
    with pytest.raises(ValueError, match="the repository itself"):
        student.write_edition(ROOT)


def test_the_site_reads_one_setting_for_its_solutions(monkeypatch):
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert config["sphinx"]["config"]["course_solutions"] == "folded"
    assert config["sphinx"]["local_extensions"]["solutions"] == "book/_ext"
    monkeypatch.delenv(solutions.ENV, raising=False)
    assert solutions.mode("folded") == "folded" and solutions.mode(None) == "folded"
    monkeypatch.setenv(solutions.ENV, "Shown")
    assert solutions.mode("folded") == "shown"
    monkeypatch.setenv(solutions.ENV, "hidden")
    with pytest.raises(ValueError, match="choose one of shown, folded, removed"):
        solutions.mode("folded")


def _site(setting: str, document=None):
    """What the extension's handlers read: ``config.course_solutions``, ``env.doc2path``
    and, for the transform, ``document``."""
    return SimpleNamespace(
        config=SimpleNamespace(course_solutions=setting),
        env=SimpleNamespace(doc2path=lambda docname: f"/book/{docname}.ipynb"),
        document=document,
    )


@pytest.mark.parametrize("setting", solutions.MODES)
def test_each_setting_shows_folds_or_removes_the_solutions_on_the_site(setting):
    from docutils import nodes
    from sphinx_exercise.nodes import solution_node

    notebook = {"cells": TOY, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    source = [json.dumps(notebook)]
    solutions._strip_notebook(_site(setting), "notebooks/09_toy", source)
    ids = [c["id"] for c in json.loads(source[0])["cells"]]
    assert ("s1-code" in ids) == (setting != "removed")  # removed: not even executed
    document = nodes.section()
    document += solution_node(classes=["solution", "dropdown"])
    document += nodes.paragraph(text="the exercise")
    solutions.SolutionDisplay.apply(_site(setting, document))
    found = [n for n in document.children if isinstance(n, solution_node)]
    expected = {"folded": [["solution", "dropdown"]], "shown": [["solution"]], "removed": []}
    assert [n["classes"] for n in found] == expected[setting]
    assert isinstance(document.children[-1], nodes.paragraph)


# ---------------------------------------------------------------------------
# The student copy, executed
# ---------------------------------------------------------------------------


def _text(outputs) -> str:
    """What a cell printed or displayed, as plain text."""
    parts = []
    for output in outputs:
        if output["output_type"] == "stream":
            parts.append("".join(output["text"]))
        elif "data" in output:
            parts.append("".join(output["data"].get("text/plain", "")))
    return "".join(parts)


def _cpu_seconds(pid: int) -> float:
    """The CPU time of process ``pid`` and of its children that ended (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_the_student_copy_runs_and_each_skeleton_gets_its_checkers_report(path, tmp_path):
    nbclient = pytest.importorskip("nbclient")
    nbformat = pytest.importorskip("nbformat")
    stripped = student.strip_solutions(_load(path), path.name)
    notebook = nbformat.reads(json.dumps(stripped), as_version=4)
    sockets = tempfile.mkdtemp(prefix="student-kernel-")
    client = nbclient.NotebookClient(
        notebook,
        km=ipc_kernel_manager(sockets, kernel_name="python3"),
        kernel_name="python3",
        timeout=600,
        allow_errors=True,  # every cell runs; the errors are reported below, all at once
        resources={"metadata": {"path": str(path.parent)}},  # where the chapter runs
    )
    cpu = []  # the kernel's CPU time after each cell (less noisy than wall time)
    client.on_cell_executed = lambda **_: cpu.append(
        _cpu_seconds(client.km.provisioner.process.pid)
    )
    start = time.perf_counter()
    try:
        client.execute()
    finally:
        shutil.rmtree(sockets, ignore_errors=True)
    print(
        f"{path.stem}: student copy executed in {time.perf_counter() - start:.1f} s, "
        f"the kernel's CPU time {cpu[-1] if cpu else float('nan'):.1f} s"
    )
    skeletons = set(student.skeleton_cells(stripped))
    failures = []
    for i, cell in enumerate(notebook.cells):
        if cell.cell_type != "code":
            continue
        errors = [o for o in cell.outputs if o["output_type"] == "error"]
        where = f"cell {i} ({_source(cell).splitlines()[0][:60]!r})"
        if errors:
            failures.append(f"{where} raised {errors[0]['ename']}: {errors[0]['evalue']}")
        elif cell.execution_count is None:
            failures.append(f"{where} did not run")
        elif i in skeletons:
            report = _text(cell.outputs).strip()
            checker = re.findall(r"\b(check_\w+)\(", _source(cell))[-1]
            # a failing Report: "✗ name: what is missing, and what to write"
            if not re.match(r"✗ [^:]+: ", report) or not re.search(
                r"not written yet|returned None", report
            ):
                failures.append(f"{where}: {checker} answered {report[:300]!r}")
    assert skeletons, f"{path.name}: no skeleton found"
    assert not failures, f"{path.name}, student edition:\n" + "\n".join(failures)
