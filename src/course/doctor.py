"""``python -m course doctor``: what this machine gives the course, and what to do next.

It prints the profile and the settings in force, the device (for CUDA: the card, its
compute capability and the mixed-precision dtype the training loop will pick), the
versions that matter, every data path with what is there (Pascal VOC 2007's trainval and
test checked by their content, as :func:`course.data.voc.download_voc` checks them), whether
the ImageNet weights are cached or can be downloaded, which of VOC's sources answer now
(a HEAD request each, a few seconds at most), and a list of next steps. Its output is
what the bug-report template asks a student to paste.

:func:`diagnose` gathers the facts (a dict, tested), :func:`advice` turns them into
next steps and :func:`render` into text.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from typing import Any

import torch

from course.config import SETTINGS, data_paths, profile
from course.data.download import probe
from course.data.hornets import CLASSES, find_hornet_images
from course.data.voc import VOC2007_SOURCES, voc2007_complete
from course.train import amp_dtype
from course.utils import get_device
from course.weights import imagenet_weights_available, imagenet_weights_path


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _platform() -> str:
    if "google.colab" in sys.modules or os.environ.get("COLAB_RELEASE_TAG"):
        return "colab"
    if os.environ.get("KAGGLE_KERNEL_RUN_TYPE"):
        return "kaggle"
    return "local"


def _device() -> dict[str, Any]:
    device = get_device()
    facts: dict[str, Any] = {
        "type": device.type,
        "cpu_threads": torch.get_num_threads(),
        # fit's precision by default (course.train.precision; COURSE_AMP changes it)
        "amp_dtype": str(amp_dtype(device)).removeprefix("torch."),
    }
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(0)
        facts.update(
            name=torch.cuda.get_device_name(0),
            capability=f"{major}.{minor}",
            count=torch.cuda.device_count(),
            memory_gib=round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1),
        )
    return facts


def _hornets(path) -> str:
    if not path.is_dir():
        return "not there"
    try:
        _, labels = find_hornet_images(path)
    except FileNotFoundError as error:
        return f"incomplete: {str(error).splitlines()[0]}"
    counts = ", ".join(f"{labels.count(i)} {name}" for i, name in enumerate(CLASSES))
    return f"{len(labels)} photos ({counts})"


#: Seconds a source has to answer doctor's HEAD request.
PROBE_TIMEOUT = 5.0


def _voc(path) -> dict[str, str]:
    """Per split of VOC 2007 ("trainval", "test"): "complete", "not there", or what is
    wrong (:func:`course.data.voc.voc2007_complete`, the content check of the download)."""
    if not path.is_dir():
        return {split: "not there" for split in VOC2007_SOURCES}
    return {
        split: voc2007_complete(path.parents[1], split) or "complete" for split in VOC2007_SOURCES
    }


def _sources(network: bool) -> dict[str, str]:
    """Every VOC 2007 source's URL -> "answers", or why not (all probed at once, each
    within :data:`PROBE_TIMEOUT`); ``{}`` without network."""
    if not network:
        return {}
    urls = list(dict.fromkeys(s.url for split in VOC2007_SOURCES.values() for s in split))
    with ThreadPoolExecutor(max_workers=len(urls)) as pool:
        answers = list(pool.map(lambda url: probe(url, PROBE_TIMEOUT), urls))
    return {url: answer or "answers" for url, answer in zip(urls, answers, strict=True)}


def diagnose(network: bool = True) -> dict[str, Any]:
    """The facts: platform, versions, profile, settings, device, data and weights.

    Args:
        network: check whether the weights' server answers (an HTTP HEAD request)
            when they are not cached, and which of VOC 2007's sources answer; ``False``
            reports "not checked".
    """
    paths = data_paths()
    weights = imagenet_weights_path()
    if weights.is_file():
        weights_state = "cached"
    elif not network:
        weights_state = "not checked"
    else:
        weights_state = "reachable" if imagenet_weights_available() else "unreachable"
    voc = _voc(paths["voc"])
    return {
        "platform": _platform(),
        "versions": {
            "python": platform.python_version(),
            "course": _version("course"),
            "torch": f"{torch.__version__} (CUDA {torch.version.cuda or 'none'})",
            "torchvision": _version("torchvision"),
            "numpy": _version("numpy"),
        },
        "profile": profile(),
        "settings": {name: os.environ[name] for name in SETTINGS if os.environ.get(name)},
        "device": _device(),
        "data": {
            "hornets": (paths["hornets"], _hornets(paths["hornets"])),
            "voc": (paths["voc"], "; ".join(f"{k} {v}" for k, v in voc.items())),
            "synthetic": (paths["synthetic"], "there" if paths["synthetic"].is_dir() else "-"),
            "cache": (paths["cache"], "there" if paths["cache"].is_dir() else "-"),
        },
        "weights": (weights, weights_state),
        "voc": voc,
        "sources": _sources(network),
    }


def advice(facts: dict[str, Any]) -> list[str]:
    """Next steps, most important first; one line that says so when there is nothing to do."""
    steps = []
    device, where = facts["device"], facts["platform"]
    if device["type"] != "cuda":
        if where == "colab":
            steps.append("No GPU: Runtime > Change runtime type > T4 GPU, then run again.")
        elif where == "kaggle":
            steps.append(
                "No GPU: Settings > Accelerator > GPU T4 x2 (chapter 6 then runs on two GPUs)."
            )
        else:
            steps.append(
                "No CUDA GPU: the chapters run their cpu profile (a few minutes each); "
                "for the gpu profile use Colab or Kaggle (book/setup.md)."
            )
        if facts["profile"] == "gpu":
            steps.append("COURSE_PROFILE=gpu without CUDA: unset it, or set it to cpu.")
    elif device["amp_dtype"] == "float16":
        steps.append(
            f"{device['name']} (compute capability {device['capability']}) has no native "
            "bfloat16: training uses float16 with loss scaling, as planned."
        )
    weights, state = facts["weights"]
    if state == "unreachable":
        steps.append(
            f"The ImageNet weights are not cached and cannot be downloaded: copy "
            f"{weights.name} to {weights} (chapters 3, 4 and 7 use a stand-in without it)."
        )
    elif state == "reachable":
        steps.append("The ImageNet weights (45 MB) will be downloaded at first use.")
    steps += _voc_advice(facts)
    hornets = facts["data"]["hornets"]
    if hornets[1] == "not there":
        steps.append(
            f"No hornet photos: chapters 3 and 4 use the synthetic stand-in; put photos in "
            f"{hornets[0]}/{{{','.join(CLASSES)}}}/ to use your own."
        )
    elif hornets[1].startswith("incomplete"):
        steps.append(f"Hornet photos {hornets[1]}")
    return steps or ["Nothing to do: every chapter can run its real path here."]


def _voc_advice(facts: dict[str, Any]) -> list[str]:
    voc, folder = facts["voc"], facts["data"]["voc"][0]
    answering = [url for url, state in facts["sources"].items() if state == "answers"]
    if not facts["sources"]:
        reach = ""
    elif answering:
        reach = f" ({len(answering)} of {len(facts['sources'])} sources answer now)"
    else:
        reach = (
            " (no source answers from here now: download one of the files listed under "
            f"'sources' on another machine and put it in {folder.parents[1]}; download_voc() "
            "then checks and installs it)"
        )
    if voc["trainval"] == "not there" and not folder.is_dir():
        return [
            "No Pascal VOC: chapter 7 uses its synthetic stand-in; for the real data run "
            f"course.data.voc.download_voc() (439 MB){reach}."
        ]
    steps = []
    if voc["trainval"] != "complete":
        steps.append(
            f"Pascal VOC 2007 trainval is incomplete ({voc['trainval']}): delete {folder} "
            f"and run course.data.voc.download_voc(){reach}."
        )
    elif voc["test"] == "not there":
        steps.append(
            "VOC 2007 test is not there: download_voc(image_set='test') adds it (431 MB) and "
            f"chapter 7 then reports its mAP on it{reach}."
        )
    elif voc["test"] != "complete":
        steps.append(
            f"Pascal VOC 2007 test is incomplete ({voc['test']}): delete {folder} and run "
            "download_voc() and download_voc(image_set='test')."
        )
    return steps


def render(facts: dict[str, Any]) -> str:
    """The report as text, for a terminal or an issue."""
    v, device = facts["versions"], facts["device"]
    if device["type"] == "cuda":
        shown = (
            f"cuda: {device['name']} x{device['count']}, compute capability "
            f"{device['capability']}, {device['memory_gib']} GiB; mixed precision "
            f"{device['amp_dtype']}"
        )
    else:
        shown = f"{device['type']}, {device['cpu_threads']} torch threads"
        if "amp_dtype" in device:
            shown += f"; training in {device['amp_dtype']}"
    settings = ", ".join(f"{k}={val}" for k, val in facts["settings"].items()) or "none set"
    lines = [
        "course doctor (paste all of this into an issue)",
        f"platform   {facts['platform']}, {platform.platform()}",
        f"versions   python {v['python']}, course {v['course']}, torch {v['torch']}, "
        f"torchvision {v['torchvision']}, numpy {v['numpy']}",
        f"profile    {facts['profile']}",
        f"settings   {settings}",
        f"device     {shown}",
        "data",
        *(f"  {name:10s} {path}: {state}" for name, (path, state) in facts["data"].items()),
        f"weights    ImageNet ResNet18 {facts['weights'][0]}: {facts['weights'][1]}",
        "sources    Pascal VOC 2007" + ("" if facts["sources"] else ": not checked"),
        *(f"  {url}: {state}" for url, state in facts["sources"].items()),
        "next steps",
        *(f"  - {step}" for step in advice(facts)),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m course doctor", description=__doc__)
    parser.add_argument(
        "--no-network",
        action="store_true",
        help="do not check the weights' server nor VOC's sources",
    )
    args = parser.parse_args(argv)
    print(render(diagnose(network=not args.no_network)))
    return 0
