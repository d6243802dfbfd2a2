"""The book builds without a single Sphinx warning (notebooks not executed here)."""

import yaml

from tests.conftest import ROOT


def _toc_files(toc):
    files = [toc["root"]]
    for part in toc.get("parts", []):
        for chapter in part["chapters"]:
            files.append(chapter["file"])
            files += [s["file"] for s in chapter.get("sections", [])]
    return files


def test_toc_entries_exist():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    for name in _toc_files(toc):
        candidates = [ROOT / f"{name}{ext}" for ext in (".md", ".ipynb")]
        assert any(c.exists() for c in candidates), f"_toc.yml names {name}, which does not exist"


def test_book_builds_with_warnings_as_errors(built_book):
    html = built_book
    assert (html / "index.html").exists()
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    for name in _toc_files(toc):
        page = html / f"{name}.html"
        assert page.exists(), f"{page} was not built"
    chapter0 = (html / "notebooks" / "00_pytorch_basics.html").read_text()
    assert "colab.research.google.com" in chapter0  # launch button
    # No Binder button: the book needs torch and its data on more than Binder's 2 GB, and
    # no configuration of ours is tested under repo2docker (book/setup.md, "Where to run").
    assert "mybinder.org" not in chapter0
    # course_solutions: folded (book/_ext/solutions.py): every solution a closed dropdown
    chapter1 = (html / "notebooks" / "01_batch_norm.html").read_text()
    assert chapter1.count('class="solution dropdown admonition"') >= 5
    assert 'class="solution admonition"' not in chapter1
    # the stamps, from benchmarks/runs.json as the pages are read (book/_ext/stamp.py)
    assert "its last recorded runs" in chapter0 and "benchmarks/runs.json" in chapter0
    assert "Paszke" in (html / "book" / "bibliography.html").read_text()
    api = (html / "book" / "api" / "finetune.html").read_text()  # generated from docstrings
    assert "balanced_accuracy" in api and 'href="../../notebooks/03_finetuning_hornets.html"' in api


def test_the_executed_build_rejects_figures_without_alt_text(tmp_path):
    """book_build.figures_without_alt, which `make book-smoke` applies to the executed
    book: myst-nb's default alt (the file's path) counts as none."""
    from tests.book_build import figures_without_alt

    (tmp_path / "notebooks").mkdir()
    (tmp_path / "notebooks" / "01.html").write_text(
        '<img alt="Deep CNNs - Home" src="../_static/logo.svg">'
        '<img alt="Training curves: the loss falls." src="../_images/a1.png">'
        '<img alt="../_images/b2.png" src="../_images/b2.png">'
        '<img src="../_images/c3.png">'
    )
    assert figures_without_alt(tmp_path) == [
        "01.html: ../_images/b2.png",
        "01.html: ../_images/c3.png",
    ]


def test_every_figure_cell_has_a_text_alternative_and_no_other_cell_does():
    """The alt texts live in the cells' metadata (mystnb.image.alt): each is a sentence,
    not a file name; the executed build checks that no drawn figure lacks one."""
    import json

    count = 0
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        for cell in json.loads(path.read_text())["cells"]:
            alt = cell.get("metadata", {}).get("mystnb", {}).get("image", {}).get("alt")
            if alt is not None:
                count += 1
                assert cell["cell_type"] == "code" and len(alt) > 40 and alt.endswith("."), alt
    assert count >= 40
