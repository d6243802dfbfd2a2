"""The "write it yourself" checkers (issue #30): a right implementation passes; each
typical mistake gets a message that names it.

Every wrong implementation below is one a student writes: a forgotten ``zero_grad``,
the unbiased variance in the normalisation, ReLU before the addition, a frozen head,
a step down the loss, a clamp around 0 instead of x, no recomputation, the
square-root rule, NMS in index order, a cell index rounded instead of floored...
"""

from __future__ import annotations

import math

import pytest
import torch
import torchvision
from torch import nn
from torch.utils.checkpoint import checkpoint

from course.adversarial import check_fgsm, check_projection
from course.check import Report, check_train_epoch, compare, run_checks
from course.checkpointing import check_two_segments
from course.detection.boxes import check_box_iou, check_nms
from course.detection.yolo import check_yolo_encoding, encode_yolo_targets
from course.finetune import check_frozen_backbone
from course.models import freeze_batchnorm
from course.norm import check_batch_norm
from course.residual import check_basic_block
from course.scaling import check_scaling_rule


def _passes(report: Report) -> None:
    assert report, repr(report)
    assert repr(report).startswith("✓")


def _fails(report: Report, *words: str) -> None:
    assert not report, f"the mistake went unnoticed: {report!r}"
    text = repr(report)
    assert text.startswith("✗")
    for word in words:
        assert word in text, f"{word!r} not in {text!r}"


# ---------------------------------------------------------------------------
# The shared machinery
# ---------------------------------------------------------------------------


def test_compare_names_what_differs():
    want = torch.tensor([1.0, -2.0, 3.0])
    assert compare(want.clone(), want, "y") is None
    assert "returned None" in compare(None, want, "y")
    assert "shape (2,)" in compare(want[:2], want, "y")
    assert "dtype torch.float64" in compare(want.double(), want, "y")
    assert "opposite sign" in compare(-want, want, "y")
    assert "times 2" in compare(2 * want, want, "y")
    assert "NaN" in compare(torch.tensor([1.0, math.nan, 3.0]), want, "y")
    assert "differs" in compare(want + torch.tensor([0.0, 0.5, 0.0]), want, "y")


def test_a_report_stops_at_the_first_problem_and_turns_errors_into_messages():
    def boom():
        raise IndexError("index 7 is out of bounds")

    report = run_checks("demo", [("one", lambda: None), ("two", boom), ("three", lambda: None)])
    assert not report and report.passed == ["one"]
    assert "two: your code raised IndexError: index 7 is out of bounds" in repr(report)
    assert "passed before it: one" in repr(report)


def test_an_unwritten_skeleton_says_so():
    def skeleton(*args): ...  # the exercise cell as the student finds it

    for checker in (check_train_epoch, check_batch_norm, check_fgsm, check_box_iou, check_nms):
        _fails(checker(skeleton), "returned None")


# ---------------------------------------------------------------------------
# Chapter 0: the training loop
# ---------------------------------------------------------------------------


def _epoch(zero_grad=True, train=True, step=True, total="mean", item=True):
    def train_epoch(model, loader, loss_fn, optimizer):
        if train:
            model.train()
        losses, count = [], 0
        for x, y in loader:
            if zero_grad:
                optimizer.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            if step:
                optimizer.step()
            losses.append((loss.item() if item else loss) * len(x))
            count += len(x)
        return sum(losses) / count if total == "mean" else sum(losses)

    return train_epoch


def test_train_epoch():
    _passes(check_train_epoch(_epoch()))
    _fails(check_train_epoch(_epoch(zero_grad=False)), "zero_grad")
    _fails(check_train_epoch(_epoch(train=False)), "model.train()")
    _fails(check_train_epoch(_epoch(step=False)), "optimizer.step()")
    _fails(check_train_epoch(_epoch(total="sum")), "summed loss")
    _fails(check_train_epoch(_epoch(item=False)), "loss.item()")


# ---------------------------------------------------------------------------
# Chapter 1: BatchNorm's forward pass
# ---------------------------------------------------------------------------


def _bn(
    unbiased_norm=False,
    axes=(0, 2, 3),
    affine=True,
    eps=True,
    update=True,
    momentum_reversed=False,
    running_biased=False,
    eval_batch=False,
    eval_update=False,
):
    def batch_norm(
        x, gamma, beta, running_mean, running_var, training, momentum=0.1, eps_value=1e-5
    ):
        e = eps_value if eps else 0.0
        shape = (1, -1, 1, 1)
        if training or eval_batch:
            mean = x.mean(axes, keepdim=True)
            var = x.var(axes, unbiased=unbiased_norm, keepdim=True)
            if update and (training or eval_update):
                batch_var = x.var((0, 2, 3), unbiased=not running_biased)
                m = 1 - momentum if momentum_reversed else momentum
                running_mean.mul_(1 - m).add_(m * x.mean((0, 2, 3)))
                running_var.mul_(1 - m).add_(m * batch_var)
        else:
            mean, var = running_mean.view(shape), running_var.view(shape)
            if eval_update:
                running_mean.mul_(0.9).add_(0.1 * x.mean((0, 2, 3)))
        y = (x - mean) / (var + e).sqrt()
        return y * gamma.view(shape) + beta.view(shape) if affine else y

    return batch_norm


def test_batch_norm():
    _passes(check_batch_norm(_bn()))
    _fails(check_batch_norm(_bn(unbiased_norm=True)), "biased variance")
    _fails(check_batch_norm(_bn(axes=(1, 2, 3))), "wrong axes", "(0, 2, 3)")
    _fails(check_batch_norm(_bn(affine=False)), "gamma and beta")
    _fails(check_batch_norm(_bn(eps=False)), "NaN", "eps")
    _fails(check_batch_norm(_bn(update=False)), "running_mean was not updated")
    _fails(check_batch_norm(_bn(momentum_reversed=True)), "momentum is reversed")
    _fails(check_batch_norm(_bn(running_biased=True)), "unbiased variance")
    _fails(check_batch_norm(_bn(eval_batch=True)), "eval mode used the batch")
    _fails(check_batch_norm(_bn(eval_update=True)), "eval mode changed the running")


# ---------------------------------------------------------------------------
# Chapter 2: the residual block
# ---------------------------------------------------------------------------


def _block(relu_after_add=True, project=True, bias=False, add=True, identity_params=False):
    class Block(nn.Module):
        def __init__(self, in_channels, out_channels, stride=1):
            super().__init__()
            self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=bias)
            self.bn1 = nn.BatchNorm2d(out_channels)
            self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=bias)
            self.bn2 = nn.BatchNorm2d(out_channels)
            self.shortcut = nn.Identity()
            changes = stride != 1 or in_channels != out_channels
            if (changes and project) or identity_params:
                self.shortcut = nn.Sequential(
                    nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                    nn.BatchNorm2d(out_channels),
                )

        def forward(self, x):
            out = self.bn2(self.conv2(self.bn1(self.conv1(x)).relu()))
            if not relu_after_add:
                out = out.relu()
            if add:
                out = out + self.shortcut(x)
            return out.relu() if relu_after_add else out

    return Block


def test_basic_block():
    _passes(check_basic_block(_block()))
    _fails(check_basic_block(_block(relu_after_add=False)), "ReLU after the addition")
    _fails(check_basic_block(_block(project=False)), "must project", "stride")
    _fails(check_basic_block(_block(bias=True)), "bias=False")
    _fails(check_basic_block(_block(add=False)), "shortcut is not added")
    _fails(check_basic_block(_block(identity_params=True)), "identity")


# ---------------------------------------------------------------------------
# Chapter 3: the new head and the frozen backbone
# ---------------------------------------------------------------------------


def _prepare(freeze=True, head_first=False, freeze_bn=True, out=None):
    def prepare(model, num_classes):
        if head_first:
            model.fc = nn.Linear(512, out or num_classes)
        if freeze_bn:
            freeze_batchnorm(model)
        if freeze:
            for p in model.parameters():
                p.requires_grad_(False)
        if not head_first:
            model.fc = nn.Linear(512, out or num_classes)
        return model

    return prepare


def test_frozen_backbone():
    _passes(check_frozen_backbone(_prepare()))
    _fails(check_frozen_backbone(_prepare(freeze=False)), "backbone parameters still train")
    _fails(check_frozen_backbone(_prepare(head_first=True)), "the new head is frozen")
    _fails(
        check_frozen_backbone(_prepare(freeze_bn=False)), "running statistics", "FrozenBatchNorm2d"
    )
    _fails(check_frozen_backbone(_prepare(out=1000)), "nn.Linear(512, num_classes)")


# ---------------------------------------------------------------------------
# Chapter 4: FGSM and PGD's projection
# ---------------------------------------------------------------------------


def _fgsm(sign=1.0, use_sign=True, clamp=True, eval_mode=True, detach=True, restore=True):
    def attack(model, x, y, eps):
        was_training = model.training
        if eval_mode:
            model.eval()
        x = x.clone().requires_grad_(True)
        loss = nn.functional.cross_entropy(model(x), y)
        (grad,) = torch.autograd.grad(loss, x)
        step = grad.sign() if use_sign else grad
        x_adv = x + sign * eps * step
        if clamp:
            x_adv = x_adv.clamp(0, 1)
        if restore:
            model.train(was_training)
        return x_adv.detach() if detach else x_adv

    return attack


def test_fgsm():
    _passes(check_fgsm(_fgsm()))
    _fails(check_fgsm(_fgsm(sign=-1.0)), "stepped *down* the loss")
    _fails(check_fgsm(_fgsm(use_sign=False)), "grad.sign()")
    _fails(check_fgsm(_fgsm(clamp=False)), "clamp")
    _fails(check_fgsm(_fgsm(eval_mode=False)), "eval mode")
    _fails(check_fgsm(_fgsm(restore=False)), "restore its mode")
    _fails(check_fgsm(_fgsm(detach=False)), "detach")


def test_projection():
    _passes(
        check_projection(lambda a, x, eps: torch.min(torch.max(a, x - eps), x + eps).clamp(0, 1))
    )
    _fails(check_projection(lambda a, x, eps: a.clamp(-eps, eps).clamp(0, 1)), "centred on x")
    _fails(check_projection(lambda a, x, eps: torch.min(torch.max(a, x - eps), x + eps)), "[0, 1]")
    _fails(
        check_projection(lambda a, x, eps: (x + eps * (a - x).sign()).clamp(0, 1)),
        "project, do not step",
    )


# ---------------------------------------------------------------------------
# Chapter 5: two-segment checkpointing
# ---------------------------------------------------------------------------


def _two_segments(mode="right"):
    def forward(layers, x):
        k = len(layers) // 2
        if mode == "plain":
            return layers(x)
        if mode == "both":
            x = checkpoint(layers[:k], x, use_reentrant=False)
            return checkpoint(layers[k:], x, use_reentrant=False)
        if mode == "reentrant":
            return layers[k:](checkpoint(layers[:k], x, use_reentrant=True))
        if mode == "split":
            return layers[1:](checkpoint(layers[:1], x, use_reentrant=False))
        if mode == "no_grad":
            with torch.no_grad():
                return layers(x)
        return layers[k:](checkpoint(layers[:k], x, use_reentrant=False))

    return forward


def test_two_segments():
    _passes(check_two_segments(_two_segments()))
    _fails(check_two_segments(_two_segments("plain")), "nothing was recomputed")
    _fails(check_two_segments(_two_segments("both")), "second half is recomputed")
    with pytest.warns(UserWarning):  # torch warns too; the checker says what to do
        _fails(check_two_segments(_two_segments("reentrant")), "use_reentrant=False")
    _fails(check_two_segments(_two_segments("split")), "len(layers) // 2")
    _fails(check_two_segments(_two_segments("no_grad")), "no graph")


# ---------------------------------------------------------------------------
# Chapter 6: the linear scaling rule and the warmup factor
# ---------------------------------------------------------------------------


def _linear(base_lr, batch, base=256):
    return base_lr * batch / base


def _warmup(step, steps):
    return 1.0 if steps == 0 else min(1.0, step / steps)


def test_scaling_rule():
    _passes(check_scaling_rule(_linear, _warmup))
    _fails(
        check_scaling_rule(lambda lr, b, base=256: lr * math.sqrt(b / base), _warmup),
        "square-root rule",
    )
    _fails(check_scaling_rule(lambda lr, b, base=256: lr * base / b, _warmup), "inverted")
    _fails(check_scaling_rule(lambda lr, b, base=256: lr * (b // base), _warmup), "//")
    _fails(
        check_scaling_rule(_linear, lambda t, n: 1.0 if n == 0 else min(1.0, (t + 1) / n)),
        "off by one",
    )
    _fails(check_scaling_rule(_linear, lambda t, n: 1.0 if n == 0 else t / n), "above 1")
    _fails(check_scaling_rule(_linear, lambda t, n: min(1.0, t / n)), "divides by zero")


# ---------------------------------------------------------------------------
# Chapter 7: IoU, NMS and the YOLO encoding
# ---------------------------------------------------------------------------


def _iou(clamp=True, plus_one=0.0, union_twice=False, pairwise=True):
    def box_iou(a, b):
        if not pairwise:
            a_, b_ = a, b
        else:
            a_, b_ = a[:, None], b[None]
        lt = torch.max(a_[..., :2], b_[..., :2])
        rb = torch.min(a_[..., 2:], b_[..., 2:])
        wh = rb - lt + plus_one
        if clamp:
            wh = wh.clamp(min=0)
        inter = wh[..., 0] * wh[..., 1]
        area_a = (a_[..., 2] - a_[..., 0] + plus_one) * (a_[..., 3] - a_[..., 1] + plus_one)
        area_b = (b_[..., 2] - b_[..., 0] + plus_one) * (b_[..., 3] - b_[..., 1] + plus_one)
        union = area_a + area_b if union_twice else area_a + area_b - inter
        return inter / union

    return box_iou


def test_box_iou():
    _passes(check_box_iou(_iou()))
    _passes(check_box_iou(torchvision.ops.box_iou))
    _fails(check_box_iou(_iou(clamp=False)), "clamp the intersection")
    _fails(check_box_iou(_iou(plus_one=1.0)), "+1 pixel")
    _fails(check_box_iou(_iou(union_twice=True)), "counted twice")
    _fails(check_box_iou(_iou(pairwise=False)), "(N, M) matrix")


def _nms(order="score", strict=True, as_mask=False, reverse_output=False):
    def nms(boxes, scores, threshold):
        indices = scores.argsort(descending=True) if order == "score" else torch.arange(len(boxes))
        keep = []
        for i in indices.tolist():
            ious = [
                torchvision.ops.box_iou(boxes[i : i + 1], boxes[j : j + 1]).item() for j in keep
            ]
            if all((iou <= threshold) if strict else (iou < threshold) for iou in ious):
                keep.append(i)
        if as_mask:
            mask = torch.zeros(len(boxes), dtype=torch.bool)
            mask[keep] = True
            return mask
        keep = sorted(keep) if reverse_output else keep
        return torch.tensor(keep, dtype=torch.int64)

    return nms


def test_nms():
    _passes(check_nms(_nms()))
    _passes(check_nms(torchvision.ops.nms))
    _fails(check_nms(_nms(order="index")), "decreasing score")
    _fails(check_nms(_nms(strict=False)), "IoU > threshold")
    _fails(check_nms(_nms(as_mask=True)), "mask")
    _fails(check_nms(_nms(reverse_output=True)), "wrong order")


def _encode(swap=False, rounding=False, image_offsets=False, cell_wh=False, hw_swapped=False):
    def encode(boxes, labels, num_classes, grid, image_size):
        height, width = image_size
        if hw_swapped:
            height, width = width, height
        target = torch.zeros(grid, grid, 5 + num_classes)
        for (x1, y1, x2, y2), label in zip(boxes.tolist(), labels.tolist(), strict=True):
            cx, cy = (x1 + x2) / 2 / width, (y1 + y2) / 2 / height
            to_cell = round if rounding else int
            col, row = min(to_cell(cx * grid), grid - 1), min(to_cell(cy * grid), grid - 1)
            x, y = (cx, cy) if image_offsets else (cx * grid - col, cy * grid - row)
            w, h = (x2 - x1) / width, (y2 - y1) / height
            if cell_wh:
                w, h = w * grid, h * grid
            r, c = (col, row) if swap else (row, col)
            target[r, c, :5] = torch.tensor([x, y, w, h, 1.0])
            target[r, c, 5 + label] = 1
        return target

    return encode


def test_yolo_encoding():
    _passes(check_yolo_encoding(_encode()))
    _passes(check_yolo_encoding(encode_yolo_targets))
    _fails(check_yolo_encoding(_encode(swap=True)), "swapped")
    _fails(check_yolo_encoding(_encode(rounding=True)), "off by one", "floor")
    _fails(check_yolo_encoding(_encode(image_offsets=True)), "offset inside its cell")
    _fails(check_yolo_encoding(_encode(cell_wh=True)), "fractions of the image")
    _fails(check_yolo_encoding(_encode(hw_swapped=True)), "wrong cells")
