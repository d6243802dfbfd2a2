"""Static checks of the notebooks (their execution is `pytest --nbval-lax notebooks`)."""

import json
import re
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def _cells(path):
    return json.loads(path.read_text())["cells"]


def test_there_are_notebooks():
    assert NOTEBOOKS, "no notebook found in notebooks/"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_stored_without_outputs(path):
    for i, cell in enumerate(_cells(path)):
        if cell["cell_type"] == "code":
            assert not cell.get("outputs"), (
                f"{path.name} cell {i} stores outputs: run "
                f"`jupyter nbconvert --clear-output --inplace {path}` before committing"
            )
            assert cell.get("execution_count") is None, f"{path.name} cell {i} has a count"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_installs_course_only_when_missing_and_never_torch(path):
    code = [c for c in _cells(path) if c["cell_type"] == "code"]
    install = "".join(code[0]["source"])
    assert 'find_spec("course") is None' in install
    assert "remove-cell" in code[0]["metadata"].get("tags", []), "hide the install cell in the site"
    code_lines = [line for line in install.splitlines() if not line.lstrip().startswith("#")]
    assert not re.search(r"\btorch(vision)?\b", "\n".join(code_lines)), (
        "the install cell must not (re)install torch"
    )
    repo = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"]
    version = re.search(r'^version = "(.+)"', (ROOT / "pyproject.toml").read_text(), re.M)[1]
    assert f'package = "course @ git+{repo}"' in install and f'release = "v{version}"' in install, (
        f"the install cell must install the release v{version} from repository.url of "
        "_config.yml (CHANGELOG.md: how to release)"
    )
    assert 'f"{package}@{release}"' in install  # the release first; main only without the tag
    setup = "".join(code[1]["source"])
    assert "profile()" in setup and "get_device()" in setup and "seed_everything(" in setup


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_checks_its_claims_and_ends_with_exercises(path):
    cells = _cells(path)
    code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    assert code.count("assert ") >= 3, f"{path.name} should assert its claims"
    assert "pick(" in code, f"{path.name} should size its experiments with pick()"
    markdown = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    assert "## Exercises" in markdown


def test_every_notebook_is_in_the_table_of_contents():
    toc = (ROOT / "_toc.yml").read_text()
    for path in NOTEBOOKS:
        assert f"notebooks/{path.stem}" in toc, f"{path.name} is missing from _toc.yml"


GLUE_ROLE = re.compile(r"\{glue(?::\w+)?\}`([A-Za-z0-9_]+)")
GLUE_CALL = re.compile(r"""\bglue\(\s*["']([A-Za-z0-9_]+)["']""")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_number_the_text_glues_is_glued_by_the_same_notebook(path):
    cells = _cells(path)
    markdown = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    quoted, glued = set(GLUE_ROLE.findall(markdown)), GLUE_CALL.findall(code)
    assert not quoted - set(glued), f"{path.name}: the text quotes unglued keys"
    assert not set(glued) - quoted, f"{path.name}: glued but never quoted"
    assert len(glued) == len(set(glued)), f"{path.name}: a key glued twice"


def _bib_first_authors() -> dict[str, str]:
    """Citation key -> the first author's surname, from book/references.bib."""
    text = (ROOT / "book" / "references.bib").read_text()
    entries = re.findall(r"@\w+\{(\w+),(.*?)\n\}", text, flags=re.S)
    authors = {}
    for key, body in entries:
        author = re.search(r"author\s*=\s*\{(.*?)\},?\n", body, flags=re.S)
        assert author, f"references.bib: {key} has no author"
        authors[key] = author.group(1).split(",")[0].split(" and ")[0].strip("{} ")
    return authors


def _markdown(path: Path) -> str:
    nb = json.loads(path.read_text())
    return "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_work_named_in_the_prose_is_cited_from_the_bibliography(path):
    """Each {cite} key is in references.bib, and each "Name et al." / "Name & Name" of
    the prose is the first author of a cited work of this notebook."""
    authors = _bib_first_authors()
    text = _markdown(path)
    cited = set(re.findall(r"\{cite(?::\w+)?\}`([^`]+)`", text))
    cited = {key.strip() for group in cited for key in group.split(",")}
    assert not cited - authors.keys(), f"not in references.bib: {cited - authors.keys()}"
    named = set(re.findall(r"\b([A-Z][a-z]+) (?:et al\.|& [A-Z][a-z]+)", text))
    cited_authors = {authors[key] for key in cited}
    assert not named - cited_authors, f"named without a citation: {named - cited_authors}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_chapter_opens_with_objectives_prerequisites_and_measured_times(path):
    """The opening frame; its "Run time" paragraph is generated from benchmarks/runs.json
    by book/_ext/stamp.py (tests/test_stamp.py checks it and the home page's times)."""
    first = "".join(_cells(path)[0]["source"])
    assert first.startswith("# ") and "```{admonition} This chapter" in first
    for part in ("**You will learn to**", "**You need**", "**Run time**"):
        assert part in first, f"{path.name}: the opening frame lacks {part}"
    assert any("## Summary" in "".join(c["source"]) for c in _cells(path))


EXERCISE = re.compile(r"^::::\{exercise\} (\d+\.\d+)\n:label: (\S+)\n:nonumber:\n", re.M)
SOLUTION_START = re.compile(r"^```\{solution-start\} (\S+)\n:class: dropdown\n```", re.M)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_exercise_has_a_hint_and_a_solution_that_runs(path):
    """After '## Exercises': each exercise (a sphinx-exercise ``exercise`` with a folded
    Hint) is followed by its gated solution (``solution-start`` ... ``solution-end``,
    folded on the site) holding at least one code cell, which nbval runs; labels are
    ``chN-exK`` and titles ``N.K`` (sphinx-exercise would number them across the whole
    book), in order, and nothing else sits between the exercises."""
    cells = _cells(path)
    start = next(i for i, c in enumerate(cells) if "## Exercises" in "".join(c["source"]))
    chapter = int(path.name[:2])
    number, i = 0, start + 1
    while i < len(cells):
        source = "".join(cells[i]["source"])
        match = EXERCISE.match(source)
        assert match and cells[i]["cell_type"] == "markdown", (
            f"{path.name} cell {i}: an exercise expected after '## Exercises'"
        )
        number += 1
        label = f"ch{chapter}-ex{number}"
        assert match[2] == label, f"{path.name}: exercise {number} is labelled {match[2]}"
        assert match[1] == f"{chapter}.{number}", f"{label} is titled {match[1]}"
        assert ":::{admonition} Hint\n:class: dropdown\n" in source, f"{label} has no hint"
        assert source.rstrip().endswith(":::\n::::"), f"{label}: close the hint, then the exercise"
        if "**Write it yourself:" in source:  # the student's skeleton, then the solution
            assert cells[i + 1]["cell_type"] == "code", f"{label}: the skeleton follows it"
            i += 1
        opening = "".join(cells[i + 1]["source"])
        assert SOLUTION_START.match(opening) and SOLUTION_START.match(opening)[1] == label, (
            f"{label}: its solution must follow it (solution-start {label}, folded)"
        )
        end = next(
            j for j in range(i + 2, len(cells)) if "{solution-end}" in "".join(cells[j]["source"])
        )
        inside = cells[i + 2 : end]
        assert inside and all(c["cell_type"] == "code" for c in inside), (
            f"{label}: the solution's code cells sit between solution-start and solution-end"
        )
        assert all("".join(c["source"]).strip() for c in inside), f"{label}: empty code cell"
        assert "".join(cells[end]["source"]).rstrip().endswith("```{solution-end}\n```"), label
        i = end + 1
    assert number >= 3, f"{path.name} has {number} exercises"


def _solution_cells(cells):
    """(cell, inside a solution) for every cell: from ```{solution-start} to ```{solution-end}."""
    inside = False
    for cell in cells:
        source = "".join(cell["source"])
        if cell["cell_type"] == "markdown" and "```{solution-start}" in source:
            inside = True
        yield cell, inside
        if cell["cell_type"] == "markdown" and "```{solution-end}" in source:
            inside = False


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_solutions_are_hidden_in_jupyter_and_colab(path):
    """Run all executes the solutions (CI checks them) without showing them: every cell
    of a solution has its source hidden in JupyterLab (metadata.jupyter.source_hidden);
    its code cells are Colab forms (cellView "form", a "# @title" first line) that show
    only their title until opened. Exercises and skeletons stay visible."""
    hidden = 0
    for cell, inside in _solution_cells(_cells(path)):
        metadata = cell.get("metadata", {})
        is_hidden = metadata.get("jupyter", {}).get("source_hidden") is True
        assert is_hidden == inside, f"{path.name}: {''.join(cell['source'])[:80]!r}"
        if inside and cell["cell_type"] == "code":
            assert metadata.get("cellView") == "form", "a Colab form hides the code"
            assert "".join(cell["source"]).startswith("# @title Solution")
            hidden += 1
    assert hidden >= 5, f"{path.name}: expected the worked solutions' code"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_chapter_has_a_write_it_yourself_exercise_with_a_checker(path):
    """The student writes the chapter's algorithm in a visible skeleton (``...``) that ends
    with a call to a ``check_*`` function of the package; the hidden solution asserts that
    the same checker passes."""
    cells = list(_solution_cells(_cells(path)))
    exercises = [c for c, _ in cells if "**Write it yourself:" in "".join(c["source"])]
    assert exercises, f"{path.name}: no 'Write it yourself' exercise"
    skeletons = [
        "".join(c["source"])
        for c, inside in cells
        if c["cell_type"] == "code"
        and not inside
        and "...  # your code here" in "".join(c["source"])
    ]
    assert len(skeletons) == len(exercises)
    for skeleton in skeletons:
        checker = re.search(r"\b(check_\w+)\(", skeleton.split("...  # your code here")[-1])
        assert checker, skeleton[-200:]
        solved = [
            "".join(c["source"])
            for c, inside in cells
            if inside and c["cell_type"] == "code" and checker[1] in "".join(c["source"])
        ]
        assert solved and ("assert report" in solved[0] or "assert all(reports)" in solved[0])


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_cell_has_a_unique_id(path):
    """nbformat 4.5 requires cell ids (nbformat warns, and will refuse, without them)."""
    ids = [cell.get("id") for cell in _cells(path)]
    assert all(ids) and len(set(ids)) == len(ids), f"{path.name}: cells without an id"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_cell_that_shows_a_figure_gives_it_a_text_alternative(path):
    """A cell that calls ``plt.show()`` carries its figure's alt text in
    ``metadata.mystnb.image.alt`` (the accessibility check of the built book finds a
    missing one too, but only at the end of ``make test``, after every notebook ran)."""
    missing = [
        c["id"]
        for c in _cells(path)
        if c["cell_type"] == "code"
        and "plt.show()" in "".join(c["source"])
        and not c["metadata"].get("mystnb", {}).get("image", {}).get("alt")
    ]
    assert not missing, f"{path.name}: figures without alt text in cells {missing}"
