"""Data: normalisation, synthetic generators and loaders for real data sets.

Images are float tensors in [0, 1] with shape (N, 3, H, W) everywhere in the
course; normalisation is the first module of a model (:class:`Normalize`),
so attacks, plots and augmentations all work in pixel space.
"""

import os
from pathlib import Path

from course.data.normalize import IMAGENET_MEAN, IMAGENET_STD, Normalize
from course.data.shapes import SHAPE_CLASSES, make_shapes, render_shape


def data_root() -> Path:
    """Where real data sets are looked for and synthetic ones written: ``$COURSE_DATA`` if
    set, else ``./data``. Used in chapters 3, 4 and 7."""
    return Path(os.environ.get("COURSE_DATA", "data"))


__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "SHAPE_CLASSES",
    "Normalize",
    "data_root",
    "make_shapes",
    "render_shape",
]
