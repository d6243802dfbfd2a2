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


def _pretend_pretrained(model: torch.nn.Module) -> None:
    """Give every BN layer statistics, scale and shift of its own, as a pretrained
    network has (a fresh one has mean 0, variance 1, weight 1, bias 0: dropping them
    would not show)."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.normal_(1, 0.1)
                m.bias.normal_(0, 0.1)


def check_frozen_backbone(prepare) -> Report:
    """Check ``prepare(model, num_classes) -> model`` for variant (a): a new, randomly
    initialised ``num_classes`` x 512 head, the only part that trains; the backbone
    fixed, its pretrained BN statistics, scale and shift included: in training mode the
    backbone computes what the pretrained one computes in eval mode, and one training
    step leaves every backbone tensor as it was."""
    import copy

    state: dict = {}

    def head() -> str | None:
        torch.manual_seed(0)
        model = resnet18()
        _pretend_pretrained(model)
        model.train()  # as a training loop leaves it
        state["before"] = {k: v.clone() for k, v in model.state_dict().items()}
        backbone = copy.deepcopy(model).eval()
        backbone.fc = torch.nn.Identity()
        state["x"] = x = torch.rand(4, 3, 64, 64)
        with torch.no_grad():
            state["features"] = backbone(x)  # (4, 512), the pretrained backbone's
        state["model"] = model = prepare(model, 3)
        if model is None:
            return "your function returned None: return the model"
        fc = getattr(model, "fc", None)
        weight = getattr(fc, "weight", None)
        if not isinstance(fc, torch.nn.Linear) or weight is None or weight.shape != (3, 512):
            shape = tuple(weight.shape) if isinstance(weight, torch.Tensor) else None
            return (
                "model.fc must be a new nn.Linear(512, num_classes) (here 3 classes), "
                f"its weight of shape (3, 512); got {type(fc).__name__} with weight {shape}"
                + (" (setting out_features does not resize the weight)" if shape else "")
            )
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
            bn = [n for n in extra if ".bn" in f".{n}" or "downsample.1" in n]
            conv = [n for n in extra if n not in bn]
            examples = ", ".join(([bn[0]] if bn else []) + ([conv[0]] if conv else []))
            return (
                f"{len(extra)} backbone parameters still train ({len(bn)} of BN, "
                f"{len(conv)} of convolutions; e.g. {examples}): "
                "p.requires_grad_(False) for every parameter outside fc"
            )
        return None

    def pretrained_kept() -> str | None:
        before = state["before"]
        now = state["model"].state_dict()
        changed = [
            k
            for k, v in now.items()
            if not k.startswith("fc.") and k in before and not torch.equal(v, before[k])
        ]
        statistics = [k for k in changed if "running_" in k]
        if statistics:
            return (
                f"the pretrained BN statistics were dropped (e.g. {statistics[0]}): a new "
                "FrozenBatchNorm2d starts at running_mean 0, running_var 1; copy "
                "running_mean, running_var, weight and bias from the BN it replaces "
                "(course.models.transfer.freeze_batchnorm does)"
            )
        if any(
            k.endswith(("weight", "bias")) and ("bn" in k or "downsample.1" in k) for k in changed
        ):
            return (
                "BN's pretrained scale and shift were dropped (weight and bias of the "
                "replaced BN): copy weight and bias into FrozenBatchNorm2d too"
            )
        if changed:
            return f"preparing the model changed the pretrained backbone: {changed[0]}"
        return None

    def one_step() -> str | None:
        model = state["model"]
        bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        left_in_eval = bool(bns) and not any(m.training for m in bns)
        model.train()
        want = model.fc(state["features"]).detach()
        optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
        out = model(state["x"])
        same_function = torch.allclose(out.detach(), want, atol=1e-4)
        out.logsumexp(1).mean().backward()
        optimizer.step()
        before = state["before"]
        changed = [
            k
            for k, v in model.state_dict().items()
            if not k.startswith("fc.") and k in before and not torch.equal(v, before[k])
        ]
        untracked = [m for m in bns if not m.track_running_stats]
        still = [m for m in bns if m.momentum == 0]
        if untracked or still:
            how = (
                "track_running_stats=False stops the updates"
                if untracked
                else "momentum=0 keeps the running statistics"
            )
            return (
                f"{how}, but in training mode BN still normalises with the batch's "
                "statistics, not the pretrained ones: replace BN by FrozenBatchNorm2d "
                "(course.models.transfer.freeze_batchnorm)"
            )
        if any("running_" in k or "num_batches" in k for k in changed):
            return (
                "a training step changed BN's running statistics: in training mode BN "
                "still updates them (and normalises with the batch's statistics); replace "
                "BN by FrozenBatchNorm2d (course.models.transfer.freeze_batchnorm)"
                + (
                    "; putting BN in eval mode does not last: model.train(), called by "
                    "every training epoch, puts it back in training mode"
                    if left_in_eval
                    else ""
                )
            )
        if changed:
            return f"a training step changed the backbone: {changed[0]}"
        if not same_function:
            return (
                "in training mode the backbone computes something else than the "
                "pretrained one in eval mode: BN must normalise with the pretrained "
                "statistics (FrozenBatchNorm2d), not the batch's"
            )
        return None

    return run_checks(
        "frozen backbone",
        [
            ("a new trainable head", head),
            ("no trainable backbone parameter", backbone_parameters),
            ("the pretrained backbone kept", pretrained_kept),
            ("one training step leaves the backbone as it was", one_step),
        ],
    )
