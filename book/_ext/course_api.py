"""The course's module map, and which chapters use which function.

One source of truth for three readers:

- the book: as a Sphinx extension (``_config.yml``, ``local_extensions``), it
  appends to every function and class that autodoc documents a line "Used in"
  with links to the chapters whose notebooks import it;
- the tests (``tests/test_architecture.py``): :data:`CHAPTER_MODULES` and
  :func:`notebook_imports` check the architecture and the docs' module map;
- a maintainer: ``python book/_ext/course_api.py`` prints who uses what.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import chapters  # noqa: E402  (book/_ext/chapters.py: the registry)

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))

#: The modules each chapter owns (a package owns its submodules): book/chapters.yml's.
CHAPTER_MODULES: dict[int, tuple[str, ...]] = {c.number: c.modules for c in chapters.load()}
#: The shared floor, what every chapter may import: book/chapters.yml's too.
FLOOR: tuple[str, ...] = tuple(chapters.load_floor())


def _within(module: str, owners) -> bool:
    return any(module == o or module.startswith(o + ".") for o in owners)


def chapter_of(module: str) -> int | None:
    """The chapter that owns ``module``, or None (the floor, or not the package)."""
    for chapter, owned in CHAPTER_MODULES.items():
        if _within(module, owned):
            return chapter
    return None


def is_floor(module: str) -> bool:
    return module == "course" or (chapter_of(module) is None and _within(module, FLOOR))


def defining_module(package: str, name: str) -> str:
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


def imports(tree: ast.AST) -> set[tuple[str, str | None]]:
    """``(module, name)`` of every ``course`` name the code imports (``name`` None for
    ``import course.x``), each name resolved to the module that defines it."""
    found: set[tuple[str, str | None]] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("course"):
            for alias in node.names:
                found.add((defining_module(node.module, alias.name), alias.name))
        elif isinstance(node, ast.Import):
            found |= {(a.name, None) for a in node.names if a.name.startswith("course")}
    return found


def notebook_imports(path: Path) -> set[tuple[str, str | None]]:
    cells = json.loads(path.read_text())["cells"]
    code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    return imports(ast.parse(code))


def uses() -> dict[tuple[str, str | None], set[int]]:
    """``(module, name)`` -> the chapters whose notebooks import it."""
    found: dict[tuple[str, str | None], set[int]] = {}
    for path in NOTEBOOKS:
        for key in notebook_imports(path):
            found.setdefault(key, set()).add(int(path.name[:2]))
    return found


def _add_used_in(app, what, name, obj, options, lines) -> None:
    if what not in ("function", "class"):
        return
    module, qualname = getattr(obj, "__module__", ""), getattr(obj, "__qualname__", "")
    chapters = app.env.course_uses.get((module, qualname))
    if chapters:
        stems = {int(p.name[:2]): p.stem for p in NOTEBOOKS}
        links = ", ".join(f":doc:`chapter {n} </notebooks/{stems[n]}>`" for n in sorted(chapters))
        lines.extend(["", f"**Used in** {links}."])


def _collect(app) -> None:
    app.env.course_uses = uses()


def setup(app):
    app.connect("builder-inited", _collect)
    app.connect("autodoc-process-docstring", _add_used_in)
    return {"parallel_read_safe": True, "parallel_write_safe": True}


if __name__ == "__main__":
    for (module, name), chapters in sorted(uses().items(), key=lambda kv: kv[0][0] + str(kv[0][1])):
        print(f"{module}.{name or ''}: chapters {sorted(chapters)}")
