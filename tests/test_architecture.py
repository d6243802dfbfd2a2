"""The package's map, enforced: each chapter's code in its own modules, the shared
floor shared, and what the docs and docstrings say about it true.

- a notebook imports only its chapter's modules and the floor (book/chapters.yml lists it;
  the package docstring names it too);
- no chapter module imports another chapter's module, and the floor imports none;
- ``course.models`` is a leaf: architectures only, importing no other part of the
  package (no training loop, no data loader, no download), as torchvision's models;
- a module that a notebook imports says so in its docstring ("Used in chapter 3.",
  "Used in chapters 0, 4 and 6.", "Used in every chapter."), and says only that;
- README.md, book/setup.md and the API reference give the same module map.

The map and the import analysis are book/_ext/course_api.py's (the book's API
reference uses them too).
"""

import ast
import re
import sys

import pytest

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "book" / "_ext"))
import course_api  # noqa: E402


def _modules() -> dict[str, object]:
    found = {}
    for file in sorted((ROOT / "src" / "course").rglob("*.py")):
        parts = file.relative_to(ROOT / "src").with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = file
    return found


@pytest.mark.parametrize("path", course_api.NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_imports_its_chapter_and_the_floor_only(path):
    chapter = int(path.name[:2])
    wrong = sorted(
        m
        for m, _ in course_api.notebook_imports(path)
        if not course_api.is_floor(m) and course_api.chapter_of(m) != chapter
    )
    assert not wrong, f"{path.name} imports other chapters' modules: {wrong}"


@pytest.mark.parametrize("name", sorted(_modules()))
def test_no_module_imports_another_chapters_module(name):
    own = course_api.chapter_of(name)
    imported = course_api.imports(ast.parse(_modules()[name].read_text()))
    wrong = sorted(m for m, _ in imported if course_api.chapter_of(m) not in (None, own))
    where = "the floor" if own is None else f"chapter {own}"
    assert not wrong, f"{name} ({where}) imports {wrong}"


@pytest.mark.parametrize("name", [m for m in sorted(_modules()) if m.startswith("course.models")])
def test_models_are_a_leaf(name):
    imported = course_api.imports(ast.parse(_modules()[name].read_text()))
    wrong = sorted(m for m, _ in imported if m.split(".")[:2] != ["course", "models"])
    assert not wrong, f"{name} imports {wrong}: course.models holds architectures only"


def test_one_module_decides_each_processs_device():
    """Only course.distributed reads LOCAL_RANK, joins a process group or picks the CUDA
    device: fit and chapter 6's torchrun programs ask it (process_device), so a
    single-process run and every torchrun process follow one rule."""
    pattern = re.compile(r"[\"']LOCAL_RANK[\"']|init_process_group\(|cuda\.set_device\(")
    wrong = sorted(
        name
        for name, file in _modules().items()
        if name != "course.distributed" and pattern.search(file.read_text())
    )
    assert not wrong, f"{wrong} decide a device themselves: use course.distributed"


def _tag(docstring: str) -> set[int] | None:
    text = " ".join(docstring.split())
    match = re.search(r"Used in (every chapter|chapters? ([\d ,and]+))", text)
    if match is None:
        return None
    if match.group(1) == "every chapter":
        return set(course_api.CHAPTER_MODULES)
    return {int(n) for n in re.findall(r"\d+", match.group(2))}


def test_used_in_tags_say_which_notebooks_import_each_module():
    users: dict[str, set[int]] = {}
    for (module, _), chapters in course_api.uses().items():
        users.setdefault(module, set()).update(chapters)
    wrong = []
    for name, file in _modules().items():
        tag = _tag(ast.get_docstring(ast.parse(file.read_text())) or "")
        used = users.get(name)
        if tag != used and (used is not None or tag is not None):
            wrong.append(f"{name}: tagged {sorted(tag or [])}, imported by {sorted(used or [])}")
    assert not wrong, "\n".join(wrong)


def _map_lines(text: str) -> dict[int, str]:
    """Chapter number -> the line of a module-map table that starts with it."""
    return {int(m.group(1)): m.group(0) for m in re.finditer(r"^\| *(\d)\b[^\n]*", text, re.M)}


@pytest.mark.parametrize("doc", ["README.md", "book/setup.md", "book/api/index.md"])
def test_docs_show_the_same_module_map(doc):
    lines = _map_lines((ROOT / doc).read_text())
    for chapter, modules in course_api.CHAPTER_MODULES.items():
        assert chapter in lines, f"{doc}: no module-map line for chapter {chapter}"
        for module in modules:
            assert f"`{module}`" in lines[chapter], f"{doc}: chapter {chapter} without {module}"
        named = set(re.findall(r"`(course\.[\w.]+)`", lines[chapter]))
        others = {m for m in named if course_api.chapter_of(m) not in (None, chapter)}
        assert not others, f"{doc}: chapter {chapter} names {others}"
    for module in course_api.FLOOR:
        assert f"`{module}`" in (ROOT / doc).read_text(), f"{doc} does not name {module}"


def test_package_docstring_names_the_whole_floor():
    """``course.__init__``'s docstring lists the floor as the registry does, no more, no less
    (it once named five of its eleven modules)."""
    import course

    named = set(re.findall(r"`(\w+)`", course.__doc__.split("Each\nchapter")[0]))
    assert named == {m.removeprefix("course.") for m in course_api.FLOOR}


def test_check_names_only_the_graders_that_return_a_report():
    """``check_*`` is the name of a write-it-yourself grader, which returns a Report; a
    function that raises on bad input is ``validate_*`` (a student must not take one for
    the other). Methods are left out: ``_check_input_dim`` is torch's name, kept so that
    course.norm's layers stay drop-in."""
    wrong = []
    for name, file in _modules().items():
        for node in ast.parse(file.read_text()).body:  # module-level functions only
            if isinstance(node, ast.FunctionDef) and node.name.lstrip("_").startswith("check_"):
                returns = ast.unparse(node.returns) if node.returns is not None else None
                if returns != "Report":
                    wrong.append(f"{name}.{node.name} -> {returns}")
    assert not wrong, f"check_* that return no Report (call them validate_*): {wrong}"
