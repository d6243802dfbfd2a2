"""ImageNet weights for ResNet18: torchvision's download into an empty cache, its hash
check, corrupt files, the offline error and where the cache is. The internet is the
``web`` fixture of conftest.py (a patched ``urlopen``)."""

import hashlib
import io

import pytest
import torch
import torchvision
from torchvision.models import ResNet18_Weights, Weights, WeightsEnum

import course.weights as weights_module
from course.pretrained import pretrained_resnet18
from course.runstate import validate_state_dict
from course.weights import (
    WeightsUnavailableError,
    imagenet_resnet18,
    imagenet_weights_available,
    imagenet_weights_path,
    load_imagenet_state_dict,
)
from tests.real_formats import as_torchvision_ships

REAL_URL = ResNet18_Weights.IMAGENET1K_V1.url


@pytest.fixture
def standin():
    """A torchvision-keyed ResNet18 state dict, its bytes, and a weights entry whose file
    name carries the SHA-256 prefix of those bytes, as torchvision's names do."""
    torch.manual_seed(1)
    state = torchvision.models.resnet18().state_dict()
    data, entry = _saved_with_entry(state)
    return state, data, entry


def _saved_with_entry(state) -> tuple[bytes, WeightsEnum]:
    """``state``'s bytes as torch.save writes them, and a weights entry whose file name
    carries their SHA-256 prefix, as torchvision's names do."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    data = buffer.getvalue()
    prefix = hashlib.sha256(data).hexdigest()[:8]

    class StandIn(WeightsEnum):
        V1 = Weights(
            url=f"https://download.pytorch.org/models/resnet18-{prefix}.pth",
            transforms=None,
            meta={},
        )

    return data, StandIn.V1


@pytest.fixture
def empty_torch_home(tmp_path, monkeypatch):
    home = tmp_path / "fresh-runtime" / "torch"  # not created: a fresh Colab runtime
    monkeypatch.setenv("TORCH_HOME", str(home))
    return home


def test_download_into_an_empty_cache_checks_the_hash_and_loads(standin, empty_torch_home, web):
    state, data, weights = standin
    web[weights.url] = data
    loaded = load_imagenet_state_dict(weights, progress=False)
    path = empty_torch_home / "hub" / "checkpoints" / weights.url.rsplit("/", 1)[1]
    assert path.is_file() and path.read_bytes() == data
    assert ("GET", weights.url) in web.requests
    for k, v in state.items():
        assert torch.equal(loaded[k], v), k
    web.clear()  # a second call reads the cache, with no request
    web.requests.clear()
    load_imagenet_state_dict(weights, progress=False)
    assert web.requests == []


def test_resnet18_downloads_the_real_entry_into_torchvision_cache(
    standin, empty_torch_home, web, monkeypatch
):
    state, data, weights = standin
    monkeypatch.setattr(weights_module, "_imagenet_weights", lambda: weights)
    web[weights.url] = data
    model = imagenet_resnet18(num_classes=2)
    assert torch.equal(model.layer4[1].conv2.weight, state["layer4.1.conv2.weight"])
    assert model.fc.weight.shape == (2, 512)


def test_corrupt_download_names_the_file_and_keeps_nothing(standin, empty_torch_home, web):
    _, data, _ = standin
    web[REAL_URL] = data  # not the bytes whose hash the name resnet18-f37072fd.pth promises
    with pytest.raises(RuntimeError) as error:
        imagenet_resnet18()
    path = empty_torch_home / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    message = str(error.value)
    assert "corrupt" in message and str(path) in message and "delete" in message
    assert not path.exists() and not list(path.parent.glob("*.partial"))


def test_corrupt_cached_file_says_which_file_to_delete(empty_torch_home, web):
    path = empty_torch_home / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(RuntimeError, match=r"(?s)cannot be read.*delete it") as error:
        imagenet_resnet18()
    assert str(path) in str(error.value)
    # "auto" does not hide it behind the synthetic fallback: the user has a file to delete
    with pytest.raises(RuntimeError, match="delete it"):
        pretrained_resnet18("auto")


def test_offline_fails_fast_with_instructions(empty_torch_home, web):
    with pytest.raises(WeightsUnavailableError) as error:
        imagenet_resnet18()
    message = str(error.value)
    assert str(empty_torch_home / "hub" / "checkpoints" / "resnet18-f37072fd.pth") in message
    assert REAL_URL in message
    # the two ways on that exist: the synthetic stand-in and random weights (an old message
    # named a `weights=None` argument that nothing here takes)
    assert "pretrained_resnet18('synthetic')" in message and "course.models.resnet18(" in message
    assert "weights=None" not in message
    assert web.requests == [("HEAD", REAL_URL)]  # one probe, no download attempt
    assert not imagenet_weights_available()


def test_weights_that_are_not_resnet18_are_refused_by_name(empty_torch_home, web):
    path = empty_torch_home / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    path.parent.mkdir(parents=True)
    torch.save(torchvision.models.resnet34().state_dict(), path)
    with pytest.raises(
        ValueError,
        match=r"(?s)ImageNet weights .*resnet18-f37072fd.pth.*"
        r"unexpected keys: layer1.2",
    ):
        imagenet_resnet18()


def test_cache_follows_torch_home_then_xdg_cache_home(tmp_path, monkeypatch):
    monkeypatch.delenv("TORCH_HOME", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    expected = tmp_path / "xdg" / "torch" / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    assert imagenet_weights_path() == expected
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    assert imagenet_weights_path() == tmp_path / "th" / "hub" / "checkpoints" / expected.name


def _serve(state, web) -> WeightsEnum:
    """Serve ``state``'s bytes at a URL whose file name carries their SHA-256 prefix."""
    data, entry = _saved_with_entry(state)
    web[entry.url] = data
    return entry


def test_resnet18_loads_the_file_as_torchvision_ships_it_and_matches_torchvision(
    empty_torch_home, web, monkeypatch
):
    """torchvision's ResNet18 file has no num_batches_tracked (it predates the counter):
    our resnet18 loads it as torch does and computes torchvision's outputs."""
    torch.manual_seed(2)
    reference = torchvision.models.resnet18()
    for module in reference.modules():  # running statistics that matter in eval mode
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    shipped = as_torchvision_ships(reference.state_dict())
    assert not any(k.endswith("num_batches_tracked") for k in shipped)
    weights = _serve(shipped, web)
    monkeypatch.setattr(weights_module, "_imagenet_weights", lambda: weights)

    ours = imagenet_resnet18().eval()
    theirs = torchvision.models.resnet18().eval()
    theirs.load_state_dict(torch.load(imagenet_weights_path(weights), weights_only=True))
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(ours(x), theirs(x), atol=1e-5)
    assert int(ours.bn1.num_batches_tracked) == 0  # filled by torch, as for torchvision


def test_a_file_with_the_counters_still_loads(empty_torch_home, web, monkeypatch):
    state = torchvision.models.resnet18().state_dict()
    state["bn1.num_batches_tracked"].fill_(7)
    monkeypatch.setattr(weights_module, "_imagenet_weights", lambda: _serve(state, web))
    assert int(imagenet_resnet18().bn1.num_batches_tracked) == 7


def _variants() -> dict[str, dict]:
    modern = torchvision.models.resnet18().state_dict()
    old = as_torchvision_ships(modern)
    old_v1 = as_torchvision_ships(modern)
    old_v1._metadata = {k: {**v, "version": 1} for k, v in modern._metadata.items()}
    modern_without_counters = as_torchvision_ships(modern)
    modern_without_counters._metadata = modern._metadata  # BN version 2: the counter is due
    no_conv = as_torchvision_ships(modern)
    del no_conv["layer2.0.conv1.weight"]
    extra = dict(modern, **{"head.weight": torch.zeros(1)})
    wrong_shape = dict(modern, **{"fc.bias": torch.zeros(10)})
    return {
        "modern": modern,
        "as shipped": old,
        "BN version 1": old_v1,
        "version 2 without counters": modern_without_counters,
        "a conv missing": no_conv,
        "an extra key": extra,
        "a wrong shape": wrong_shape,
    }


@pytest.mark.parametrize("case", list(_variants()))
def test_the_check_accepts_exactly_what_load_state_dict_accepts(case):
    state = _variants()[case]
    try:
        torchvision.models.resnet18().load_state_dict(state, strict=True)
        torch_accepts = True
    except RuntimeError:
        torch_accepts = False
    try:
        validate_state_dict(torchvision.models.resnet18(), state)
        we_accept = True
    except ValueError as error:
        we_accept = False
        message = str(error)
    assert we_accept == torch_accepts, case
    if case == "version 2 without counters":
        assert "missing keys: bn1.num_batches_tracked" in message and "(20 in all)" in message
    if case == "a conv missing":
        assert "missing keys: layer2.0.conv1.weight" in message
