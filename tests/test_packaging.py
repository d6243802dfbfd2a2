"""The install files agree with each other."""

import re

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

from tests.conftest import ROOT


def _pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_environment_yml_installs_the_package_with_dev_extras():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    deps = env["dependencies"]
    python = next(d for d in deps if isinstance(d, str) and d.startswith("python"))
    assert python.replace("python", "") == _pyproject()["project"]["requires-python"]
    pip = next(d["pip"] for d in deps if isinstance(d, dict))
    assert pip == ["-e .[dev]"]
    assert "dev" in _pyproject()["project"]["optional-dependencies"]


def test_torch_is_a_range_not_a_pin():
    deps = _pyproject()["project"]["dependencies"]
    for name in ("torch", "torchvision"):
        spec = next(d for d in deps if re.match(rf"{name}\b", d) and not d.startswith(f"{name}v"))
        assert "==" not in spec and ">=" in spec, spec


def test_makefile_has_the_three_commands_and_ci_calls_make_test():
    makefile = (ROOT / "Makefile").read_text()
    for target in ("test:", "book:", "lab:"):
        assert re.search(rf"^{target}", makefile, re.M), target
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    readme = (ROOT / "README.md").read_text().splitlines()
    first_commands = [line for line in readme[:10] if line.startswith("make ")]
    assert [c.split()[1] for c in first_commands] == ["book", "test"]


def _colab_versions() -> dict[str, str]:
    versions = {}
    for line in (ROOT / "tests" / "colab" / "pip-freeze.gpu.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==", 1)
            versions[canonicalize_name(name)] = version.strip()
    return versions


def test_colab_ships_versions_inside_every_runtime_range():
    """Installing `course` on Colab changes nothing Colab ships (see tests/colab/README.md)."""
    colab = _colab_versions()
    assert colab["torch"].startswith("2.11") and colab["ipywidgets"] == "7.7.1"  # the snapshot
    outside = []
    for spec in _pyproject()["project"]["dependencies"]:
        requirement = Requirement(spec)
        name = canonicalize_name(requirement.name)
        assert name in colab, f"{name} is not preinstalled on Colab: it would be installed"
        version = Version(colab[name]).public  # 2.11.0+cu128 -> 2.11.0
        if not requirement.specifier.contains(version, prereleases=True):
            outside.append(f"{spec} excludes Colab's {name} {colab[name]}")
    assert not outside, outside
    python = "3.13"  # tests/colab/README.md
    assert SpecifierSet(_pyproject()["project"]["requires-python"]).contains(python)


def test_the_oldest_torch_allowed_is_the_one_ci_tests():
    """torch's and torchvision's lower bounds are Colab's versions, which `make test-colab`
    installs: a bound below them would promise what no run has checked."""
    colab = _colab_versions()
    for name in ("torch", "torchvision"):
        spec = next(
            Requirement(d)
            for d in _pyproject()["project"]["dependencies"]
            if canonicalize_name(Requirement(d).name) == name
        )
        lower = next(s.version for s in spec.specifier if s.operator == ">=")
        assert Version(lower).release[:2] == Version(colab[name]).release[:2], (name, lower)


def test_one_version_in_pyproject_the_package_and_the_changelog():
    """The edition (CHANGELOG.md says how to release one); the notebooks' install cells
    are checked in tests/test_notebooks_static.py."""
    import course

    version = _pyproject()["project"]["version"]
    assert course.__version__ == version
    changelog = (ROOT / "CHANGELOG.md").read_text()
    # changes not released yet sit under "## Unreleased", above the last release
    headings = re.findall(r"^## (\S+)", changelog, re.M)
    released = [h for h in headings if h != "Unreleased"]
    assert headings[:1] in (["Unreleased"], [version]), "first: Unreleased or the version"
    assert released and released[0] == version, "add a CHANGELOG entry for the version"


def _constraints() -> dict[str, str]:
    lines = (ROOT / "book" / "constraints.txt").read_text().splitlines()
    pins = [line.split("==") for line in lines if line and not line.startswith("#")]
    return {canonicalize_name(name): version for name, version in pins}


def test_the_book_stack_is_frozen_and_installed_as_frozen():
    """`make install` applies book/constraints.txt (Jupyter Book 1, Sphinx 7): this
    environment has exactly those versions, and the file pins every package of the
    book's build that the dev extras name."""
    from importlib import metadata

    pins = _constraints()
    assert Version(pins["jupyter-book"]).release[:3] == (1, 0, 4)
    assert Version(pins["sphinx"]).major == 7
    assert "-c book/constraints.txt -e '.[dev]'" in (ROOT / "Makefile").read_text()
    dev = [Requirement(d).name for d in _pyproject()["project"]["optional-dependencies"]["dev"]]
    for name in ("jupyter-book", "sphinx-exercise", "django-static-mathjax"):
        assert name in dev and canonicalize_name(name) in pins, name
    try:
        metadata.version("jupyter-book")
    except metadata.PackageNotFoundError:
        pytest.skip("the book's tools are not installed here (make test-colab)")
    wrong = {
        name: (version, metadata.version(name))
        for name, version in pins.items()
        if metadata.version(name) != version
    }
    assert not wrong, f"installed otherwise than book/constraints.txt: {wrong} (make install)"
