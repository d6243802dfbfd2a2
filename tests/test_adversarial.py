"""Chapter 4: FGSM, PGD, patches and adversarial training (an attack as fit's augmentation)."""

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from course.adversarial import (
    AdversarialAugmentation,
    accuracy_under_attack,
    apply_patch,
    fgsm,
    flip_rate,
    pgd,
    pgd_attack,
    train_patch,
)
from course.data import Normalize, make_shapes
from course.models import SmallCNN
from course.train import fit


def linear_model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 5)).double()


def test_fgsm_equals_the_closed_form_on_a_linear_model():
    model = linear_model()
    x = torch.rand(6, 3, 4, 4, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3, 4, 0])
    W = model[1].weight
    with torch.no_grad():
        p = torch.softmax(model(x), 1)
        grad = (p - nn.functional.one_hot(y, 5).double()) @ W  # d CE / d x for logits Wx + b
    expected = (x + 0.03 * grad.reshape(x.shape).sign()).clamp(0, 1)
    torch.testing.assert_close(fgsm(model, x, y, 0.03), expected, rtol=0, atol=0)


@pytest.fixture(scope="module")
def trained_cnn():
    torch.manual_seed(0)
    data = make_shapes(512, image_size=16, seed=0, colored=False)
    model = nn.Sequential(
        Normalize([0.5] * 3, [0.25] * 3), SmallCNN(channels=(16, 32), batch_norm=True)
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    loader = DataLoader(data, batch_size=64, shuffle=True)
    for _ in range(8):
        for x, y in loader:
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
    return model.eval(), data


@pytest.mark.parametrize("attack", ["fgsm", "pgd"])
def test_attacks_stay_in_the_eps_ball_and_the_pixel_range(trained_cnn, attack):
    model, data = trained_cnn
    x, y = data.tensors[0][:32], data.tensors[1][:32]
    eps = 8 / 255
    if attack == "fgsm":
        x_adv = fgsm(model, x, y, eps)
    else:
        x_adv = pgd(model, x, y, eps, alpha=2 / 255, steps=5)
    assert (x_adv - x).abs().max() <= eps + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert (x_adv != x).float().mean() > 0.5  # it did move the pixels


def test_attacks_leave_mode_grads_and_requires_grad_as_they_were(trained_cnn):
    model, data = trained_cnn
    x, y = data.tensors[0][:8], data.tensors[1][:8]
    model.train()
    sentinel = [torch.full_like(p, 7.0) for p in model.parameters()]
    for p, s in zip(model.parameters(), sentinel, strict=True):
        p.grad = s.clone()
    bn = model[1].features[1]
    stats = bn.running_mean.clone()
    fgsm(model, x, y, 0.03)
    pgd(model, x, y, 0.03, 0.01, 3)
    assert model.training
    for p, s in zip(model.parameters(), sentinel, strict=True):
        assert torch.equal(p.grad, s) and p.requires_grad
    assert torch.equal(bn.running_mean, stats)  # attacked in eval mode: no BN update
    model.eval()
    for p in model.parameters():
        p.grad = None


def test_pgd_with_one_step_alpha_eps_and_no_random_start_is_fgsm(trained_cnn):
    model, data = trained_cnn
    x, y = data.tensors[0][:16], data.tensors[1][:16]
    torch.testing.assert_close(
        pgd(model, x, y, 0.05, alpha=0.05, steps=1, random_start=False),
        fgsm(model, x, y, 0.05),
        rtol=0,
        atol=0,
    )


def test_pgd_is_stronger_than_fgsm_and_accuracy_drops(trained_cnn):
    model, data = trained_cnn
    loader = DataLoader(TensorDataset(*[t[:256] for t in data.tensors]), batch_size=128)
    eps = [0, 4 / 255, 16 / 255]
    acc_fgsm = accuracy_under_attack(model, loader, fgsm, eps, progress=False)
    acc_pgd = accuracy_under_attack(model, loader, pgd_attack(steps=7), eps, progress=False)
    assert acc_fgsm[0] == acc_pgd[0] > 0.7  # eps = 0 is the clean accuracy (chance 0.25)
    assert acc_pgd[16 / 255] <= acc_fgsm[16 / 255] < acc_fgsm[0]
    assert acc_pgd[16 / 255] < 0.3


def test_targeted_fgsm_moves_towards_the_target(trained_cnn):
    model, data = trained_cnn
    x, y = data.tensors[0][:64], data.tensors[1][:64]
    target = (y + 1) % 4
    x_adv = fgsm(model, x, y, 0.05, target=target)
    with torch.no_grad():
        before = nn.functional.cross_entropy(model(x), target)
        after = nn.functional.cross_entropy(model(x_adv), target)
    assert after < before


def test_flip_rate_ignores_samples_already_wrong(trained_cnn):
    model, data = trained_cnn
    x, y = data.tensors[0][:64], data.tensors[1][:64]
    wrong_labels = (model(x).argmax(1) + 1) % 4
    assert flip_rate(model, x, wrong_labels, x) != flip_rate(model, x, wrong_labels, x)  # NaN
    assert flip_rate(model, x, y, x) == 0.0


def test_apply_patch_pastes_exactly_and_is_differentiable():
    x = torch.zeros(2, 3, 8, 8)
    patch = torch.rand(3, 3, 3, requires_grad=True)
    out = apply_patch(x, patch, torch.tensor([[0, 0], [5, 2]]))
    assert torch.equal(out[0, :, :3, :3], patch.detach())
    assert torch.equal(out[1, :, 5:8, 2:5], patch.detach())
    assert out.sum().item() == pytest.approx(2 * patch.sum().item(), rel=1e-6)
    out.sum().backward()
    assert torch.equal(patch.grad, torch.full_like(patch, 2.0))
    assert x.sum() == 0  # the input is not modified


def test_trained_patch_pushes_towards_its_target(trained_cnn):
    model, data = trained_cnn
    loader = DataLoader(TensorDataset(*[t[:256] for t in data.tensors]), batch_size=64)
    patch = train_patch(model, loader, patch_size=6, target=2, epochs=4, lr=0.1, progress=False)
    assert patch.shape == (3, 6, 6) and 0 <= patch.min() and patch.max() <= 1
    x = data.tensors[0][256:384]
    positions = torch.randint(0, 11, (len(x), 2), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        random_patch = torch.rand(3, 6, 6, generator=torch.Generator().manual_seed(2))
        hit = (model(apply_patch(x, patch, positions)).argmax(1) == 2).float().mean()
        base = (model(apply_patch(x, random_patch, positions)).argmax(1) == 2).float().mean()
    assert hit > base + 0.2


def test_adversarial_training_through_fit_trains_on_attacked_images_and_lowers_its_loss():
    """fit with AdversarialAugmentation: every training step sees the attacked images of
    the current model, within eps of the clean ones and not equal to them, in training
    mode; the attack itself runs in eval mode, so BN's running statistics are updated
    once per step (by the training step), never by the attack; the loss falls."""
    torch.manual_seed(0)
    data = make_shapes(256, image_size=16, seed=0, colored=False)
    model = SmallCNN(channels=(16, 32))
    seen, attack_modes = [], []

    def record(module, inputs):
        if module.training:  # the training step
            seen.append(inputs[0].detach().clone())
        else:  # the attack's forward passes
            attack_modes.append(module.training)

    model.register_forward_pre_hook(record)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    loader = DataLoader(data, batch_size=64, shuffle=False)
    augment = AdversarialAugmentation(model, eps=4 / 255)
    history = fit(
        model,
        loader,
        epochs=4,
        optimizer=optimizer,
        augment=augment,
        device="cpu",
        progress=False,
    )
    assert history.epochs == 4 and history.train_loss[-1] < history.train_loss[0]
    assert len(seen) == 4 * 4 and len(attack_modes) == 4 * 4  # FGSM: one pass per step
    batchnorms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert batchnorms and all(int(m.num_batches_tracked) == 4 * 4 for m in batchnorms)
    x_clean = torch.cat([x for x, _ in loader])
    for batch, x_adv in enumerate(seen[:4]):  # first epoch: batches in loader order
        delta = x_adv - x_clean[64 * batch : 64 * (batch + 1)]
        assert delta.abs().max() <= 4 / 255 + 1e-6 and delta.abs().max() > 2 / 255
        assert 0 <= x_adv.min() and x_adv.max() <= 1


def test_adversarial_augmentation_is_pgd_of_the_current_model_and_leaves_it_as_it_was(
    trained_cnn,
):
    """With steps > 1 the augmentation is course.adversarial.pgd (alpha = 2.5 eps /
    steps, random start from torch's global generator, which fit's checkpoints save):
    the same images from the same generator state; the model keeps its mode and its
    parameters' .grad."""
    model, data = trained_cnn
    x, y = data.tensors
    grads = [None if p.grad is None else p.grad.clone() for p in model.parameters()]
    model.train()
    augment = AdversarialAugmentation(model, eps=8 / 255, steps=3)
    assert augment.alpha == pytest.approx(2.5 * 8 / 255 / 3)
    torch.manual_seed(5)
    got, labels = augment(x[:32], y[:32])
    torch.manual_seed(5)
    want = pgd(model, x[:32], y[:32], 8 / 255, augment.alpha, 3)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert labels is y[:32] or torch.equal(labels, y[:32])
    assert model.training
    for p, g in zip(model.parameters(), grads, strict=True):
        assert (p.grad is None and g is None) or torch.equal(p.grad, g)
    assert not got.requires_grad
    fast = AdversarialAugmentation(model, eps=8 / 255)
    assert fast.steps == 1 and fast.alpha == pytest.approx(1.25 * 8 / 255)  # Wong et al.
    model.eval()
    with pytest.raises(ValueError, match="steps must be >= 1"):
        AdversarialAugmentation(model, eps=8 / 255, steps=0)
    with pytest.raises(ValueError, match="eps must be >= 0"):
        AdversarialAugmentation(model, eps=-1.0)


def test_attacks_refuse_images_outside_the_pixel_range_and_negative_budgets():
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    x, y = torch.rand(2, 3, 2, 2), torch.tensor([0, 1])
    with pytest.raises(ValueError, match="0-255 values: divide by 255"):
        fgsm(model, x * 255, y, 8 / 255)
    with pytest.raises(ValueError, match=r"dtype torch.uint8.*\.float\(\) / 255"):
        pgd(model, (x * 255).to(torch.uint8), y, 8 / 255, 2 / 255, 3)
    with pytest.raises(ValueError, match="Normalize"):
        fgsm(model, (x - 0.45) / 0.22, y, 8 / 255)  # normalised outside the model
    with pytest.raises(ValueError, match="eps must be >= 0"):
        fgsm(model, x, y, -8 / 255)
    with pytest.raises(ValueError, match="alpha must be >= 0"):
        pgd(model, x, y, 8 / 255, -1 / 255, 3)
