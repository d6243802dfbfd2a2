import math
import os
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

import course.train as train
from course.config import run_seed
from course.runstate import load_state, save_state
from course.train import History, evaluate, fit, predict


def _data(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g)
    y = (x[:, 0] + x[:, 1] > 0).long() + (x[:, 2] > 1).long()
    return TensorDataset(x, y)


def _model(dropout=0.0):
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(dropout), nn.Linear(16, 3))


class PowerCut(Dataset):
    """A dataset that raises after `limit` reads, like a run killed mid-epoch."""

    def __init__(self, base, limit):
        self.base, self.limit, self.reads = base, limit, 0

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        self.reads += 1
        if self.reads > self.limit:
            raise KeyboardInterrupt("power cut")
        return self.base[i]


def _run(epochs, path=None, dataset=None, seed=0):
    torch.manual_seed(seed)
    model = _model(dropout=0.3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=5, gamma=0.5)
    loader = DataLoader(dataset or _data(), batch_size=8, shuffle=True)
    history = fit(
        model,
        loader,
        DataLoader(_data(32, seed=1), batch_size=16),
        epochs=epochs,
        optimizer=opt,
        scheduler=sched,
        device="cpu",
        checkpoint_path=path,
        progress=False,
    )
    return model, opt, sched, history


def test_resume_after_interruption_gives_the_uninterrupted_weights(tmp_path):
    path = tmp_path / "run.pt"
    reference, ref_opt, ref_sched, ref_history = _run(epochs=4)

    # Killed during epoch 3: 2 epochs of 64 reads, then 20 more.
    with pytest.raises(KeyboardInterrupt):
        _run(epochs=4, path=path, dataset=PowerCut(_data(), limit=2 * 64 + 20))
    assert load_state(path)["epoch"] == 2

    resumed, opt, sched, history = _run(epochs=4, path=path, seed=99)  # another init: overwritten
    for p, q in zip(resumed.parameters(), reference.parameters(), strict=True):
        assert torch.equal(p, q)
    assert sched.last_epoch == ref_sched.last_epoch == 4 * 8
    assert opt.param_groups[0]["lr"] == ref_opt.param_groups[0]["lr"]
    timing = {"seconds": [], "data_seconds": []}  # wall-clock measurements differ
    assert history.to_dict() | timing == ref_history.to_dict() | timing
    assert history.epochs == 4


def test_fit_with_a_finished_checkpoint_does_nothing_more(tmp_path):
    path = tmp_path / "run.pt"
    first, *_ = _run(epochs=2, path=path)
    again, *_, history = _run(epochs=2, path=path, seed=5)
    assert history.epochs == 2
    for p, q in zip(first.parameters(), again.parameters(), strict=True):
        assert torch.equal(p, q)


def test_crash_during_checkpoint_write_keeps_the_previous_one(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    save_state(path, {"epoch": 1, "model": {"w": torch.ones(3)}})
    before = path.read_bytes()

    def crashing_save(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(train.torch, "save", crashing_save)
    with pytest.raises(OSError, match="disk full"):
        save_state(path, {"epoch": 2, "model": {"w": torch.zeros(3)}})
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["ckpt.pt"]  # no temporary file left behind
    monkeypatch.undo()
    assert load_state(path)["epoch"] == 1


def test_load_state_uses_weights_only(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    save_state(path, {"model": _model().state_dict(), "epoch": 0})
    calls = []
    real_load = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(train.torch, "load", spy)
    load_state(path, _model())
    assert calls == [True]


class NotATensor:
    """Pickled objects of arbitrary classes are refused by weights_only=True."""


def test_load_state_refuses_arbitrary_objects(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"model": _model().state_dict(), "payload": NotATensor()}, path)
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        load_state(path, _model())


def test_checkpoint_of_another_model_names_the_mismatched_keys(tmp_path):
    path = tmp_path / "ckpt.pt"
    save_state(path, {"model": _model().state_dict()})
    wider = nn.Sequential(nn.Linear(6, 32), nn.ReLU(), nn.Dropout(), nn.Linear(32, 3))
    with pytest.raises(ValueError, match=r"0\.weight: \(16, 6\) in checkpoint .*\(32, 6\)"):
        load_state(path, wider)
    other = nn.Sequential(nn.Linear(6, 3))
    with pytest.raises(ValueError) as err:
        load_state(path, other)
    assert "unexpected keys: 3.bias, 3.weight" in str(err.value)
    assert "another model" in str(err.value)


def test_missing_checkpoint_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_state(tmp_path / "nothing.pt")


def _one_epoch_params(batch_size, grad_accum_steps, n=48):
    torch.manual_seed(0)
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    loader = DataLoader(_data(n), batch_size=batch_size, shuffle=False)
    fit(
        model,
        loader,
        epochs=1,
        optimizer=opt,
        device="cpu",
        grad_accum_steps=grad_accum_steps,
        progress=False,
    )
    return [p.detach().clone() for p in model.parameters()]


def test_gradient_accumulation_equals_one_bigger_batch():
    big = _one_epoch_params(batch_size=16, grad_accum_steps=1)
    accumulated = _one_epoch_params(batch_size=4, grad_accum_steps=4)
    for p, q in zip(big, accumulated, strict=True):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-6)
    # ... and differs from taking a step after every small batch.
    small = _one_epoch_params(batch_size=4, grad_accum_steps=1)
    assert not torch.allclose(small[0], big[0], atol=1e-4)


def test_incomplete_last_accumulation_group_is_averaged_over_its_size():
    # 48 samples, batches of 8 in groups of 4: the last group has 2 batches (16 samples),
    # which must step like one batch of 16.
    accumulated = _one_epoch_params(batch_size=8, grad_accum_steps=4)
    torch.manual_seed(0)
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    x, y = _data(48).tensors
    for chunk in (slice(0, 32), slice(32, 48)):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[chunk]), y[chunk]).backward()
        opt.step()
    for p, q in zip(model.parameters(), accumulated, strict=True):
        torch.testing.assert_close(p.detach(), q, rtol=1e-6, atol=1e-6)


def test_scheduler_steps_once_per_optimizer_step():
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0 / (1 + step))
    loader = DataLoader(_data(40), batch_size=4)  # 10 batches
    history = fit(
        model,
        loader,
        epochs=2,
        optimizer=opt,
        scheduler=sched,
        grad_accum_steps=3,
        device="cpu",
        progress=False,
    )  # groups 3+3+3+1
    assert sched.last_epoch == 2 * 4
    assert history.lr == pytest.approx([1 / 5, 1 / 9])


def test_evaluate_matches_a_manual_computation():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 3), nn.Dropout(0.5))
    data = _data(50)
    x, y = data.tensors
    model.train()
    result = evaluate(model, DataLoader(data, batch_size=16))
    assert model.training  # mode restored
    model.eval()
    logits = model(x)
    assert result["loss"] == pytest.approx(nn.functional.cross_entropy(logits, y).item(), rel=1e-5)
    assert result["accuracy"] == pytest.approx((logits.argmax(1) == y).float().mean().item())
    outputs, targets = predict(model, DataLoader(data, batch_size=16))
    torch.testing.assert_close(outputs, logits.detach())
    assert torch.equal(targets, y)


def test_fit_learns_and_records_history():
    torch.manual_seed(0)
    model = _model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    history = fit(
        model,
        DataLoader(_data(256), batch_size=32, shuffle=True),
        DataLoader(_data(128, seed=1), batch_size=64),
        epochs=8,
        optimizer=opt,
        device="cpu",
        progress=False,
    )
    assert history.epochs == 8 and len(history.val_acc) == 8 and len(history.seconds) == 8
    assert history.train_loss[-1] < 0.6 * history.train_loss[0]
    assert history.val_acc[-1] > 0.8
    assert History.from_dict(history.to_dict()) == history


def test_fit_without_validation_records_nan_and_non_classification_outputs():
    model = nn.Linear(6, 1)
    x = torch.randn(32, 6)
    loader = DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=8)
    history = fit(
        model,
        loader,
        epochs=2,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.05),
        loss_fn=nn.functional.mse_loss,
        device="cpu",
        progress=False,
    )
    assert math.isnan(history.val_loss[0]) and math.isnan(history.train_acc[0])
    assert history.train_loss[1] < history.train_loss[0]


def test_fit_rejects_bad_arguments():
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loader = DataLoader(_data(8), batch_size=4)
    with pytest.raises(ValueError, match="grad_accum_steps"):
        fit(model, loader, epochs=1, optimizer=opt, grad_accum_steps=0)
    with pytest.raises(ValueError, match="epochs"):
        fit(model, loader, epochs=-1, optimizer=opt)


def test_to_device_moves_nested_batches():
    batch = {"image": torch.rand(2, 3, 4, 4), "boxes": [torch.zeros(1, 4)], "name": "a"}
    moved = train.to_device(batch, torch.device("cpu"), channels_last=True)
    assert moved["image"].is_contiguous(memory_format=torch.channels_last)
    assert isinstance(moved["boxes"], list) and moved["name"] == "a"


def test_checkpoint_written_by_fit_holds_plain_data(tmp_path):
    path = Path(tmp_path) / "a" / "b.pt"  # parent folders are created
    _run(epochs=1, path=path)
    state = torch.load(path, weights_only=True)
    keys = {"model", "optimizer", "scheduler", "scaler", "epoch", "history", "rng", "best_model"}
    assert set(state) == keys and state["best_model"] is None  # fit(keep_best=None)
    assert state["epoch"] == 1 and isinstance(state["history"]["train_loss"][0], float)


def test_train_steps_cycles_the_loader_and_marks_divergence():
    torch.manual_seed(0)
    model = _model()
    loader = DataLoader(_data(16), batch_size=8)  # 2 batches, cycled
    losses = train.train_steps(model, loader, torch.optim.SGD(model.parameters(), lr=0.1), 7)
    assert len(losses) == 7 and losses[-1] < losses[0]
    exploding = train.train_steps(model, loader, torch.optim.SGD(model.parameters(), lr=1e6), 50)
    assert len(exploding) == 50 and exploding[-1] == math.inf


def _images(n=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x, y = torch.rand(n, 3, 16, 16, generator=g), torch.randint(0, 4, (n,), generator=g)
    return TensorDataset(x, y)


@pytest.mark.parametrize("loop", ["fit", "train_steps"])
def test_cnn_trains_channels_last_on_cpu_with_the_weights_of_a_plain_nchw_loop(loop):
    from course.models import SmallCNN

    def fresh():
        torch.manual_seed(0)
        model = SmallCNN(channels=(8, 16))
        return model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)

    loader = DataLoader(_images(), batch_size=8)  # 4 steps, in order
    model, opt = fresh()
    if loop == "fit":
        fit(model, loader, epochs=1, optimizer=opt, device="cpu", progress=False)
    else:
        train.train_steps(model, loader, opt, steps=4, device="cpu")
    assert train.channels_last_on(torch.device("cpu"))
    conv = model.features[0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()

    reference, ref_opt = fresh()  # the textbook loop, NCHW throughout
    for x, y in loader:
        ref_opt.zero_grad()
        nn.functional.cross_entropy(reference(x), y).backward()
        ref_opt.step()
    for p, q in zip(model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(p.detach(), q.detach(), rtol=1e-5, atol=1e-5)


def test_memory_format_benchmark_runs_and_both_layouts_agree():
    import runpy

    script = Path(__file__).parents[1] / "benchmarks" / "memory_format.py"
    main = runpy.run_path(str(script), run_name="benchmark")["main"]
    results = main(["--device", "cpu", "--steps", "1", "--scale", "8"])
    assert len(results) == 4
    for r in results.values():
        assert r["nchw_s"] > 0 and r["channels_last_s"] > 0
        # float32 rounding: at most 1e-2 of the step (a layout bug gives about 1)
        assert r["error_nchw"] < 0.05 and r["error_channels_last"] < 0.05


def test_predict_gathers_per_image_outputs_of_a_detector():
    """A detector's decoder gives one dict per image; predict chains them, with targets."""

    class Detector(nn.Module):
        def forward(self, x):
            return {"hm": x.mean(dim=(1, 2, 3))}  # one score per image

    def decode(out):
        return [{"scores": s[None], "labels": torch.zeros(1, dtype=torch.long)} for s in out["hm"]]

    images = torch.rand(5, 3, 4, 4)
    targets = [
        {"boxes": torch.rand(i, 4), "labels": torch.zeros(i, dtype=torch.long)} for i in range(5)
    ]
    loader = [(images[:3], targets[:3]), (images[3:], targets[3:])]
    detections, truths = predict(Detector(), loader, device="cpu", postprocess=decode)
    assert len(detections) == len(truths) == 5 and truths[4]["boxes"].shape == (4, 4)
    scores = torch.cat([d["scores"] for d in detections])
    torch.testing.assert_close(scores, images.mean(dim=(1, 2, 3)))


def _torchrun(*args) -> None:
    """2 processes of tests/ddp_fit.py under torchrun, on CPU."""
    from course.distributed import run_torchrun
    from tests.conftest import ROOT

    script = str(ROOT / "tests" / "ddp_fit.py")
    result = run_torchrun(2, (script,), [str(a) for a in args], timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


_needs_loopback = pytest.mark.skipif(
    not __import__("course.distributed").distributed.loopback_available(),
    reason="gloo needs TCP on 127.0.0.1, which is down in this sandbox",
)


@_needs_loopback
def test_fit_under_torchrun_equals_one_process_with_the_global_batch(tmp_path):
    """2 processes x 8 samples, DDP: the weights of one process training on the union of
    the shards (DistributedSampler's permutation, 16 per step), epoch after epoch."""
    from tests import ddp_fit

    _torchrun(tmp_path / "ddp.pt", 2)
    ddp = load_state(tmp_path / "ddp.pt")
    net, (x, y) = ddp_fit.model(), ddp_fit.data().tensors
    optimizer = torch.optim.SGD(net.parameters(), lr=ddp_fit.LR)
    global_batch = 2 * ddp_fit.BATCH_PER_PROCESS
    for epoch in range(
        2
    ):  # DistributedSampler: a permutation per epoch, seeded run_seed(0) + epoch
        generator = torch.Generator().manual_seed(run_seed(0) + epoch)
        order = torch.randperm(ddp_fit.SAMPLES, generator=generator)
        for i in range(0, ddp_fit.SAMPLES, global_batch):
            batch = order[i : i + global_batch]
            loss = nn.functional.cross_entropy(net(x[batch]), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    for k, v in net.state_dict().items():
        torch.testing.assert_close(ddp["model"][k], v, rtol=1e-5, atol=1e-6)
    assert len(ddp["history"]["train_loss"]) == 2


@_needs_loopback
def test_interrupted_torchrun_fit_resumes_to_the_same_weights(tmp_path):
    """With per-process randomness in the data (as augmentations have): each process
    must resume its own random stream, not rank 0's."""
    checkpoint = tmp_path / "run.pt"
    _torchrun(tmp_path / "first.pt", 1, checkpoint, "noisy")  # stopped after one epoch
    _torchrun(tmp_path / "resumed.pt", 3, checkpoint, "noisy")  # run again: resumes at epoch 2
    _torchrun(tmp_path / "straight.pt", 3, "-", "noisy")
    resumed, straight = load_state(tmp_path / "resumed.pt"), load_state(tmp_path / "straight.pt")
    for k, v in straight["model"].items():
        torch.testing.assert_close(resumed["model"][k], v, rtol=0, atol=0)
    assert resumed["history"]["train_loss"] == straight["history"]["train_loss"]


def test_fit_compiles_on_request_and_saves_the_plain_keys(monkeypatch, tmp_path):
    """compile=True runs the model through torch.compile; the checkpoint keeps the
    uncompiled model's keys (no `_orig_mod.` prefix), so it loads into a plain model."""
    compiled = []

    def fake_compile(module):
        compiled.append(module)
        return module

    monkeypatch.setattr(torch, "compile", fake_compile)
    model = _model()
    loader = DataLoader(TensorDataset(torch.randn(32, 6), torch.randint(0, 3, (32,))), batch_size=8)
    history = fit(
        model,
        loader,
        epochs=1,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        device="cpu",
        compile=True,
        checkpoint_path=tmp_path / "run.pt",
        progress=False,
    )
    assert compiled == [model] and len(history.data_seconds) == 1
    assert 0 <= history.data_seconds[0] <= history.seconds[0]
    load_state(tmp_path / "run.pt", _model())


def _flipped_validation_run(epochs, path=None, seed=0):
    """Training on a rule, validating on its opposite: the validation loss rises
    as training goes on, so the best epoch is an early one, not the last."""
    torch.manual_seed(seed)
    model = _model()
    train_set = _data()
    x, y = train_set.tensors
    val = DataLoader(TensorDataset(x, 2 - y), batch_size=32)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    history = fit(
        model,
        DataLoader(train_set, batch_size=8),
        val,
        epochs=epochs,
        optimizer=opt,
        device="cpu",
        progress=False,
        keep_best="val_loss",
        checkpoint_path=path,
    )
    return model, history, val


def test_keep_best_restores_the_epoch_with_the_best_validation_loss(tmp_path):
    model, history, val = _flipped_validation_run(epochs=6)
    best = history.best_epoch("val_loss")
    assert best < 6 and history.val_loss[best - 1] == min(history.val_loss)
    assert evaluate(model, val, device="cpu", progress=False)["loss"] == pytest.approx(
        history.val_loss[best - 1], rel=1e-6
    )
    assert history.best_epoch("val_acc") == 1 + max(range(6), key=history.val_acc.__getitem__)

    # Interrupted after 2 epochs, resumed to 6: the same best weights at the end.
    path = tmp_path / "best.pt"
    _flipped_validation_run(epochs=2, path=path)
    resumed, _, _ = _flipped_validation_run(epochs=6, path=path, seed=99)
    for p, q in zip(resumed.parameters(), model.parameters(), strict=True):
        assert torch.equal(p, q)
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="val_loader"):
        fit(model, DataLoader(_data()), epochs=1, optimizer=opt, keep_best="val_loss")


def test_atomic_write_leaves_the_file_whole_or_as_it_was(tmp_path):
    """course.runstate.atomic_write: complete on success; on an error the old content and
    no temporary file remain; the package's writers of shared files all go through it."""
    import ast
    from pathlib import Path

    from course.runstate import atomic_write

    path = tmp_path / "sub" / "split.txt"
    with atomic_write(path) as f:
        f.write(b"a\nb\n")
    assert path.read_bytes() == b"a\nb\n"
    with pytest.raises(RuntimeError), atomic_write(path, durable=False) as f:
        f.write(b"half")
        raise RuntimeError("killed mid-write")
    assert path.read_bytes() == b"a\nb\n"
    assert [p.name for p in path.parent.iterdir()] == ["split.txt"]
    src = Path(__file__).resolve().parents[1] / "src" / "course"
    writers = []
    for file in src.rglob("*.py"):
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in ("write_text", "write_bytes"):
                writers.append(f"{file.name}:{node.lineno}")
            if isinstance(node, ast.Attribute) and node.attr == "mkstemp":
                writers.append(f"{file.name}:{node.lineno} (mkstemp)")
    others = [w for w in writers if not (w.startswith("runstate.py:") and "mkstemp" in w)]
    assert len(writers) == 1 and not others, (
        f"write shared files with course.runstate.atomic_write: {others}"
    )


def test_one_device_rule_for_every_loop(monkeypatch):
    """An explicit device wins; otherwise the process's device (the GPU under torchrun,
    else CUDA, MPS, the CPU) for fit, evaluate, predict and train_steps alike."""
    assert train.resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(train, "process_device", lambda: torch.device("meta"))
    assert train.resolve_device() == torch.device("meta")
    assert train.resolve_device(torch.device("cpu")) == torch.device("cpu")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_evaluate_and_predict_give_the_model_back_as_it_was(dtype):
    """A model that evaluate would place channels_last (a stand-in for a GPU model
    evaluated on the CPU: place() changes its tensors) gets its own tensors back:
    same storage, layout, dtype and device; and the same results as a channels_last copy."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(2)).to(
        dtype
    )
    model(torch.rand(2, 3, 6, 6, dtype=dtype))  # materialise the lazy layer
    model.eval()
    before = {
        k: (v.data_ptr(), v.stride(), v.dtype, v.device) for k, v in model.state_dict().items()
    }
    x = torch.rand(8, 3, 6, 6, dtype=dtype)
    loader = [(x, torch.tensor([0, 1] * 4))]
    result = evaluate(model, loader, device="cpu", amp=False)
    outputs, _ = predict(model, loader, device="cpu", amp=False)
    after = {
        k: (v.data_ptr(), v.stride(), v.dtype, v.device) for k, v in model.state_dict().items()
    }
    assert after == before
    assert model[0].weight.is_contiguous()  # not left channels_last
    assert not model.training  # its mode too
    torch.testing.assert_close(outputs, model(x).float())
    assert result["loss"] == pytest.approx(
        nn.functional.cross_entropy(model(x), loader[0][1]).item(), rel=1e-5
    )


def test_fit_keeps_the_model_where_it_trained():
    """fit (unlike evaluate) places the model for good: it trains it there."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(64, 2))
    x, y = torch.rand(8, 3, 6, 6), torch.randint(0, 2, (8,))
    fit(
        model,
        [(x, y)],
        epochs=1,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        device="cpu",
        progress=False,
    )
    assert model[0].weight.is_contiguous(memory_format=torch.channels_last)


def test_history_counts_optimizer_steps_and_keeps_them_through_a_checkpoint(tmp_path):
    model, _, _, history = _run(2, path=tmp_path / "run.pt")
    assert history.steps == [8, 8]
    saved = History.from_dict(load_state(tmp_path / "run.pt")["history"])
    assert saved.steps == [8, 8] and all(isinstance(s, int) for s in saved.steps)


class CountingLoader:
    """A loader of `n` batches that counts the batches it handed out."""

    def __init__(self, n, batch_size=4):
        self.loader = DataLoader(_data(n * batch_size), batch_size=batch_size)
        self.taken = 0

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        for batch in self.loader:
            self.taken += 1
            yield batch


def test_course_max_steps_caps_every_training_loop_per_epoch(monkeypatch):
    """COURSE_MAX_STEPS=3: fit takes 3 batches per epoch (3 optimizer steps, the scheduler
    stepped 3 times each epoch), train_steps 3 steps, train_patch 3 batches per epoch,
    accuracy_under_attack 3 batches; evaluation is not capped. Unset, the same loops take
    every batch."""
    from course.adversarial import accuracy_under_attack, fgsm, train_patch

    def run():
        torch.manual_seed(0)
        model = _model()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
        loader, val = CountingLoader(10), CountingLoader(5)
        history = fit(model, loader, val, epochs=2, optimizer=opt, scheduler=sched,
                      device="cpu", progress=False)  # fmt: skip
        steps = train.train_steps(model, CountingLoader(10), opt, 8, device="cpu")
        images = DataLoader(TensorDataset(torch.rand(40, 3, 8, 8), torch.zeros(40).long()), 4)
        counting = CountingLoader(10)
        counting.loader = images
        train_patch(model_2d, counting, 2, 0, epochs=2, device="cpu", progress=False)
        attacked = CountingLoader(10)
        attacked.loader = images
        accuracy_under_attack(model_2d, attacked, fgsm, [0, 0.1], device="cpu", progress=False)
        taken = counting.taken + attacked.taken
        return history, loader.taken, val.taken, sched.last_epoch, len(steps), taken

    model_2d = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 3))
    monkeypatch.delenv("COURSE_MAX_STEPS", raising=False)
    history, taken, val_taken, last_epoch, n_steps, patch_taken = run()
    assert (history.steps, taken, val_taken, last_epoch) == ([10, 10], 20, 10, 20)
    assert (n_steps, patch_taken) == (8, 20 + 10)
    monkeypatch.setenv("COURSE_MAX_STEPS", "3")
    history, taken, val_taken, last_epoch, n_steps, patch_taken = run()
    assert (history.steps, taken, val_taken, last_epoch) == ([3, 3], 6, 10, 6)
    assert (n_steps, patch_taken) == (3, 6 + 3)
