"""The package's map, enforced: each chapter's code in its own modules, the shared
floor shared, and the "Used in chapter N" tags of the docstrings true.

- a notebook imports only its chapter's modules and the floor (config, utils, train,
  runstate, plots, data, models);
- no chapter module imports another chapter's module, and the floor imports none;
- a module that a notebook imports says so in its docstring ("Used in chapter 3.",
  "Used in chapters 0, 4 and 6.", "Used in every chapter."), and says only that.
"""

import ast
import importlib
import inspect
import json
import re
import sys

import pytest

from tests.conftest import ROOT

NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
#: The modules each chapter owns (a package owns its submodules).
CHAPTER_MODULES = {
    0: (),
    1: ("course.norm",),
    2: ("course.residual",),
    3: ("course.finetune",),
    4: ("course.adversarial",),
    5: ("course.checkpointing",),
    6: ("course.scaling",),
    7: ("course.detection",),
}
FLOOR = (
    "course",
    "course.config",
    "course.utils",
    "course.train",
    "course.runstate",
    "course.plots",
    "course.data",
    "course.models",
)


def _within(module: str, owners) -> bool:
    return any(module == o or module.startswith(o + ".") for o in owners)


def _chapter_of(module: str) -> int | None:
    for chapter, owned in CHAPTER_MODULES.items():
        if _within(module, owned):
            return chapter
    return None


def _is_floor(module: str) -> bool:
    return module == "course" or (_chapter_of(module) is None and _within(module, FLOOR[1:]))


def _defining_module(package: str, name: str) -> str:
    """The module that defines ``package.name`` (a function, class, constant or module)."""
    obj = getattr(importlib.import_module(package), name)
    if inspect.ismodule(obj):
        return obj.__name__
    module = getattr(obj, "__module__", None)
    if isinstance(module, str) and module.startswith("course"):
        return module
    holders = [
        m
        for m, mod in list(sys.modules.items())
        if m.startswith(package) and getattr(mod, name, None) is obj
    ]
    return max(holders, key=len)


def _imports(tree: ast.AST, package: str = "") -> set[str]:
    """``course`` modules that the code imports from (names resolved to where they live)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("course"):
            for alias in node.names:
                found.add(_defining_module(node.module, alias.name))
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("course")}
    return found


def _notebook_imports(path) -> set[str]:
    cells = json.loads(path.read_text())["cells"]
    code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    return _imports(ast.parse(code))


def _users() -> dict[str, set[int]]:
    users: dict[str, set[int]] = {}
    for path in NOTEBOOKS:
        for module in _notebook_imports(path):
            users.setdefault(module, set()).add(int(path.name[:2]))
    return users


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_imports_its_chapter_and_the_floor_only(path):
    chapter = int(path.name[:2])
    wrong = sorted(
        m for m in _notebook_imports(path) if not _is_floor(m) and _chapter_of(m) != chapter
    )
    assert not wrong, f"{path.name} imports other chapters' modules: {wrong}"


def _package_modules():
    for file in sorted((ROOT / "src" / "course").rglob("*.py")):
        parts = file.relative_to(ROOT / "src").with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        yield name, file


@pytest.mark.parametrize("name", [n for n, _ in _package_modules()])
def test_no_module_imports_another_chapters_module(name):
    file = dict(_package_modules())[name]
    own = _chapter_of(name)
    wrong = sorted(
        m
        for m in _imports(ast.parse(file.read_text()))
        if _chapter_of(m) is not None and _chapter_of(m) != own
    )
    assert not wrong, f"{name} ({'the floor' if own is None else f'chapter {own}'}) imports {wrong}"


def _tag(docstring: str) -> set[int] | None:
    match = re.search(
        r"Used in (every chapter|chapters? ([\d ,and]+))", " ".join(docstring.split())
    )
    if match is None:
        return None
    if match.group(1) == "every chapter":
        return set(CHAPTER_MODULES)
    return {int(n) for n in re.findall(r"\d+", match.group(2))}


def test_used_in_tags_say_which_notebooks_import_each_module():
    users = _users()
    wrong = []
    for name, file in _package_modules():
        docstring = ast.get_docstring(ast.parse(file.read_text())) or ""
        tag, used = _tag(docstring), users.get(name)
        if used is not None and tag != used:
            wrong.append(
                f"{name}: tagged {sorted(tag) if tag else None}, imported by {sorted(used)}"
            )
        elif used is None and tag is not None:
            wrong.append(f"{name}: tagged {sorted(tag)}, imported by no notebook")
    assert not wrong, "\n".join(wrong)
