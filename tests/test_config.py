import re

import pytest
import torch

from course.config import PROFILES, pick, profile
from tests.conftest import ROOT


@pytest.mark.parametrize("name", PROFILES)
def test_profile_from_environment(monkeypatch, name):
    monkeypatch.setenv("COURSE_PROFILE", name)
    assert profile() == name
    assert pick(smoke="s", cpu="c", gpu="g") == name[0]


def test_profile_is_case_and_space_insensitive(monkeypatch):
    monkeypatch.setenv("COURSE_PROFILE", " Smoke ")
    assert profile() == "smoke"


def test_unknown_profile_lists_the_valid_ones(monkeypatch):
    monkeypatch.setenv("COURSE_PROFILE", "fast")
    with pytest.raises(ValueError) as err:
        profile()
    message = str(err.value)
    assert "'fast'" in message
    for name in PROFILES:
        assert name in message
    with pytest.raises(ValueError):
        pick(smoke=1, cpu=2, gpu=3)


@pytest.mark.parametrize(("cuda", "expected"), [(True, "gpu"), (False, "cpu")])
def test_profile_follows_the_hardware_when_unset(monkeypatch, cuda, expected):
    monkeypatch.delenv("COURSE_PROFILE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    assert profile() == expected


def test_pick_needs_every_profile():
    with pytest.raises(TypeError):
        pick(smoke=1, cpu=2)  # type: ignore[call-arg]


def test_docs_list_every_setting_and_the_paths_the_package_uses(tmp_path, monkeypatch):
    from course.config import SETTINGS, data_paths

    monkeypatch.setenv("COURSE_DATA", str(tmp_path))
    setup = (ROOT / "book" / "setup.md").read_text()
    readme = (ROOT / "README.md").read_text()
    for name in SETTINGS:
        assert f"| `{name}` |" in setup, f"book/setup.md does not list {name}"
    paths = data_paths()
    for key, doc_form in (
        ("hornets", "hornets/"),
        ("voc", "VOCdevkit/VOC2007/"),
        ("synthetic", "synthetic/"),
    ):
        assert f"{paths[key].relative_to(tmp_path).as_posix()}/" == doc_form
        assert f"$COURSE_DATA/{doc_form}" in readme, (key, "README.md")
        assert doc_form.split("/")[0] + "/" in setup, (key, "book/setup.md")


def test_only_course_config_reads_the_settings():
    pattern = re.compile(r"""(environ(\.get)?\s*[\(\[]|getenv\()\s*["'](COURSE_|TORCH_HOME|XDG_)""")
    readers = [
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / "src" / "course").rglob("*.py")
        if pattern.search(path.read_text()) and path.name != "config.py"
    ]
    assert readers == []


def test_data_folder_is_the_same_from_the_root_and_from_notebooks(monkeypatch, tmp_path):
    from course.config import data_root

    monkeypatch.delenv("COURSE_DATA", raising=False)
    monkeypatch.chdir(ROOT / "notebooks")  # the kernel's folder under `make lab`
    from_notebooks = data_root()
    monkeypatch.chdir(ROOT)
    assert data_root() == from_notebooks == ROOT / "data"
    monkeypatch.chdir(tmp_path)  # outside a clone (Colab): ./data
    assert data_root() == tmp_path.resolve() / "data"
    monkeypatch.setenv("COURSE_DATA", "relative/folder")
    assert data_root() == tmp_path.resolve() / "relative" / "folder"


def test_course_seed_shifts_every_draw_and_keeps_draws_apart(monkeypatch):
    from course.config import run_seed
    from course.data import make_shapes
    from course.utils import seed_everything

    monkeypatch.delenv("COURSE_SEED", raising=False)
    assert [run_seed(k) for k in (0, 1, 100)] == [0, 1, 100]  # unset: the book's seeds
    book = make_shapes(8, image_size=16, seed=0).tensors[0]
    first = seed_everything(0)
    book_weights = torch.nn.Linear(3, 3).weight.detach().clone()

    monkeypatch.setenv("COURSE_SEED", "1")
    shifted = {run_seed(k) for k in (0, 1, 2, 100, 101)}
    assert shifted.isdisjoint({0, 1, 2, 100, 101}) and len(shifted) == 5
    assert not torch.equal(make_shapes(8, image_size=16, seed=0).tensors[0], book)
    other = seed_everything(0)
    assert not torch.equal(torch.nn.Linear(3, 3).weight, book_weights)
    assert torch.rand(1, generator=other) != torch.rand(1, generator=first)


def test_a_course_seed_that_is_not_an_integer_says_what_to_set(monkeypatch):
    from course.config import run_seed

    monkeypatch.setenv("COURSE_SEED", "one")
    with pytest.raises(ValueError, match="COURSE_SEED='one' is not an integer"):
        run_seed(0)


def test_course_amp_is_read_here_and_the_old_setting_says_what_replaced_it(monkeypatch):
    from course.config import SETTINGS, amp_setting

    monkeypatch.delenv("COURSE_AMP_DTYPE", raising=False)
    monkeypatch.delenv("COURSE_AMP", raising=False)
    assert amp_setting() is None
    monkeypatch.setenv("COURSE_AMP", " FP16 ")
    assert amp_setting() == "fp16"
    monkeypatch.setenv("COURSE_AMP", "half")
    with pytest.raises(ValueError, match="'half' is not a precision; use fp16, bf16, off"):
        amp_setting()
    monkeypatch.delenv("COURSE_AMP")
    monkeypatch.setenv("COURSE_AMP_DTYPE", "bfloat16")
    with pytest.raises(ValueError, match="Unset COURSE_AMP_DTYPE and set COURSE_AMP=bf16"):
        amp_setting()
    assert "COURSE_AMP" in SETTINGS and "COURSE_AMP_DTYPE" not in SETTINGS


def test_course_max_steps_caps_and_bad_values_say_what_to_set(monkeypatch):
    from course.config import SETTINGS, capped, max_steps

    monkeypatch.delenv("COURSE_MAX_STEPS", raising=False)
    assert max_steps() is None and capped(500) == 500
    monkeypatch.setenv("COURSE_MAX_STEPS", " 3 ")
    assert max_steps() == 3 and capped(500) == 3 and capped(2) == 2
    for bad in ("0", "-2", "two", "1.5"):
        monkeypatch.setenv("COURSE_MAX_STEPS", bad)
        with pytest.raises(ValueError, match=f"COURSE_MAX_STEPS='{bad}' is not a positive"):
            max_steps()
    assert "COURSE_MAX_STEPS" in SETTINGS
