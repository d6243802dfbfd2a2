"""Models of the course: small and deep CNNs, ResNet18 and its blocks, transfer surgery.

Architectures only: nothing here trains, downloads or reads data (the ImageNet
weights are ``course.weights``'s, the offline stand-in ``course.pretrained``'s).
"""

from course.models.deep import INITS, DeepCNN, PlainBlock, ResidualBlock, init_conv_weights
from course.models.resnet import ResBlockA, ResBlockB, ResNet18, resnet18
from course.models.small_cnn import SmallCNN
from course.models.transfer import freeze_backbone, freeze_batchnorm, replace_head

__all__ = [
    "INITS",
    "DeepCNN",
    "PlainBlock",
    "ResBlockA",
    "ResBlockB",
    "ResNet18",
    "ResidualBlock",
    "SmallCNN",
    "freeze_backbone",
    "freeze_batchnorm",
    "init_conv_weights",
    "replace_head",
    "resnet18",
]
