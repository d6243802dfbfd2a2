"""Chapter 6: the linear scaling rule, warmup schedules, accumulation and DDP."""

import copy
import math
import os
import subprocess
import sys

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from course.config import run_seed
from course.distributed import loopback_available, run_torchrun
from course.runstate import load_state
from course.scaling import (
    accumulated_gradients,
    ddp_example_data,
    ddp_example_model,
    first_global_batch,
    linear_scaled_lr,
    sgd_step,
    small_steps_vs_big_step,
    train_at_batch_size,
    warmup_factor,
    warmup_schedule,
)
from tests.conftest import ROOT


def test_linear_scaled_lr():
    assert linear_scaled_lr(0.1, 256) == pytest.approx(0.1)
    assert linear_scaled_lr(0.1, 8192) == pytest.approx(3.2)  # Goyal et al.
    assert linear_scaled_lr(0.1, 64, base_batch_size=32) == pytest.approx(0.2)
    with pytest.raises(ValueError):
        linear_scaled_lr(0.1, 0)


def lrs(decay, warmup=10, total=100, **kwargs):
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=2.0)
    sched = warmup_schedule(opt, warmup, total, decay=decay, **kwargs)
    values = []
    for _ in range(total + 1):
        values.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return values


@pytest.mark.parametrize("decay", ["cosine", "step", "none"])
def test_warmup_rises_linearly_to_exactly_the_peak(decay):
    values = lrs(decay, milestones=(50, 80))
    assert values[0] == 0.0
    assert values[10] == 2.0  # the end of warmup: factor exactly 1
    warm = values[:11]
    assert all(b > a for a, b in zip(warm, warm[1:], strict=False))
    steps = [b - a for a, b in zip(warm, warm[1:], strict=False)]
    assert max(steps) - min(steps) < 1e-12  # linear


def test_cosine_decays_to_zero_at_total_steps():
    values = lrs("cosine")
    assert values[100] == pytest.approx(0.0, abs=1e-12)
    assert values[55] == pytest.approx(1.0)  # halfway through the decay: half the peak
    decay = values[10:]
    assert all(b <= a for a, b in zip(decay, decay[1:], strict=False))


def test_step_decay_multiplies_by_gamma_at_milestones():
    values = lrs("step", milestones=(50, 80), gamma=0.1)
    assert values[49] == 2.0 and values[50] == pytest.approx(0.2)
    assert values[79] == pytest.approx(0.2) and values[80] == pytest.approx(0.02)


def test_warmup_start_factor_and_bad_arguments():
    assert warmup_factor(0, 5, 10, start_factor=0.2) == pytest.approx(0.2)
    assert warmup_factor(5, 5, 10, decay="none", start_factor=0.2) == 1.0
    assert warmup_factor(3, 0, 10, decay="none") == 1.0
    with pytest.raises(ValueError, match="decay must be"):
        warmup_factor(7, 5, 10, decay="linear")
    with pytest.raises(ValueError, match="warmup_steps"):
        warmup_schedule(torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1), 20, 10)


def test_small_steps_vs_big_step_is_exact_for_a_linear_regression_with_tiny_lr():
    torch.manual_seed(0)
    model = nn.Linear(5, 1).double()
    x, y = torch.randn(64, 5, dtype=torch.float64), torch.randn(64, 1, dtype=torch.float64)
    mse = nn.functional.mse_loss
    tiny = small_steps_vs_big_step(model, x, y, k=8, lr=1e-6, loss_fn=mse)
    large = small_steps_vs_big_step(model, x, y, k=8, lr=0.2, loss_fn=mse)
    assert tiny < 1e-4 < 0.1 < large
    assert small_steps_vs_big_step(model, x, y, k=1, lr=0.2, loss_fn=mse) == 0.0


def test_accumulated_gradients_equal_one_big_batch_without_bn():
    torch.manual_seed(0)
    model = ddp_example_model().double()
    data = ddp_example_data(32)
    x, y = data.tensors[0].double(), data.tensors[1]
    accumulated = accumulated_gradients(model, [(x[:16], y[:16]), (x[16:], y[16:])])
    big = accumulated_gradients(model, [(x, y)])
    for a, b in zip(accumulated, big, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_first_global_batch_is_the_union_of_the_shards():
    """DistributedSampler's rule, written independently: one permutation of the data set
    from the seed, rank r taking every world-th index from r; so the first step of 2
    processes of 8 reads the first 16 indices of that permutation between them."""
    data = ddp_example_data(64)
    x, y = first_global_batch(data, world=2, batch_per_process=8)
    permutation = torch.randperm(64, generator=torch.Generator().manual_seed(run_seed(0)))
    expected_x, expected_y = data[permutation[:16]]

    def rows(images):
        return sorted(tuple(row.tolist()) for row in images.flatten(1))

    assert rows(x) == rows(expected_x)
    assert sorted(y.tolist()) == sorted(expected_y.tolist())


@pytest.mark.skipif(
    not loopback_available(), reason="gloo needs TCP on 127.0.0.1, which is down in this sandbox"
)
def test_two_process_gloo_ddp_step_equals_single_process_big_batch(tmp_path):
    out = tmp_path / "ddp.pt"
    n, base_lr, base_batch = 8, 0.5, 16
    result = run_torchrun(
        2,
        ("-m", "course.scaling"),
        [
            "shapes",
            "--steps",
            "1",
            "--batch-per-process",
            str(n),
            "--base-lr",
            str(base_lr),
            "--base-batch-size",
            str(base_batch),
            "--warmup-steps",
            "0",
            "--samples",
            "256",
            "--out",
            str(out),
        ],
    )
    assert result.returncode == 0, result.stderr[-3000:]
    ddp_weights = load_state(out)["model"]

    model = ddp_example_model()
    x, y = first_global_batch(ddp_example_data(256), world=2, batch_per_process=n)
    lr = linear_scaled_lr(base_lr, 2 * n, base_batch)
    assert math.isclose(lr, base_lr)
    sgd_step(model, x, y, lr)
    moved = False
    for key, value in model.state_dict().items():
        torch.testing.assert_close(ddp_weights[key], value, rtol=0, atol=1e-6)
        moved |= not torch.equal(value, ddp_example_model().state_dict()[key])
    assert moved  # the step did change the weights


def test_script_refuses_to_run_without_torchrun():
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}
    result = subprocess.run(
        [sys.executable, "-m", "course.scaling"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )
    assert result.returncode != 0 and "torchrun" in result.stderr


def test_bad_decay_is_refused_when_the_schedule_is_built():
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    with pytest.raises(ValueError, match="decay must be one of"):
        warmup_schedule(optimizer, warmup_steps=5, total_steps=100, decay="linear")


def test_fewer_gpus_than_processes_falls_back_to_gloo_and_says_what_to_type():
    from course.distributed import choose_backend

    assert choose_backend(cuda_devices=2, local_processes=2) == ("nccl", None)
    assert choose_backend(cuda_devices=0, local_processes=2) == ("gloo", None)
    backend, warning = choose_backend(cuda_devices=1, local_processes=2)  # Colab, one T4
    assert backend == "gloo" and "--nproc_per_node=1" in warning


def _regression(n=40, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=generator, dtype=torch.float64)
    return TensorDataset(x, (x[:, 0] > 0).long())


def test_train_at_batch_size_is_sgd_with_warmup_over_epochs_of_fresh_shuffles():
    """The same weights as a loop written out by hand: a new permutation every epoch,
    drop_last, SGD with momentum and weight decay, warmup over whole epochs, cosine."""
    data, batch, epochs, lr = _regression(), 8, 3, 0.3
    torch.manual_seed(0)
    model = nn.Linear(6, 2).double()
    reference = copy.deepcopy(model)
    run = train_at_batch_size(
        model, data, data, batch_size=batch, lr=lr, epochs=epochs, warmup_epochs=1, seed=5
    )
    optimizer = torch.optim.SGD(reference.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    steps_per_epoch = len(data) // batch
    step = 0
    generator = torch.Generator().manual_seed(run_seed(5))  # COURSE_SEED moves it too
    for _ in range(epochs):
        order = torch.randperm(len(data), generator=generator)
        for i in range(steps_per_epoch):
            for group in optimizer.param_groups:
                group["lr"] = lr * warmup_factor(step, steps_per_epoch, epochs * steps_per_epoch)
            x, y = data[order[i * batch : (i + 1) * batch]]
            optimizer.zero_grad()
            nn.functional.cross_entropy(reference(x), y).backward()
            optimizer.step()
            step += 1
    for a, b in zip(model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(a, b)
    assert run.steps_per_epoch == 5 and len(run.losses) == 15 and len(run.val_accuracy) == 3
    assert run.final_accuracy == run.val_accuracy[-1] > 0.5


def test_train_at_batch_size_records_a_divergence_to_the_end():
    data = _regression()
    model = nn.Linear(6, 2).double()
    run = train_at_batch_size(model, data, data, batch_size=8, lr=1e200, epochs=4)
    assert len(run.losses) == 20 and len(run.val_accuracy) == 4
    assert math.isinf(run.losses[-1]) and run.early_loss_peak() > 1e10
    with pytest.raises(ValueError, match="larger than the 40 samples"):
        train_at_batch_size(model, data, data, batch_size=64, lr=0.1, epochs=1)


def test_synced_batch_norm_statistics_are_those_of_the_whole_batch():
    from course.scaling import synced_batch_norm_statistics

    g = torch.Generator().manual_seed(0)
    batch = 3 + 2 * torch.randn(24, 5, 4, 4, generator=g, dtype=torch.float64)
    shards = batch.split([4, 8, 12])  # unequal per-process minibatches
    mean, var = synced_batch_norm_statistics(shards)
    bn = torch.nn.BatchNorm2d(5, momentum=1.0, dtype=torch.float64).train()
    expected = bn(batch)
    torch.testing.assert_close(mean, bn.running_mean)
    torch.testing.assert_close(var * 24 * 16 / (24 * 16 - 1), bn.running_var)  # unbiased
    synced = (shards[1] - mean[:, None, None]) / torch.sqrt(var[:, None, None] + bn.eps)
    torch.testing.assert_close(synced, expected[4:12])
    local = torch.nn.functional.batch_norm(shards[1], None, None, training=True)
    assert not torch.allclose(local, expected[4:12])  # per-process BN differs
