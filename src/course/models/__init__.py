"""Models of the course: small and deep CNNs, ResNet18 and its blocks."""

from course.models.deep import INITS, DeepCNN, PlainBlock, ResidualBlock, init_conv_weights
from course.models.resnet import ResBlockA, ResBlockB, ResNet18, resnet18
from course.models.small_cnn import SmallCNN

__all__ = [
    "INITS",
    "DeepCNN",
    "PlainBlock",
    "ResBlockA",
    "ResBlockB",
    "ResNet18",
    "ResidualBlock",
    "SmallCNN",
    "init_conv_weights",
    "resnet18",
]
