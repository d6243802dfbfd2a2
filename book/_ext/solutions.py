"""How the site shows the exercises' worked solutions: one setting, ``course_solutions``.

- ``folded`` (the default): each solution is a dropdown, closed until the reader opens it;
- ``shown``: open, as part of the page;
- ``removed``: left out of the site; the notebooks' solution cells (from the
  ```` ```{solution-start} ```` markdown cell to the ```` ```{solution-end} ```` one) are
  dropped before the notebook is parsed, so they are not executed either
  (``book/_ext/student.py``'s :func:`strip_solutions`, which writes the student edition).

It is read from the environment variable ``COURSE_SOLUTIONS`` for one build
(``COURSE_SOLUTIONS=shown make book``), else from ``_config.yml``
(``sphinx: config: course_solutions:``), else ``folded``. Any other value stops the build
with a message that names the three.

A Sphinx extension (``_config.yml``, ``local_extensions``).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.errors import ConfigError
from sphinx.transforms import SphinxTransform

sys.path.insert(0, str(Path(__file__).resolve().parent))
import student  # noqa: E402  (book/_ext/student.py: what a solution is)

MODES = ("shown", "folded", "removed")
DEFAULT = "folded"
ENV = "COURSE_SOLUTIONS"


def mode(configured: str | None = None) -> str:
    """The mode of this build: ``$COURSE_SOLUTIONS``, else ``configured``, else folded.
    Raises ``ValueError`` for anything but shown, folded or removed."""
    value = (os.environ.get(ENV, "").strip() or configured or DEFAULT).lower()
    if value not in MODES:
        raise ValueError(
            f"course_solutions ({ENV} or _config.yml) is {value!r}: choose one of "
            f"{', '.join(MODES)}"
        )
    return value


def _check(app: Sphinx, config) -> None:
    try:
        config.course_solutions = mode(config.course_solutions)
    except ValueError as error:
        raise ConfigError(str(error)) from None


def _strip_notebook(app: Sphinx, docname: str, source: list[str]) -> None:
    """source-read: in ``removed`` mode, a notebook's solution cells go before myst-nb
    reads (and executes) it."""
    if app.config.course_solutions != "removed":
        return
    if not str(app.env.doc2path(docname)).endswith(".ipynb"):
        return
    notebook = json.loads(source[0])
    source[0] = json.dumps(student.strip_solutions(notebook, docname))


def _is_solution(node: nodes.Node) -> bool:
    return isinstance(node, nodes.Element) and type(node).__name__ in {
        "solution_node",
        "solution_start_node",
    }


class SolutionDisplay(SphinxTransform):
    """After sphinx-exercise has merged each gated solution into one node (priority 10):
    ``shown`` drops its ``dropdown`` class; ``removed`` drops the node (a solution that
    a Markdown page holds)."""

    default_priority = 11

    def apply(self, **kwargs) -> None:
        setting = self.config.course_solutions
        if setting == "folded":
            return
        for node in list(self.document.findall(_is_solution)):
            if setting == "removed":
                node.parent.remove(node)
            else:
                node["classes"] = [c for c in node["classes"] if c != "dropdown"]


def setup(app: Sphinx) -> dict:
    app.add_config_value("course_solutions", DEFAULT, "env")
    app.connect("config-inited", _check)
    app.connect("source-read", _strip_notebook)
    app.add_transform(SolutionDisplay)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
