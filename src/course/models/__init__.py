"""Models of the course: small CNNs here; ResNet18 and its blocks in chapter 2."""

from course.models.small_cnn import SmallCNN

__all__ = ["SmallCNN"]
