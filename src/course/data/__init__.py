"""Data: normalisation, synthetic generators and loaders for real data sets.

Images are float tensors in [0, 1] with shape (N, 3, H, W) everywhere in the
course; normalisation is the first module of a model (:class:`Normalize`),
so attacks, plots and augmentations all work in pixel space.
"""

from course.data.normalize import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Normalize,
    with_imagenet_normalization,
)
from course.data.shapes import SHAPE_CLASSES, Transformed, make_shapes, render_shape, slow_blur

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "SHAPE_CLASSES",
    "Normalize",
    "Transformed",
    "make_shapes",
    "render_shape",
    "slow_blur",
    "with_imagenet_normalization",
]
