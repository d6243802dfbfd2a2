import random

import numpy as np
import pytest
import torch
from torch import nn

from course.utils import (
    count_parameters,
    eval_mode,
    get_device,
    model_device,
    seed_everything,
    time_call,
)


def test_count_parameters_matches_the_formula():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Linear(8, 2))
    # conv 8*3*3*3 + 8, BN 8 + 8 (buffers are not parameters), linear 2*8 + 2
    assert count_parameters(model) == 8 * 27 + 8 + 16 + 18


def test_count_parameters_trainable_only_and_shared_weights():
    shared = nn.Linear(4, 4)
    model = nn.Sequential(shared, nn.ReLU(), shared, nn.Linear(4, 1))
    assert count_parameters(model) == 20 + 5
    model[3].weight.requires_grad_(False)
    assert count_parameters(model, trainable_only=True) == 20 + 1


def test_seed_everything_reproduces_every_generator():
    def draw():
        legacy = np.random.rand()  # noqa: NPY002 - the global NumPy RNG is what is seeded
        return random.random(), legacy, torch.rand(3), torch.randint(0, 10, (2,))

    g1 = seed_everything(123)
    first, gen_first = draw(), torch.rand(2, generator=g1)
    g2 = seed_everything(123)
    second, gen_second = draw(), torch.rand(2, generator=g2)
    assert first[0] == second[0] and first[1] == second[1]
    assert torch.equal(first[2], second[2]) and torch.equal(first[3], second[3])
    assert torch.equal(gen_first, gen_second)
    seed_everything(124)
    assert not torch.equal(draw()[2], first[2])


def test_get_device(monkeypatch):
    assert get_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert get_device().type == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert get_device().type in {"cpu", "mps"}


def test_time_call_times_the_calls_after_warming_up(monkeypatch):
    """A fake clock that ticks once per reading: the block of 3 timed calls lasts the
    ticks read around it; the 2 warm-up calls are outside it."""
    import course.utils as utils

    clock = iter(range(100))
    calls = []

    def fn():
        calls.append(1)
        next(clock)  # each call takes one tick

    monkeypatch.setattr(utils, "_clock", lambda: float(next(clock)))
    assert time_call(fn, repeats=3) == 4 / 3  # readings t, then 3 calls, then t + 4
    assert len(calls) == 5
    with pytest.raises(ValueError, match="repeats"):
        time_call(fn, repeats=0)


def test_time_call_waits_for_the_gpu(monkeypatch):
    """The clock synchronises the device before each reading."""
    import course.utils as utils

    synced = []
    monkeypatch.setattr(utils, "synchronize", lambda device=None: synced.append(device))
    time_call(lambda: None, repeats=2)
    assert len(synced) == 4  # around the warm-up block and around the timed block


def test_eval_mode_restores_the_mode_even_after_an_error():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout())
    for training in (True, False):
        model.train(training)
        with pytest.raises(RuntimeError), eval_mode(model):
            assert not model.training and not model[1].training
            raise RuntimeError
        assert model.training is training and model[1].training is training


def test_model_device_is_the_parameters_device_or_cpu():
    assert model_device(torch.nn.Linear(2, 2)) == torch.device("cpu")
    assert model_device(torch.nn.ReLU()) == torch.device("cpu")
    if torch.cuda.is_available():
        assert model_device(torch.nn.Linear(2, 2).cuda()).type == "cuda"


def test_glue_hands_the_value_to_the_book():
    """A notebook cell that calls course.utils.glue leaves what myst-nb's
    {glue:text} role reads, with the value of the run (and shows nothing)."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    glue_ext = pytest.importorskip(
        "myst_nb.ext.glue", reason="the book's tools: pip install -e .[dev]"
    )
    extract_glue_data_cell = glue_ext.extract_glue_data_cell

    notebook = nbformat.v4.new_notebook()
    notebook.cells.append(
        nbformat.v4.new_code_cell("from course.utils import glue\nglue('acc', 0.75 + 0.125)")
    )
    nbclient.NotebookClient(notebook, timeout=60, kernel_name="python3").execute()
    (key, output), *rest = extract_glue_data_cell(notebook.cells[0])
    assert key == "acc" and not rest
    assert output["data"]["text/plain"] == "0.875"
    shown = [o for o in notebook.cells[0].outputs if o["output_type"] != "stream"]
    assert not shown  # recorded, not displayed
