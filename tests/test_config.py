import pytest
import torch

from course.config import PROFILES, pick, profile


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
