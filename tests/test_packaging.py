"""The install files agree with each other."""

import re

import yaml

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
