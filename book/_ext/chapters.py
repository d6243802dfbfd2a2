"""The chapter registry, ``book/chapters.yml``, and the files generated from it.

One line per chapter (its notebook, title, part of the book and the modules it owns)
is the only place a chapter is declared; the registry also lists the shared floor.
From it this script writes, and the tests check:

- ``_toc.yml``: the book's table of contents, the chapters in their parts and one API
  page per chapter;
- ``book/api/<module>.md``: each chapter's API page (autodoc of its modules);
- the module maps and the floor's description in ``README.md``, ``book/setup.md`` and
  ``book/api/index.md``, and the Kaggle table of ``book/setup.md``, between
  ``<!-- chapters: NAME -->`` and ``<!-- /chapters: NAME -->`` markers.

``book/_ext/course_api.py`` (the architecture tests, the "Used in" lines of the API
reference) takes each chapter's modules from here too.

Usage::

    python book/_ext/chapters.py            # what is out of date (exit 1 if anything)
    python book/_ext/chapters.py --write    # rewrite the generated files
    python book/_ext/chapters.py --dry-run 08_topic course.topic
                                            # the files a new chapter touches
"""

from __future__ import annotations

import argparse
import re
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
REGISTRY = "book/chapters.yml"
REPO_URL = "https://github.com/deep-cnn-course/course-book"
#: Pages that are not chapters: where they go in the table of contents.
BEFORE_CHAPTERS = {"Getting started": ["book/setup"]}
REFERENCE = ["book/glossary", "book/bibliography"]
GENERATED_TABLES = {
    "README.md": ["module-map", "floor"],
    "book/setup.md": ["module-map", "floor", "kaggle"],
    "book/api/index.md": ["module-map", "floor"],
}


@dataclass(frozen=True)
class Chapter:
    """One line of the registry."""

    notebook: str  # "03_finetuning_hornets"
    title: str  # "Fine-tuning on hornets"
    part: str  # "Deep CNNs"
    modules: tuple[str, ...] = ()
    kaggle: str | None = None
    order: tuple[str, ...] = field(default=())  # a package's submodules, in reading order

    @property
    def number(self) -> int:
        return int(self.notebook[:2])

    @property
    def page(self) -> str | None:
        """The API page, ``book/api/<last part of the first module>``, if the chapter owns any."""
        return f"book/api/{self.modules[0].rsplit('.', 1)[-1]}" if self.modules else None


def _registry(root: Path) -> dict:
    return yaml.safe_load((root / REGISTRY).read_text())


def load_floor(root: Path = ROOT) -> dict[str, str]:
    """The shared floor: module -> what it holds, in the registry's order."""
    return dict(_registry(root)["floor"])


def load(root: Path = ROOT) -> list[Chapter]:
    """The registry's chapters, checked: numbered 0, 1, 2, ... in order, notebooks named
    ``NN_name``."""
    lines = _registry(root)["chapters"]
    chapters = [
        Chapter(
            **{
                **line,
                "modules": tuple(line.get("modules", ())),
                "order": tuple(line.get("order", ())),
            }
        )
        for line in lines
    ]
    for expected, chapter in enumerate(chapters):
        if not re.fullmatch(r"\d\d_\w+", chapter.notebook) or chapter.number != expected:
            raise ValueError(
                f"{REGISTRY}: chapter {expected} is {chapter.notebook!r}; notebooks are named "
                f"NN_topic and numbered 00, 01, ... in the registry's order"
            )
    return chapters


# ---------------------------------------------------------------------------
# What is generated
# ---------------------------------------------------------------------------


def module_map(chapters: list[Chapter], root: Path = ROOT) -> str:
    """The table: chapter, title, the modules it owns (a package with its submodules)."""
    rows = ["| chapter | notebook | its module(s) |", "|---|---|---|"]
    for c in chapters:
        if not c.modules:
            owned = "none: the shared floor only"
        else:
            owned = ", ".join(f"`{m}`" for m in c.modules)
            subs = [s.rsplit(".", 1)[-1] for s in _submodules(c, root) if s not in c.modules]
            if subs:
                owned += f" ({', '.join(subs)})"
        rows.append(f"| {c.number} | {c.title} | {owned} |")
    return "\n".join(rows)


def floor_paragraph(floor: dict[str, str]) -> str:
    """The sentence that names the floor's modules, wrapped at 88 columns."""
    items = [f"`{module}` ({what})" for module, what in floor.items()]
    text = "The shared floor, used by every chapter: " + ", ".join(items[:-1])
    text += f" and {items[-1]}."
    return textwrap.fill(text, width=88, break_long_words=False, break_on_hyphens=False)


def kaggle_table(chapters: list[Chapter]) -> str:
    rows = ["| chapter | open on Kaggle |", "|---|---|"]
    for c in chapters:
        title = f"{c.title} ({c.kaggle})" if c.kaggle else c.title
        url = f"{REPO_URL}/blob/main/notebooks/{c.notebook}.ipynb"
        rows.append(f"| {c.number} | [{title}](https://kaggle.com/kernels/welcome?src={url}) |")
    return "\n".join(rows)


def _submodules(chapter: Chapter, root: Path) -> list[str]:
    """The modules the API page documents: each module, or a package's submodules (in
    ``order`` when given, else alphabetical)."""
    found = []
    for module in chapter.modules:
        folder = root / "src" / Path(*module.split("."))
        if not folder.is_dir():
            found.append(module)
            continue
        names = sorted(p.stem for p in folder.glob("*.py") if not p.stem.startswith("__"))
        if chapter.order and sorted(chapter.order) != names:
            raise ValueError(
                f"{REGISTRY}: the order of chapter {chapter.number} lists {sorted(chapter.order)}"
                f" but {module} holds {names}"
            )
        found += [f"{module}.{name}" for name in (chapter.order or names)]
    return found


def api_page(chapter: Chapter, root: Path = ROOT) -> str:
    blocks = [
        f"<!-- Generated from {REGISTRY} by book/_ext/chapters.py: do not edit. -->",
        f"# {chapter.modules[0]} (chapter {chapter.number})",
        "",
    ]
    for module in _submodules(chapter, root):
        blocks += ["```{eval-rst}", f".. automodule:: {module}", "   :members:", "```", ""]
    return "\n".join(blocks)


def toc(chapters: list[Chapter]) -> str:
    lines = [
        f"# Generated from {REGISTRY} by book/_ext/chapters.py: edit the registry, then run",
        "# python book/_ext/chapters.py --write",
        "# (Jupyter Book's format: https://jupyterbook.org/en/stable/structure/toc.html)",
        "format: jb-book",
        "root: book/intro",
        "parts:",
    ]
    parts: dict[str, list[str]] = {}
    for c in chapters:
        parts.setdefault(c.part, list(BEFORE_CHAPTERS.get(c.part, []))).append(
            f"notebooks/{c.notebook}"
        )
    for caption, files in parts.items():
        lines += [f"  - caption: {caption}", "    chapters:"]
        lines += [f"      - file: {f}" for f in files]
    lines += ["  - caption: Reference", "    chapters:"]
    lines += [f"      - file: {f}" for f in REFERENCE]
    lines += [
        "      - file: book/api/index",
        "        sections:",
        "          - file: book/api/floor",
    ]
    lines += [f"          - file: {c.page}" for c in chapters if c.page]
    return "\n".join(lines) + "\n"


def _between(text: str, name: str, content: str, path: str) -> str:
    start, end = f"<!-- chapters: {name} -->", f"<!-- /chapters: {name} -->"
    pattern = re.compile(re.escape(start) + r"\n.*?" + re.escape(end), re.S)
    if not pattern.search(text):
        raise ValueError(f"{path}: no {start} ... {end} markers")
    return pattern.sub(lambda _: f"{start}\n{content}\n{end}", text)


def generated(chapters: list[Chapter], root: Path = ROOT) -> dict[str, str]:
    """Path (relative to ``root``) -> the content it must have."""
    files = {"_toc.yml": toc(chapters)}
    for c in chapters:
        if c.page:
            files[f"{c.page}.md"] = api_page(c, root)
    tables = {
        "module-map": module_map(chapters, root),
        "floor": floor_paragraph(load_floor(root)),
        "kaggle": kaggle_table(chapters),
    }
    for path, names in GENERATED_TABLES.items():
        text = (root / path).read_text()
        for name in names:
            text = _between(text, name, tables[name], path)
        files[path] = text
    return files


def _stale(root: Path) -> dict[str, str]:
    """The generated files whose content differs from what the registry gives: path ->
    the content it must have."""
    return {
        path: content
        for path, content in generated(load(root), root).items()
        if not (root / path).is_file() or (root / path).read_text() != content
    }


def out_of_date(root: Path = ROOT) -> list[str]:
    """The paths of the generated files that are out of date."""
    return list(_stale(root))


def write(root: Path = ROOT) -> list[str]:
    """Rewrite the out-of-date files; returns their paths."""
    stale = _stale(root)
    for path, content in stale.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(content)
    return list(stale)


# ---------------------------------------------------------------------------
# Adding a chapter, rehearsed
# ---------------------------------------------------------------------------

#: What a new chapter's author writes by hand, beside its registry line.
HAND_WRITTEN = (
    "notebooks/{notebook}.ipynb",
    "src/course/{name}.py",
    "tests/test_{name}.py",
    "book/intro.md",  # the home page's row: what the chapter teaches, its run times
    "book/_ext/thumbnails.py",  # the home page's small figure
    "benchmarks/RESULTS.md",  # the measured run times
)


def dry_run(notebook: str, module: str, root: Path = ROOT) -> dict[str, list[str]]:
    """The files that adding chapter ``notebook`` (owning ``module``) touches:
    ``{"by hand": [...], "generated": [...]}``. Runs the generator on a copy of the
    registry; writes nothing."""
    chapters = load(root)
    new = Chapter(notebook, notebook[3:].replace("_", " ").capitalize(), "New part", (module,))
    if new.number != len(chapters):
        raise ValueError(f"the next chapter is number {len(chapters)}, not {new.number}")
    name = module.rsplit(".", 1)[-1]
    before = generated(chapters, root)
    after = generated([*chapters, new], root)
    changed = sorted(p for p in after if before.get(p) != after[p])
    hand = [REGISTRY] + [p.format(notebook=notebook, name=name) for p in HAND_WRITTEN]
    return {"by hand": hand, "generated": changed}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help="rewrite the generated files")
    parser.add_argument(
        "--dry-run", nargs=2, metavar=("NOTEBOOK", "MODULE"), help="what a new chapter touches"
    )
    args = parser.parse_args(argv)
    if args.dry_run:
        for kind, paths in dry_run(*args.dry_run).items():
            print(f"{kind}:\n" + "\n".join(f"  {p}" for p in paths))
        return 0
    return write_or_report(args.write, write, out_of_date, "book/_ext/chapters.py")


def write_or_report(
    rewrite: bool, write: Callable[[], list[str]], out_of_date: Callable[[], list[str]], script: str
) -> int:
    """The command line of a generator of book/_ext (this one, stamp.py): with ``rewrite``,
    ``write()`` and say what it wrote; else say what is out of date, exit 1 when anything is."""
    if rewrite:
        print("\n".join(f"wrote {p}" for p in write()) or "everything up to date")
        return 0
    stale = out_of_date()
    print(
        "\n".join(f"out of date: {p}" for p in stale)
        + (f"\nrun: python {script} --write" if stale else "everything up to date")
    )
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
