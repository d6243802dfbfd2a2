"""The student edition: the book with every worked solution removed.

A solution is everything from the markdown cell that opens it (```` ```{solution-start} ````)
to the markdown cell that closes it (```` ```{solution-end} ````), both included, plus
any single cell tagged ``solution``. Nothing else is looked at: the exercises, their
hints, the "Write it yourself" skeletons (``...  # your code here``) and the checkers
they call stay as the student must fill them, and every other cell is kept unchanged
(ids included). A note (tag ``student-edition``) before the first exercise says so.

::

    python book/_ext/student.py OUT [--repository URL] [--branch BRANCH]

writes into ``OUT`` a book of its own that an instructor pushes as it is (for instance
as the ``student`` branch of the course's repository, the default): ``_config.yml``
(its ``repository`` pointing at where ``OUT`` will be pushed, so that the Colab and
Kaggle links open the student notebooks, and ``course_solutions: removed``),
``_toc.yml``, ``book/`` and ``notebooks/``. ``jupyter-book build OUT`` builds its site.

The book's own site chooses between solutions ``shown``, ``folded`` (the default) and
``removed`` with one setting, ``course_solutions`` (``book/_ext/solutions.py``); its
``removed`` uses :func:`strip_solutions` below.
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import stamp  # noqa: E402  (book/_ext/stamp.py: the chapters' "Run time" stamps)

ROOT = Path(__file__).resolve().parents[2]
START, END = "```{solution-start}", "```{solution-end}"
#: A single cell with this tag is a solution too (outside any solution-start/end pair).
SOLUTION_TAG = "solution"
NOTE_TAG = "student-edition"
SKELETON = "...  # your code here"
NOTE = (
    "**Student edition.** This edition of the chapter leaves the worked solutions out "
    "(your instructor publishes them), whatever the text above says of them. Each "
    '"Write it yourself" cell runs as it stands: its checker answers with what is still '
    "missing or wrong, and the notebook goes on past it. Write the body, rerun the cell, "
    "until the checker says every check passed."
)
#: What the student copy holds besides its notebooks (paths relative to the repository).
BOOK_FILES = ("_toc.yml", "book")
IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", "thumbs", ".ipynb_checkpoints")


def _source(cell: dict) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else source


def _marks(cell: dict, mark: str) -> bool:
    return cell.get("cell_type") == "markdown" and mark in _source(cell)


def solution_mask(cells: list[dict], name: str = "notebook") -> list[bool]:
    """For each cell, whether it belongs to a solution. Raises ``ValueError`` naming the
    cell when the markers do not pair up (a start inside a solution, an end outside one,
    a solution left open)."""
    mask, opened = [], None
    for i, cell in enumerate(cells):
        starts, ends = _marks(cell, START), _marks(cell, END)
        if starts:
            if opened is not None:
                raise ValueError(
                    f"{name}: cell {i} opens a solution inside the one opened at cell {opened}"
                    f" (close it first with {END}\n```)"
                )
            opened = i
        inside = opened is not None
        if ends:
            if opened is None:
                raise ValueError(f"{name}: cell {i} closes a solution that was never opened")
            opened = None
        tags = cell.get("metadata", {}).get("tags", [])
        mask.append(inside or SOLUTION_TAG in tags)
    if opened is not None:
        raise ValueError(f"{name}: the solution opened at cell {opened} is never closed ({END})")
    return mask


def strip_solutions(notebook: dict, name: str = "notebook", note: bool = True) -> dict:
    """A copy of ``notebook`` (nbformat 4 as a dict) without its solutions, and with the
    student-edition note before its first exercise (``note=False``: without)."""
    cells = notebook["cells"]
    kept = [
        c for c, solution in zip(cells, solution_mask(cells, name), strict=True) if not solution
    ]
    result = copy.deepcopy({**notebook, "cells": []})
    result["cells"] = copy.deepcopy(kept)
    if note and len(kept) < len(cells):
        first = next((i for i, c in enumerate(kept) if _marks(c, "{exercise}")), len(kept))
        result["cells"].insert(
            first,
            {
                "cell_type": "markdown",
                "id": "student-edition-note",
                "metadata": {"tags": [NOTE_TAG]},
                "source": NOTE,
            },
        )
    return result


def skeleton_cells(notebook: dict) -> list[int]:
    """The indices of the "Write it yourself" skeletons: code cells holding ``...  # your
    code here`` outside every solution."""
    cells = notebook["cells"]
    return [
        i
        for i, (cell, solution) in enumerate(zip(cells, solution_mask(cells), strict=True))
        if cell["cell_type"] == "code" and not solution and SKELETON in _source(cell)
    ]


def dumps(notebook: dict) -> str:
    """The repository's notebook format (what every notebook edit writes)."""
    return json.dumps(notebook, indent=1, ensure_ascii=False) + "\n"


def student_config(config: dict, repository: str | None = None, branch: str = "student") -> dict:
    """The student book's ``_config.yml``: its launch buttons (Colab) and repository
    links point at ``repository`` (default: the course's) on ``branch``, solutions
    removed, and the title says which edition it is."""
    config = copy.deepcopy(config)
    config["title"] = f"{config['title']} (student edition)"
    repo = config.setdefault("repository", {})
    if repository:
        repo["url"] = repository.rstrip("/")
    repo["branch"] = branch
    sphinx = config.setdefault("sphinx", {})
    sphinx.setdefault("config", {})["course_solutions"] = "removed"
    # The stamps were written from the whole chapters' runs (write_edition): the copy,
    # whose code lacks the solutions, keeps them as they are.
    sphinx.get("local_extensions", {}).pop("stamp", None)
    return config


def write_edition(
    out: Path, repository: str | None = None, branch: str = "student", root: Path = ROOT
) -> dict[str, int]:
    """Write the student edition into ``out`` (created; its ``notebooks/`` and ``book/``
    replaced). Returns, per notebook, the number of cells removed."""
    out = Path(out).resolve()
    if out == root.resolve():
        raise ValueError(f"{out} is the repository itself: give another folder")
    out.mkdir(parents=True, exist_ok=True)
    config = yaml.safe_load((root / "_config.yml").read_text())
    old_url = config["repository"]["url"].rstrip("/")
    old_branch = config["repository"].get("branch", "main")
    config = student_config(config, repository, branch)
    new_url = config["repository"]["url"]
    header = (
        "# The student edition, generated by book/_ext/student.py: do not edit, regenerate it.\n"
    )
    stamp.write_text(out / "_config.yml", header + yaml.safe_dump(config, sort_keys=False))
    for name in BOOK_FILES:
        source, target = root / name, out / name
        if source.is_dir():
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(source, target, ignore=IGNORED)
        else:
            shutil.copy2(source, target)
    # The links to the notebooks (Kaggle's, in book/setup.md) open the student copy.
    old, new = f"{old_url}/blob/{old_branch}/notebooks/", f"{new_url}/blob/{branch}/notebooks/"
    for page in (out / "book").rglob("*.md"):
        text = page.read_text()
        if old in text:
            page.write_text(text.replace(old, new))
    runs = stamp.load_runs(root)  # each chapter's "Run time" stamp, as of now
    stamp.write_text(out / stamp.HOME, stamp.stamped_home((root / stamp.HOME).read_text(), root))
    removed = {}
    shutil.rmtree(out / "notebooks", ignore_errors=True)
    for path in sorted((root / "notebooks").glob("*.ipynb")):
        notebook = stamp.stamped_notebook(
            json.loads(path.read_text()), runs.get(path.stem, {}), path.name
        )
        student = strip_solutions(notebook, path.name)
        removed[path.name] = sum(solution_mask(notebook["cells"], path.name))
        stamp.write_text(out / "notebooks" / path.name, dumps(student))
    stamp.write_text(
        out / "README.md",
        "# Student edition\n\nGenerated from the course book by `book/_ext/student.py`: "
        "the notebooks without their worked solutions.\nBuild the site with "
        "`jupyter-book build .` (the `course` package installed).\n",
    )
    return removed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="the folder to write (e.g. _build/student)")
    parser.add_argument(
        "--repository",
        help="where the edition will be pushed (default: repository.url of _config.yml)",
    )
    parser.add_argument("--branch", default="student", help="its branch (default: student)")
    args = parser.parse_args(argv)
    try:
        removed = write_edition(args.out, args.repository, args.branch)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for name, count in removed.items():
        print(f"{name}: {count} solution cells removed")
    print(f"wrote the student edition to {args.out}; build it with: jupyter-book build {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
