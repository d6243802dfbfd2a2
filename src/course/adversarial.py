"""Adversarial examples: FGSM, PGD, adversarial patches, and attacks as training augmentation
(chapter 4).

Every attack works in **pixel space**: images are in [0, 1] and the model
normalises them itself (``nn.Sequential(Normalize(...), net)``), so the
budget eps is in pixel units (8/255 = 8 grey levels) and clamping to [0, 1]
keeps a valid image.

FGSM (Goodfellow et al., 2015), one step along the sign of the gradient:

    x_adv = clamp(x + eps * sign(grad_x L(f(x), y)), 0, 1)

PGD (Madry et al., 2018): repeat smaller steps of size alpha, projecting back
into the L-infinity ball of radius eps around x (and into [0, 1]) after each.

Adversarial training is ``course.train.fit`` with an attack as its augmentation
(:class:`AdversarialAugmentation`). The classifier chapter 4 attacks is chapter 3's,
``course.pretrained.hornet_classifier``.

The attacks leave the model as they found it: they run it in eval mode (BN
with its running statistics, no dropout), restore its mode, and compute the
input gradient with ``torch.autograd.grad``, so the parameters' ``.grad``
fields are untouched.

Used in chapter 4.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from course.check import Report, compare, run_checks
from course.config import max_steps, run_seed
from course.train import to_device
from course.utils import eval_mode, model_device

Attack = Callable[[nn.Module, torch.Tensor, torch.Tensor, float], torch.Tensor]


def _input_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """d CE(model(x), y) / dx, summed over the batch (each image gets its own gradient)."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        loss = nn.functional.cross_entropy(model(x), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x)
    return grad


def validate_images(x: torch.Tensor, name: str = "x") -> None:
    """Raise a ValueError unless ``x`` holds float images in [0, 1], the pixel space in
    which the attacks' budgets are measured (8/255 = 8 grey levels)."""
    if not x.is_floating_point():
        raise ValueError(
            f"{name} has dtype {x.dtype}; the attacks take float images in [0, 1]: "
            f"use {name}.float() / 255"
        )
    low, high = float(x.min()), float(x.max())
    if low < 0 or high > 1:
        if low < 0:
            hint = " Normalisation belongs inside the model (course.data.Normalize)."
        else:
            hint = " It looks like 0-255 values: divide by 255."
        raise ValueError(
            f"{name} holds values in [{low:.3g}, {high:.3g}]; the attacks take images in "
            f"[0, 1] and would clamp them there without a word.{hint}"
        )


def _validate_budget(**budgets: float) -> None:
    for name, value in budgets.items():
        if not value >= 0:  # also refuses NaN
            raise ValueError(f"{name} must be >= 0 (a budget in pixel units), got {value}")


def fgsm(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    target: torch.Tensor | None = None,
) -> torch.Tensor:
    """Fast gradient sign method: ``clamp(x + eps * sign(grad_x CE(model(x), y)), 0, 1)``.

    Args:
        x: images in [0, 1], (N, C, H, W).
        y: true labels (N,): the step increases their loss (untargeted).
        eps: L-infinity budget in pixel units.
        target: labels (N,) to reach instead: the step then *decreases* the
            loss of ``target`` (targeted attack); ``y`` is ignored.

    Raises:
        ValueError: ``x`` is not a float tensor in [0, 1] (e.g. a photo in 0-255),
            or ``eps`` is negative.
    """
    validate_images(x)
    _validate_budget(eps=eps)
    return _fgsm_step(model, x, y, eps, target)


def _fgsm_step(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, target: torch.Tensor | None
) -> torch.Tensor:
    with eval_mode(model):
        if target is None:
            step = eps * _input_gradient(model, x, y).sign()
        else:
            step = -eps * _input_gradient(model, x, target).sign()
    return (x.detach() + step).clamp(0, 1)


def pgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    alpha: float,
    steps: int,
    random_start: bool = True,
    target: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Projected gradient descent in the L-infinity ball of radius ``eps`` around ``x``.

    ``steps`` FGSM steps of size ``alpha``; after each, the image is
    projected back into [x - eps, x + eps] and into [0, 1]. With
    ``random_start`` it starts from a uniform random point of the ball. With
    one step, ``alpha = eps`` and no random start it is exactly :func:`fgsm`.

    Raises:
        ValueError: as :func:`fgsm`; also for a negative ``alpha`` or ``steps``.
    """
    validate_images(x)
    _validate_budget(eps=eps, alpha=alpha, steps=steps)
    return _pgd(model, x, y, eps, alpha, steps, random_start, target, generator)


def _pgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    alpha: float,
    steps: int,
    random_start: bool,
    target: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """:func:`pgd` without its checks of the input (which read the GPU's values back)."""
    x = x.detach()
    x_adv = x.clone()
    if random_start:
        noise = torch.rand(x.shape, generator=generator, device="cpu").to(x.device)
        x_adv = (x + eps * (2 * noise - 1)).clamp(0, 1)
    for _ in range(steps):
        x_adv = _fgsm_step(model, x_adv, y, alpha, target)
        x_adv = torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0, 1)
    return x_adv


def pgd_attack(steps: int = 10, alpha_ratio: float = 2.5) -> Attack:
    """PGD as an ``Attack(model, x, y, eps)``, with alpha = alpha_ratio * eps / steps
    (Madry et al.'s choice)."""

    def attack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
        return pgd(
            model,
            x,
            y,
            eps,
            alpha=alpha_ratio * eps / steps,
            steps=steps,
            generator=torch.Generator().manual_seed(run_seed(0)),
        )

    return attack


@torch.no_grad()
def _predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with eval_mode(model):
        return model(x).argmax(1)


def accuracy_under_attack(
    model: nn.Module,
    loader: Iterable,
    attack: Attack,
    epsilons: Sequence[float],
    device: torch.device | str | None = None,
    progress: bool = True,
) -> dict[float, float]:
    """Accuracy on ``attack(model, x, y, eps)`` for each eps (eps = 0: the clean accuracy).

    Every sample counts: one already misclassified on clean data counts as
    wrong at every eps (it needs no attack). See :func:`flip_rate` for the
    success rate among the samples that were right. With ``$COURSE_MAX_STEPS`` set, only
    that many batches are attacked (a rehearsal).
    """
    device = torch.device(device) if device is not None else model_device(model)
    correct = dict.fromkeys(epsilons, 0)
    seen = 0
    batches = itertools.islice(loader, max_steps())  # $COURSE_MAX_STEPS, or all
    for x, y in tqdm(batches, desc="attacking", leave=False, disable=not progress):
        x, y = to_device(x, device), to_device(y, device)
        for eps in epsilons:
            x_adv = x if eps == 0 else attack(model, x, y, eps)
            correct[eps] += int((_predict(model, x_adv) == y).sum())
        seen += len(y)
    return {eps: correct[eps] / seen for eps in epsilons}


def flip_rate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, x_adv: torch.Tensor) -> float:
    """Among the samples that the model classifies correctly on clean data, the
    fraction that the attack makes wrong (the honest success rate of an attack)."""
    right = _predict(model, x) == y
    if not right.any():
        return float("nan")
    return float((_predict(model, x_adv)[right] != y[right]).float().mean())


# ---------------------------------------------------------------------------
# Adversarial patches
# ---------------------------------------------------------------------------


def apply_patch(x: torch.Tensor, patch: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Paste ``patch`` (C, p, p) into every image of ``x`` (N, C, H, W) at ``positions``
    (N, 2) = (row, column) of its top-left corner. Differentiable in ``patch``."""
    p = patch.shape[-1]
    out = x.clone()
    for i, (r, c) in enumerate(positions.tolist()):
        out[i, :, r : r + p, c : c + p] = patch  # slice assignment keeps the graph to patch
    return out


def random_positions(
    n: int, image_size: int, patch_size: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """(n, 2) random top-left corners that keep a patch inside the image."""
    return torch.randint(0, image_size - patch_size + 1, (n, 2), generator=generator)


def train_patch(
    model: nn.Module,
    loader: Iterable,
    patch_size: int,
    target: int,
    epochs: int = 5,
    lr: float = 0.05,
    device: torch.device | str | None = None,
    seed: int = 0,
    progress: bool = True,
) -> torch.Tensor:
    """Optimise a universal square patch that makes ``model`` predict ``target``
    wherever it is pasted (Brown et al., 2017).

    Each step pastes the patch at random positions on a batch of images and
    takes an Adam step on the patch's pixels to decrease CE(model(x_patched),
    target); the pixels stay in [0, 1]. The model is frozen and left in its mode.
    With ``$COURSE_MAX_STEPS`` set, each epoch stops after that many batches.
    Returns the patch (C, patch_size, patch_size) on the CPU.
    """
    device = torch.device(device) if device is not None else model_device(model)
    generator = torch.Generator().manual_seed(run_seed(seed))
    patch = None
    optimizer = None
    with eval_mode(model):
        for _ in tqdm(range(epochs), desc="patch", leave=False, disable=not progress):
            for x, _y in itertools.islice(loader, max_steps()):  # $COURSE_MAX_STEPS, or all
                x = to_device(x, device)
                if patch is None:
                    patch = torch.rand(x.shape[1], patch_size, patch_size, generator=generator)
                    patch = patch.to(device).requires_grad_(True)
                    optimizer = torch.optim.Adam([patch], lr=lr)
                positions = random_positions(len(x), x.shape[-1], patch_size, generator)
                logits = model(apply_patch(x, patch, positions.to(device)))
                loss = nn.functional.cross_entropy(
                    logits, torch.full((len(x),), target, device=device)
                )
                optimizer.zero_grad()
                (grad,) = torch.autograd.grad(loss, patch)
                patch.grad = grad
                optimizer.step()
                with torch.no_grad():
                    patch.clamp_(0, 1)
    if patch is None:
        raise ValueError("the loader is empty")
    return patch.detach().cpu()


# ---------------------------------------------------------------------------
# A defence: adversarial training, an attack used as a data augmentation
# ---------------------------------------------------------------------------


class AdversarialAugmentation:
    """``fit``'s ``augment`` hook that replaces every training batch by adversarial
    examples of the model being trained: adversarial training, through the one
    training loop (mixed precision, schedule, history, resume), with the attack as a
    data augmentation.

    ``AdversarialAugmentation(model, eps)`` is FGSM from a random start in the ball,
    step ``alpha = 1.25 * eps`` (Wong et al., 2020, "fast is better than free");
    ``steps > 1`` gives PGD (Madry et al., 2018) with ``alpha = 2.5 * eps / steps``
    unless ``alpha`` is given. ``fit(model, ..., augment=AdversarialAugmentation(model,
    eps))``: ``model`` must be the very module that ``fit`` trains, so that each batch
    is attacked with its current weights.

    The attack runs with the model in eval mode, as every attack here does
    (:func:`pgd`): BN normalises with its running statistics, so the perturbation of
    one image does not depend on the others of its batch, and the attack does not feed
    the adversarial batch into the running statistics a second time; the model's mode
    (training, inside ``fit``) is restored before the training step, which then
    updates BN on the adversarial batch as on any batch. The attack runs in float32,
    outside ``fit``'s autocast, and draws its random start from torch's global
    generator, which ``seed_everything`` seeds and ``fit``'s checkpoints save.

    Inputs: images (N, C, H, W) in [0, 1] on the model's device, labels (N,); returns
    the attacked images (detached, within ``eps`` of the clean ones and in [0, 1]) and
    the same labels.
    """

    def __init__(
        self,
        model: nn.Module,
        eps: float,
        steps: int = 1,
        alpha: float | None = None,
        random_start: bool = True,
    ) -> None:
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        if alpha is None:
            alpha = 1.25 * eps if steps == 1 else 2.5 * eps / steps
        _validate_budget(eps=eps, alpha=alpha)  # eps first: a bad eps is named as such
        self.model, self.eps, self.alpha = model, eps, alpha
        self.steps, self.random_start = steps, random_start

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # no validate_images here: reading min and max back would synchronise with the
        # GPU at every training step; the batches are the loader's, in [0, 1]
        x_adv = _pgd(self.model, x, y, self.eps, self.alpha, self.steps, self.random_start)
        return x_adv, y

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(eps={self.eps:.4g}, steps={self.steps}, "
            f"alpha={self.alpha:.4g}, random_start={self.random_start})"
        )


# ---------------------------------------------------------------------------
# Exercise: write FGSM and PGD's projection yourself
# ---------------------------------------------------------------------------


def _attack_setup():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 8 * 8, 3),
    )
    model.train()  # as a student may leave it: the attack must not train BN
    x = torch.rand(6, 3, 8, 8)
    x[0, 0, :2] = 0.0  # pixels at the edges of [0, 1], where the clamp matters
    x[1, 1, :2] = 1.0
    return model, x, torch.randint(0, 3, (6,))


def check_fgsm(attack) -> Report:
    """Check ``attack(model, x, y, eps) -> x_adv``, the untargeted FGSM:
    ``clamp(x + eps * sign(grad_x loss), 0, 1)`` with the cross-entropy of the true
    labels, computed with the model in eval mode (and left in the mode it had, training
    or eval, its parameters' ``.grad`` untouched, ``x`` unchanged), against
    :func:`fgsm`."""
    state: dict = {}

    def output() -> str | None:
        model, x, y = _attack_setup()
        stats = {k: v.clone() for k, v in model.state_dict().items()}
        state["stats"], state["model"] = stats, model
        state["x_given"], state["x"] = x_given, x = x.clone(), x
        got = attack(model, x_given, y, 0.1)
        state["got"] = got
        want = fgsm(model, x, y, 0.1)
        problem = compare(got, want, "x_adv")
        if problem is None or not isinstance(got, torch.Tensor) or got.shape != x.shape:
            return problem
        got = got.detach()
        if any(not torch.equal(v, stats[k]) for k, v in model.state_dict().items()):
            return (
                "the gradient was computed in training mode (BN used the batch's statistics "
                "and updated its running ones): compute it in eval mode "
                "(course.utils.eval_mode)"
            )
        step = got - x
        if (got < 0).any() or (got > 1).any():
            return "x_adv leaves [0, 1]: clamp the image to valid pixels, .clamp(0, 1)"
        inside = (x > 0.1) & (x < 0.9)
        if torch.allclose(step[inside], -(want - x)[inside], atol=1e-5):
            return "you stepped *down* the loss: an untargeted attack adds eps * sign(grad)"
        with torch.no_grad(), eval_mode(model):
            predicted = model(x).argmax(1)
        if not torch.equal(predicted, y) and torch.allclose(
            got, fgsm(model, x, predicted, 0.1), atol=1e-6
        ):
            return (
                "you attacked the model's predicted labels: use the true labels y "
                "(the untargeted attack increases the loss of the true class)"
            )
        interior = inside & (want != x)
        if not torch.allclose(step[interior].abs(), torch.full_like(step[interior], 0.1)):
            return (
                "every pixel moves by exactly eps (before the clamp): step by "
                "eps * grad.sign(), not by the raw gradient"
            )
        return problem

    def inputs_untouched() -> str | None:
        if not torch.equal(state["x_given"].detach(), state["x"]):
            return (
                "your attack changed x in place (x.add_, x.data, x += ...): work on a "
                "copy, x.clone(), and return a new tensor"
            )
        filled = [
            n for n, p in state["model"].named_parameters() if p.grad is not None and p.grad.any()
        ]
        if filled:
            return (
                f"the attack left gradients in the model's parameters' .grad (e.g. "
                f"{filled[0]}): a training step would add them to its own; take the "
                "gradient with respect to x only, torch.autograd.grad(loss, x), or call "
                "model.zero_grad() after backward"
            )
        return None

    def model_untouched() -> str | None:
        model = state["model"]
        changed = [
            k for k, v in model.state_dict().items() if not torch.equal(v, state["stats"][k])
        ]
        if changed:
            return (
                f"the attack changed the model ({changed[0]}): compute the gradient in eval "
                "mode (course.utils.eval_mode), so BN does not update its statistics"
            )
        if not model.training:
            return "the model was left in eval mode: restore its mode after the attack"
        model, x, y = _attack_setup()
        model.eval()  # a model in eval mode on entry must stay in eval mode
        attack(model, x, y, 0.1)
        if model.training:
            return (
                "the model was in eval mode and the attack left it in training mode: "
                "restore the mode it was in (was_training = model.training, then "
                "model.train(was_training); or course.utils.eval_mode)"
            )
        return None

    def detached() -> str | None:
        if state["got"].requires_grad:
            return "x_adv still holds the graph: return a detached tensor (.detach())"
        return None

    return run_checks(
        "fgsm",
        [
            ("x_adv", output),
            ("x and the parameters' gradients untouched", inputs_untouched),
            ("the model left as it was", model_untouched),
            ("a detached result", detached),
        ],
    )


def check_projection(project) -> Report:
    """Check ``project(x_adv, x, eps) -> tensor``, PGD's projection after each step:
    back into the L-infinity ball of radius ``eps`` around ``x`` (each pixel clamped to
    [x - eps, x + eps]), then into [0, 1]."""
    torch.manual_seed(0)
    x = torch.rand(4, 3, 8, 8)
    x_adv = x + 0.3 * torch.randn_like(x)  # far outside the ball, and outside [0, 1]
    eps = 0.05
    want = torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0, 1)

    def result() -> str | None:
        got = project(x_adv.clone(), x.clone(), eps)
        problem = compare(got, want, "the projection")
        if problem is None or not isinstance(got, torch.Tensor) or got.shape != x.shape:
            return problem
        got = got.detach()
        delta = x_adv - x
        if torch.allclose(got, x_adv.clamp(-eps, eps).clamp(0, 1), atol=1e-6):
            return "you clamped to [-eps, eps]: the ball is centred on x, [x - eps, x + eps]"
        if torch.allclose(got, delta.clamp(-eps, eps), atol=1e-6):
            return (
                "you returned the perturbation, not the image: return x + delta, clamped to [0, 1]"
            )
        if torch.allclose(got, torch.min(torch.max(x, x_adv - eps), x_adv + eps).clamp(0, 1)):
            return (
                "the ball is centred on x, the clean image, not on x_adv: the arguments "
                "are (x_adv, x, eps), in that order"
            )
        for bound in (x - eps, x + eps):
            if torch.allclose(got, bound.clamp(0, 1), atol=1e-6):
                return (
                    "every pixel ends on the same bound (x - eps or x + eps): min and max "
                    "are swapped; torch.min(torch.max(x_adv, x - eps), x + eps)"
                )
        per_sample = delta.flatten(1)
        for norm in (per_sample.norm(dim=1), per_sample.abs().amax(1)):
            scaled = x + delta * (eps / norm).clamp(max=1).view(-1, 1, 1, 1)
            if torch.allclose(got, scaled.clamp(0, 1), atol=1e-6):
                return (
                    "the whole perturbation was scaled down (an L2 projection, or a "
                    "division by its largest pixel): the L-infinity projection clamps each "
                    "pixel separately to [x - eps, x + eps]"
                )
        if (got < 0).any() or (got > 1).any():
            return "the result leaves [0, 1]: clamp to valid pixels too"
        if ((got - x).abs() > eps + 1e-6).any():
            return "a pixel is further than eps from x: clamp to [x - eps, x + eps]"
        if torch.allclose(got, (x + eps * (x_adv - x).sign()).clamp(0, 1), atol=1e-6):
            return "project, do not step: pixels already inside the ball keep their value"
        return problem

    return run_checks("projection", [("the projection", result)])
