"""The real path, rehearsed offline: chapters 3, 4 and 7 on real formats.

A student on Colab has ImageNet weights in torchvision's cache, an instructor
has photos and Pascal VOC on disk. :mod:`tests.real_formats` stages all of it
in those formats (no network); each chapter then runs under the smoke profile
with ``COURSE_DATA`` and ``TORCH_HOME`` pointing there, and must say that it
took the real branch, at the sizes that branch uses, with every assert of the
notebook passing (but those of the sections on the synthetic shapes, and of the
exercises those whose solution does not branch on the real data: the notebook pass
runs them). ``make test`` runs it; ``--durations`` shows each chapter's time.
"""

import json
import os
import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from course.data.download import Source, md5_of
from course.data.voc import VOC2007_SOURCES, download_voc
from tests.book_build import ipc_kernel_manager
from tests.conftest import ROOT
from tests.real_formats import stage, staged_split_sizes

#: What each chapter must print when it runs on the staged data.
EXPECTED = {
    "03_finetuning_hornets": [
        r"real photos from .*/data/hornets",
        r"weights: ImageNet; images at 64 px",
        r"ImageNet-1k weights \(torchvision, .*/torch/hub/checkpoints/resnet18-f37072fd\.pth\)",
        r"skipped 1 unreadable image\(s\): .*IMG_9999\.JPG",
        r"only \d+ test images: too few to compare the variants",
        r"hornets: \{'\w+': \d+, '\w+': \d+\}  ->  real photos",  # exercise 1
    ],
    "04_adversarial_fgsm": [
        r"weights: ImageNet-1k weights",
        r"data: real photos from .*/data/hornets",
        r"hornets: \d+ of chapter 3's \d+ test images at 64 px",  # chapter 3's classifier
        r"photo: ImageNet ResNet18 on \(3, 224, 224\)",
        r"targeted PGD \d/255: gibbon \d",
    ],
    "07_detection": [
        r"Pascal VOC 2007 in .*/data: 32 training and 16 validation images at 96 px, 20 classes",
        r"backbones: ImageNet weights",
        r"round trip: \d+ objects encoded, \d+ peaks decoded, IoU with the truth - \(every",
        r"VOC 2007 test: 16 images \(the profile's budget; the full split has 4952\)",
        *(
            rf"{name}: mAP@0\.5 = \d\.\d{{3}} on 16 VOC 2007 test images \(VOC2007 devkit: "
            r"IoU >= 0\.5, difficult ignored, 11-point AP\); \d\.\d{3} on 16 validation images "
            r"\(VOC rules: IoU >= 0\.5, difficult ignored, all-point AP\)"
            for name in ("YOLO v1", "CenterNet")
        ),
        r"CenterNet, full backbone, 1 epochs: mAP@0\.5 \d",  # exercise 5
        r"on 16 VOC 2007 test images .*; model zoo: 0\.726",  # exercise 5, on the test split
    ],
}


@pytest.fixture(scope="module")
def staged(tmp_path_factory):
    return stage(tmp_path_factory.mktemp("real-path"))


#: What a solution's code names when it branches on the real data.
REAL_BRANCH = re.compile(r"\bdata\.real\b|\breal_voc\b")

#: Sections that work on the synthetic shapes whatever the data: the notebook pass runs
#: them, and nothing after them reads what they compute.
SHAPES_ONLY = {
    "04_adversarial_fgsm": ("## 5. An adversarial patch", "## 6. A defence"),
}


def _heading(cell) -> str | None:
    """The ``## `` heading that opens a markdown cell (after its MyST label, if any)."""
    if cell.cell_type != "markdown":
        return None
    lines = [line for line in cell.source.splitlines() if line.strip()]
    if lines and lines[0].startswith("(") and lines[0].endswith(")="):
        lines = lines[1:]  # (chN-secK)=
    return lines[0] if lines and lines[0].startswith("## ") else None


def _without_sections(cells, headings):
    """``cells`` without the sections (a heading to the next ``## ``) named by ``headings``."""
    kept, skipping, found = [], False, set()
    for cell in cells:
        heading = _heading(cell)
        if heading is not None:
            skipping = heading.startswith(headings)
            found |= {h for h in headings if heading.startswith(h)}
        if not skipping:
            kept.append(cell)
    assert found == set(headings), f"no section {set(headings) - found}: update SHAPES_ONLY"
    return kept


def _chapter_and_its_real_solutions(nb, name: str):
    """The chapter's cells but its SHAPES_ONLY sections, and of its exercises only those
    whose solution branches on the real data: the others are the same on either data and
    run in the notebook pass."""
    start = next(i for i, c in enumerate(nb.cells) if "## Exercises" in c.source)
    kept, group = _without_sections(nb.cells[: start + 1], SHAPES_ONLY.get(name, ())), []
    for cell in nb.cells[start + 1 :]:
        group.append(cell)
        if "{solution-end}" in cell.source:
            if any(c.cell_type == "code" and REAL_BRANCH.search(c.source) for c in group):
                kept += group
            group = []
    nb.cells = kept
    return nb


def _run(name: str, env: dict[str, str], workdir) -> str:
    """Execute ``notebooks/NAME.ipynb`` (its exercises: those that branch on the real data)
    in a kernel that sees ``env``; return its text outputs (stdout, stderr and text
    results), joined."""
    nb = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
    nb = _chapter_and_its_real_solutions(nb, name)
    km = ipc_kernel_manager(str(workdir))  # works with no network
    saved = dict(os.environ)
    os.environ.update({**env, "COURSE_PROFILE": "smoke"})
    try:
        NotebookClient(
            nb, km=km, timeout=600, resources={"metadata": {"path": str(workdir)}}
        ).execute()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    texts = []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            texts.append(output.get("text", ""))
            texts.append(output.get("data", {}).get("text/plain", ""))
    return "\n".join(texts)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_chapter_takes_the_real_branch(name, staged, tmp_path):
    output = _run(name, staged, tmp_path)
    missing = [pattern for pattern in EXPECTED[name] if not re.search(pattern, output)]
    assert not missing, f"{name} did not print {missing}; it printed:\n{output[-3000:]}"
    assert "synthetic photos generated" not in output and "synthetic VOC" not in output


def test_notebooks_use_the_one_function_that_knows_the_paths():
    for name in ("03_finetuning_hornets", "07_detection"):
        cells = json.loads((ROOT / "notebooks" / f"{name}.ipynb").read_text())["cells"]
        code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
        assert "data_paths()" in code and "describe_paths()" in code, name
        assert '"voc"' not in code.replace('data_paths()["voc"]', ""), name


def test_the_zip_and_the_tar_install_the_tree_as_staged(staged, tmp_path):
    """VOC arrives as Ultralytics' zip (what chapter 7 ran on above) or as Oxford's tar:
    both, unpacked and checked by ``download_voc``, give the staged tree file for file."""
    folder = Path(staged["COURSE_DATA"]).parent

    def files(tree: Path) -> dict[str, bytes]:
        return {
            p.relative_to(tree).as_posix(): p.read_bytes() for p in tree.rglob("*") if p.is_file()
        }

    tar = folder / "VOCtrainval_06-Nov-2007.tar"
    oxford = VOC2007_SOURCES["trainval"][0]  # its name, with the staged tar's MD5
    staged_tar = Source(oxford.url, md5=md5_of(tar))
    with staged_split_sizes():
        download_voc(tmp_path, archive=tar, sources=[staged_tar], progress=False)
    original = files(folder / "voc-staged" / "VOCdevkit" / "VOC2007")
    assert "ImageSets/Main/test.txt" in original and len(original) > 100
    assert files(folder / "data" / "VOCdevkit" / "VOC2007") == original  # from the zip
    assert files(tmp_path / "VOCdevkit" / "VOC2007") == original  # from the tar
