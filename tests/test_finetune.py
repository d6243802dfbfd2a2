"""Chapter 3: the hornet data, the split, freezing and the pretrained fallback."""

import copy
import hashlib
import os

import numpy as np
import pytest
import torch
from torch import nn

from course.data import hornets
from course.data.hornets import (
    HornetData,
    find_hornet_images,
    hornet_image_size,
    load_hornet_data,
    load_hornet_images,
    make_insect_source_task,
    make_synthetic_hornets,
    render_hornet_scene,
    stratified_split,
)
from course.finetune import balanced_accuracy, confusion_matrix, param_groups
from course.models import freeze_backbone, replace_head, resnet18
from course.pretrained import pretrained_resnet18


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    return make_synthetic_hornets(root, scale=0.01, size=48, progress=False)


def test_generator_writes_the_slides_ratio_and_is_deterministic(small_set, tmp_path):
    paths, labels = find_hornet_images(small_set)
    assert labels.count(1) == round(1042 * 0.01) and labels.count(0) == round(1844 * 0.01)
    again = make_synthetic_hornets(tmp_path, scale=0.01, size=48, progress=False)

    def digest(folder):
        return [hashlib.sha256(p.read_bytes()).hexdigest() for p in find_hornet_images(folder)[0]]

    assert digest(small_set) == digest(again)
    a = np.asarray(render_hornet_scene(1, True, 64))
    assert np.array_equal(a, np.asarray(render_hornet_scene(1, True, 64)))
    assert not np.array_equal(a, np.asarray(render_hornet_scene(2, True, 64)))


def test_hornet_is_what_differs_between_classes():
    # same seed, with and without the hornet: only the hornet's pixels change
    with_hornet = np.asarray(render_hornet_scene(5, True, 96)).astype(int)
    without = np.asarray(render_hornet_scene(5, False, 96)).astype(int)
    changed = (np.abs(with_hornet - without).sum(-1) > 60).mean()
    assert 0.02 < changed < 0.5


def test_stratified_split_is_disjoint_complete_stratified_and_reproducible():
    labels = [1] * 104 + [0] * 184
    train, val, test = stratified_split(labels, (0.7, 0.15, 0.15), seed=3)
    assert not set(train) & set(val) and not set(train) & set(test) and not set(val) & set(test)
    assert sorted(train + val + test) == list(range(len(labels)))
    for part, fraction in ((train, 0.7), (val, 0.15), (test, 0.15)):
        positives = sum(labels[i] for i in part)
        assert abs(positives - fraction * 104) <= 1
        assert abs(len(part) - positives - fraction * 184) <= 1
    assert (train, val, test) == stratified_split(labels, (0.7, 0.15, 0.15), seed=3)
    assert train != stratified_split(labels, (0.7, 0.15, 0.15), seed=4)[0]
    with pytest.raises(ValueError, match="sum to 1"):
        stratified_split(labels, (0.5, 0.2, 0.2))


def test_corrupt_image_is_skipped_with_a_warning_naming_it(small_set, tmp_path):
    folder = tmp_path / "hornets"
    for cls in ("presence", "absence"):
        (folder / cls).mkdir(parents=True)
        for p in sorted((small_set / cls).iterdir())[:3]:
            (folder / cls / p.name).write_bytes(p.read_bytes())
    bad = folder / "presence" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    truncated = folder / "absence" / "truncated.png"
    truncated.write_bytes((small_set / "absence" / "absence_00000.png").read_bytes()[:100])
    with pytest.warns(UserWarning, match="broken.jpg") as record:
        x, y, paths = load_hornet_images(folder, 32, progress=False)
    assert "truncated.png" in str(record[0].message)
    assert x.shape == (6, 3, 32, 32) and x.dtype == torch.uint8
    assert bad not in paths and truncated not in paths and y.tolist().count(1) == 3


def test_missing_or_empty_folder_gives_the_documented_error(tmp_path):
    expected = r"(?s)No folder .*nowhere\. .*presence/\*.jpg.*make_synthetic"
    with pytest.raises(FileNotFoundError, match=expected):
        find_hornet_images(tmp_path / "nowhere")
    (tmp_path / "h" / "presence").mkdir(parents=True)
    (tmp_path / "h" / "absence").mkdir()
    with pytest.raises(FileNotFoundError, match="No image in .*absence"):
        find_hornet_images(tmp_path / "h")


def test_real_folder_is_preferred_to_the_synthetic_set(small_set, tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_DATA", str(small_set.parent))
    data = load_hornet_data(32, progress=False)
    assert data.origin.startswith("real") and data.real and len(data.labels) == 28
    capped = load_hornet_data(32, progress=False, max_images=10)
    assert len(capped.labels) == 10 and capped.labels.sum() == 4  # stratified: 10 of 18 + 10
    assert capped.fingerprint() != data.fingerprint()
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("COURSE_DATA", str(empty))
    data = load_hornet_data(32, synthetic_scale=0.01, progress=False)
    assert data.origin.startswith("synthetic") and not data.real
    assert (empty / "synthetic").is_dir()


def test_image_size_follows_the_origin_of_weights_and_data(monkeypatch):
    for profile, small, large in (("smoke", 32, 64), ("cpu", 48, 112), ("gpu", 48, 224)):
        monkeypatch.setenv("COURSE_PROFILE", profile)
        assert hornet_image_size(imagenet_weights=False, real_photos=False) == small
        assert hornet_image_size(imagenet_weights=True, real_photos=False) == large
        assert hornet_image_size(imagenet_weights=False, real_photos=True) == large


def test_new_head_has_two_outputs_and_keeps_the_backbone():
    model = resnet18(num_classes=1000)
    before = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("fc.")}
    replace_head(model, 2)
    for k, v in before.items():
        assert torch.equal(model.state_dict()[k], v)
    assert model.fc.weight.shape == (2, 512) and model(torch.rand(2, 3, 64, 64)).shape == (2, 2)


def test_frozen_batchnorm_normalises_with_the_pretrained_statistics_in_training_mode():
    from course.models import freeze_batchnorm

    torch.manual_seed(0)
    model = resnet18(num_classes=3)
    for m in model.modules():  # pretrained-like statistics and affine parameters
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1), m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 1.5), m.bias.data.uniform_(-0.5, 0.5)
    x = torch.rand(4, 3, 64, 64)
    with torch.no_grad():
        expected = model.eval()(x)
    frozen = freeze_batchnorm(copy.deepcopy(model)).train()
    assert not any(isinstance(m, nn.BatchNorm2d) for m in frozen.modules())
    torch.testing.assert_close(frozen(x), expected, rtol=1e-4, atol=1e-5)
    assert [n for n, p in frozen.named_parameters() if "bn" in n or "downsample.1" in n] == []


def test_freezing_leaves_exactly_the_new_head_trainable():
    model = replace_head(resnet18(num_classes=5), 2)
    freeze_backbone(model)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"fc.weight", "fc.bias"}
    # in training mode the frozen backbone does not change: no BN statistics update
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    nn.functional.cross_entropy(
        model(torch.rand(4, 3, 64, 64)), torch.tensor([0, 1, 0, 1])
    ).backward()
    optimizer.step()
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == {"fc.weight", "fc.bias"}


def test_param_groups_split_head_and_backbone():
    model = replace_head(resnet18(num_classes=5), 2)
    groups = param_groups(model, head_lr=1e-3, backbone_lr=1e-4)
    assert [g["lr"] for g in groups] == [1e-3, 1e-4]
    assert len(groups[0]["params"]) == 2
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def test_balanced_accuracy_and_confusion_matrix():
    y = torch.tensor([0, 0, 0, 0, 1, 1])
    always_absent = torch.zeros(6, dtype=torch.long)
    assert balanced_accuracy(y, always_absent) == 0.5  # plain accuracy would be 0.67
    pred = torch.tensor([0, 0, 0, 1, 1, 0])
    assert confusion_matrix(y, pred, 2).tolist() == [[3, 1], [1, 1]]
    assert balanced_accuracy(y, pred) == pytest.approx((3 / 4 + 1 / 2) / 2)


def test_offline_fallback_pretrains_on_synthetic_once_and_caches(tmp_path, monkeypatch, web):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path / "cache"))
    with pytest.raises(RuntimeError, match="not cached"):
        pretrained_resnet18("imagenet")
    model, origin = pretrained_resnet18("auto", image_size=32, samples=64, epochs=1, progress=False)
    assert "synthetic" in origin and "not cached" in origin
    cached = list((tmp_path / "cache").glob("*.pt"))
    assert len(cached) == 1
    again, _ = pretrained_resnet18("synthetic", image_size=32, samples=64, epochs=1, progress=False)
    for (k, a), b in zip(model.state_dict().items(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    assert not torch.equal(model.conv1.weight, resnet18(num_classes=5).conv1.weight)
    with pytest.raises(ValueError, match="source must be"):
        pretrained_resnet18("laion")


def test_source_task_has_five_balanced_classes_without_hornets():
    data = make_insect_source_task(20, 32)
    x, y = data.tensors
    assert x.shape == (20, 3, 32, 32) and 0 <= x.min() and x.max() <= 1
    assert torch.bincount(y).tolist() == [4] * 5 and "hornet" not in hornets.DISTRACTORS


def test_photos_are_read_upright_with_their_exif_orientation(tmp_path):
    from PIL import Image

    upright = Image.new("RGB", (40, 60), (220, 30, 30))  # portrait: red top, blue bottom
    upright.paste((30, 30, 220), (0, 30, 40, 60))
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # how the phone's sensor saw it
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    (tmp_path / "presence").mkdir()
    (tmp_path / "absence").mkdir()
    stored.save(tmp_path / "presence" / "IMG_0001.JPG", exif=exif, quality=95)
    upright.save(tmp_path / "absence" / "scan.png")
    images, labels, paths = load_hornet_images(tmp_path, 32, progress=False)
    assert [p.name for p in paths] == ["scan.png", "IMG_0001.JPG"] and labels.tolist() == [0, 1]
    for image in images:  # both read as the upright picture: red above blue
        top, bottom = image[:, 2].float().mean(1), image[:, -3].float().mean(1)
        assert top[0] > 150 > top[2] and bottom[2] > 150 > bottom[0]


def test_pretrained_stand_in_is_keyed_by_cache_and_generator_versions(tmp_path, monkeypatch):
    import course.pretrained as finetune

    monkeypatch.setenv("COURSE_CACHE", str(tmp_path))
    finetune.pretrain_on_synthetic(32, 64, 1, device="cpu", progress=False)
    assert len(list(tmp_path.glob("*.pt"))) == 1
    finetune.pretrain_on_synthetic(32, 64, 1, device="cpu", progress=False)  # cached
    assert len(list(tmp_path.glob("*.pt"))) == 1
    monkeypatch.setattr(finetune, "GENERATOR_VERSION", finetune.GENERATOR_VERSION + 1)
    finetune.pretrain_on_synthetic(32, 64, 1, device="cpu", progress=False)
    monkeypatch.setattr(finetune, "CACHE_VERSION", finetune.CACHE_VERSION + 1)
    finetune.pretrain_on_synthetic(32, 64, 1, device="cpu", progress=False)
    assert len(list(tmp_path.glob("*.pt"))) == 3


def test_hornet_loader_finds_what_torchvision_imagefolder_finds(tmp_path):
    """Same files, same labels, same order as torchvision's ImageFolder, on camera files
    (upper-case .JPG, PNG exports, a truncated file that only reading will reject)."""
    import torchvision

    from tests.real_formats import stage_hornet_photos

    stage_hornet_photos(tmp_path, presence=6, absence=8)
    paths, labels = find_hornet_images(tmp_path)
    reference = torchvision.datasets.ImageFolder(str(tmp_path))
    assert reference.classes == list(hornets.CLASSES)
    assert [(str(p), c) for p, c in zip(paths, labels, strict=True)] == reference.samples


def test_linear_probe_trains_the_head_only():
    from course.data.hornets import HornetData
    from course.pretrained import train_linear_probe

    torch.manual_seed(0)
    images = torch.randint(0, 256, (40, 3, 32, 32), dtype=torch.uint8)
    labels = torch.arange(40) % 2
    images[labels == 1, 0] = 255  # the "hornet" is a red channel: linearly separable features
    train, val, test = stratified_split(labels, (0.6, 0.2, 0.2))
    data = HornetData(images, labels, [], train, val, test, "test", real=False)
    net = replace_head(resnet18(num_classes=5), 2)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    history = train_linear_probe(
        net, data, epochs=20, batch_size=8, lr=1e-2, device="cpu", progress=False
    )
    changed = {
        k for k, v in net.state_dict().items() if k in before and not torch.equal(v, before[k])
    }
    assert changed == {"fc.weight", "fc.bias"}
    assert history.epochs == 20 and history.train_loss[-1] < 0.5 * history.train_loss[0]
    assert history.val_acc[-1] == 1.0


def test_chapter3_classifier_is_cached_once_keyed_by_weights_data_and_split(
    tmp_path, monkeypatch, web
):
    """hornet_classifier: chapter 3 passes its data and backbone, chapter 4 nothing; both
    get the same model from one cache file. Other weights (ImageNet instead of the
    synthetic stand-in) or another split train a new classifier instead of serving the
    old one."""
    import torchvision

    from course.data.hornets import HornetRecipe
    from course.pretrained import hornet_classifier, recipe_backbone

    monkeypatch.setenv("COURSE_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("COURSE_PROFILE", "smoke")
    make_synthetic_hornets(tmp_path / "data", scale=0.01, size=64, progress=False)  # "photos"
    recipe = HornetRecipe(0.01, 64, 1, epochs=2, batch_size=4)
    first = hornet_classifier(recipe, progress=False)  # as chapter 4 calls it
    assert "synthetic insect task" in first.description and "trained and saved" in first.description
    assert "real photos" in first.description and first.history.epochs == 2
    assert not first.model.training and first.model(torch.rand(3, 3, 64, 64)).shape == (3, 2)
    data = recipe.load_data(64, progress=False)  # as chapter 3 calls it
    backbone, _ = recipe_backbone(recipe, progress=False)
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    again = hornet_classifier(recipe, data=data, backbone=backbone, progress=False)
    assert "loaded from" in again.description and again.history == first.history
    pairs = zip(first.model.state_dict().items(), again.model.state_dict().values(), strict=True)
    for (k, a), b in pairs:
        assert torch.equal(a, b), k
    assert all(torch.equal(v, before[k]) for k, v in backbone.state_dict().items())  # a copy
    resplit = copy.copy(data)
    resplit.val, resplit.test = data.test, data.val
    assert resplit.fingerprint() != data.fingerprint()  # the split is part of the key
    fewer = HornetRecipe(0.01, 64, 1, max_images=20, epochs=2, batch_size=4)
    assert "trained and saved" in hornet_classifier(fewer, progress=False).description
    weights = tmp_path / "torch" / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    weights.parent.mkdir(parents=True)
    torch.save(torchvision.models.resnet18().state_dict(), weights)
    imagenet = hornet_classifier(recipe, progress=False)
    assert "ImageNet-1k weights" in imagenet.description
    assert "trained and saved" in imagenet.description
    assert imagenet.data.images.shape[-1] == 64  # photos: the larger size, with either weights
    assert len(list((tmp_path / "cache").glob("hornet_classifier_*.pt"))) == 3


def test_one_cache_trains_once_and_keeps_plain_data_beside_the_weights(tmp_path):
    from course.pretrained import train_once

    calls = []

    def train():
        calls.append(1)
        with torch.no_grad():
            model.weight.fill_(0.5)
        return {"history": {"train_loss": [1.0, 0.5]}}

    model = nn.Linear(2, 2)
    kept, how = train_once(tmp_path / "m.pt", model, train)
    assert "trained and saved" in how and kept["history"]["train_loss"] == [1.0, 0.5]
    model = nn.Linear(2, 2)
    kept, how = train_once(tmp_path / "m.pt", model, train)
    assert "loaded from" in how and len(calls) == 1
    assert kept == {"history": {"train_loss": [1.0, 0.5]}} and (model.weight == 0.5).all()


def test_hornet_loader_drops_the_last_batch_only_when_asked():
    """shuffle and drop_last are two arguments: shuffling a split keeps every image unless
    drop_last says otherwise (it once followed shuffle silently)."""
    images = torch.zeros(10, 3, 8, 8, dtype=torch.uint8)
    labels = torch.arange(10) % 2
    data = HornetData(images, labels, [], list(range(10)), [], [], "test", real=False)
    kept = data.loader("train", 4, shuffle=True)
    assert [len(y) for _, y in kept] == [4, 4, 2]
    dropped = data.loader("train", 4, shuffle=True, drop_last=True)
    assert [len(y) for _, y in dropped] == [4, 4]
    in_order = data.loader("train", 4, drop_last=True)
    assert torch.cat([y for _, y in in_order]).tolist() == labels[:8].tolist()


def test_a_rehearsal_under_course_max_steps_never_shares_the_real_cache(tmp_path, monkeypatch):
    """A model trained under COURSE_MAX_STEPS is cached under its own name: the real run
    afterwards trains (and does not load the few-step model), and the rehearsal reuses its own."""
    from course.pretrained import train_once

    calls = []

    def train():
        calls.append(os.environ.get("COURSE_MAX_STEPS"))
        return {}

    monkeypatch.setenv("COURSE_MAX_STEPS", "2")
    assert "trained and saved" in train_once(tmp_path / "m.pt", nn.Linear(2, 2), train)[1]
    assert "loaded from" in train_once(tmp_path / "m.pt", nn.Linear(2, 2), train)[1]
    monkeypatch.delenv("COURSE_MAX_STEPS")
    assert "trained and saved" in train_once(tmp_path / "m.pt", nn.Linear(2, 2), train)[1]
    assert calls == ["2", None]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt", "m_max2steps.pt"]
