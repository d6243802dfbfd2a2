"""course.models.resnet18 against torchvision.models.resnet18."""

import pytest
import torch
import torchvision

from course.models import ResBlockA, ResBlockB, resnet18
from course.residual import shape_table
from course.utils import count_parameters


def test_state_dict_keys_and_shapes_equal_torchvision():
    ours, ref = resnet18().state_dict(), torchvision.models.resnet18().state_dict()
    assert list(ours) == list(ref)
    assert all(ours[k].shape == ref[k].shape for k in ref)


@pytest.mark.parametrize("num_classes", [1000, 2])
def test_torchvision_weights_load_strictly_and_give_identical_outputs(num_classes):
    torch.manual_seed(0)
    ref = torchvision.models.resnet18(num_classes=num_classes)
    # Non-trivial BN statistics, so that eval mode really uses them.
    ref.train()
    with torch.no_grad():
        ref(torch.rand(4, 3, 64, 64))
    ref.eval()
    ours = resnet18(num_classes=num_classes)
    ours.load_state_dict(ref.state_dict(), strict=True)
    ours.eval()
    x = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), rtol=0, atol=0)


def test_parameter_count_of_the_slides():
    assert count_parameters(resnet18()) == 11_689_512


def test_block_shapes():
    x = torch.rand(2, 64, 56, 56)
    assert ResBlockA(64)(x).shape == (2, 64, 56, 56)
    assert ResBlockB(64)(x).shape == (2, 128, 28, 28)
    assert ResBlockB(64)(torch.rand(1, 64, 7, 7)).shape == (1, 128, 4, 4)


def test_shape_table_is_the_slides_table():
    table = dict(shape_table(resnet18().eval(), torch.rand(1, 3, 224, 224)))
    assert table["input"] == (3, 224, 224)
    assert table["conv1"] == (64, 112, 112) and table["maxpool"] == (64, 56, 56)
    assert [table[f"layer{i}"] for i in range(1, 5)] == [
        (64, 56, 56),
        (128, 28, 28),
        (256, 14, 14),
        (512, 7, 7),
    ]
    assert table["avgpool"] == (512, 1, 1) and table["fc"] == (1000,)


def test_midpoint_nonlinearity_is_zero_for_affine_maps_and_not_for_relu():
    from course.residual import midpoint_nonlinearity

    x, x2 = torch.randn(64, 8), torch.randn(64, 8)
    affine = torch.nn.Linear(8, 5)
    assert midpoint_nonlinearity(affine, x, x2) < 1e-5
    assert midpoint_nonlinearity(torch.relu, x, x2) > 0.1


def test_residual_stack_shares_the_plain_stacks_layers_and_is_more_linear():
    from course.residual import midpoint_nonlinearity, mlp_stack

    plain, residual = (mlp_stack(4, 16, residual=r, seed=3) for r in (False, True))
    assert torch.equal(plain[2][0].weight, residual[2].f[0].weight)
    x = torch.randn(5, 16)
    h = x
    for f in plain:
        h = h + f(h)
    torch.testing.assert_close(residual(x), h)
    pairs = torch.randn(256, 16), torch.randn(256, 16)
    assert midpoint_nonlinearity(residual, *pairs) < midpoint_nonlinearity(plain, *pairs)
