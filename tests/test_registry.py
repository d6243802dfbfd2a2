"""The chapter registry (book/chapters.yml): everything generated from it is up to date,
and it agrees with the notebooks, the thumbnails, the home page and CONTRIBUTING's
walk-through of adding a chapter."""

import re
import shutil
import sys

import pytest
import yaml

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "book" / "_ext"))
import chapters  # noqa: E402
import thumbnails  # noqa: E402


def test_generated_files_are_up_to_date():
    assert chapters.out_of_date() == [], "run: python book/_ext/chapters.py --write"


def test_a_hand_edit_of_a_generated_table_is_caught_and_rewritten(tmp_path):
    for path in ["book/chapters.yml", "_toc.yml", *chapters.GENERATED_TABLES]:
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / path, tmp_path / path)
    shutil.copytree(ROOT / "src", tmp_path / "src")
    shutil.copytree(ROOT / "book" / "api", tmp_path / "book" / "api", dirs_exist_ok=True)
    readme = tmp_path / "README.md"
    readme.write_text(readme.read_text().replace("`course.norm`", "`course.batchnorm`"))
    assert chapters.out_of_date(tmp_path) == ["README.md"]
    assert chapters.write(tmp_path) == ["README.md"]
    assert readme.read_text() == (ROOT / "README.md").read_text()


def test_the_registry_lists_the_notebooks_in_order():
    on_disk = sorted(p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert [c.notebook for c in chapters.load()] == on_disk


def test_a_misnumbered_registry_is_refused(tmp_path):
    registry = yaml.safe_load((ROOT / "book" / "chapters.yml").read_text())
    lines = registry["chapters"]
    lines[1], lines[2] = lines[2], lines[1]
    (tmp_path / "book").mkdir()
    (tmp_path / "book" / "chapters.yml").write_text(yaml.safe_dump(registry))
    with pytest.raises(ValueError, match="chapter 1 is '02_residual_gradients'"):
        chapters.load(tmp_path)


@pytest.mark.parametrize("chapter", chapters.load(), ids=lambda c: c.notebook)
def test_every_chapter_has_a_thumbnail_and_a_home_page_row(chapter):
    assert callable(thumbnails.drawer(chapter.number))
    intro = (ROOT / "book" / "intro.md").read_text()
    row = f"![](_static/thumbs/ch{chapter.number}.png) | {{doc}}`{chapter.number}. "
    assert row in intro and f"<../notebooks/{chapter.notebook}>`" in intro


def test_a_chapter_without_a_thumbnail_is_named():
    with pytest.raises(LookupError, match="no ch99"):
        thumbnails.drawer(99)


def test_dry_run_of_adding_a_chapter_lists_the_files_it_touches():
    """What CONTRIBUTING's "Adding a chapter" walks through, computed by the generator."""
    touched = chapters.dry_run("08_segmentation", "course.segmentation")
    assert touched["by hand"] == [
        "book/chapters.yml",
        "notebooks/08_segmentation.ipynb",
        "src/course/segmentation.py",
        "tests/test_segmentation.py",
        "book/intro.md",
        "book/_ext/thumbnails.py",
        "benchmarks/RESULTS.md",
    ]
    assert touched["generated"] == [
        "README.md",
        "_toc.yml",
        "book/api/index.md",
        "book/api/segmentation.md",
        "book/setup.md",
    ]
    contributing = (ROOT / "CONTRIBUTING.md").read_text()
    for path in touched["by hand"] + touched["generated"]:
        named = path.replace("segmentation", "topic")
        assert named in contributing, f"CONTRIBUTING.md's walk-through does not name {named}"
    assert "python book/_ext/chapters.py --dry-run" in contributing


def test_a_new_chapter_must_be_the_next_number():
    with pytest.raises(ValueError, match="next chapter is number 8"):
        chapters.dry_run("09_segmentation", "course.segmentation")


def test_every_module_of_the_package_is_in_the_api_reference():
    documented = set()
    for page in (ROOT / "book" / "api").glob("*.md"):
        documented |= set(re.findall(r"^\.\. automodule:: (\S+)", page.read_text(), re.M))
    modules = {
        ".".join(f.relative_to(ROOT / "src").with_suffix("").parts)
        for f in (ROOT / "src" / "course").rglob("*.py")
        if not f.name.startswith("__")
    }
    assert modules - documented == set(), "add them to book/api/floor.md or the registry"
