"""Normalisation layers written from their formulas (chapter 1).

Each layer computes, over some axes of its input::

    y = (x - mean) / sqrt(var + eps) * gamma + beta

with the *biased* variance (divide by n). They differ only in the axes
(for an input of shape (N, C, H, W))::

    layer          statistics over                   one (mean, var) per
    BatchNorm2d    N, H, W                           channel
    LayerNorm      the last dims (e.g. C, H, W)      sample
    InstanceNorm   H, W                              sample and channel
    GroupNorm      H, W and C/G channels of a group  sample and group

They are drop-in replacements for the ``torch.nn`` classes: same constructor
arguments, same ``state_dict`` keys, same outputs, running statistics and
gradients (autograd differentiates the formulas). None of them calls
torch's fused normalisation functions: the arithmetic is all here.

Used in chapter 1.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from course.check import Report, compare, run_checks
from course.config import run_seed


def normalize(x: torch.Tensor, dims: Sequence[int], eps: float) -> torch.Tensor:
    """(x - mean) / sqrt(var + eps), mean and biased var taken over ``dims``."""
    mean = x.mean(dim=tuple(dims), keepdim=True)
    var = x.var(dim=tuple(dims), unbiased=False, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps)


def _affine(y: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None, shape):
    if weight is not None:
        y = y * weight.view(shape)
    if bias is not None:
        y = y + bias.view(shape)
    return y


class _RunningStatsNorm(nn.Module):
    """Parameters (gamma, beta) and running statistics shared by BatchNorm and InstanceNorm."""

    def __init__(
        self,
        num_features: int,
        eps: float,
        momentum: float | None,
        affine: bool,
        track_running_stats: bool,
        device: torch.device | str | None,
        dtype: torch.dtype | None,
    ) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        if affine:
            self.weight = nn.Parameter(torch.ones(num_features, **factory))  # gamma
            self.bias = nn.Parameter(torch.zeros(num_features, **factory))  # beta
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if track_running_stats:
            self.register_buffer("running_mean", torch.zeros(num_features, **factory))
            self.register_buffer("running_var", torch.ones(num_features, **factory))
            self.register_buffer(
                "num_batches_tracked", torch.tensor(0, dtype=torch.long, device=device)
            )
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)

    def reset_running_stats(self) -> None:
        if self.track_running_stats:
            self.running_mean.zero_()
            self.running_var.fill_(1)
            self.num_batches_tracked.zero_()

    @torch.no_grad()
    def _move_running_stats(
        self, mean: torch.Tensor, unbiased_var: torch.Tensor, factor: float
    ) -> None:
        """running = (1 - factor) * running + factor * batch, for the mean and the variance."""
        self.running_mean.mul_(1 - factor).add_(factor * mean)
        self.running_var.mul_(1 - factor).add_(factor * unbiased_var)

    def _normalize_with_running_stats(self, x: torch.Tensor, shape) -> torch.Tensor:
        mean, var = self.running_mean.view(shape), self.running_var.view(shape)
        return (x - mean) / torch.sqrt(var + self.eps)

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
            f"affine={self.affine}, track_running_stats={self.track_running_stats}"
        )


class BatchNorm2d(_RunningStatsNorm):
    """Batch normalisation of an (N, C, H, W) input, one (mean, var) per channel.

    ``train()`` mode: normalise with the statistics of the minibatch and update
    the running estimates (the slides' formulas, momentum 0.1):

        running_mean = (1 - momentum) * running_mean + momentum * mean_batch
        running_var  = (1 - momentum) * running_var  + momentum * var_batch_unbiased

    ``eval()`` mode: normalise with the running estimates, so the output of a
    sample no longer depends on the other samples of the batch.
    ``momentum=None`` gives a cumulative average (factor 1 / batches seen).
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype)

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() != 4:
            raise ValueError(f"expected 4D input (N, C, H, W), got {x.dim()}D input")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        if x.shape[1] != self.num_features:
            raise ValueError(f"expected {self.num_features} channels, got {x.shape[1]}")
        shape = (1, -1) + (1,) * (x.dim() - 2)
        dims = [0] + list(range(2, x.dim()))
        use_batch_stats = self.training or not self.track_running_stats
        if use_batch_stats:
            n = x.numel() // x.shape[1]
            if n <= 1 and self.training:
                raise ValueError(
                    f"Expected more than 1 value per channel when training, got input size "
                    f"{tuple(x.shape)}: use a batch of 2 or more, or call model.eval()."
                )
            y = normalize(x, dims, self.eps)
            if self.training and self.track_running_stats:
                self._update_running_stats(x, dims, n)
        else:
            y = self._normalize_with_running_stats(x, shape)
        return _affine(y, self.weight, self.bias, shape)

    @torch.no_grad()
    def _update_running_stats(self, x: torch.Tensor, dims: list[int], n: int) -> None:
        self.num_batches_tracked += 1
        if self.momentum is None:  # cumulative moving average
            factor = 1.0 / float(self.num_batches_tracked)
        else:
            factor = self.momentum
        unbiased_var = x.var(dim=dims, unbiased=False) * (n / (n - 1))
        self._move_running_stats(x.mean(dim=dims), unbiased_var, factor)


class InstanceNorm2d(_RunningStatsNorm):
    """Instance normalisation: one (mean, var) per sample and channel, over H and W.

    Input (N, C, H, W) or unbatched (C, H, W). As in ``torch.nn``, ``affine``
    and ``track_running_stats`` default to False; when statistics are tracked,
    the running estimates move towards the batch average of the per-instance
    statistics, and ``num_batches_tracked`` stays at 0.
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = False,
        track_running_stats: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3:
            return self.forward(x.unsqueeze(0)).squeeze(0)
        if x.dim() != 4:
            raise ValueError(f"expected 3D or 4D input, got {x.dim()}D input")
        shape = (1, -1, 1, 1)
        if self.training or not self.track_running_stats:
            n = x.shape[2] * x.shape[3]
            if n <= 1 and self.training:
                raise ValueError(
                    f"Expected more than 1 spatial element when training, got input size "
                    f"{tuple(x.shape)}"
                )
            y = normalize(x, (2, 3), self.eps)
            if self.training and self.track_running_stats and self.momentum is not None:
                # Batch averages of the per-instance statistics.
                mean = x.detach().mean(dim=(2, 3)).mean(0)
                var = (x.detach().var(dim=(2, 3), unbiased=False) * (n / (n - 1))).mean(0)
                self._move_running_stats(mean, var, self.momentum)
        else:
            y = self._normalize_with_running_stats(x, shape)
        return _affine(y, self.weight, self.bias, shape)


class LayerNorm(nn.Module):
    """Layer normalisation over the last ``len(normalized_shape)`` dimensions.

    One (mean, var) per sample, no running statistics: train and eval modes
    compute the same thing. ``weight`` and ``bias`` have ``normalized_shape``.
    """

    def __init__(
        self,
        normalized_shape: int | Sequence[int],
        eps: float = 1e-5,
        elementwise_affine: bool = True,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if isinstance(normalized_shape, int):
            normalized_shape = (normalized_shape,)
        self.normalized_shape = tuple(normalized_shape)
        self.eps, self.elementwise_affine = eps, elementwise_affine
        factory = {"device": device, "dtype": dtype}
        if elementwise_affine:
            self.weight = nn.Parameter(torch.ones(self.normalized_shape, **factory))
            if bias:
                self.bias = nn.Parameter(torch.zeros(self.normalized_shape, **factory))
            else:
                self.register_parameter("bias", None)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = len(self.normalized_shape)
        if tuple(x.shape[-k:]) != self.normalized_shape:
            raise ValueError(
                f"the last dims of the input {tuple(x.shape)} must be {self.normalized_shape}"
            )
        y = normalize(x, range(x.dim() - k, x.dim()), self.eps)
        if self.weight is not None:
            y = y * self.weight
        if self.bias is not None:
            y = y + self.bias
        return y

    def extra_repr(self) -> str:
        return (
            f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"
        )


class GroupNorm(nn.Module):
    """Group normalisation: channels split into ``num_groups`` groups; one
    (mean, var) per sample and group, over the group's channels and all
    spatial positions. ``num_groups=1`` is LayerNorm over (C, H, W) with
    per-channel affine parameters; ``num_groups=C`` is InstanceNorm.
    """

    def __init__(
        self,
        num_groups: int,
        num_channels: int,
        eps: float = 1e-5,
        affine: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if num_channels % num_groups != 0:
            raise ValueError(
                f"num_channels ({num_channels}) must be divisible by num_groups ({num_groups})"
            )
        self.num_groups, self.num_channels, self.eps, self.affine = (
            num_groups,
            num_channels,
            eps,
            affine,
        )
        factory = {"device": device, "dtype": dtype}
        if affine:
            self.weight = nn.Parameter(torch.ones(num_channels, **factory))
            self.bias = nn.Parameter(torch.zeros(num_channels, **factory))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 2 or x.shape[1] != self.num_channels:
            raise ValueError(f"expected input (N, {self.num_channels}, ...), got {tuple(x.shape)}")
        n = x.shape[0]
        grouped = x.reshape(n, self.num_groups, -1)  # (N, G, C/G * H * W)
        y = normalize(grouped, (2,), self.eps).reshape(x.shape)
        return _affine(y, self.weight, self.bias, (1, -1) + (1,) * (x.dim() - 2))

    def extra_repr(self) -> str:
        return f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}"


def statistics_axes(layer: str, num_groups: int = 2) -> tuple[str, ...]:
    """The axes of an (N, C, H, W) input a layer averages over, for the chapter's figure."""
    axes = {
        "BatchNorm": ("N", "H", "W"),
        "LayerNorm": ("C", "H", "W"),
        "InstanceNorm": ("H", "W"),
        "GroupNorm": (f"C/{num_groups}", "H", "W"),
    }
    if layer not in axes:
        raise ValueError(f"unknown layer {layer!r}; choose one of {sorted(axes)}")
    return axes[layer]


def loss_along_gradient(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    distances: Sequence[float],
    loss_fn=nn.functional.cross_entropy,
) -> tuple[list[float], list[float]]:
    """How the loss and its gradient change along the gradient direction.

    From the current parameters theta with gradient g, moves a distance t
    along the unit gradient direction and evaluates, for each t in
    ``distances``, the loss ``L(theta - t g/|g|)`` and the gradient change
    ``|grad L(theta - t g/|g|) - g|``. Equal distances make networks with
    gradients of different sizes comparable. Santurkar et al. (2018) use such
    measurements to show that BN makes the landscape smoother.

    The model is evaluated in train mode (batch statistics of ``x``) without
    updating BN's running statistics; its parameters, gradients and mode are
    left as they were.

    Returns:
        (losses, gradient_changes), one value per distance.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    saved = [p.detach().clone() for p in params]
    saved_grads = [None if p.grad is None else p.grad.clone() for p in params]
    buffers = {name: b.clone() for name, b in model.named_buffers()}  # running statistics
    was_training = model.training
    model.train()

    def loss_and_grad() -> tuple[float, list[torch.Tensor]]:
        loss = loss_fn(model(x), y)
        grads = torch.autograd.grad(loss, params)
        return float(loss.detach()), [g.detach() for g in grads]

    def norm_of(tensors) -> torch.Tensor:
        return torch.sqrt(sum((t**2).sum() for t in tensors))

    try:
        _, g0 = loss_and_grad()
        g0_norm = norm_of(g0)
        losses, changes = [], []
        for t in distances:
            with torch.no_grad():
                for p, p0, g in zip(params, saved, g0, strict=True):
                    p.copy_(p0 - t * g / g0_norm)
            loss, g = loss_and_grad()
            losses.append(loss)
            changes.append(float(norm_of([a - b for a, b in zip(g, g0, strict=True)])))
    finally:
        with torch.no_grad():
            for p, p0, grad in zip(params, saved, saved_grads, strict=True):
                p.copy_(p0)
                p.grad = grad
            for name, b in model.named_buffers():
                b.copy_(buffers[name])
        model.train(was_training)
    return losses, changes


def running_estimates(
    momentum: float | None,
    batch_size: int,
    steps: int,
    true_mean: float = 2.0,
    true_std: float = 3.0,
    seed: int = 0,
) -> dict[str, list[float]]:
    """Feed ``steps`` batches of N(true_mean, true_std^2) data through a BatchNorm2d(1).

    Returns the running mean and running variance after each step (and the
    batch statistics), to see how momentum and batch size trade the speed of
    convergence against the noise of the estimate. Used by the chapter's widget.
    ``momentum=None`` gives BN's cumulative average (exercise 1.1).
    """
    generator = torch.Generator().manual_seed(run_seed(seed))
    bn = BatchNorm2d(1, momentum=momentum)
    history: dict[str, list[float]] = {"running_mean": [], "running_var": [], "batch_mean": []}
    for _ in range(steps):
        x = true_mean + true_std * torch.randn(batch_size, 1, 4, 4, generator=generator)
        bn(x)
        history["running_mean"].append(float(bn.running_mean))
        history["running_var"].append(float(bn.running_var))
        history["batch_mean"].append(float(x.mean()))
    return history


def draw_statistics_cube(ax, layer: str, num_groups: int = 2, n: int = 4, c: int = 6, hw: int = 5):
    """Draw an (N, C, H*W) cube on a 3-d matplotlib ``ax``, the voxels that share
    one (mean, var) pair of ``layer`` highlighted (after Wu & He's figure).
    """
    axes = statistics_axes(layer, num_groups)
    filled = np.ones((n, c, hw), dtype=bool)
    colors = np.full(filled.shape, "#dddddd55", dtype=object)
    sel_n = slice(None) if "N" in axes else slice(0, 1)
    if "C" in axes:
        sel_c = slice(None)
    elif any(a.startswith("C/") for a in axes):
        sel_c = slice(0, c // num_groups)
    else:
        sel_c = slice(0, 1)
    colors[sel_n, sel_c, :] = "#3b6ea5ee"
    ax.voxels(filled, facecolors=colors, edgecolor="#777777", linewidth=0.3)
    ax.set_xlabel("N")
    ax.set_ylabel("C")
    ax.set_zlabel("H, W")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_zticks([])
    ax.set_title(layer)
    return ax


# ---------------------------------------------------------------------------
# Exercise: write BatchNorm's forward pass yourself
# ---------------------------------------------------------------------------


def _normalise(x, mean, var, eps: float, eps_inside: bool = True) -> torch.Tensor:
    """(x - mean) / sqrt(var + eps), or the mistake (x - mean) / (sqrt(var) + eps)."""
    if eps_inside:
        return (x - mean) / (var + eps).sqrt()
    return (x - mean) / (var.sqrt() + eps)


#: The axes a student may reduce over instead of (0, 2, 3), for x of shape (N, C, H, W).
_WRONG_AXES = ((1, 2, 3), (0,), (0, 1, 2, 3), (2, 3), (0, 2), (0, 3))

_EPS_INSIDE = (
    "eps goes inside the square root: (x - mean) / sqrt(var + eps), "
    "not (x - mean) / (sqrt(var) + eps)"
)


def check_batch_norm(batch_norm) -> Report:
    """Check ``batch_norm(x, gamma, beta, running_mean, running_var, training,
    momentum=0.1, eps=1e-5) -> y`` for x of shape (N, C, H, W), against torch's own
    ``nn.BatchNorm2d`` (the reference: ``BatchNorm2d`` above uses no torch
    normalisation function): the output in both
    modes, and the running estimates, updated in place in training mode only (mean,
    and *unbiased* variance, with ``new = (1 - momentum) * old + momentum * batch``).
    The inputs make the small mistakes show: a near-constant channel and a constant
    one (where eps matters), a zero running variance in eval mode."""
    torch.manual_seed(0)
    x = 3 + 2 * torch.randn(8, 4, 5, 5)
    x[:, 2] = 0.5 + 1e-3 * torch.randn(8, 5, 5)  # variance 1e-6, below eps: eps's place shows
    gamma, beta = 1 + torch.rand(4), torch.randn(4)
    shape = (1, -1, 1, 1)

    def affine(z: torch.Tensor) -> torch.Tensor:  # y = z * gamma + beta, per channel
        return z * gamma.view(shape) + beta.view(shape)

    def initial_estimates(zero_var: bool = False):
        mean, var = torch.randn(4), 1 + torch.rand(4)
        if zero_var:
            var[1] = 0.0  # a channel that was constant on every batch seen
        return mean, var

    def run(fn, x, training, zero_var=False):
        mean, var = initial_estimates(zero_var)
        stats = [mean.clone(), var.clone()]
        y = fn(x, gamma, beta, stats[0], stats[1], training, 0.1, 1e-5)
        return y, stats, (mean, var)

    def reference(x, gamma, beta, mean, var, training, momentum, eps):
        layer = nn.BatchNorm2d(x.shape[1], eps=eps, momentum=momentum).train(training)
        with torch.no_grad():
            layer.weight.copy_(gamma)
            layer.bias.copy_(beta)
            layer.running_mean.copy_(mean)
            layer.running_var.copy_(var)
            y = layer(x)
            mean.copy_(layer.running_mean)
            var.copy_(layer.running_var)
        return y

    def close(got: torch.Tensor, z: torch.Tensor) -> bool:
        return torch.allclose(got, affine(z), atol=1e-4, rtol=1e-4)

    def output_in(training: bool, zero_var: bool = False):
        def check() -> str | None:
            torch.manual_seed(1)
            got, (mean, var), (mean0, var0) = run(batch_norm, x, training, zero_var)
            torch.manual_seed(1)
            want, _, _ = run(reference, x, training, zero_var)
            mode = "training" if training else "eval"
            what = f"the output in {mode} mode" + (" (a zero running variance)" if zero_var else "")
            problem = compare(got, want, what, atol=1e-4)  # float32 sums over 200 values
            if problem is not None and not training:
                if not (torch.equal(mean, mean0) and torch.equal(var, var0)):
                    return "eval mode changed the running estimates: update them only in training"
            if problem is None or got is None or got.shape != want.shape:
                return problem
            if not torch.isfinite(got).all():
                return problem
            got = got.detach()
            batch_mean = x.mean((0, 2, 3), keepdim=True)
            biased = x.var((0, 2, 3), unbiased=False, keepdim=True)
            if training:
                if close(got, _normalise(x, batch_mean, biased, 1e-5, eps_inside=False)):
                    return _EPS_INSIDE
                if close(got, _normalise(x, batch_mean, biased, 0.0)):
                    return (
                        "eps is missing: (x - mean) / sqrt(var + eps); without it a "
                        "(near-)constant channel divides by (almost) zero: inf or NaN"
                    )
                unbiased = x.var((0, 2, 3), keepdim=True)
                if close(got, _normalise(x, batch_mean, unbiased, 1e-5)):
                    return (
                        "normalise with the biased variance (divide by n, "
                        "unbiased=False); only the running estimate uses the unbiased one"
                    )
                for axes in _WRONG_AXES:
                    wrong = _normalise(
                        x,
                        x.mean(axes, keepdim=True),
                        x.var(axes, unbiased=False, keepdim=True),
                        1e-5,
                    )
                    if close(got, wrong):
                        return (
                            f"statistics over the wrong axes {axes}: one mean and variance "
                            "per channel, over (N, H, W), i.e. dims (0, 2, 3)"
                        )
                plain = _normalise(x, batch_mean, biased, 1e-5)
                if torch.allclose(got, plain, atol=1e-4):
                    return "gamma and beta are not applied: y = x_hat * gamma + beta (per channel)"
                updated_mean = 0.9 * mean0 + 0.1 * x.mean((0, 2, 3))
                updated_var = 0.9 * var0 + 0.1 * x.var((0, 2, 3))
                for m, v in ((mean0, var0), (updated_mean, updated_var)):
                    if close(got, _normalise(x, m.view(shape), v.view(shape), 1e-5)):
                        return (
                            "training mode normalised with the running estimates: in "
                            "training, normalise with the batch's statistics (and update "
                            "the running ones beside)"
                        )
            else:
                running = _normalise(x, mean0.view(shape), var0.view(shape), 1e-5, False)
                if close(got, running):
                    return _EPS_INSIDE + " (in eval mode, with running_var)"
                batch = reference(x, gamma, beta, torch.zeros(4), torch.ones(4), True, 0.1, 1e-5)
                if torch.allclose(got, batch, atol=1e-4):
                    return (
                        "eval mode used the batch's statistics: normalise with "
                        "running_mean and running_var"
                    )
            return problem

        return check

    def constant_channel() -> str | None:
        flat = x.clone()
        flat[:, 1] = 0.5  # variance 0: only eps keeps the division finite
        got, _, _ = run(batch_norm, flat, True)
        want, _, _ = run(reference, flat, True)
        return compare(got, want, "a constant channel (variance 0)", atol=1e-4)

    def graph() -> str | None:
        # (running estimates that join the graph are not refused here: the exercise's
        # hint writes their update without torch.no_grad())
        inputs = x.clone().requires_grad_(True)  # as inside a network that trains
        mean, var = initial_estimates()
        y = batch_norm(inputs, gamma, beta, mean, var, True, 0.1, 1e-5)
        if isinstance(y, torch.Tensor) and not y.requires_grad:
            return (
                "the output has no graph (no gradient would reach x, gamma, beta): "
                "compute it outside torch.no_grad(); only the running update goes inside"
            )
        return None

    def running(training: bool):
        def check() -> str | None:
            torch.manual_seed(2)
            _, (mean, var), (mean0, var0) = run(batch_norm, x, training)
            torch.manual_seed(2)
            _, (want_mean, want_var), _ = run(reference, x, training)
            if not training:
                if not (torch.equal(mean, mean0) and torch.equal(var, var0)):
                    return "eval mode changed the running estimates: update them only in training"
                return None
            if torch.equal(mean, mean0):
                return (
                    "running_mean was not updated in place: "
                    "running_mean.mul_(1 - momentum).add_(momentum * batch_mean) "
                    "(running_mean = ... only rebinds the name inside your function)"
                )
            batch_mean = x.mean((0, 2, 3))
            if torch.allclose(mean, 0.9 * batch_mean + 0.1 * mean0, atol=1e-5):
                return "momentum is reversed: new = (1 - momentum) * old + momentum * batch"
            problem = compare(mean, want_mean, "running_mean")
            if problem is not None:
                return problem
            biased = 0.9 * var0 + 0.1 * x.var((0, 2, 3), unbiased=False)
            if torch.allclose(var, biased, atol=1e-5):
                return (
                    "running_var must use the unbiased variance (divide by n - 1), as "
                    "torch does, though the normalisation uses the biased one"
                )
            return compare(var, want_var, "running_var")

        return check

    return run_checks(
        "batch_norm",
        [
            ("output in training mode", output_in(True)),
            ("output in eval mode", output_in(False)),
            ("a constant channel", constant_channel),
            ("eval mode with a zero running variance", output_in(False, zero_var=True)),
            ("running estimates in training mode", running(True)),
            ("running estimates in eval mode", running(False)),
            ("an output that keeps the graph", graph),
        ],
    )
