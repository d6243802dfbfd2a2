"""Mutant suites for the "write it yourself" checkers (issue #40, section 3).

For every checker: plausible wrong answers (the mistakes students make), each of
which must be rejected with a message that names *its* mistake (a keyword of the
message is asserted), and several different correct answers (idioms a student
writes), each of which must be accepted. The mutants live in one table per
checker, ``MUTANTS[checker] = [(id, implementation, keywords)]`` and
``CORRECT[checker] = [(id, implementation)]``; every entry is a test of its own, so
pytest's ids read as the list of mistakes. ``python -m tests.test_mutants`` prints
the table of counts (mutants rejected with the right message, correct answers
accepted) kept in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn
from torch.utils.checkpoint import checkpoint, checkpoint_sequential
from torchvision.ops import FrozenBatchNorm2d

from course.adversarial import check_fgsm, check_projection
from course.check import Report, check_train_epoch
from course.checkpointing import check_two_segments
from course.detection.boxes import check_box_iou, check_nms
from course.detection.yolo import check_yolo_encoding, encode_yolo_targets
from course.finetune import check_frozen_backbone
from course.models.transfer import freeze_backbone, freeze_batchnorm
from course.norm import check_batch_norm
from course.residual import check_basic_block
from course.scaling import check_scaling_rule
from course.utils import eval_mode

#: checker name -> (checker, how to call it with one implementation)
CHECKERS: dict[str, Callable[[object], Report]] = {
    "train_epoch": check_train_epoch,
    "batch_norm": check_batch_norm,
    "basic_block": check_basic_block,
    "frozen_backbone": check_frozen_backbone,
    "fgsm": check_fgsm,
    "projection": check_projection,
    "two_segments": check_two_segments,
    "scaling_rule": lambda pair: check_scaling_rule(*pair),
    "box_iou": check_box_iou,
    "nms": check_nms,
    "yolo_encoding": check_yolo_encoding,
}
MUTANTS: dict[str, list[tuple[str, object, tuple[str, ...]]]] = {name: [] for name in CHECKERS}
CORRECT: dict[str, list[tuple[str, object]]] = {name: [] for name in CHECKERS}


def mutant(checker: str, keywords: tuple[str, ...] | str):
    """Register the decorated factory's result as a wrong answer to ``checker``, whose
    report must contain every keyword."""

    def register(factory):
        words = (keywords,) if isinstance(keywords, str) else keywords
        MUTANTS[checker].append((factory.__name__, factory(), words))
        return factory

    return register


def correct(checker: str):
    """Register the decorated factory's result as a right answer to ``checker``."""

    def register(factory):
        CORRECT[checker].append((factory.__name__, factory()))
        return factory

    return register


# ---------------------------------------------------------------------------
# Chapter 0: train_epoch(model, loader, loss_fn, optimizer) -> mean loss per sample
# ---------------------------------------------------------------------------


def _epoch(*, zero_grad="before", train="train", step=True, average="samples", item=True):
    def train_epoch(model, loader, loss_fn, optimizer):
        if train == "train":
            model.train()
        elif train == "eval":
            model.eval()
        total, count, means, last = 0.0, 0, [], None
        for x, y in loader:
            if zero_grad == "before":
                optimizer.zero_grad()
            loss = loss_fn(model(x), y)
            if step == "before_backward":
                optimizer.step()
            loss.backward()
            if zero_grad == "between":
                optimizer.zero_grad()
            if step is True:
                optimizer.step()
            total += loss.item() * len(x)
            count += len(x)
            means.append(loss.item() if item else loss)
            last = loss.item()
        if average == "samples":
            return total / count
        if average == "batch_means":
            return sum(means) / len(means)
        if average == "sum":
            return sum(means)
        if average == "per_batch_count":
            return total / len(loader)
        if average == "last":
            return last
        raise ValueError(average)

    return train_epoch


@mutant("train_epoch", "zero_grad")
def no_zero_grad():
    return _epoch(zero_grad=None)


@mutant("train_epoch", ("zero_grad", "between"))
def zero_grad_between_backward_and_step():
    return _epoch(zero_grad="between")


@mutant("train_epoch", "model.train()")
def no_train_mode():
    return _epoch(train=None)


@mutant("train_epoch", "model.train()")
def eval_mode_instead_of_train():
    return _epoch(train="eval")


@mutant("train_epoch", "optimizer.step()")
def no_step():
    return _epoch(step=False)


@mutant("train_epoch", ("optimizer.step()", "after loss.backward()"))
def step_before_backward():
    return _epoch(step="before_backward")


@mutant("train_epoch", ("mean of the batch means", "smaller"))
def mean_of_batch_means():
    return _epoch(average="batch_means")


@mutant("train_epoch", "sum of the batch losses")
def sum_of_batch_losses():
    return _epoch(average="sum")


@mutant("train_epoch", ("number of samples", "not of batches"))
def sample_sum_over_batches():
    return _epoch(average="per_batch_count")


@mutant("train_epoch", ("batches times the batch size", "smaller"))
def batches_times_batch_size():
    def train_epoch(model, loader, loss_fn, optimizer):
        model.train()
        total, batches = 0.0, 0
        for x, y in loader:
            optimizer.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            optimizer.step()
            total, batches = total + loss.item() * len(x), batches + 1
        return total / (batches * loader.batch_size)

    return train_epoch


@mutant("train_epoch", ("running statistics", "forward more than once"))
def second_forward_for_the_loss_value():
    def train_epoch(model, loader, loss_fn, optimizer):
        model.train()
        total = 0.0
        for x, y in loader:
            optimizer.zero_grad()
            loss_fn(model(x), y).backward()
            optimizer.step()
            total += loss_fn(model(x), y).item() * len(x)
        return total / len(loader.dataset)

    return train_epoch


@mutant("train_epoch", "last batch")
def last_batch_loss():
    return _epoch(average="last")


@mutant("train_epoch", "loss.item()")
def tensor_losses():
    def train_epoch(model, loader, loss_fn, optimizer):
        model.train()
        total, count = 0.0, 0
        for x, y in loader:
            optimizer.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            optimizer.step()
            total, count = total + loss * len(x), count + len(x)
        return total / count

    return train_epoch


@mutant("train_epoch", "optimizer passed in")
def own_optimizer():
    def train_epoch(model, loader, loss_fn, optimizer):
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        return _epoch()(model, loader, loss_fn, optimizer)

    return train_epoch


@correct("train_epoch")
def item_times_len():
    return _epoch()


@correct("train_epoch")
def divide_by_dataset_length():
    def train_epoch(model, loader, loss_fn, optimizer):
        model.train()
        total = 0.0
        for inputs, targets in loader:
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(inputs), targets)
            loss.backward()
            optimizer.step()
            total += loss.item() * inputs.size(0)
        return total / len(loader.dataset)

    return train_epoch


@correct("train_epoch")
def summed_reduction():
    def train_epoch(model, loader, loss_fn, optimizer):
        model.train(True)
        losses, sizes = [], []
        for batch in loader:
            x, y = batch
            model.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            optimizer.step()
            losses.append(loss.detach() * len(y))
            sizes.append(len(y))
        return (torch.stack(losses).sum() / sum(sizes)).item()

    return train_epoch


# ---------------------------------------------------------------------------
# Chapter 1: batch_norm(x, gamma, beta, running_mean, running_var, training, momentum, eps)
# ---------------------------------------------------------------------------


def _bn(
    *,
    norm_var="biased",
    axes=(0, 2, 3),
    affine=True,
    eps_at="inside",
    eval_eps_at=None,
    update="in_place",
    momentum_reversed=False,
    running_var="unbiased",
    eval_uses="running",
    eval_updates=False,
    train_uses="batch",
):
    eval_eps_at = eval_eps_at or eps_at

    def normalise(z, mean, var, eps, where):
        if where == "inside":
            return (z - mean) / torch.sqrt(var + eps)
        if where == "outside":
            return (z - mean) / (torch.sqrt(var) + eps)
        if where == "none":
            return (z - mean) / torch.sqrt(var)
        raise ValueError(where)

    def batch_norm(x, gamma, beta, running_mean, running_var_, training, momentum=0.1, eps=1e-5):
        shape = (1, -1, 1, 1)
        batch_mean = x.mean(axes, keepdim=True)
        batch_var = x.var(axes, unbiased=norm_var == "unbiased", keepdim=True)
        if training:
            if update != "none":
                m = 1 - momentum if momentum_reversed else momentum
                new_mean = x.mean((0, 2, 3))
                new_var = x.var((0, 2, 3), unbiased=running_var == "unbiased")
                if update == "in_place":
                    running_mean.mul_(1 - m).add_(m * new_mean)
                    running_var_.mul_(1 - m).add_(m * new_var)
                else:  # rebinds the names: the caller's tensors do not change
                    running_mean = (1 - m) * running_mean + m * new_mean
                    running_var_ = (1 - m) * running_var_ + m * new_var
            if train_uses == "batch":
                y = normalise(x, batch_mean, batch_var, eps, eps_at)
            else:
                y = normalise(x, running_mean.view(shape), running_var_.view(shape), eps, eps_at)
        else:
            if eval_uses == "batch":
                y = normalise(x, batch_mean, batch_var, eps, eval_eps_at)
            else:
                y = normalise(
                    x, running_mean.view(shape), running_var_.view(shape), eps, eval_eps_at
                )
            if eval_updates:
                running_mean.mul_(1 - momentum).add_(momentum * x.mean((0, 2, 3)))
                running_var_.mul_(1 - momentum).add_(momentum * x.var((0, 2, 3)))
        return y * gamma.view(shape) + beta.view(shape) if affine else y

    return batch_norm


@mutant("batch_norm", "biased variance")
def unbiased_normalisation():
    return _bn(norm_var="unbiased")


@mutant("batch_norm", ("wrong axes", "(0, 2, 3)"))
def statistics_per_sample():
    return _bn(axes=(1, 2, 3))


@mutant("batch_norm", ("wrong axes", "(0, 2, 3)"))
def statistics_over_batch_only():
    return _bn(axes=(0,))


@mutant("batch_norm", "gamma and beta")
def no_affine():
    return _bn(affine=False)


@mutant("batch_norm", ("eps", "inside the square root"))
def eps_outside_sqrt():
    return _bn(eps_at="outside")


@mutant("batch_norm", ("eps", "inside the square root"))
def eps_outside_sqrt_in_training_only():
    return _bn(eps_at="outside", eval_eps_at="inside")


@mutant("batch_norm", ("NaN", "eps"))
def no_eps_in_training_only():
    return _bn(eps_at="none", eval_eps_at="inside")


@mutant("batch_norm", ("eps", "inside the square root", "eval"))
def eps_outside_sqrt_in_eval_only():
    return _bn(eval_eps_at="outside")


@mutant("batch_norm", ("NaN", "eps"))
def no_eps():
    return _bn(eps_at="none")


@mutant("batch_norm", ("NaN", "eps"))
def no_eps_in_eval():
    return _bn(eval_eps_at="none")


@mutant("batch_norm", ("not updated", "in place"))
def running_not_updated():
    return _bn(update="none")


@mutant("batch_norm", ("not updated", "in place"))
def running_rebound_not_in_place():
    return _bn(update="rebind")


@mutant("batch_norm", "momentum is reversed")
def momentum_reversed():
    return _bn(momentum_reversed=True)


@mutant("batch_norm", "unbiased variance")
def running_var_biased():
    return _bn(running_var="biased")


@mutant("batch_norm", "eval mode used the batch")
def eval_uses_batch():
    return _bn(eval_uses="batch")


@mutant("batch_norm", "eval mode changed the running")
def eval_updates_running():
    return _bn(eval_updates=True)


@mutant("batch_norm", ("training mode", "batch's statistics", "running"))
def training_uses_running():
    return _bn(train_uses="running")


@mutant("batch_norm", ("no graph", "torch.no_grad()"))
def everything_under_no_grad():
    right = _bn()

    def batch_norm(*args, **kwargs):
        with torch.no_grad():
            return right(*args, **kwargs)

    return batch_norm


@correct("batch_norm")
def hint_idiom():
    return _bn()


@correct("batch_norm")
def with_rsqrt_and_no_grad():
    def batch_norm(x, gamma, beta, running_mean, running_var, training, momentum=0.1, eps=1e-5):
        dims = [0, 2, 3]
        if training:
            mean = x.mean(dim=dims)
            var = ((x - mean[None, :, None, None]) ** 2).mean(dim=dims)
            n = x.numel() / x.shape[1]
            with torch.no_grad():
                running_mean.copy_((1 - momentum) * running_mean + momentum * mean)
                running_var.copy_((1 - momentum) * running_var + momentum * var * n / (n - 1))
        else:
            mean, var = running_mean, running_var
        x_hat = (x - mean[None, :, None, None]) * torch.rsqrt(var[None, :, None, None] + eps)
        return gamma[None, :, None, None] * x_hat + beta[None, :, None, None]

    return batch_norm


@correct("batch_norm")
def functional_batch_norm():
    def batch_norm(x, gamma, beta, running_mean, running_var, training, momentum=0.1, eps=1e-5):
        return nn.functional.batch_norm(
            x, running_mean, running_var, gamma, beta, training, momentum, eps
        )

    return batch_norm


@correct("batch_norm")
def permute_and_flatten():
    def batch_norm(x, gamma, beta, running_mean, running_var, training, momentum=0.1, eps=1e-5):
        c = x.shape[1]
        flat = x.transpose(0, 1).reshape(c, -1)  # (C, N*H*W)
        if training:
            mean, var = flat.mean(1), flat.var(1, unbiased=False)
            running_mean.lerp_(mean, momentum)
            running_var.lerp_(flat.var(1, unbiased=True), momentum)
        else:
            mean, var = running_mean, running_var
        scale = gamma / (var + eps).sqrt()
        shift = beta - mean * scale
        return x * scale.view(1, c, 1, 1) + shift.view(1, c, 1, 1)

    return batch_norm


# ---------------------------------------------------------------------------
# Chapter 2: MyBlock(in_channels, out_channels, stride=1), ResNet18's basic block
# ---------------------------------------------------------------------------


def _block(
    *,
    projects_when="shapes",
    relu="after_add",
    bias=False,
    add=True,
    stride_in="conv1",
    shortcut_kernel=1,
    shortcut_bn=True,
    shortcut_stride=True,
    middle_relu=True,
    order="conv_bn_relu",
):
    class Block(nn.Module):
        def __init__(self, in_channels, out_channels, stride=1):
            super().__init__()
            s1, s2 = (stride, 1) if stride_in == "conv1" else (1, stride)
            self.conv1 = nn.Conv2d(in_channels, out_channels, 3, s1, 1, bias=bias)
            self.bn1 = nn.BatchNorm2d(out_channels)
            self.conv2 = nn.Conv2d(out_channels, out_channels, 3, s2, 1, bias=bias)
            self.bn2 = nn.BatchNorm2d(out_channels)
            project = {
                "shapes": stride != 1 or in_channels != out_channels,
                "channels": in_channels != out_channels,
                "stride": stride != 1,
                "always": True,
            }[projects_when]
            self.shortcut = nn.Identity()
            if project:
                layers = [
                    nn.Conv2d(
                        in_channels,
                        out_channels,
                        shortcut_kernel,
                        stride if shortcut_stride else 1,
                        shortcut_kernel // 2,
                        bias=False,
                    )
                ]
                if shortcut_bn:
                    layers.append(nn.BatchNorm2d(out_channels))
                self.shortcut = nn.Sequential(*layers)

        def forward(self, x):
            if order == "conv_relu_bn":
                out = self.bn1(self.conv1(x).relu())
            else:
                out = self.bn1(self.conv1(x))
                out = out.relu() if middle_relu else out
            out = self.bn2(self.conv2(out))
            if relu in ("before_add", "both"):
                out = out.relu()
            if add:
                out = out + self.shortcut(x)
            return out.relu() if relu in ("after_add", "both") else out

    return Block


@mutant("basic_block", "ReLU after the addition")
def relu_before_add():
    return _block(relu="before_add")


@mutant("basic_block", ("ReLU", "twice"))
def relu_before_and_after_add():
    return _block(relu="both")


@mutant("basic_block", ("must project", "stride"))
def projects_only_when_channels_change():
    return _block(projects_when="channels")


@mutant("basic_block", ("must project", "channels"))
def projects_only_when_stride_changes():
    return _block(projects_when="stride")


@mutant("basic_block", "identity")
def always_projects():
    return _block(projects_when="always")


@mutant("basic_block", "bias=False")
def conv_bias():
    return _block(bias=True)


@mutant("basic_block", "shortcut is not added")
def no_shortcut():
    return _block(add=False)


@mutant("basic_block", ("stride", "conv1"))
def stride_in_second_conv():
    return _block(stride_in="conv2")


@mutant("basic_block", ("shortcut", "1x1"))
def shortcut_3x3():
    return _block(shortcut_kernel=3)


@mutant("basic_block", ("shortcut", "BatchNorm2d"))
def shortcut_without_bn():
    return _block(shortcut_bn=False)


@mutant("basic_block", ("shortcut", "stride"))
def shortcut_without_stride():
    return _block(shortcut_stride=False)


@mutant("basic_block", ("ReLU", "bn1"))
def no_middle_relu():
    return _block(middle_relu=False)


@mutant("basic_block", ("ReLU", "after bn1"))
def relu_before_bn():
    return _block(order="conv_relu_bn")


@correct("basic_block")
def block_as_hinted():
    return _block()


@correct("basic_block")
def block_with_relu_module_and_in_place_add():
    class Block(nn.Module):
        def __init__(self, in_channels, out_channels, stride=1):
            super().__init__()
            self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(out_channels)
            self.relu = nn.ReLU(inplace=True)
            self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(out_channels)
            if stride == 1 and in_channels == out_channels:
                self.shortcut = nn.Identity()
            else:
                self.shortcut = nn.Sequential(
                    nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
                    nn.BatchNorm2d(out_channels),
                )

        def forward(self, x):
            identity = self.shortcut(x)
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            out += identity
            return self.relu(out)

    return Block


@correct("basic_block")
def block_with_empty_sequential_shortcut():
    class Block(nn.Module):
        def __init__(self, in_channels, out_channels, stride=1):
            super().__init__()
            self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(out_channels)
            self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(out_channels)
            self.shortcut = nn.Sequential()
            if stride != 1 or in_channels != out_channels:
                self.shortcut.append(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False))
                self.shortcut.append(nn.BatchNorm2d(out_channels))

        def forward(self, x):
            out = nn.functional.relu(self.bn1(self.conv1(x)))
            return nn.functional.relu(self.bn2(self.conv2(out)) + self.shortcut(x))

    return Block


@correct("basic_block")
def block_with_named_shortcut_layers():
    class Block(_block()):
        def __init__(self, in_channels, out_channels, stride=1):
            super().__init__(in_channels, out_channels, stride)
            if stride != 1 or in_channels != out_channels:
                self.shortcut = nn.Sequential(
                    OrderedDict(
                        conv=nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                        bn=nn.BatchNorm2d(out_channels),
                    )
                )

    return Block


# ---------------------------------------------------------------------------
# Chapter 3: prepare(model, num_classes) -> model, a new head on a frozen backbone
# ---------------------------------------------------------------------------


def _prepare(*, bn="frozen", params="all", head="after"):
    def prepare(model, num_classes):
        if head == "before":
            model.fc = nn.Linear(512, num_classes)
        if bn == "frozen":
            freeze_batchnorm(model)
        elif bn == "untracked":
            for m in model.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.track_running_stats = False
        elif bn == "momentum0":
            for m in model.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.momentum = 0.0
        elif bn == "fresh":
            for m in list(model.modules()):
                for child_name, child in list(m.named_children()):
                    if isinstance(child, nn.BatchNorm2d):
                        setattr(m, child_name, FrozenBatchNorm2d(child.num_features))
        elif bn == "stats_only":  # the statistics copied, BN's scale and shift dropped
            for m in list(model.modules()):
                for child_name, child in list(m.named_children()):
                    if isinstance(child, nn.BatchNorm2d):
                        frozen = FrozenBatchNorm2d(child.num_features)
                        frozen.running_mean.copy_(child.running_mean)
                        frozen.running_var.copy_(child.running_var)
                        setattr(m, child_name, frozen)
        elif bn == "eval":
            for m in model.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.eval()
        for name, p in model.named_parameters():
            if params == "all" or (params == "conv" and "conv" in name):
                p.requires_grad_(False)
        if head == "after":
            model.fc = nn.Linear(512, num_classes)
        elif head == "attribute":
            model.fc.out_features = num_classes
            model.fc.requires_grad_(True)
        elif head == "old":
            model.fc.requires_grad_(True)
        return model

    return prepare


@mutant("frozen_backbone", "backbone parameters still train")
def backbone_not_frozen():
    return _prepare(params="none")


@mutant("frozen_backbone", ("backbone parameters still train", "downsample.0.weight"))
def only_layers_named_conv_frozen():
    return _prepare(params="conv")


@mutant("frozen_backbone", ("backbone parameters still train", "of BN", "bn1.weight"))
def only_convolutions_frozen_bn_affine_trains():
    def prepare(model, num_classes):
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                m.requires_grad_(False)
        model.fc = nn.Linear(512, num_classes)
        return model

    return prepare


@mutant("frozen_backbone", "the new head is frozen")
def head_created_before_freezing():
    return _prepare(head="before")


@mutant("frozen_backbone", ("running statistics", "FrozenBatchNorm2d"))
def bn_left_as_is():
    return _prepare(bn="none")


@mutant("frozen_backbone", ("running statistics", "FrozenBatchNorm2d", "model.train()"))
def bn_put_in_eval_mode():
    return _prepare(bn="eval")


@mutant("frozen_backbone", ("batch's statistics", "track_running_stats"))
def bn_stops_tracking():
    return _prepare(bn="untracked")


@mutant("frozen_backbone", ("batch's statistics", "momentum"))
def bn_momentum_zero():
    return _prepare(bn="momentum0")


@mutant("frozen_backbone", ("pretrained", "running_mean"))
def frozen_bn_without_pretrained_statistics():
    return _prepare(bn="fresh")


@mutant("frozen_backbone", ("pretrained", "weight"))
def frozen_bn_without_scale_and_shift():
    return _prepare(bn="stats_only")


@mutant("frozen_backbone", ("nn.Linear(512, num_classes)", "out_features"))
def out_features_attribute_only():
    return _prepare(head="attribute")


@mutant("frozen_backbone", ("nn.Linear(512, num_classes)", "(512, 3)"))
def linear_arguments_swapped():
    def prepare(model, num_classes):
        freeze_backbone(model)
        model.fc = nn.Linear(num_classes, 512)
        return model

    return prepare


@mutant("frozen_backbone", "nn.Linear(512, num_classes)")
def old_head_kept():
    return _prepare(head="old")


@correct("frozen_backbone")
def freeze_batchnorm_then_loop():
    return _prepare()


@correct("frozen_backbone")
def package_freeze_backbone():
    def prepare(model, num_classes):
        freeze_backbone(model)
        model.fc = nn.Linear(model.fc.in_features, num_classes)
        return model

    return prepare


@correct("frozen_backbone")
def requires_grad_on_module_and_manual_frozen_bn():
    def replace(module):
        for name, child in module.named_children():
            if isinstance(child, nn.BatchNorm2d):
                frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
                frozen.load_state_dict(
                    {k: v for k, v in child.state_dict().items() if k != "num_batches_tracked"}
                )
                setattr(module, name, frozen)
            else:
                replace(child)

    def prepare(model, num_classes):
        model.requires_grad_(False)
        replace(model)
        model.fc = nn.Linear(512, num_classes)
        return model

    return prepare


# ---------------------------------------------------------------------------
# Chapter 4: my_fgsm(model, x, y, eps) and my_project(x_adv, x, eps)
# ---------------------------------------------------------------------------


def _fgsm(
    *,
    direction=1.0,
    step="sign",
    clamp=True,
    mode="eval",
    restore="as_was",
    detach=True,
    gradient="autograd",
    labels="true",
    in_place=False,
):
    def attack(model, x, y, eps):
        was_training = model.training
        if mode == "eval":
            model.eval()
        if labels == "predicted":
            with torch.no_grad():
                y = model(x).argmax(1)
        if in_place:
            x.requires_grad_(True)
            x_in = x
        else:
            x_in = x.clone().requires_grad_(True)
        loss = nn.functional.cross_entropy(model(x_in), y)
        if gradient == "autograd":
            (grad,) = torch.autograd.grad(loss, x_in)
        else:
            loss.backward()
            grad = x_in.grad
        move = grad.sign() if step == "sign" else grad
        if in_place:
            with torch.no_grad():
                x_in.add_(direction * eps * move)
                x_adv = x_in.clamp(0, 1) if clamp else x_in
        else:
            x_adv = x_in + direction * eps * move
            x_adv = x_adv.clamp(0, 1) if clamp else x_adv
        if restore == "as_was":
            model.train(was_training)
        elif restore == "train":
            model.train()
        return x_adv.detach() if detach else x_adv

    return attack


@mutant("fgsm", "stepped *down* the loss")
def descends_the_loss():
    return _fgsm(direction=-1.0)


@mutant("fgsm", "grad.sign()")
def raw_gradient():
    return _fgsm(step="raw")


@mutant("fgsm", "clamp")
def no_clamp():
    return _fgsm(clamp=False)


@mutant("fgsm", "eval mode")
def gradient_in_training_mode():
    return _fgsm(mode="train")


@mutant("fgsm", ("left in eval mode", "restore"))
def mode_not_restored():
    return _fgsm(restore="none")


@mutant("fgsm", ("restore", "eval mode", "was in"))
def always_back_to_train():
    return _fgsm(restore="train")


@mutant("fgsm", "detach")
def not_detached():
    return _fgsm(detach=False)


@mutant("fgsm", (".grad", "parameters"))
def backward_fills_parameter_grads():
    return _fgsm(gradient="backward")


@mutant("fgsm", ("true labels", "predicted"))
def attacks_the_predictions():
    return _fgsm(labels="predicted")


@mutant("fgsm", ("in place", "x"))
def changes_x_in_place():
    return _fgsm(in_place=True)


@correct("fgsm")
def with_eval_mode_context():
    def attack(model, x, y, eps):
        with eval_mode(model):
            x = x.clone().requires_grad_()
            loss = nn.functional.cross_entropy(model(x), y)
            (grad,) = torch.autograd.grad(loss, x)
        return (x + eps * grad.sign()).clamp(0, 1).detach()

    return attack


@correct("fgsm")
def requires_grad_on_the_input_itself():
    def attack(model, x, y, eps):
        x.requires_grad_()
        with eval_mode(model):
            loss = nn.functional.cross_entropy(model(x), y)
        grad = torch.autograd.grad(loss, x)[0]
        return torch.clamp(x.detach() + eps * grad.sign(), 0, 1)

    return attack


@correct("fgsm")
def backward_then_zero_grad():
    def attack(model, x, y, eps):
        training = model.training
        model.eval()
        x_adv = x.detach().clone()
        x_adv.requires_grad = True
        nn.functional.cross_entropy(model(x_adv), y, reduction="sum").backward()
        model.zero_grad()
        with torch.no_grad():
            x_adv = torch.clamp(x_adv + eps * x_adv.grad.sign(), 0.0, 1.0)
        model.train(training)
        return x_adv

    return attack


@correct("fgsm")
def negative_loss_descent():
    def attack(model, x, y, eps):
        mode = model.training
        model.train(False)
        delta = torch.zeros_like(x, requires_grad=True)
        loss = -nn.functional.cross_entropy(model(x + delta), y)
        (g,) = torch.autograd.grad(loss, delta)
        model.train(mode)
        return torch.clamp(x - eps * torch.sign(g), min=0, max=1).detach()

    return attack


def _project(kind):
    def project(x_adv, x, eps):
        if kind == "zero_centred":
            return x_adv.clamp(-eps, eps).clamp(0, 1)
        if kind == "no_pixel_range":
            return torch.min(torch.max(x_adv, x - eps), x + eps)
        if kind == "step":
            return (x + eps * (x_adv - x).sign()).clamp(0, 1)
        if kind == "pixel_range_only":
            return x_adv.clamp(0, 1)
        if kind == "bounds_swapped":
            return torch.min(torch.max(x_adv, x + eps), x - eps).clamp(0, 1)
        if kind == "l2":
            delta = x_adv - x
            norms = delta.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
            return (x + delta * torch.clamp(eps / norms, max=1)).clamp(0, 1)
        if kind == "rescaled":
            delta = x_adv - x
            largest = delta.flatten(1).abs().max(1).values.view(-1, 1, 1, 1)
            return (x + delta * torch.clamp(eps / largest, max=1)).clamp(0, 1)
        if kind == "delta":
            return (x_adv - x).clamp(-eps, eps)
        if kind == "arguments_swapped":
            return torch.min(torch.max(x, x_adv - eps), x_adv + eps).clamp(0, 1)
        raise ValueError(kind)

    return project


for _kind, _words in (
    ("zero_centred", "centred on x"),
    ("no_pixel_range", "[0, 1]"),
    ("step", "project, do not step"),
    ("pixel_range_only", ("further than eps", "[x - eps, x + eps]")),
    ("bounds_swapped", ("swapped", "x - eps")),
    ("l2", ("L2", "each pixel")),
    ("rescaled", ("scaled", "each pixel")),
    ("delta", ("perturbation", "x +")),
    ("arguments_swapped", ("centred on x", "arguments")),
):
    MUTANTS["projection"].append(
        (_kind, _project(_kind), (_words,) if isinstance(_words, str) else _words)
    )


@correct("projection")
def min_max_as_hinted():
    return lambda x_adv, x, eps: torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0, 1)


@correct("projection")
def clamp_the_perturbation():
    return lambda x_adv, x, eps: (x + (x_adv - x).clamp(-eps, eps)).clamp(0, 1)


@correct("projection")
def clamp_with_tensor_bounds_pixels_first():
    return lambda x_adv, x, eps: torch.clamp(x_adv.clamp(0, 1), x - eps, x + eps)


@correct("projection")
def max_of_min():
    def project(x_adv, x, eps):
        upper = torch.clamp(x + eps, max=1.0)
        lower = torch.clamp(x - eps, min=0.0)
        return torch.max(torch.min(x_adv, upper), lower)

    return project


# ---------------------------------------------------------------------------
# Chapter 5: my_two_segments(layers, x), the first half checkpointed
# ---------------------------------------------------------------------------


@mutant("two_segments", "nothing was recomputed")
def no_checkpoint():
    return lambda layers, x: layers(x)


@mutant("two_segments", "second half is recomputed")
def both_halves_checkpointed():
    def forward(layers, x):
        k = len(layers) // 2
        x = checkpoint(layers[:k], x, use_reentrant=False)
        return checkpoint(layers[k:], x, use_reentrant=False)

    return forward


@mutant("two_segments", "use_reentrant=False")
def reentrant():
    def forward(layers, x):
        k = len(layers) // 2
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return layers[k:](checkpoint(layers[:k], x, use_reentrant=True))

    return forward


@mutant("two_segments", "use_reentrant")
def use_reentrant_omitted():
    def forward(layers, x):
        k = len(layers) // 2
        return layers[k:](checkpoint(layers[:k], x))  # torch's default: reentrant

    return forward


@mutant("two_segments", "len(layers) // 2")
def cut_after_the_first_layer():
    return lambda layers, x: layers[1:](checkpoint(layers[:1], x, use_reentrant=False))


@mutant("two_segments", "len(layers) // 2")
def cut_rounded_up():
    def forward(layers, x):
        k = math.ceil(len(layers) / 2)
        return layers[k:](checkpoint(layers[:k], x, use_reentrant=False))

    return forward


@mutant("two_segments", ("second half", "first half"))
def second_half_checkpointed():
    def forward(layers, x):
        k = len(layers) // 2
        return checkpoint(layers[k:], layers[:k](x), use_reentrant=False)

    return forward


@mutant("two_segments", ("one by one", "one segment"))
def checkpoint_per_layer():
    def forward(layers, x):
        k = len(layers) // 2
        for layer in layers[:k]:
            x = checkpoint(layer, x, use_reentrant=False)
        return layers[k:](x)

    return forward


@mutant("two_segments", "no graph")
def under_no_grad():
    def forward(layers, x):
        with torch.no_grad():
            return layers(x)

    return forward


@mutant("two_segments", ("no gradient", "detach"))
def first_half_detached():
    def forward(layers, x):
        k = len(layers) // 2
        return layers[k:](checkpoint(layers[:k], x, use_reentrant=False).detach())

    return forward


@mutant("two_segments", ("first half's output", "second half"))
def second_half_fed_the_input():
    def forward(layers, x):
        k = len(layers) // 2
        checkpoint(layers[:k], x, use_reentrant=False)
        return layers[k:](x)

    return forward


@correct("two_segments")
def as_hinted():
    def forward(layers, x):
        k = len(layers) // 2
        return layers[k:](checkpoint(layers[:k], x, use_reentrant=False))

    return forward


@correct("two_segments")
def loop_inside_a_function():
    def forward(layers, x):
        half = len(layers) // 2

        def first(t):
            for layer in list(layers)[:half]:
                t = layer(t)
            return t

        h = checkpoint(first, x, use_reentrant=False)
        for layer in list(layers)[half:]:
            h = layer(h)
        return h

    return forward


@correct("two_segments")
def checkpoint_sequential_two_segments():
    # checkpoint_sequential runs its last segment plainly; its segments have
    # len(layers) // 2 layers, the first of them checkpointed
    return lambda layers, x: checkpoint_sequential(layers, 2, x, use_reentrant=False)


# ---------------------------------------------------------------------------
# Chapter 6: my_scaled_lr(base_lr, batch_size, base_batch_size=256), my_warmup(step, steps)
# ---------------------------------------------------------------------------


def _linear(base_lr, batch_size, base_batch_size=256):
    return base_lr * batch_size / base_batch_size


def _warmup(step, warmup_steps):
    if warmup_steps == 0:
        return 1.0
    return min(1.0, step / warmup_steps)


for _name, _pair, _words in (
    (
        "square_root_rule",
        (lambda lr, b, base=256: lr * math.sqrt(b / base), _warmup),
        "square-root",
    ),
    ("ratio_inverted", (lambda lr, b, base=256: lr * base / b, _warmup), "inverted"),
    ("integer_division", (lambda lr, b, base=256: lr * (b // base), _warmup), "//"),
    ("base_hard_coded", (lambda lr, b, base=256: lr * b / 256, _warmup), "base_batch_size"),
    ("factor_without_lr", (lambda lr, b, base=256: b / base, _warmup), ("base_lr", "k")),
    (
        "warmup_one_step_late",
        (_linear, lambda t, n: 1.0 if n == 0 else min(1.0, (t + 1) / n)),
        "off by one",
    ),
    (
        "warmup_reaches_one_early",
        (_linear, lambda t, n: 1.0 if n <= 1 else min(1.0, t / (n - 1))),
        ("warmup_steps - 1", "early"),
    ),
    ("no_min", (_linear, lambda t, n: 1.0 if n == 0 else t / n), "above 1"),
    ("max_instead_of_min", (_linear, lambda t, n: 1.0 if n == 0 else max(1.0, t / n)), "max"),
    ("warmup_integer_division", (_linear, lambda t, n: 1.0 if n == 0 else min(1, t // n)), "//"),
    ("zero_steps_divide", (_linear, lambda t, n: min(1.0, t / n)), "divides by zero"),
    (
        "zero_steps_gives_zero",
        (_linear, lambda t, n: 0.0 if n == 0 else min(1.0, t / n)),
        "1 from the first step",
    ),
):
    MUTANTS["scaling_rule"].append((_name, _pair, (_words,) if isinstance(_words, str) else _words))


@correct("scaling_rule")
def scaling_as_hinted():
    return (_linear, _warmup)


@correct("scaling_rule")
def k_times_and_early_return():
    def scaled(base_lr, batch_size, base_batch_size=256):
        k = batch_size / base_batch_size
        return k * base_lr

    def warmup(step, warmup_steps):
        if step >= warmup_steps:
            return 1.0
        return step / warmup_steps

    return (scaled, warmup)


@correct("scaling_rule")
def per_sample_lr_and_conditional():
    def scaled(base_lr, batch_size, base_batch_size=256):
        return base_lr / base_batch_size * batch_size

    def warmup(step, warmup_steps):
        return step / warmup_steps if warmup_steps and step < warmup_steps else 1.0

    return (scaled, warmup)


# ---------------------------------------------------------------------------
# Chapter 7: my_box_iou(a, b), my_nms(boxes, scores, iou_threshold), my_encode(...)
# ---------------------------------------------------------------------------


def _iou(*, clamp="wh", plus_one=0.0, union="right", pairwise=True, corners="right", fmt="xyxy"):
    def box_iou(a, b):
        if fmt == "xywh":
            a = torch.cat([a[:, :2], a[:, :2] + a[:, 2:]], 1)
            b = torch.cat([b[:, :2], b[:, :2] + b[:, 2:]], 1)
        a_, b_ = (a[:, None], b[None]) if pairwise else (a, b)
        if corners == "right":
            lt, rb = torch.max(a_[..., :2], b_[..., :2]), torch.min(a_[..., 2:], b_[..., 2:])
        else:
            lt, rb = torch.min(a_[..., :2], b_[..., :2]), torch.max(a_[..., 2:], b_[..., 2:])
        wh = rb - lt + plus_one
        if clamp == "wh":
            wh = wh.clamp(min=0)
        inter = wh[..., 0] * wh[..., 1]
        if clamp == "product":
            inter = inter.clamp(min=0)
        area_a = (a_[..., 2] - a_[..., 0] + plus_one) * (a_[..., 3] - a_[..., 1] + plus_one)
        area_b = (b_[..., 2] - b_[..., 0] + plus_one) * (b_[..., 3] - b_[..., 1] + plus_one)
        if union == "twice":
            return inter / (area_a + area_b)
        if union == "area_a":
            return inter / area_a.expand_as(inter)
        if union == "min_area":
            return inter / torch.min(area_a, area_b)
        return inter / (area_a + area_b - inter)

    return box_iou


def _flat_areas_iou(a, b):
    """The areas added without [:, None]: (N,) + (M,) broadcast as rows (N == M)."""
    lt, rb = torch.max(a[:, None, :2], b[None, :, :2]), torch.min(a[:, None, 2:], b[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / (area_a + area_b - inter)


for _name, _fn, _words in (
    ("no_clamp", _iou(clamp=None), "clamp the intersection"),
    ("clamp_the_product", _iou(clamp="product"), ("width and height", "two negatives")),
    ("plus_one_pixel", _iou(plus_one=1.0), "+1 pixel"),
    ("union_counts_intersection_twice", _iou(union="twice"), "counted twice"),
    ("over_area_of_a", _iou(union="area_a"), ("area(a)", "union")),
    ("over_smaller_area", _iou(union="min_area"), ("smaller", "union")),
    ("pairs_elementwise", _iou(pairwise=False), "(N, M) matrix"),
    ("enclosing_box", _iou(corners="swapped"), ("max of the top-left", "min of the bottom-right")),
    ("boxes_read_as_xywh", _iou(fmt="xywh"), ("xyxy", "(x, y, w, h)")),
    ("transposed", lambda a, b: _iou()(b, a), ("(M, N)", "rows")),
    ("areas_without_none", _flat_areas_iou, ("broadcast", "area(a)[:, None]")),
):
    MUTANTS["box_iou"].append((_name, _fn, (_words,) if isinstance(_words, str) else _words))


@correct("box_iou")
def iou_as_hinted():
    return _iou()


@correct("box_iou")
def iou_torchvision():
    return torchvision.ops.box_iou


@correct("box_iou")
def iou_double_loop():
    def box_iou(a, b):
        out = torch.zeros(len(a), len(b))
        for i, (ax1, ay1, ax2, ay2) in enumerate(a.tolist()):
            for j, (bx1, by1, bx2, by2) in enumerate(b.tolist()):
                w = max(0.0, min(ax2, bx2) - max(ax1, bx1))
                h = max(0.0, min(ay2, by2) - max(ay1, by1))
                inter = w * h
                union = (ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - inter
                out[i, j] = inter / union
        return out

    return box_iou


@correct("box_iou")
def iou_unsqueeze_and_minimum():
    def box_iou(a, b):
        x1 = torch.maximum(a[:, 0].unsqueeze(1), b[:, 0].unsqueeze(0))
        y1 = torch.maximum(a[:, 1].unsqueeze(1), b[:, 1].unsqueeze(0))
        x2 = torch.minimum(a[:, 2].unsqueeze(1), b[:, 2].unsqueeze(0))
        y2 = torch.minimum(a[:, 3].unsqueeze(1), b[:, 3].unsqueeze(0))
        inter = (x2 - x1).clamp_(min=0) * (y2 - y1).clamp_(min=0)
        area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
        area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
        return inter / (area_a.unsqueeze(1) + area_b.unsqueeze(0) - inter)

    return box_iou


def _nms(
    *,
    order="descending",
    compare_to="kept",
    suppress_if="greater",
    output="indices",
    iou_fn=None,
    dtype=torch.int64,
):
    iou_fn = iou_fn or torchvision.ops.box_iou

    def nms(boxes, scores, threshold):
        if order == "descending":
            visit = scores.argsort(descending=True)
        elif order == "ascending":
            visit = scores.argsort()
        else:
            visit = torch.arange(len(boxes))
        iou = iou_fn(boxes, boxes)
        keep, positions = [], []
        suppressed = torch.zeros(len(boxes), dtype=torch.bool)
        for position, i in enumerate(visit.tolist()):
            if compare_to == "kept":
                others = keep
            elif compare_to == "last_kept":
                others = keep[-1:]
            else:  # "fast": every higher-scoring box suppresses, kept or not
                others = visit[:position].tolist()
            if compare_to == "fast":
                ok = not suppressed[i]
            elif suppress_if == "greater":
                ok = all(iou[i, j] <= threshold for j in others)
            elif suppress_if == "greater_equal":
                ok = all(iou[i, j] < threshold for j in others)
            else:  # reversed: drops the boxes that do *not* overlap
                ok = all(iou[i, j] > threshold for j in others)
            if compare_to == "fast":
                suppressed |= iou[i] > threshold
                suppressed[i] = suppressed[i] and not ok
            if ok:
                keep.append(i)
                positions.append(position)
        if output == "mask":
            mask = torch.zeros(len(boxes), dtype=torch.bool)
            mask[keep] = True
            return mask
        if output == "sorted":
            keep = sorted(keep)
        if output == "positions":
            keep = positions
        if dtype is None:
            return torch.tensor(keep)
        return torch.tensor(keep, dtype=dtype)

    return nms


def _fast_nms(boxes, scores, threshold):
    """YOLACT's Fast NMS: a box is dropped when any higher-scoring box overlaps it,
    kept or not."""
    order = scores.argsort(descending=True)
    iou = torchvision.ops.box_iou(boxes[order], boxes[order]).triu(diagonal=1)
    keep = iou.max(0).values <= threshold if len(boxes) else torch.zeros(0, dtype=torch.bool)
    return order[keep]


for _name, _fn, _words in (
    ("index_order", _nms(order="index"), "decreasing score"),
    ("ascending_scores", _nms(order="ascending"), "decreasing score"),
    ("greater_or_equal", _nms(suppress_if="greater_equal"), "IoU > threshold"),
    ("comparison_reversed", _nms(suppress_if="reversed"), ("reversed", "IoU > threshold")),
    ("returns_a_mask", _nms(output="mask"), "mask"),
    ("index_sorted_output", _nms(output="sorted"), "wrong order"),
    ("positions_in_sorted_order", _nms(output="positions"), ("positions", "order[")),
    ("suppressed_boxes_still_suppress", _fast_nms, ("suppressed", "still")),
    ("only_the_last_kept_box", _nms(compare_to="last_kept"), ("every kept box", "last")),
    ("plus_one_iou", _nms(iou_fn=_iou(plus_one=1.0)), "+1 pixel"),
    ("float_indices_when_empty", _nms(dtype=None), "int64"),
):
    MUTANTS["nms"].append((_name, _fn, (_words,) if isinstance(_words, str) else _words))


@correct("nms")
def nms_torchvision():
    return torchvision.ops.nms


@correct("nms")
def nms_as_hinted():
    return _nms()


@correct("nms")
def nms_shrinking_order():
    def nms(boxes, scores, iou_threshold):
        order = torch.argsort(scores, descending=True)
        keep = []
        while order.numel() > 0:
            best = order[0]
            keep.append(int(best))
            rest = order[1:]
            ious = torchvision.ops.box_iou(boxes[best][None], boxes[rest])[0]
            order = rest[ious <= iou_threshold]
        return torch.as_tensor(keep, dtype=torch.long)

    return nms


@correct("nms")
def nms_suppressed_mask():
    def nms(boxes, scores, iou_threshold):
        order = scores.sort(descending=True).indices
        iou = _iou()(boxes, boxes)
        removed = torch.zeros(len(boxes), dtype=torch.bool)
        keep = []
        for i in order:
            if removed[i]:
                continue
            keep.append(i)
            removed |= iou[i] > iou_threshold
        return torch.stack(keep) if keep else torch.empty(0, dtype=torch.int64)

    return nms


def _encode(
    *,
    cell="floor",
    index="row_col",
    xy="cell",
    wh="image",
    size="hw",
    objectness=True,
    classes="one_hot",
    centre="centre",
    layout="xywh_obj",
):
    def encode(boxes, labels, num_classes, grid, image_size):
        height, width = image_size if size == "hw" else image_size[::-1]
        target = torch.zeros(grid, grid, 5 + num_classes)
        for (x1, y1, x2, y2), label in zip(boxes.tolist(), labels.tolist(), strict=True):
            if centre == "centre":
                cx, cy = (x1 + x2) / 2 / width, (y1 + y2) / 2 / height
            else:
                cx, cy = x1 / width, y1 / height
            to_cell = {"floor": int, "round": round}[cell]
            col, row = min(to_cell(cx * grid), grid - 1), min(to_cell(cy * grid), grid - 1)
            x, y = (cx * grid - col, cy * grid - row) if xy == "cell" else (cx, cy)
            w, h = (x2 - x1) / width, (y2 - y1) / height
            if wh == "cell":
                w, h = w * grid, h * grid
            elif wh == "sqrt":
                w, h = math.sqrt(w), math.sqrt(h)
            elif wh == "pixels":
                w, h = x2 - x1, y2 - y1
            r, c = (row, col) if index == "row_col" else (col, row)
            values = [x, y, w, h, 1.0 if objectness else 0.0]
            if layout == "obj_first":
                values = values[4:] + values[:4]
            target[r, c, :5] = torch.tensor(values)
            if classes == "one_hot":
                target[r, c, 5 + label] = 1
            elif classes == "no_offset":
                target[r, c, label] = 1
            else:
                target[r, c, 5] = label
        return target

    return encode


for _name, _fn, _words in (
    ("row_col_swapped", _encode(index="col_row"), "swapped"),
    ("cell_rounded", _encode(cell="round"), ("off by one", "floor")),
    ("offsets_in_the_image", _encode(xy="image"), "offset inside its cell"),
    ("wh_in_cells", _encode(wh="cell"), "fractions of the image"),
    ("wh_square_roots", _encode(wh="sqrt"), ("square root", "loss")),
    ("wh_in_pixels", _encode(wh="pixels"), ("pixels", "width")),
    ("image_size_read_as_width_height", _encode(size="wh"), ("(height, width)",)),
    ("no_objectness", _encode(objectness=False), ("objectness", "channel 4")),
    ("objectness_first", _encode(layout="obj_first"), ("objectness", "channel 4")),
    ("one_hot_without_offset", _encode(classes="no_offset"), ("5 + label",)),
    ("class_as_a_number", _encode(classes="number"), ("one-hot",)),
    ("cell_of_the_corner", _encode(centre="corner"), ("centre", "corner")),
):
    MUTANTS["yolo_encoding"].append((_name, _fn, (_words,) if isinstance(_words, str) else _words))


@correct("yolo_encoding")
def encode_as_hinted():
    return _encode()


@correct("yolo_encoding")
def encode_package():
    return encode_yolo_targets


@correct("yolo_encoding")
def encode_vectorised_floor():
    def encode(boxes, labels, num_classes, grid, image_size):
        h, w = image_size
        target = torch.zeros(grid, grid, 5 + num_classes)
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2 / torch.tensor([w, h])
        sizes = (boxes[:, 2:] - boxes[:, :2]) / torch.tensor([w, h])
        cells = (centres * grid).floor().long().clamp(max=grid - 1)  # (col, row)
        offsets = centres * grid - cells
        for k in range(len(boxes)):
            col, row = cells[k].tolist()
            target[row, col, 0:2] = offsets[k]
            target[row, col, 2:4] = sizes[k]
            target[row, col, 4] = 1
            target[row, col, 5:] = nn.functional.one_hot(labels[k], num_classes)
        return target

    return encode


# ---------------------------------------------------------------------------
# The tests: every mutant rejected with its message, every right answer accepted
# ---------------------------------------------------------------------------

_MUTANT_CASES = [
    pytest.param(checker, fn, words, id=f"{checker}-{name}")
    for checker, entries in MUTANTS.items()
    for name, fn, words in entries
]
_CORRECT_CASES = [
    pytest.param(checker, fn, id=f"{checker}-{name}")
    for checker, entries in CORRECT.items()
    for name, fn in entries
]


def _run(checker: str, implementation) -> Report:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's own warnings (use_reentrant, ...)
        return CHECKERS[checker](implementation)


@pytest.mark.parametrize(("checker", "implementation", "words"), _MUTANT_CASES)
def test_a_mistake_is_rejected_and_named(checker, implementation, words):
    report = _run(checker, implementation)
    assert not report, f"the mistake went unnoticed: {report!r}"
    text = repr(report)
    missing = [w for w in words if w not in text]
    assert not missing, f"{missing} not in {text!r}"


@pytest.mark.parametrize(("checker", "implementation"), _CORRECT_CASES)
def test_a_right_answer_is_accepted(checker, implementation):
    report = _run(checker, implementation)
    assert report, repr(report)


def test_every_checker_has_its_suite():
    """At least 8 mistakes and 3 right answers per checker (issue #40)."""
    for checker in CHECKERS:
        assert len(MUTANTS[checker]) >= 8, checker
        assert len(CORRECT[checker]) >= 3, checker


def summary() -> str:
    """The table of benchmarks/RESULTS.md: per checker, the mutants, how many are
    rejected, how many of those with the message naming their mistake, and the right
    answers accepted."""
    lines = [
        "| checker | mutants | rejected | rejected, mistake named | right answers | accepted |",
        "|---|---|---|---|---|---|",
    ]
    totals = [0] * 5
    for checker in CHECKERS:
        rejected = named = 0
        for _, fn, words in MUTANTS[checker]:
            try:
                report = _run(checker, fn)
            except Exception:  # an older checker may crash on a mutant: not a rejection
                continue
            rejected += not report
            named += (not report) and all(w in repr(report) for w in words)
        accepted = 0
        for _, fn in CORRECT[checker]:
            try:
                accepted += bool(_run(checker, fn))
            except Exception:
                pass
        row = [len(MUTANTS[checker]), rejected, named, len(CORRECT[checker]), accepted]
        totals = [t + r for t, r in zip(totals, row, strict=True)]
        lines.append(f"| {checker} | " + " | ".join(map(str, row)) + " |")
    lines.append("| all | " + " | ".join(map(str, totals)) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(summary())


# ---------------------------------------------------------------------------
# The notebooks' own solutions and skeletons
# ---------------------------------------------------------------------------

_NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def _exercise_cells(kind: str) -> list[tuple[str, str]]:
    """(notebook, source) of every write-it-yourself cell: ``kind`` "solution" (a hidden
    solution that asserts its checker's report) or "skeleton" (the cell as the student
    finds it, which calls the checker on a body of ``...``)."""
    cells = []
    for path in sorted(_NOTEBOOKS.glob("0*.ipynb")):
        for cell in json.loads(path.read_text(encoding="utf-8"))["cells"]:
            source = "".join(cell["source"])
            if cell["cell_type"] != "code" or not re.search(r"\bcheck_\w+\([Mm]y", source):
                continue
            is_solution = source.startswith("# @title Solution")
            if is_solution == (kind == "solution"):
                cells.append((path.stem, source))
    return cells


def _namespace() -> dict:
    """What the exercise cells find defined by the cells above them."""
    return {
        "torch": torch,
        "nn": nn,
        "checkpoint": checkpoint,
        "eval_mode": eval_mode,
        "freeze_batchnorm": freeze_batchnorm,
        "print": lambda *a, **k: None,
        **{
            f.__name__: f
            for f in (
                check_train_epoch,
                check_batch_norm,
                check_basic_block,
                check_frozen_backbone,
                check_fgsm,
                check_projection,
                check_two_segments,
                check_scaling_rule,
                check_box_iou,
                check_nms,
                check_yolo_encoding,
            )
        },
    }


@pytest.mark.parametrize(
    ("notebook", "source"), [pytest.param(n, s, id=n) for n, s in _exercise_cells("solution")]
)
def test_the_notebooks_solutions_pass(notebook, source):
    """Each chapter's own solution is one more right answer (its cell asserts the report)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exec(compile(source, notebook, "exec"), _namespace())  # noqa: S102


def test_every_exercise_has_a_solution_and_a_skeleton():
    assert len(_exercise_cells("solution")) == 9  # 11 checkers; ch4 and ch7 pair two
    assert len(_exercise_cells("skeleton")) == 9


@pytest.mark.parametrize(
    ("notebook", "source"), [pytest.param(n, s, id=n) for n, s in _exercise_cells("skeleton")]
)
def test_an_unwritten_exercise_says_so(notebook, source):
    """The skeleton as the student finds it: every checker it calls says the body is not
    written yet, never a misleading mistake."""
    namespace = _namespace()
    exec(compile(source, notebook, "exec"), namespace)  # noqa: S102 (the checker runs too)
    calls = re.findall(r"\b(check_\w+)\(([Mm]y\w+(?:, [Mm]y\w+)*)\)", source)
    reports = [namespace[c](*(namespace[a] for a in args.split(", "))) for c, args in calls]
    assert reports
    for report in reports:
        text = repr(report)
        assert not report and re.search(r"returned None|write|not written|missing", text), text
