"""The mixed-precision policy (course.train.precision) and the schedule that waits for
the optimizer (course.train.OptimizerSteps), on the CPU: float16 autocast with
``torch.amp.GradScaler("cpu")`` is a T4's numerics without a T4.

Overflows are forced: a loss multiplied by 1e6 on chosen training batches makes the
float16 gradients infinite (scale 65536 x 1e6 is far beyond float16's 65504), so the
scaler skips those steps. A run with those batches must then end exactly where a run
without them ends: same weights, same optimizer step count, same ``last_epoch`` of the
scheduler and the same learning rates.
"""

import math
import os
import subprocess
import sys
import warnings

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from course.train import OptimizerSteps, Precision, evaluate, fit, precision, predict, train_steps
from tests.conftest import ROOT

BOMB = 1e6


class Overflowing:
    """Cross-entropy, times :data:`BOMB` on the training calls numbered in ``bad``
    (counted from ``start``; calls without gradients, i.e. validation, do not count).
    Records the dtype of every training output."""

    def __init__(self, bad=(), start=0):
        self.bad, self.calls, self.dtypes = set(bad), start, []

    def __call__(self, output, target):
        loss = nn.functional.cross_entropy(output, target)
        if torch.is_grad_enabled():
            self.dtypes.append(output.dtype)
            if self.calls in self.bad:
                loss = loss * BOMB
            self.calls += 1
        return loss


def _data(n=80, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g)
    return TensorDataset(x, (x[:, 0] + x[:, 1] > 0).long() + (x[:, 2] > 1).long())


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))


def _without(dataset, batches, batch_size):
    """``dataset`` less the samples of the given batches (unshuffled batching)."""
    keep = [i for i in range(len(dataset)) if i // batch_size not in set(batches)]
    x, y = dataset.tensors
    return TensorDataset(x[keep], y[keep])


def _fit(dataset, amp, bad=(), epochs=1, accum=1, batch_size=8, path=None, start=0, **kw):
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, **kw.pop("opt", {}))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0 / (1 + step))
    loss = Overflowing(bad, start)
    history = fit(
        model,
        DataLoader(dataset, batch_size=batch_size, shuffle=kw.pop("shuffle", False)),
        epochs=epochs,
        optimizer=opt,
        scheduler=sched,
        loss_fn=loss,
        device="cpu",
        amp=amp,
        grad_accum_steps=accum,
        checkpoint_path=path,
        progress=False,
    )
    return model, opt, sched, history, loss


def _same_weights(a, b):
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


# --- the policy ---------------------------------------------------------------------


@pytest.fixture
def no_setting(monkeypatch):
    monkeypatch.delenv("COURSE_AMP", raising=False)
    monkeypatch.delenv("COURSE_AMP_DTYPE", raising=False)


@pytest.mark.parametrize(
    ("device", "capability", "amp", "setting", "expected"),
    [
        ("cpu", None, None, None, torch.float32),  # exact results on a laptop
        ("cpu", None, True, None, torch.bfloat16),
        ("cpu", None, "fp16", None, torch.float16),
        ("cpu", None, None, "fp16", torch.float16),  # the T4 rehearsal
        ("cpu", None, None, "bf16", torch.bfloat16),
        ("cpu", None, False, "fp16", torch.float32),  # an explicit argument wins
        ("cuda", (7, 5), None, None, torch.float16),  # T4: bf16 would be emulated
        ("cuda", (8, 0), None, None, torch.bfloat16),  # A100
        ("cuda", (9, 0), True, None, torch.bfloat16),  # H100
        ("cuda", (7, 5), True, None, torch.float16),
        ("cuda", (9, 0), None, "fp16", torch.float16),  # a T4's numerics on an H100
        ("cuda", (9, 0), None, "off", torch.float32),
        ("cuda", (7, 5), "bf16", "fp16", torch.bfloat16),
    ],
)
def test_one_policy_decides_dtype_and_scaler(
    no_setting, monkeypatch, device, capability, amp, setting, expected
):
    if capability is not None:
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
        # a T4 "supports" bf16 by emulation: the answer must not depend on this
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    if setting is not None:
        monkeypatch.setenv("COURSE_AMP", setting)
    numerics = precision(device, amp)
    assert numerics == Precision(torch.device(device), expected)
    assert numerics.scaled == (expected == torch.float16)


def test_the_scaler_is_on_for_float16_only_and_on_the_cpu_too(no_setting):
    assert precision("cpu", "fp16").scaler().is_enabled()
    assert not precision("cpu", "bf16").scaler().is_enabled()
    assert not precision("cpu", False).scaler().is_enabled()
    assert precision("cpu", "fp16").name == "fp16" and precision("cpu").name == "off"


def test_bad_values_say_what_to_use(no_setting, monkeypatch):
    with pytest.raises(ValueError, match="'fp16', 'bf16', False"):
        precision("cpu", "float16")
    monkeypatch.setenv("COURSE_AMP", "fp8")
    with pytest.raises(ValueError, match="fp16, bf16, off"):
        precision("cpu")
    monkeypatch.delenv("COURSE_AMP")
    monkeypatch.setenv("COURSE_AMP_DTYPE", "float16")  # the setting COURSE_AMP replaced
    with pytest.raises(ValueError, match="set COURSE_AMP=fp16 instead"):
        precision("cpu")


# --- the schedule waits for the optimizer -------------------------------------------


def test_fp16_on_the_cpu_computes_in_float16(no_setting):
    _, _, _, history, loss = _fit(_data(), "fp16")
    assert set(loss.dtypes) == {torch.float16}
    assert history.steps == [10]  # no natural overflow at this scale: the reference below


@pytest.mark.parametrize("accum", [1, 2])
def test_a_skipped_step_moves_neither_weights_nor_schedule_nor_count(no_setting, accum):
    """Batches 0 (the very first step, where PyTorch's own warning would fire) and 5
    overflow: the run ends as one that never saw their step's batches, with no warning."""
    bad = (0, 5)  # with accum=2 they spoil the groups (0, 1) and (4, 5)
    skipped = sorted({b // accum * accum + k for b in bad for k in range(accum)})
    data = _data()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "lr_scheduler.step() before optimizer.step()"
        model, opt, sched, history, _ = _fit(data, "fp16", bad=bad, accum=accum)
        ref, ref_opt, ref_sched, ref_history, _ = _fit(
            _without(data, skipped, 8), "fp16", accum=accum
        )
    expected = (10 - len(skipped)) // accum
    assert history.steps == ref_history.steps == [expected]
    assert sched.last_epoch == ref_sched.last_epoch == expected
    assert history.lr == ref_history.lr == [0.1 / (1 + expected)]
    for state, ref_state in zip(opt.state.values(), ref_opt.state.values(), strict=True):
        torch.testing.assert_close(state["momentum_buffer"], ref_state["momentum_buffer"])
    _same_weights(model, ref)


def test_a_fused_optimizer_that_skips_on_the_device_is_seen_too(no_setting):
    """Fused Adam takes the scaler's overflow flag and skips by itself (its step is
    called either way): OptimizerSteps then reads the scale."""
    model = _model()
    opt = torch.optim.Adam(model.parameters(), lr=0.01, fused=True)
    assert opt._step_supports_amp_scaling
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0 / (1 + step))
    history = fit(
        model,
        DataLoader(_data(), batch_size=8),
        epochs=1,
        optimizer=opt,
        scheduler=sched,
        loss_fn=Overflowing(bad=(3, 4)),
        device="cpu",
        amp="fp16",
        progress=False,
    )
    assert history.steps == [8] and sched.last_epoch == 8
    assert int(opt.state[opt.param_groups[0]["params"][0]]["step"]) == 8


@pytest.mark.parametrize("amp", ["bf16", False])
def test_bf16_and_float32_step_every_batch_even_at_huge_losses(no_setting, amp):
    _, _, sched, history, loss = _fit(_data(), amp, bad=(0, 5))
    assert history.steps == [10] and sched.last_epoch == 10
    assert set(loss.dtypes) == {torch.bfloat16 if amp else torch.float32}


def test_resume_after_a_skipped_step_equals_the_uninterrupted_run(no_setting, tmp_path):
    """The scaler's lowered scale, the scheduler and the step counts go into the
    checkpoint: bit for bit the same run (fp16, shuffled, momentum)."""
    bad, path = (2, 13, 21), tmp_path / "run.pt"  # epochs of 10 batches: 1st, 2nd, 3rd
    straight = _fit(_data(), "fp16", bad=bad, epochs=3, shuffle=True)
    torch.manual_seed(123)  # the loader's shuffle comes from the checkpoint, not from here
    _fit(_data(), "fp16", bad=bad, epochs=1, path=path, shuffle=True)
    resumed = _fit(_data(), "fp16", bad=bad, epochs=3, path=path, start=10, shuffle=True)
    _same_weights(resumed[0], straight[0])
    assert resumed[3].steps == straight[3].steps == [9, 9, 9]
    assert resumed[3].train_loss == straight[3].train_loss
    assert resumed[2].last_epoch == straight[2].last_epoch == 27
    assert resumed[3].lr == straight[3].lr


def test_course_amp_fp16_gives_float16_without_any_argument(tmp_path):
    """A fresh process, as a notebook's kernel: only the environment says fp16."""
    program = """
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from course.train import evaluate, fit, precision
seen = []
def loss_fn(output, target):
    seen.append(output.dtype)
    return nn.functional.cross_entropy(output, target)
torch.manual_seed(0)
model = nn.Linear(4, 2)
data = DataLoader(TensorDataset(torch.randn(16, 4), torch.randint(0, 2, (16,))), batch_size=8)
fit(model, data, epochs=1, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
    loss_fn=loss_fn, device="cpu", progress=False)
evaluate(model, data, loss_fn=loss_fn, device="cpu")
print(sorted({str(d) for d in seen}), precision("cpu").scaler().is_enabled())
"""
    env = {k: v for k, v in os.environ.items() if k != "COURSE_AMP_DTYPE"}
    env.update(COURSE_AMP="fp16", PYTHONPATH=str(ROOT / "src"))
    result = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split("\n")[-2] == "['torch.float16'] True"


def test_evaluate_and_predict_run_in_the_policys_dtype(no_setting):
    model, seen = _model(), []

    def loss_fn(output, target):
        seen.append(output.dtype)
        return nn.functional.cross_entropy(output, target)

    loader = DataLoader(_data(16), batch_size=8)
    evaluate(model, loader, loss_fn, device="cpu", amp="fp16")
    evaluate(model, loader, loss_fn, device="cpu")
    assert seen == [torch.float16] * 2 + [torch.float32] * 2
    outputs, _ = predict(model, loader, device="cpu", amp="fp16")
    assert outputs.dtype == torch.float32  # gathered in float32 ...
    exact, _ = predict(model, loader, device="cpu", amp=False)
    assert not torch.equal(outputs, exact)  # ... but computed in float16
    torch.testing.assert_close(outputs, exact, rtol=1e-2, atol=1e-2)


def test_train_steps_stays_float32_unless_asked(no_setting, monkeypatch):
    """Learning-rate curves compare runs step by step: float32 unless asked, even under
    COURSE_AMP (a T4 runs them in float32 too); asked for fp16, the schedule waits."""
    monkeypatch.setenv("COURSE_AMP", "fp16")
    for amp, dtype, steps in ((None, torch.float32, 4), ("fp16", torch.float16, 3)):
        model = _model()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0 / (1 + step))
        loss = Overflowing(bad=(1,) if amp else ())
        kwargs = {} if amp is None else {"amp": amp}
        losses = train_steps(
            model, DataLoader(_data(), batch_size=8), opt, 4, sched, loss, **kwargs
        )
        assert len(losses) == 4 and all(map(math.isfinite, losses))
        assert loss.dtypes == [dtype] * 4 and sched.last_epoch == steps


def test_optimizer_steps_leaves_no_hook_behind(no_setting):
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    steps = OptimizerSteps(opt, precision("cpu", "fp16").scaler())
    steps.close()
    _fit(_data(16), "fp16")
    assert not opt._optimizer_step_post_hooks


# --- under torchrun -----------------------------------------------------------------


@pytest.mark.skipif(
    not __import__("course.distributed").distributed.loopback_available(),
    reason="gloo needs TCP on 127.0.0.1, which is down in this sandbox",
)
def test_under_torchrun_every_process_skips_alike_and_accumulation_syncs_once(tmp_path):
    """2 processes (tests/ddp_amp.py): an overflow on rank 0 alone is skipped by both
    (gradients are averaged first), their schedulers wait; accumulating 2 batches of 4
    gives the weights of batches of 8 with one gradient all-reduce per optimizer step."""
    from course.distributed import run_torchrun
    from course.runstate import load_state

    out = tmp_path / "ddp.pt"
    result = run_torchrun(2, (str(ROOT / "tests" / "ddp_amp.py"),), [str(out)], timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    saved = load_state(out)
    # 64 samples, 2 processes x 8 per batch: 4 steps an epoch, the 2nd of epoch 1 skipped
    assert saved["skips"] == [{"steps": [3, 4], "last_epoch": 7}] * 2
    for k, v in saved["big"].items():
        torch.testing.assert_close(saved["accumulated"][k], v, rtol=1e-5, atol=1e-6)
    assert saved["all_reduces"] == {"big": 8, "accumulated": 8}  # not 16: no_sync


def test_cached_models_train_in_the_devices_default_precision(monkeypatch, tmp_path):
    """COURSE_AMP=fp16 changes the chapters' training, not the models the course trains
    once and caches: their file names record no precision (a float16 model would be served
    to float32 runs), and a CPU emulates float16 about 12 times slower (CI pays it)."""
    import course.pretrained as pretrained

    calls = []
    real_fit = pretrained.fit

    def spy(*args, **kwargs):
        calls.append(precision(kwargs["device"] or "cpu", kwargs.get("amp")).name)
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(pretrained, "fit", spy)
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path))
    monkeypatch.setenv("COURSE_AMP", "fp16")
    pretrained.pretrain_on_synthetic(16, samples=64, epochs=1, device="cpu", progress=False)
    assert calls == ["off"]  # float32 on the CPU, whatever COURSE_AMP says
    assert precision("cpu").name == "fp16"  # while the chapters' own loops follow it
