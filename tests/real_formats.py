"""Stage what a real user has, in real formats, with no network: the rehearsal's data.

    python -m tests.real_formats DIR     # then COURSE_DATA=DIR/data TORCH_HOME=DIR/torch ...

- ``DIR/data/hornets/{presence,absence}``: camera files — JPEGs at 640x480,
  480x640 and 1024x768, upper-case ``.JPG`` names, portraits stored sideways
  with an EXIF orientation tag, a PNG, a greyscale JPEG and one truncated file;
- ``DIR/data/VOCdevkit/VOC2007``: Pascal VOC's layout with its 20 class names,
  500x375 and 375x500 JPEGs, xml with pose / truncated / difficult and
  ``<part>`` elements, per-class ImageSets files, a test split; the first two validation
  images have every object touching the border, as truncated VOC objects do. It arrives
  as it does in 2026: packed in ``DIR/VOCtrainval_06-Nov-2007.zip`` as Ultralytics packs
  it (and in a tar as Oxford does, ``DIR/VOCtrainval_06-Nov-2007.tar``) and installed
  from the zip by ``download_voc(archive=...)``, content check included;
- ``DIR/torch/hub/checkpoints/resnet18-f37072fd.pth``: ImageNet-format weights,
  a stand-in that the package pretrains itself (the synthetic insect task),
  saved with torchvision's keys and a 1000-class head.

The pictures are drawn by the package's generators: what is rehearsed is the
formats and the code paths, not the accuracy on real photos. ``COURSE_SEED=k`` draws
other photos, another VOC tree and another stand-in (``course.config.run_seed``), so
the rehearsal's asserts can be checked on several staged data sets::

    for k in 0 1 2; do COURSE_SEED=$k pytest tests/test_real_path.py; done
"""

from __future__ import annotations

import os
import sys
import tarfile
import zipfile
from collections import OrderedDict
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from course.config import run_seed
from course.data.hornets import render_hornet_scene
from course.data.voc import VOC2007_SPLIT_SIZES, VOC_CLASSES, download_voc
from course.pretrained import pretrain_on_synthetic

CAMERA_SIZES = ((640, 480), (480, 640), (1024, 768))


def stage_hornet_photos(folder: Path, presence: int = 48, absence: int = 72) -> list[Path]:
    """Camera-like photos under ``folder/{presence,absence}``; returns the corrupt file."""
    exif_rotated = Image.Exif()
    exif_rotated[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    for cls, count in (("presence", presence), ("absence", absence)):
        (folder / cls).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            scene = render_hornet_scene(
                run_seed(10_000) + 2 * i + (cls == "presence"), cls == "presence", 128
            )
            width, height = CAMERA_SIZES[i % len(CAMERA_SIZES)]
            photo = scene.resize((width, height), Image.BILINEAR)
            name = folder / cls / f"IMG_{i:04d}.JPG"
            if i % 7 == 3:  # a PNG export
                photo.save(name.with_suffix(".png"))
            elif i % 7 == 5:  # a greyscale photo
                photo.convert("L").save(name, quality=90)
            elif height > width:  # a phone portrait: stored sideways, upright by EXIF
                photo.transpose(Image.Transpose.ROTATE_90).save(name, quality=90, exif=exif_rotated)
            else:
                photo.save(name, quality=90)
    corrupt = folder / "absence" / "IMG_9999.JPG"
    corrupt.write_bytes((folder / "absence" / "IMG_0000.JPG").read_bytes()[:600])
    return [corrupt]


def _voc_object(name: str, box: list[int], truncated: bool, difficult: bool, pose: str) -> str:
    x1, y1, x2, y2 = box
    parts = ""
    if name == "person":  # VOC's layout annotation: parts inside the person
        hx = (x1 + x2) // 2
        parts = (
            f"    <part><name>head</name><bndbox><xmin>{hx - 8}</xmin><ymin>{y1 + 1}</ymin>"
            f"<xmax>{hx + 8}</xmax><ymax>{y1 + 18}</ymax></bndbox></part>\n"
        )
    return (
        f"  <object>\n    <name>{name}</name>\n    <pose>{pose}</pose>\n"
        f"    <truncated>{int(truncated)}</truncated>\n    <difficult>{int(difficult)}"
        f"</difficult>\n    <bndbox>\n      <xmin>{x1}</xmin>\n      <ymin>{y1}</ymin>\n"
        f"      <xmax>{x2}</xmax>\n      <ymax>{y2}</ymax>\n    </bndbox>\n{parts}"
        "  </object>\n"
    )


def stage_voc2007(
    root: Path, num_train: int = 40, num_val: int = 20, seed: int = 0, num_test: int = 0
) -> Path:
    """``root/VOCdevkit/VOC2007`` as the devkit ships it (the parts chapter 7 reads): the
    splits train, val and trainval, and test when ``num_test`` > 0 (its ids follow
    trainval's, as VOC 2007 test's do)."""
    folder = root / "VOCdevkit" / "VOC2007"
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(run_seed(seed))
    ids: dict[str, list[str]] = {"train": [], "val": []} | ({"test": []} if num_test else {})
    present: dict[str, list[set[int]]] = {}
    for k in range(num_train + num_val + num_test):
        image_id = f"{2 * k + 5:06d}"  # VOC's ids have gaps: 000005, 000007, ...
        split = "train" if k < num_train else "val" if k < num_train + num_val else "test"
        ids[split].append(image_id)
        width, height = (500, 375) if k % 3 else (375, 500)
        pixels = rng.integers(60, 200, (height, width, 3)).astype(np.uint8)
        image = Image.fromarray(pixels).resize((width // 4, height // 4)).resize((width, height))
        draw = ImageDraw.Draw(image)
        objects, labels = [], set()
        first_val = k in (num_train, num_train + 1)  # the images chapter 7 shows first
        for j in range(int(rng.integers(1, 4))):
            w, h = (int(v) for v in rng.integers(60, 220, 2))
            if first_val:  # every object touches the right border (truncated)
                x1, y1 = width - w, int(rng.integers(1, height - h))
            else:
                x1, y1 = int(rng.integers(1, width - w)), int(rng.integers(1, height - h))
            x2, y2 = min(width, x1 + w), min(height, y1 + h)
            label = int(rng.integers(len(VOC_CLASSES)))
            colour = tuple(int(c) for c in rng.integers(0, 256, 3))
            (draw.ellipse if label % 2 else draw.rectangle)(
                [x1 - 1, y1 - 1, x2 - 1, y2 - 1], fill=colour
            )
            truncated = first_val or x1 <= 1 or y1 <= 1 or x2 >= width or y2 >= height
            objects.append(
                _voc_object(
                    VOC_CLASSES[label],
                    [x1, y1, x2, y2],
                    truncated,
                    difficult=bool(rng.random() < 0.15),
                    pose=("Left", "Right", "Frontal", "Unspecified")[j % 4],
                )
            )
            labels.add(label)
        if k % 11 == 7:
            image = image.convert("L")  # VOC holds a few greyscale photos
        image.save(folder / "JPEGImages" / f"{image_id}.jpg", quality=90)
        (folder / "Annotations" / f"{image_id}.xml").write_text(
            f"<annotation>\n  <folder>VOC2007</folder>\n  <filename>{image_id}.jpg</filename>\n"
            "  <source>\n    <database>The VOC2007 Database</database>\n"
            "    <annotation>PASCAL VOC2007</annotation>\n    <image>flickr</image>\n"
            "  </source>\n  <owner>\n    <name>?</name>\n  </owner>\n"
            f"  <size>\n    <width>{width}</width>\n    <height>{height}</height>\n"
            f"    <depth>3</depth>\n  </size>\n  <segmented>0</segmented>\n"
            f"{''.join(objects)}</annotation>\n"
        )
        present.setdefault(split, []).append(labels)
    main = folder / "ImageSets" / "Main"
    for split, names in (*ids.items(), ("trainval", ids["train"] + ids["val"])):
        (main / f"{split}.txt").write_text("\n".join(names) + "\n")
        flags = present["train"] + present["val"] if split == "trainval" else present[split]
        for c, cls in enumerate(VOC_CLASSES):
            lines = [f"{n} {' 1' if c in f else '-1'}" for n, f in zip(names, flags, strict=True)]
            (main / f"{cls}_{split}.txt").write_text("\n".join(lines) + "\n")
    return folder


def as_torchvision_ships(state: dict[str, torch.Tensor]) -> OrderedDict[str, torch.Tensor]:
    """``state`` laid out as torchvision's IMAGENET1K_V1 ResNet files are: saved before
    BatchNorm had its ``num_batches_tracked`` counter (pytorch/vision#1728), so without
    those keys and without the per-layer versions that a current ``state_dict()`` records
    in ``_metadata`` (a plain OrderedDict of tensors)."""
    return OrderedDict(
        (k, v.clone()) for k, v in state.items() if not k.endswith("num_batches_tracked")
    )


def stage_imagenet_weights(torch_home: Path, samples: int = 256, epochs: int = 2) -> Path:
    """A torchvision-keyed ResNet18 state dict (1000-class head) where torchvision caches
    IMAGENET1K_V1, pretrained by the package on its synthetic insect task, in the layout of
    the real file (:func:`as_torchvision_ships`)."""
    model = pretrain_on_synthetic(32, samples, epochs, device="cpu", progress=False)
    state = model.state_dict()
    generator = torch.Generator().manual_seed(0)
    fc_weight = torch.randn(1000, 512, generator=generator) * 0.01
    fc_bias = torch.zeros(1000)
    fc_weight[: len(state["fc.bias"])] = state["fc.weight"]
    fc_bias[: len(state["fc.bias"])] = state["fc.bias"]
    state["fc.weight"], state["fc.bias"] = fc_weight, fc_bias
    path = torch_home / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(as_torchvision_ships(state), path)
    return path


#: The staged VOC tree's split sizes (the content check's counts for it).
STAGED_VOC = {"num_train": 40, "num_val": 20, "num_test": 16}


def pack_voc(devkit: Path, archive: Path) -> Path:
    """``devkit`` (a ``VOCdevkit`` folder) packed as ``archive``: a tar as Oxford's
    (members ``VOCdevkit/VOC2007/...``) or a zip as Ultralytics' (the same paths, with a
    directory entry for each folder, as a zip tool writes them)."""
    if archive.suffix == ".tar":
        with tarfile.open(archive, "w") as tar:
            tar.add(devkit, arcname="VOCdevkit")
    else:
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
            for path in sorted(devkit.rglob("*")):
                z.write(path, f"VOCdevkit/{path.relative_to(devkit).as_posix()}")
    return archive


@contextmanager
def staged_split_sizes():
    """The content check's split sizes set to the staged tree's while inside."""
    saved = dict(VOC2007_SPLIT_SIZES)
    VOC2007_SPLIT_SIZES.update(
        trainval=STAGED_VOC["num_train"] + STAGED_VOC["num_val"], test=STAGED_VOC["num_test"]
    )
    try:
        yield
    finally:
        VOC2007_SPLIT_SIZES.update(saved)


def stage_voc_archives(folder: Path) -> dict[str, Path]:
    """The staged VOC tree packed as a tar and as a zip under ``folder``."""
    stage_voc2007(folder / "voc-staged", **STAGED_VOC)
    return {
        packing: pack_voc(
            folder / "voc-staged" / "VOCdevkit", folder / f"VOCtrainval_06-Nov-2007{packing}"
        )
        for packing in (".tar", ".zip")
    }


def stage(folder: Path) -> dict[str, str]:
    """Stage everything under ``folder``; returns the environment variables to set."""
    folder = Path(folder).resolve()
    env = {
        "COURSE_DATA": str(folder / "data"),
        "TORCH_HOME": str(folder / "torch"),
        "COURSE_CACHE": str(folder / "cache"),
    }
    stage_hornet_photos(folder / "data" / "hornets")
    archives = stage_voc_archives(folder)
    with staged_split_sizes():
        download_voc(folder / "data", archive=archives[".zip"], progress=False)
        download_voc(folder / "data", "test", archive=archives[".zip"], progress=False)
    old = os.environ.get("COURSE_CACHE")
    os.environ["COURSE_CACHE"] = str(folder / "stand-in-cache")  # not the notebooks' cache
    try:
        stage_imagenet_weights(folder / "torch")
    finally:
        if old is None:
            del os.environ["COURSE_CACHE"]
        else:
            os.environ["COURSE_CACHE"] = old
    return env


if __name__ == "__main__":
    variables = stage(Path(sys.argv[1]))
    print(" ".join(f"{k}={v}" for k, v in variables.items()))
