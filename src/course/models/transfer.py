"""Transfer learning's surgery on a pretrained ResNet18: a new head, a frozen backbone.

- :func:`replace_head` swaps the 1000-class FC for a new one;
- :func:`freeze_backbone` leaves only that head trainable;
- :func:`freeze_batchnorm` fixes the BN statistics for fine-tuning.

Where the pretrained weights come from is ``course.weights`` (ImageNet) and
``course.pretrained`` (ImageNet or, offline, a stand-in).

Used in chapter 3.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

from course.models.resnet import ResNet18


def replace_head(model: ResNet18, num_classes: int = 2) -> ResNet18:
    """Replace the final FC (1000 x 512 for ImageNet) by a new, randomly initialised
    ``num_classes`` x 512 one. Returns the same model."""
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    return model


def freeze_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm2d of ``module`` by torchvision's FrozenBatchNorm2d, in place.

    The pretrained statistics (and BN's scale and shift) are then fixed, in
    training mode too: fine-tuning on a few hundred images with small batches
    would otherwise replace running statistics estimated on a large data set
    by noisy ones (chapter 1). torchvision's detection models fine-tune this way.
    """
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
            frozen.weight.copy_(child.weight.detach())
            frozen.bias.copy_(child.bias.detach())
            frozen.running_mean.copy_(child.running_mean)
            frozen.running_var.copy_(child.running_var)
            setattr(module, name, frozen)
        else:
            freeze_batchnorm(child)
    return module


@torch.no_grad()
def freeze_backbone(model: ResNet18) -> ResNet18:
    """Make only ``model.fc`` trainable.

    The backbone's weights get ``requires_grad=False`` and its BN layers
    become ``FrozenBatchNorm2d``: otherwise, in training mode, BN would keep
    normalising with the new data's batch statistics and updating its running
    statistics — the "frozen" backbone would still change.
    """
    freeze_batchnorm(model)
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith("fc."))
    return model
