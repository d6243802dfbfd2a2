"""``python -m course doctor`` (issue #31): on a CPU, on a (patched) T4 and an A100, with
data and without, online and offline."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from course import doctor
from course.data.voc import VOC2007_SOURCES, VOC2007_SPLIT_SIZES, make_synthetic_voc
from course.weights import imagenet_weights_path
from tests.real_formats import stage_voc2007


@pytest.fixture()
def fresh(tmp_path, monkeypatch):
    """An empty data folder and torch cache, no CUDA, not on Colab or Kaggle."""
    monkeypatch.setenv("COURSE_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("COURSE_PROFILE", raising=False)
    for name in ("COLAB_RELEASE_TAG", "KAGGLE_KERNEL_RUN_TYPE", "COURSE_AMP"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    return tmp_path


def _cuda(monkeypatch, name: str, capability: tuple[int, int], count: int = 1) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    props = SimpleNamespace(total_memory=15 * 2**30)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device=None: props)


def test_a_fresh_cpu_machine_offline(fresh, web):
    facts = doctor.diagnose()
    assert facts["device"]["type"] == "cpu" and facts["profile"] == "cpu"
    assert facts["weights"] == (imagenet_weights_path(), "unreachable")
    assert ("HEAD", "https://download.pytorch.org/models/resnet18-f37072fd.pth") in web.requests
    assert facts["data"]["hornets"][1] == "not there"
    assert facts["voc"] == {"trainval": "not there", "test": "not there"}
    urls = {s.url for split in VOC2007_SOURCES.values() for s in split}
    assert set(facts["sources"]) == urls and all(
        state.startswith("no answer") for state in facts["sources"].values()
    )
    assert {("HEAD", url) for url in urls} <= set(web.requests)
    text = doctor.render(facts)
    steps = text.split("next steps")[1]
    assert "No CUDA GPU" in steps
    assert f"copy resnet18-f37072fd.pth to {imagenet_weights_path()}" in steps
    assert "download_voc()" in steps and "No hornet photos" in steps
    assert "no source answers from here now" in steps and str(fresh / "data") in steps
    assert str(fresh / "data" / "hornets") in text
    for url in urls:
        assert f"  {url}: no answer" in text


def test_a_t4_uses_float16_and_an_a100_bfloat16(fresh, monkeypatch, web):
    _cuda(monkeypatch, "Tesla T4", (7, 5), count=2)
    facts = doctor.diagnose()
    assert facts["profile"] == "gpu"
    assert facts["device"] == {
        "type": "cuda",
        "cpu_threads": torch.get_num_threads(),
        "name": "Tesla T4",
        "capability": "7.5",
        "count": 2,
        "memory_gib": 15.0,
        "amp_dtype": "float16",
    }
    text = doctor.render(facts)
    assert "cuda: Tesla T4 x2, compute capability 7.5, 15.0 GiB; mixed precision float16" in text
    assert "no native bfloat16" in text and "No CUDA GPU" not in text
    _cuda(monkeypatch, "NVIDIA A100-SXM4-40GB", (8, 0))
    assert doctor.diagnose(network=False)["device"]["amp_dtype"] == "bfloat16"
    monkeypatch.setenv("COURSE_AMP", "fp16")  # the setting wins, and is shown
    facts = doctor.diagnose(network=False)
    assert facts["device"]["amp_dtype"] == "float16"
    assert "COURSE_AMP=fp16" in doctor.render(facts)


def test_the_cpu_shows_its_precision_and_course_amp_changes_it(fresh, monkeypatch):
    """A CPU trains in float32 by default; COURSE_AMP=fp16 gives it the T4's numerics."""
    assert "training in float32" in doctor.render(doctor.diagnose(network=False))
    monkeypatch.setenv("COURSE_AMP", "fp16")
    assert "training in float16" in doctor.render(doctor.diagnose(network=False))


def test_colab_and_kaggle_without_a_gpu_say_which_menu(fresh, monkeypatch):
    monkeypatch.setenv("COLAB_RELEASE_TAG", "release-colab-20261201")
    assert "Runtime > Change runtime type" in doctor.advice(doctor.diagnose(network=False))[0]
    monkeypatch.delenv("COLAB_RELEASE_TAG")
    monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Interactive")
    assert "GPU T4 x2" in doctor.advice(doctor.diagnose(network=False))[0]
    monkeypatch.setenv("COURSE_PROFILE", "gpu")
    assert any("COURSE_PROFILE=gpu without CUDA" in s for s in doctor.advice(doctor.diagnose()))


def test_data_and_weights_that_are_there(fresh, web, monkeypatch):
    root = fresh / "data"
    monkeypatch.setitem(VOC2007_SPLIT_SIZES, "trainval", 8)  # the staged tree's
    monkeypatch.setitem(VOC2007_SPLIT_SIZES, "test", 4)
    stage_voc2007(root, num_train=5, num_val=3, num_test=4)
    for source in VOC2007_SOURCES["trainval"][:1] + VOC2007_SOURCES["test"][1:2]:
        web[source.url] = b""
    for cls, n in (("absence", 2), ("presence", 3)):
        (root / "hornets" / cls).mkdir(parents=True)
        for i in range(n):
            (root / "hornets" / cls / f"{i}.jpg").write_bytes(b"jpeg")
    path = imagenet_weights_path()
    path.parent.mkdir(parents=True)
    path.write_bytes(b"weights")
    facts = doctor.diagnose()
    assert facts["data"]["voc"][1] == "trainval complete; test complete"
    assert facts["data"]["hornets"][1] == "5 photos (2 absence, 3 presence)"
    assert facts["weights"][1] == "cached"  # no request for the weights when cached
    assert ("HEAD", "https://download.pytorch.org/models/resnet18-f37072fd.pth") not in (
        web.requests
    )
    answering = [url for url, state in facts["sources"].items() if state == "answers"]
    assert answering == [VOC2007_SOURCES["trainval"][0].url, VOC2007_SOURCES["test"][1].url]
    steps = doctor.advice(facts)
    assert not any("VOC" in s or "hornet" in s or "weights" in s for s in steps), steps
    # the test split missing: named, with the call that adds it
    (root / "VOCdevkit" / "VOC2007" / "ImageSets" / "Main" / "test.txt").unlink()
    facts = doctor.diagnose()
    assert facts["voc"] == {"trainval": "complete", "test": "not there"}
    assert any(
        "download_voc(image_set='test')" in s and "2 of 5 sources" in s
        for s in doctor.advice(facts)
    )


def test_a_tree_that_is_not_voc2007_as_released_is_named(fresh):
    """The default split sizes are VOC 2007's: a synthetic or partial tree is not taken
    for the real data set."""
    make_synthetic_voc(fresh / "data", num_train=5, num_val=3, size=32, progress=False)
    facts = doctor.diagnose(network=False)
    assert facts["voc"]["trainval"] == (
        "ImageSets/Main/trainval.txt lists 8 ids, not VOC 2007's 5011"
    )
    assert facts["sources"] == {} and "sources    Pascal VOC 2007: not checked" in (
        doctor.render(facts)
    )
    steps = "\n".join(doctor.advice(facts))
    assert "trainval is incomplete (ImageSets/Main/trainval.txt lists 8 ids" in steps


def test_broken_data_is_named(fresh, web):
    (fresh / "data" / "hornets" / "presence").mkdir(parents=True)
    (fresh / "data" / "VOCdevkit" / "VOC2007" / "JPEGImages").mkdir(parents=True)
    web["https://download.pytorch.org/models/resnet18-f37072fd.pth"] = b""
    facts = doctor.diagnose()
    assert facts["weights"][1] == "reachable"
    steps = "\n".join(doctor.advice(facts))
    assert "will be downloaded at first use" in steps
    assert "Pascal VOC 2007 trainval is incomplete (not there)" in steps
    assert "Hornet photos incomplete: No folder" in steps and "absence" in steps


def test_the_command_line(fresh, tmp_path):
    env = {
        "PATH": "/usr/bin:/bin",
        "COURSE_DATA": str(tmp_path / "data"),
        "TORCH_HOME": str(tmp_path / "torch"),
        "HOME": str(tmp_path),
        "CUDA_VISIBLE_DEVICES": "",
    }
    run = subprocess.run(
        [sys.executable, "-m", "course", "doctor", "--no-network"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).parent,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("course doctor")
    assert "resnet18-f37072fd.pth: not checked" in run.stdout
    assert "next steps" in run.stdout
    bad = subprocess.run([sys.executable, "-m", "course"], capture_output=True, text=True)
    assert bad.returncode == 2 and "python -m course doctor" in bad.stderr
