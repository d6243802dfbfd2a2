"""The resume state holds NumPy's global generator, which ``seed_everything`` seeds
because students' augmentations call ``np.random``: a resumed run draws what the
uninterrupted one would have drawn."""

import random

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from course.runstate import capture_rng_state, load_state, restore_rng_state, save_state
from course.train import fit


def test_capture_and_restore_bring_back_every_generator_through_a_file(tmp_path):
    np.random.seed(3)  # noqa: NPY002
    np.random.standard_normal()  # noqa: NPY002 - leaves a cached Gaussian in the state
    random.seed(4)
    torch.manual_seed(5)
    state = capture_rng_state([])
    save_state(tmp_path / "rng.pt", {"rng": state})  # through torch.save / weights_only load
    expected = (np.random.standard_normal(5), random.random(), torch.rand(3))  # noqa: NPY002
    np.random.seed(99)  # noqa: NPY002
    random.seed(99)
    torch.manual_seed(99)
    restore_rng_state(load_state(tmp_path / "rng.pt")["rng"], [])
    assert np.array_equal(np.random.standard_normal(5), expected[0])  # noqa: NPY002
    assert random.random() == expected[1]
    assert torch.equal(torch.rand(3), expected[2])


def test_a_state_saved_without_numpy_leaves_numpy_alone():
    old = {k: v for k, v in capture_rng_state([]).items() if k != "numpy"}
    np.random.seed(7)  # noqa: NPY002
    expected = np.random.random(3)  # noqa: NPY002
    np.random.seed(7)  # noqa: NPY002
    restore_rng_state(old, [])
    assert np.array_equal(np.random.random(3), expected)  # noqa: NPY002


def _numpy_noise(x, y):
    """An augmentation as students write it: NumPy's global generator."""
    return x + 0.5 * torch.from_numpy(np.random.standard_normal(x.shape)).float(), y  # noqa: NPY002


def _run(epochs, checkpoint):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 2))
    g = torch.Generator().manual_seed(1)
    x = torch.randn(48, 6, generator=g)
    loader = DataLoader(TensorDataset(x, (x[:, 0] > 0).long()), batch_size=8, shuffle=True)
    history = fit(
        net,
        loader,
        epochs=epochs,
        optimizer=torch.optim.SGD(net.parameters(), lr=0.1),
        device="cpu",
        checkpoint_path=checkpoint,
        progress=False,
        augment=_numpy_noise,
    )
    return net.state_dict(), history


def test_a_resumed_fit_with_a_numpy_augmentation_equals_an_uninterrupted_one(tmp_path):
    np.random.seed(0)  # noqa: NPY002
    torch.manual_seed(10)
    straight, straight_history = _run(3, None)

    np.random.seed(0)  # noqa: NPY002
    torch.manual_seed(10)
    _run(1, tmp_path / "run.pt")  # stopped after one epoch
    np.random.seed(12345)  # noqa: NPY002 - a new session: NumPy's generator elsewhere
    torch.manual_seed(54321)
    resumed, resumed_history = _run(3, tmp_path / "run.pt")

    for key, value in straight.items():
        assert torch.equal(resumed[key], value), key
    assert resumed_history.train_loss == straight_history.train_loss
