"""Models of the course: small and deep CNNs; ResNet18 and its blocks in chapter 2."""

from course.models.deep import INITS, DeepCNN, PlainBlock, ResidualBlock, init_conv_weights
from course.models.small_cnn import SmallCNN

__all__ = ["INITS", "DeepCNN", "PlainBlock", "ResidualBlock", "SmallCNN", "init_conv_weights"]
