"""Sphinx extension of the course book: a site that reads with no network.

- MathJax is served from the site: its files come from the PyPI package
  ``django-static-mathjax`` (the MathJax 3.2.2 distribution as files; a dev
  dependency), copied into ``_static/mathjax`` at build time; ``mathjax_path``
  in ``_config.yml`` points there. Only what the pages load is copied: the
  ``tex-chtml`` component, its fonts, the TeX extensions it loads on demand,
  and the menu and accessibility components (5 MB instead of 24).
- ``_static/course.css``: code lines wrap instead of running off the page.
- Scripts registered twice are dropped (sphinx-thebe's configuration), so pages
  load without a console error.
- The sidebar's expand/collapse toggles (``<summary>`` elements that hold only an
  icon) get a name that screen readers announce: axe-core counts a nameless
  ``<summary>`` as a serious violation (rule ``summary-name``).
- Bibliography entries are list items: docutils marks them ``doc-biblioentry``
  inside a ``role="list"``, which ARIA 1.2 no longer accepts as a list's child
  (axe: ``aria-required-children``, critical).

Widgets load no JavaScript (``nb_ipywidgets_js`` is empty): the explorers show
their default figure (``course.plots.explorer``).
"""

from __future__ import annotations

import shutil
from pathlib import Path

#: What tex-chtml.js loads, relative to MathJax's es5 folder.
MATHJAX_PARTS = (
    "tex-chtml.js",
    "output/chtml/fonts/woff-v2",
    "input/tex/extensions",
    "ui",
    "a11y",
    "sre",
    "adaptors",
)


def mathjax_source() -> Path:
    """The es5 folder of the MathJax distribution installed with ``django-static-mathjax``."""
    import mathjax

    return Path(mathjax.__file__).parent / "static" / "mathjax" / "es5"


def _copy_mathjax(app, exception) -> None:
    if exception is not None or app.builder.format != "html":
        return
    source, target = mathjax_source(), Path(app.outdir) / "_static" / "mathjax"
    for part in MATHJAX_PARTS:
        if (source / part).is_dir():
            shutil.copytree(source / part, target / part, dirs_exist_ok=True)
        else:
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source / part, target / part)


def _dedupe_scripts(app, pagename, templatename, context, doctree) -> None:
    """Drop scripts registered twice: sphinx-thebe adds its inline configuration twice
    under Sphinx 7, and the second ``const THEBE_JS_URL`` is an error on every page."""
    seen, unique = set(), []
    for script in context.get("script_files", []):
        attributes = getattr(script, "attributes", {})  # not the priority; None == ""
        key = (getattr(script, "filename", None) or "", tuple(sorted(attributes.items())))
        if key not in seen:
            seen.add(key)
            unique.append(script)
    context["script_files"] = unique


#: The accessible name of the sidebar's toggles.
TOGGLE_LABEL = "Show or hide the sections"


def _label_toc_toggles(app, pagename, templatename, context, doctree) -> None:
    """Wrap the theme's sidebar generator so that each icon-only ``<summary>`` is named."""
    generate = context.get("generate_toctree_html")
    if generate is None:
        return
    from markupsafe import Markup

    def labelled(*args, **kwargs):
        html = str(generate(*args, **kwargs))
        return Markup(html.replace("<summary>", f'<summary aria-label="{TOGGLE_LABEL}">'))

    context["generate_toctree_html"] = labelled


def _biblioentries_as_list_items(app, pagename, templatename, context, doctree) -> None:
    body = context.get("body")
    if body and 'role="doc-biblioentry"' in body:
        context["body"] = body.replace('role="doc-biblioentry"', 'role="listitem"')


def setup(app):
    app.connect("build-finished", _copy_mathjax)
    app.connect("html-page-context", _dedupe_scripts, priority=900)  # after sphinx-thebe
    app.connect("html-page-context", _label_toc_toggles, priority=900)  # after the theme
    app.connect("html-page-context", _biblioentries_as_list_items)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
