import pytest
import torch
from torch import nn

from course.models import DeepCNN, SmallCNN, init_conv_weights


@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("batch_norm", [False, True])
def test_deep_cnn_shapes_and_depth(residual, batch_norm):
    model = DeepCNN(depth=6, width=8, num_classes=5, residual=residual, batch_norm=batch_norm)
    assert model(torch.rand(2, 3, 16, 16)).shape == (2, 5)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    assert len(convs) == 1 + 6 * (2 if residual else 1)
    has_bn = any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert has_bn == batch_norm
    assert all((c.bias is None) == batch_norm for c in convs)


def test_residual_block_is_identity_plus_f():
    block = DeepCNN(depth=1, width=4, residual=True, batch_norm=False).blocks[0]
    x = torch.rand(2, 4, 8, 8)
    torch.testing.assert_close(block(x), torch.relu(x + block.f(x)))


def test_init_schemes():
    torch.manual_seed(0)
    model = init_conv_weights(DeepCNN(depth=3, width=64, batch_norm=False), "kaiming")
    w = model.blocks[0][0].weight
    assert w.std().item() == pytest.approx((2 / (64 * 9)) ** 0.5, rel=0.05)
    small = init_conv_weights(DeepCNN(depth=3, width=64), "small").blocks[0][0].weight
    assert small.std().item() == pytest.approx(0.01, rel=0.05)
    with pytest.raises(ValueError, match="unknown init"):
        init_conv_weights(model, "xavier")


def test_small_cnn_has_no_conv_bias_with_batch_norm():
    model = SmallCNN(num_classes=3)
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 3)
    assert all(m.bias is None for m in model.modules() if isinstance(m, nn.Conv2d))
    assert all(
        m.bias is not None for m in SmallCNN(batch_norm=False).modules() if isinstance(m, nn.Conv2d)
    )


def test_block_gradient_norms_match_autograd_and_leave_grads_alone():
    from course.residual import block_gradient_norms

    torch.manual_seed(0)
    model = DeepCNN(depth=3, width=4, batch_norm=False)
    x, y = torch.rand(4, 3, 16, 16), torch.tensor([0, 1, 2, 3])
    norms = block_gradient_norms(model, x, y)
    assert all(p.grad is None for p in model.parameters())
    nn.functional.cross_entropy(model(x), y).backward()
    expected = [next(b.parameters()).grad.norm().item() for b in model.blocks]
    assert norms == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("num_convs", [3, 9, 41])
def test_plain_and_residual_have_as_many_convolutions(num_convs):
    from course.residual import plain_and_residual

    nets = plain_and_residual(num_convs, width=4, init="kaiming")
    for kind, net in nets.items():
        convs = [m for m in net.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
        assert len(convs) == num_convs, kind
        assert net.residual == (kind == "residual")
    # He init: std sqrt(2 / fan_in) for the 3x3 convs of width 4 (fan_in 36)
    weights = torch.cat(
        [
            m.weight.flatten()
            for m in nets["plain"].modules()
            if isinstance(m, nn.Conv2d) and m.in_channels == 4 and m.kernel_size == (3, 3)
        ]
    )
    assert weights.std().item() == pytest.approx((2 / 36) ** 0.5, rel=0.1)
    with pytest.raises(ValueError, match="odd"):
        plain_and_residual(num_convs + 1)
