"""The ResNet18 backbone of the detectors: stem and the first stages, no classifier (chapter 7)."""

from __future__ import annotations

from torch import nn

from course.models.resnet import ResNet18


def detection_backbone(backbone: ResNet18 | None, stages: int = 4) -> ResNet18:
    """ResNet18 (random if None) with the stages after ``stages`` and the classifier head
    replaced by ``nn.Identity``, so that a detector holds only the weights it uses."""
    if stages not in (2, 3, 4):
        raise ValueError(f"stages must be 2, 3 or 4, got {stages}")
    backbone = backbone if backbone is not None else ResNet18()
    for name in ("layer3", "layer4")[stages - 2 :]:
        setattr(backbone, name, nn.Identity())
    backbone.avgpool, backbone.fc = nn.Identity(), nn.Identity()
    return backbone
