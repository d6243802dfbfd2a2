"""Fine-tuning a pretrained ResNet18: a new head, a frozen or trainable backbone (chapter 3).

The slides' recipe for the Asian-hornet task (1042 presence, 1844 absence
photos: far too few to train a deep CNN from scratch):

1. take a foundation model — ResNet18 pretrained on ImageNet-1k;
2. normalise the images with ImageNet's mean and std (a module at the front
   of the model, so everything else stays in pixel space);
3. replace the 1000 x 512 FC by a new 2 x 512 FC;
4. train (a) only the new head, the backbone frozen, or (b) the whole network
   with a smaller learning rate for the backbone; compare with (c) the same
   network trained from scratch.

Steps 1 and 3, and the frozen backbone of (a), are shared with chapters 4 and
7: they are in ``course.pretrained`` (``pretrained_resnet18``; variant (a) itself,
``hornet_classifier``, trained once and cached, since chapter 4 attacks it),
``course.models.transfer`` (``replace_head``, ``freeze_backbone``,
``freeze_batchnorm``) and ``course.data.normalize`` (``with_imagenet_normalization``).
Without a network connection the ImageNet weights cannot be downloaded; then
``pretrained_resnet18`` pretrains ResNet18 on a synthetic source task once and
caches it, so the comparison still runs and still teaches the same thing.

This module holds what is particular to the chapter's experiment: the
optimizer groups of (b) and the metrics for imbalanced classes.

Used in chapter 3.
"""

from __future__ import annotations

import torch

from course.check import Report, run_checks
from course.models.resnet import ResNet18, resnet18


def param_groups(model: ResNet18, head_lr: float, backbone_lr: float) -> list[dict]:
    """Optimizer parameter groups: the new head at ``head_lr``, the backbone at ``backbone_lr``.

    Fine-tuning (b) uses a smaller lr for the pretrained layers, so that the
    large gradients of the random head do not wreck them in the first steps.
    """
    head = list(model.fc.parameters())
    head_ids = {id(p) for p in head}
    backbone = [p for p in model.parameters() if id(p) not in head_ids and p.requires_grad]
    return [{"params": head, "lr": head_lr}, {"params": backbone, "lr": backbone_lr}]


# ---------------------------------------------------------------------------
# Metrics for imbalanced classes
# ---------------------------------------------------------------------------


def confusion_matrix(y_true: torch.Tensor, y_pred: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(num_classes, num_classes) counts; row = true class, column = predicted class."""
    index = torch.as_tensor(y_true).long() * num_classes + torch.as_tensor(y_pred).long()
    return torch.bincount(index, minlength=num_classes**2).reshape(num_classes, num_classes)


def per_class_recall(cm: torch.Tensor) -> torch.Tensor:
    """Recall of every class: diagonal / row sums (NaN for a class without samples)."""
    return cm.diag().double() / cm.sum(1).double()


def balanced_accuracy(y_true: torch.Tensor, y_pred: torch.Tensor, num_classes: int = 2) -> float:
    """Mean per-class recall: 0.5 for a classifier that always answers "absence",
    whereas its plain accuracy would be 1844/2886 = 0.64 on the slides' data."""
    recall = per_class_recall(confusion_matrix(y_true, y_pred, num_classes))
    return float(recall[~recall.isnan()].mean())


# ---------------------------------------------------------------------------
# Exercise: replace the head and freeze the backbone yourself
# ---------------------------------------------------------------------------


def check_frozen_backbone(prepare) -> Report:
    """Check ``prepare(model, num_classes) -> model`` for variant (a): a new, randomly
    initialised ``num_classes`` x 512 head, the only part that trains; the backbone
    fixed, its BN statistics included (one training step, in training mode, must leave
    every backbone tensor as it was)."""
    state: dict = {}

    def head() -> str | None:
        torch.manual_seed(0)
        model = resnet18()
        state["before"] = {k: v.clone() for k, v in model.state_dict().items()}
        state["model"] = model = prepare(model, 3)
        if model is None:
            return "your function returned None: return the model"
        fc = getattr(model, "fc", None)
        if not isinstance(fc, torch.nn.Linear) or (fc.out_features, fc.in_features) != (3, 512):
            return "model.fc must be a new nn.Linear(512, num_classes) (here 3 classes)"
        if not all(p.requires_grad for p in fc.parameters()):
            return (
                "the new head is frozen: freeze the backbone first, then create the head "
                "(a new nn.Linear is trainable)"
            )
        return None

    def backbone_parameters() -> str | None:
        trainable = [n for n, p in state["model"].named_parameters() if p.requires_grad]
        extra = [n for n in trainable if not n.startswith("fc.")]
        if extra:
            return (
                f"{len(extra)} backbone parameters still train (e.g. {extra[0]}): "
                "p.requires_grad_(False) for every parameter outside fc"
            )
        return None

    def one_step() -> str | None:
        model = state["model"].train()
        optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
        loss = model(torch.rand(4, 3, 64, 64)).logsumexp(1).mean()
        loss.backward()
        optimizer.step()
        changed = [
            k
            for k, v in model.state_dict().items()
            if not k.startswith("fc.")
            and k in state["before"]
            and not torch.equal(v, state["before"][k])
        ]
        if any("running_" in k or "num_batches" in k for k in changed):
            return (
                "a training step changed BN's running statistics: in training mode BN "
                "still updates them; replace BN by FrozenBatchNorm2d "
                "(course.models.transfer.freeze_batchnorm)"
            )
        if changed:
            return f"a training step changed the backbone: {changed[0]}"
        return None

    return run_checks(
        "frozen backbone",
        [
            ("a new trainable head", head),
            ("no trainable backbone parameter", backbone_parameters),
            ("one training step leaves the backbone as it was", one_step),
        ],
    )
