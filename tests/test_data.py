import ast
import dataclasses
import json

import pytest
import torch
from torchvision.transforms import v2

from course.data import IMAGENET_MEAN, IMAGENET_STD, SHAPE_CLASSES, Normalize, make_shapes


def test_normalize_matches_torchvision():
    x = torch.rand(4, 3, 16, 16)
    expected = v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)(x)
    torch.testing.assert_close(Normalize()(x), expected)


def test_normalize_keeps_state_dict_keys_of_the_network():
    net = torch.nn.Conv2d(3, 2, 1)
    model = torch.nn.Sequential(Normalize(), net)
    assert set(model.state_dict()) == {f"1.{k}" for k in net.state_dict()}
    assert {name for name, _ in model.named_buffers()} == {"0.mean", "0.std"}


def test_normalize_rejects_wrong_inputs():
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        Normalize()(torch.rand(3, 8, 8))
    with pytest.raises(ValueError, match="positive"):
        Normalize((0.5,), (0.0,))
    with pytest.raises(ValueError, match="channels"):
        Normalize((0.5, 0.5), (0.2,))


def test_normalize_passes_gradients_in_pixel_space():
    x = torch.rand(2, 3, 4, 4, requires_grad=True)
    Normalize()(x).sum().backward()
    expected = (1 / torch.tensor(IMAGENET_STD)).view(1, 3, 1, 1).expand_as(x)
    torch.testing.assert_close(x.grad, expected)


def test_make_shapes_is_deterministic_balanced_and_in_range():
    a, b = make_shapes(40, image_size=24, seed=3), make_shapes(40, image_size=24, seed=3)
    assert torch.equal(a.tensors[0], b.tensors[0]) and torch.equal(a.tensors[1], b.tensors[1])
    x, y = a.tensors
    assert x.shape == (40, 3, 24, 24) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert 0 <= x.min() and x.max() <= 1
    assert torch.bincount(y, minlength=len(SHAPE_CLASSES)).tolist() == [10, 10, 10, 10]
    assert not torch.equal(x, make_shapes(40, image_size=24, seed=4).tensors[0])


def test_make_shapes_classes_differ_in_shape_not_colour():
    # Same seed for the random draws: the masks of different classes differ.
    x, y = make_shapes(8, image_size=32, noise=0.0, num_classes=4, seed=0).tensors
    assert set(y.tolist()) == {0, 1, 2, 3}
    # Every image has exactly two colours when noise is off.
    for img in x:
        assert torch.unique(img.reshape(3, -1), dim=1).shape[1] == 2


def test_make_shapes_bad_arguments():
    with pytest.raises(ValueError, match="num_classes"):
        make_shapes(10, num_classes=9)
    with pytest.raises(ValueError, match="image_size"):
        make_shapes(10, image_size=8)


def test_generated_data_sets_are_keyed_by_parameters_and_generator_version(tmp_path, monkeypatch):
    """A changed generator (its version constant) or other parameters never reuse the
    files generated before: they go to another folder."""
    from course.data import hornets, voc

    monkeypatch.setenv("COURSE_DATA", str(tmp_path))
    first = hornets.load_hornet_data(32, synthetic_scale=0.005, progress=False)
    folder = first.paths[0].parents[2]
    assert (
        folder.parent == tmp_path / "synthetic" and f"v{hornets.GENERATOR_VERSION}" in folder.name
    )
    assert hornets.load_hornet_data(32, synthetic_scale=0.005, progress=False).paths == first.paths
    other_scale = hornets.load_hornet_data(32, synthetic_scale=0.006, progress=False)
    assert other_scale.paths[0].parents[2] != folder
    monkeypatch.setattr(hornets, "GENERATOR_VERSION", hornets.GENERATOR_VERSION + 1)
    new_version = hornets.load_hornet_data(32, synthetic_scale=0.005, progress=False)
    assert new_version.paths[0].parents[2] not in (folder, other_scale.paths[0].parents[2])

    small = dict(num_train=2, num_val=1, size=32, progress=False)
    root = voc.make_synthetic_voc(**small)
    assert root.parent == tmp_path / "synthetic" and voc.make_synthetic_voc(**small) == root
    assert voc.make_synthetic_voc(**{**small, "textured": False}) != root
    monkeypatch.setattr(voc, "GENERATOR_VERSION", voc.GENERATOR_VERSION + 1)
    assert voc.make_synthetic_voc(**small) != root


def _generate_both(root):
    from course.data.hornets import make_synthetic_hornets
    from course.data.voc import make_synthetic_voc

    make_synthetic_hornets(root, scale=0.05, size=32, progress=False)
    make_synthetic_voc(root, num_train=40, num_val=10, size=32, progress=False)


def test_two_processes_generating_the_same_data_set_at_once(tmp_path):
    """Two notebooks (or two test workers) may generate the same synthetic folder at the
    same time: every file ends complete, and no temporary file is left for a reader."""
    import multiprocessing

    from PIL import Image

    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_generate_both, args=(tmp_path,)) for _ in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert [worker.exitcode for worker in workers] == [0, 0, 0]
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert not [p for p in files if p.name.startswith(".") or ".tmp" in p.name]
    images = [p for p in files if p.suffix in (".png", ".jpg")]
    assert len(images) >= 100
    for path in images:
        with Image.open(path) as image:
            image.load()  # a truncated or half-overwritten file raises here


def test_voc_groups_partition_the_classes_as_the_devkit_lists_them():
    from course.data.voc import VOC_CLASSES, VOC_GROUPS

    members = [name for group in VOC_GROUPS.values() for name in group]
    assert sorted(members) == sorted(VOC_CLASSES) and len(members) == len(set(members)) == 20
    assert list(VOC_GROUPS) == ["Person", "Animal", "Vehicle", "Indoor"]


def _pick_calls(source: str) -> list[tuple]:
    """The (smoke, cpu, gpu) values of every ``pick(smoke=..., cpu=..., gpu=...)`` call in
    ``source`` whose three values are literals (numbers, tuples of numbers, ...)."""
    calls = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "pick":
            values = {k.arg: k.value for k in node.keywords}
            if set(values) != {"smoke", "cpu", "gpu"}:
                continue
            try:
                call = tuple(ast.literal_eval(values[p]) for p in ("smoke", "cpu", "gpu"))
                hash(call)
            except (ValueError, TypeError):  # computed at run time, or a list
                continue
            calls.append(call)
    return calls


def _code_of(path) -> str:
    if path.suffix != ".ipynb":
        return path.read_text()
    cells = json.loads(path.read_text())["cells"]
    lines = ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]
    # IPython's magics and shell escapes are not Python
    return "\n".join(
        line
        for cell in lines
        for line in cell.splitlines()
        if not line.lstrip().startswith(("%", "!"))
    )


def test_one_hornet_recipe_for_the_chapters_that_share_cached_models(monkeypatch):
    """The hornet sizes (cache keys of the stand-in and of the classifier chapters 3 and 4
    share) are written once, in course.data.hornets.hornet_recipe: no module and no
    notebook repeats a field of it as its own ``pick(...)`` (a copy that would drift)."""
    from course.data.hornets import hornet_recipe
    from tests.conftest import ROOT

    per_profile = []
    for name in ("smoke", "cpu", "gpu"):
        monkeypatch.setenv("COURSE_PROFILE", name)
        per_profile.append(dataclasses.astuple(hornet_recipe()))
    recipe_fields = set(zip(*per_profile, strict=True))  # each field's (smoke, cpu, gpu)
    assert len(recipe_fields) >= 3

    recipe_home = ROOT / "src/course/data/hornets.py"
    # the test sees them (those written with literals: a named constant is not read)
    assert len(recipe_fields & set(_pick_calls(recipe_home.read_text()))) >= 5
    files = [*sorted((ROOT / "src").rglob("*.py")), *sorted((ROOT / "notebooks").glob("*.ipynb"))]
    copies = [
        (path.relative_to(ROOT).as_posix(), values)
        for path in files
        if path != recipe_home and "hornet" in _code_of(path)  # code about the hornets
        for values in _pick_calls(_code_of(path))
        if values in recipe_fields
    ]
    assert not copies, f"hornet_recipe()'s sizes written again (use hornet_recipe()): {copies}"
