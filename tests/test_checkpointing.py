"""Chapter 5: checkpointed models against the plain ones and torch.utils.checkpoint."""

import pytest
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint_sequential

from course.checkpointing import (
    CheckpointedSequential,
    backprop_schedule,
    best_segments,
    deep_chain,
    largest_batch,
    peak_activation_bytes,
    resnet18_layers,
    saved_activation_bytes,
    split_into_segments,
)
from course.models import resnet18


def grads(model):
    return [p.grad.detach().clone() for p in model.parameters()]


def backward(model, x):
    model.zero_grad(set_to_none=True)
    model(x).square().mean().backward()
    return grads(model)


@pytest.mark.parametrize("segments", [1, 2, 3, 8])
def test_chain_gradients_equal_plain_and_torch_checkpoint_sequential(segments):
    torch.manual_seed(0)
    chain = deep_chain(8, 16, nn.Tanh).double()
    x = torch.randn(5, 16, dtype=torch.float64, requires_grad=True)
    plain = backward(chain, x)
    x_grad = x.grad.clone()
    x.grad = None
    ours = backward(CheckpointedSequential(list(chain), segments), x)
    torch.testing.assert_close(x.grad, x_grad, rtol=0, atol=1e-12)
    x.grad = None
    chain.zero_grad(set_to_none=True)
    checkpoint_sequential(chain, segments, x, use_reentrant=False).square().mean().backward()
    for a, b, c in zip(plain, ours, grads(chain), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
        torch.testing.assert_close(a, c, rtol=0, atol=1e-12)


def test_resnet18_gradients_equal_plain():
    torch.manual_seed(0)
    model = resnet18(num_classes=3).double()
    x = torch.rand(2, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():  # both runs must start from the same BN statistics
        state = {k: v.clone() for k, v in model.state_dict().items()}
    plain = backward(model, x)
    plain_state = {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(state)
    ours = backward(CheckpointedSequential(resnet18_layers(model), 4), x)
    for a, b in zip(plain, ours, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    for k, v in model.state_dict().items():  # running statistics updated once, as in plain
        torch.testing.assert_close(v, plain_state[k], rtol=0, atol=1e-12)


def test_batchnorm_statistics_updated_twice_without_the_fix():
    torch.manual_seed(0)
    layers = [nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4)) for _ in range(4)]
    x = torch.randn(8, 4)
    CheckpointedSequential(layers, 2, fix_batchnorm=False)(x).sum().backward()
    assert layers[0][1].num_batches_tracked.item() == 2  # forward + recomputation
    assert layers[3][1].num_batches_tracked.item() == 1  # last segment: not recomputed
    for layer in layers:
        layer[1].reset_running_stats()
    CheckpointedSequential(layers, 2, fix_batchnorm=True)(x).sum().backward()
    assert [layer[1].num_batches_tracked.item() for layer in layers] == [1, 1, 1, 1]


def test_dropout_masks_replayed_only_with_preserved_rng_state():
    def run(preserve):
        torch.manual_seed(0)
        layers = [nn.Sequential(nn.Linear(16, 16), nn.Dropout(0.5)) for _ in range(4)]
        x = torch.randn(8, 16)
        torch.manual_seed(1)
        plain = backward(nn.Sequential(*layers), x)
        torch.manual_seed(1)
        ours = backward(CheckpointedSequential(layers, 4, preserve_rng_state=preserve), x)
        return all(torch.equal(a, b) for a, b in zip(plain, ours, strict=True))

    assert run(True)
    assert not run(False)


def test_storages_counted_once_and_parameters_excluded():
    depth, batch, width = 6, 4, 8
    chain = deep_chain(depth, width)
    # each Linear saves its input (= the previous ReLU's saved output), the last ReLU its output
    x = torch.randn(batch, width)
    assert saved_activation_bytes(chain, x) == (depth + 1) * batch * width * 4

    class Scale(nn.Module):  # saves its input and its weight; only the input counts
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(1000))
            self.register_buffer("offset", torch.zeros(1000))

        def forward(self, x):
            return (x + self.offset) * self.weight

    x = torch.randn(3, 1000, requires_grad=True)
    assert saved_activation_bytes(Scale(), x) == 3 * 1000 * 4


def test_64_layer_chain_in_8_segments_keeps_at_least_3x_fewer_bytes():
    chain = deep_chain(64, 32)
    x = torch.randn(16, 32)
    plain = saved_activation_bytes(chain, x)
    ckpt = saved_activation_bytes(CheckpointedSequential(list(chain), 8), x)
    assert plain / ckpt >= 3.0


@pytest.mark.parametrize("segments", [2, 4, 8, 16])
def test_peak_follows_k_plus_n_over_k(segments):
    n, batch, width = 64, 4, 8
    chain = deep_chain(n, width)
    x = torch.randn(batch, width)
    unit = batch * width * 4
    peak = peak_activation_bytes(CheckpointedSequential(list(chain), segments), x)
    # (k - 1) segment inputs + n/k activations of the last segment + its ReLU output
    assert peak == (segments - 1 + n // segments + 1) * unit
    assert best_segments(n) == 8


def test_activation_bytes_grow_linearly_with_batch():
    model = CheckpointedSequential(resnet18_layers(resnet18(num_classes=2)), 3)
    sizes = [saved_activation_bytes(model, torch.rand(b, 3, 64, 64)) for b in (2, 4, 8)]
    # affine in the batch size: BN also saves its per-channel mean and 1/std
    per_sample = (sizes[1] - sizes[0]) / 2
    assert sizes[2] - sizes[1] == 4 * per_sample
    fixed = sizes[0] - 2 * per_sample
    assert 0 < fixed < per_sample
    assert largest_batch(per_sample, sizes[2], fixed) == 8


def test_split_into_segments():
    assert split_into_segments(10, 3) == [range(0, 4), range(4, 7), range(7, 10)]
    assert split_into_segments(5, 5) == [range(i, i + 1) for i in range(5)]
    with pytest.raises(ValueError, match="segments must be between 1"):
        split_into_segments(4, 5)


def test_wrapping_shares_parameters():
    model = resnet18(num_classes=2)
    wrapped = CheckpointedSequential(resnet18_layers(model), 2)
    assert {id(p) for p in wrapped.parameters()} == {id(p) for p in model.parameters()}


def test_benchmark_runs_at_small_size(capsys):
    import runpy

    from tests.conftest import ROOT

    results = runpy.run_path(str(ROOT / "benchmarks" / "checkpointing.py"), run_name="x")["main"](
        ["--depth", "16", "--width", "64", "--batch", "4", "--image-size", "32", "--repeats", "1"]
    )
    kept = {k: row["peak_mb"] for k, row in results["deep chain"].items()}
    assert sorted(kept) == [1, 2, 4, 8, 16]  # 1, 2, sqrt(16), 16/4, 16/2, 16
    # the k + n/k law the chapter teaches: smallest at sqrt(n) = 4, symmetric in k <-> n/k
    assert min(kept, key=kept.get) == 4 and kept[2] == kept[8] and kept[1] == kept[16]
    resnet = results["resnet18"]
    assert resnet[10]["peak_mb"] < resnet[3]["peak_mb"] < resnet[1]["peak_mb"]
    assert "overhead" in capsys.readouterr().out


@pytest.mark.parametrize("checkpoints", [None, (2, 4), (3,), (1, 2, 3, 4, 5)])
def test_backprop_schedule_has_every_input_when_needed(checkpoints):
    n = 6
    steps = backprop_schedule(n, checkpoints)
    assert [s.layer for s in steps if s.phase == "backward"] == list(range(n, 0, -1))
    for step in steps:
        if step.phase == "backward":
            assert step.layer - 1 in step.alive
    peak = max(len(s.alive) for s in steps)
    recomputed = sum(s.phase == "recompute" for s in steps)
    if checkpoints is None:
        assert (peak, recomputed) == (n + 1, 0)
    else:
        assert peak < n + 1 or checkpoints == (1, 2, 3, 4, 5)
        # the layers of every segment but the last are computed twice
        assert recomputed == max(checkpoints)


@pytest.mark.parametrize(("n", "segments"), [(6, 3), (6, 2), (8, 4), (9, 3), (6, 6)])
def test_backprop_schedule_recomputes_what_checkpoint_sequential_recomputes(n, segments):
    """The chapter's schedule and PyTorch's checkpoint_sequential run the same layers twice."""
    torch.manual_seed(0)
    chain = deep_chain(n, 4)
    calls = [0] * n
    for i, layer in enumerate(chain):
        # a pre-hook: non-reentrant recomputation may stop inside a segment's last layer
        layer.register_forward_pre_hook(lambda *_, i=i: calls.__setitem__(i, calls[i] + 1))
    x = torch.randn(3, 4)
    checkpoint_sequential(chain, segments, x, use_reentrant=False).sum().backward()
    size = n // segments  # checkpoint_sequential's segments; the rest goes to the last one
    checkpoints = tuple(range(size, size * segments, size))
    steps = backprop_schedule(n, checkpoints)
    twice = [s.layer for s in steps if s.phase == "recompute"]
    assert calls == [1 + (i + 1 in twice) for i in range(n)]
    assert len(twice) == n - (n - size * (segments - 1))  # all but the last segment


def test_backprop_schedule_rejects_bad_checkpoints():
    with pytest.raises(ValueError, match="strictly between"):
        backprop_schedule(4, (4,))


def test_train_throughput_benchmark_runs_on_cpu_at_small_size(capsys):
    import runpy

    from tests.conftest import ROOT

    script = runpy.run_path(str(ROOT / "benchmarks" / "train_throughput.py"), run_name="x")
    results = script["main"](
        [
            "--device",
            "cpu",
            "--batch",
            "2",
            "--image-size",
            "32",
            "--steps",
            "1",
            "--no-compile",
        ]
    )
    assert set(results) == {"naive fp32 NCHW", "tuned bf16 + channels_last", "course.train.fit"}
    assert all(v > 0 for v in results.values())
    assert "images/s" in capsys.readouterr().out


def test_measuring_saved_activations_frees_them_afterwards():
    """saved_activation_bytes must not keep what it measures: a pack hook that returned
    the tensor itself made a cycle through autograd's graph that Python's collector cannot
    break (pytorch/pytorch#115255), and chapter 5's gpu profile on a CPU grew past 23 GB
    by leaking every measured ResNet18 forward."""
    import gc

    model = nn.Sequential(nn.Linear(7, 13), nn.ReLU(), nn.Linear(13, 3))
    x = torch.randn(5, 7)

    def alive() -> int:
        gc.collect()
        return sum(1 for o in gc.get_objects() if type(o) is torch.Tensor and o.shape == (5, 13))

    before = alive()
    for _ in range(3):
        assert saved_activation_bytes(model, x) > 0
    assert alive() == before
