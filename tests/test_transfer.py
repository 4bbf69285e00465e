"""Tests for stir_lib.transfer (Salman et al. 2020) and the ImageNet ResNets it loads.

Each property is one a wrong implementation breaks: fixed-feature transfer leaves the body
(BatchNorm statistics included) bit-identical and fine-tuning does not, the source model is
never touched, adversarial training buys robustness, a robustness-format checkpoint loads
to the same function, task splits are disjoint and in the source's format, and bad inputs
are refused with messages that say what was expected.
"""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch
import torchvision.models as tv_models
from torch import nn

from stir_lib import data
from stir_lib.transfer import heads
from stir_lib.attacks import accuracy, pgd
from stir_lib.data import DatasetNotFoundError, subset
from stir_lib.models import (IMAGENET_MEAN, ImageModel, create_model, imagenet_resnet,
                             wrap_torchvision_resnet)
from stir_lib.training import TrainConfig, train
from stir_lib.checkpoints import check_checkpoints, load_robustness_checkpoint
from stir_lib.transfer import (PAPER_HPARAMS, Task, TransferHparams, class_task, downscale_changes,
                               downscaled, fine_tune, fixed_feature, paper_task)

FAST = dict(lrs=(0.1, 0.01), epochs=2, batch_size=16, lr_step=None, use_cache=False)


def state_copy(module: nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def tiny_task():
    """MNIST 5-9, 4 labels a class: 20 train, 20 val; the test split subsampled to 50."""
    t = class_task("tiny", "mnist", (5, 6, 7, 8, 9), per_class=4, n_val=20, seed=0)
    keep = torch.cat([torch.nonzero(t.y_test == c).flatten()[:10] for c in range(5)])
    return Task(t.name, t.x_train, t.y_train, t.x_val, t.y_val, t.x_test[keep], t.y_test[keep], 5)


@pytest.fixture
def bn_source():
    """A BatchNorm ResNet with non-trivial running statistics, left in train mode."""
    torch.manual_seed(0)
    model = create_model("resnet_small", width=4, num_classes=5)
    with torch.no_grad():  # move the running statistics off their (0, 1) initial values
        model.train()(torch.rand(32, 1, 28, 28))
    return model


# ----------------------------------------------------------------------------- transfer modes
def test_fixed_feature_freezes_the_body_and_leaves_the_source_alone(bn_source, tiny_task):
    source = bn_source
    before = state_copy(source)
    result = fixed_feature(source, tiny_task, **FAST)
    # the source: same weights, buffers, mode and flags
    assert same_state(state_copy(source), before)
    assert source.training and all(p.requires_grad for p in source.parameters())
    assert source.num_classes == 5 and result.model is not source
    # the transferred model: body (BatchNorm running statistics and counters too) bit-identical
    body = {k: v for k, v in before.items() if not k.startswith("head.")}
    got = {k: v for k, v in state_copy(result.model).items() if not k.startswith("head.")}
    assert same_state(got, body)
    assert result.model.head.weight.shape == (tiny_task.num_classes, source.head.in_features)
    assert result.mode == "fixed-feature" and not result.model.training
    # the head was trained on cached features; the full forward must agree with it
    assert accuracy(result.model, tiny_task.x_test, tiny_task.y_test) == \
        pytest.approx(result.test_acc, abs=1e-6)
    assert set(result.val_acc) == {0.1, 0.01}
    assert result.val_acc[result.lr] == max(result.val_acc.values())


def test_fine_tune_trains_the_body_but_not_the_source(bn_source, tiny_task):
    source = bn_source
    before = state_copy(source)
    result = fine_tune(source, tiny_task, **{**FAST, "lrs": (0.05,)})
    assert same_state(state_copy(source), before) and source.training
    after = state_copy(result.model)
    conv = "body.stem.0.weight"
    assert not torch.equal(after[conv], before[conv])
    assert not torch.equal(after["body.stem.1.running_mean"], before["body.stem.1.running_mean"])
    assert result.mode == "fine-tune" and result.lr == 0.05
    assert accuracy(result.model, tiny_task.x_test, tiny_task.y_test) == \
        pytest.approx(result.test_acc, abs=1e-6)


def test_transfer_is_deterministic_given_the_seed(tiny_task):
    torch.manual_seed(0)
    source = create_model("convnet", channels=(4, 8), hidden=16, num_classes=5)
    a = fixed_feature(source, tiny_task, **FAST)
    b = fixed_feature(source, tiny_task, **FAST)
    c = fixed_feature(source, tiny_task, **{**FAST, "seed": 1})
    assert same_state(state_copy(a.model.head), state_copy(b.model.head))
    assert a.val_acc == b.val_acc and a.loss == b.loss
    assert not same_state(state_copy(a.model.head), state_copy(c.model.head))


def test_transfer_results_are_cached(tiny_task, fresh_cache, monkeypatch):
    torch.manual_seed(0)
    source = create_model("convnet", channels=(4, 8), hidden=16, num_classes=5)
    first = fixed_feature(source, tiny_task, **{**FAST, "use_cache": True})

    def no_training(*args, **kwargs):
        raise AssertionError("trained again although the result is cached")

    monkeypatch.setattr(heads, "_fit", no_training)
    again = fixed_feature(source, tiny_task, **{**FAST, "use_cache": True})
    assert again.key == first.key and again.test_acc == first.test_acc
    assert same_state(state_copy(again.model), state_copy(first.model))
    with torch.no_grad():  # other weights, other key: must train (and so fail here)
        source.head.weight.add_(1.0)
    with pytest.raises(AssertionError, match="trained again"):
        fixed_feature(source, tiny_task, **{**FAST, "use_cache": True})


def separable_task(seed: int) -> Task:
    """Two classes separated by one pixel (0.2 vs 0.8) under noise on the other eight of a 3x3
    image: 60 train, 20 val, 40 test."""
    g = torch.Generator().manual_seed(seed)

    def split(n):
        y = torch.arange(n) % 2
        x = 0.5 + 0.1 * torch.randn(n, 1, 3, 3, generator=g)
        x[:, 0, 1, 1] = 0.2 + 0.6 * y
        return x.clamp(0, 1), y

    return Task("separable", *split(60), *split(20), *split(40), num_classes=2)


def test_fine_tune_keeps_the_network_chosen_on_validation_not_the_last_one():
    """A separable task where one rate wins: the good rate comes first and a rate too small
    to learn comes last, so a fine-tune that kept the last network would return a model
    whose accuracy is not the one it reports."""
    task = separable_task(1)
    torch.manual_seed(0)
    body = ImageModel([("flatten", nn.Flatten())], nn.Linear(9, 3), (1, 3, 3))
    result = fine_tune(body, task, lrs=(0.5, 1e-7), epochs=40, lr_step=None, batch_size=16,
                       use_cache=False)
    assert result.lr == 0.5 and result.val_acc[0.5] > result.val_acc[1e-7]
    assert accuracy(result.model, task.x_test, task.y_test) == pytest.approx(result.test_acc)
    assert result.test_acc == 1.0


def test_augmentation_changes_what_fine_tuning_learns(tiny_task):
    """augment=True trains on fresh crops and flips: same seed, other weights."""
    model = create_model("convnet", channels=(2, 2), hidden=4, num_classes=5)
    plain = fine_tune(model, tiny_task, **FAST)
    crops = fine_tune(model, tiny_task, **{**FAST, "augment": True})
    assert plain.hparams["augment"] is False and crops.hparams["augment"] is True
    differ = [not torch.equal(a, b) for a, b in zip(plain.model.state_dict().values(),
                                                   crops.model.state_dict().values())
              if a.is_floating_point()]
    assert any(differ)


def test_fixed_feature_separable_features_reach_100_percent():
    """Closed form: an identity body (flattened pixels) and two classes separated by one
    pixel, 0.8 vs 0.2, under noise on the others: a linear head must be perfect."""
    task = separable_task(0)
    body = ImageModel([("flatten", nn.Flatten())], nn.Linear(9, 3), (1, 3, 3))
    # a rate too small to move the head comes first: the choice must follow validation
    result = fixed_feature(body, task, lrs=(1e-6, 0.5), epochs=40, lr_step=None, use_cache=False)
    assert result.lr == 0.5 and result.val_acc[0.5] == 1.0 and result.test_acc == 1.0
    assert result.val_acc[1e-6] < 0.8


def test_fixed_feature_trains_on_eval_mode_features(bn_source, tiny_task, monkeypatch):
    """The head sees the penultimate features with BatchNorm's running statistics (eval
    mode), i.e. exactly what the transferred model computes at test time."""
    seen = []
    fit = heads._fit

    def spy(module, x, *args, **kwargs):
        seen.append(x.clone())
        return fit(module, x, *args, **kwargs)

    monkeypatch.setattr(heads, "_fit", spy)
    fixed_feature(bn_source, tiny_task, **FAST)
    with torch.no_grad():
        want = bn_source.eval().embed(tiny_task.x_train)
    assert len(seen) == 2 and all(torch.allclose(f, want, atol=1e-6) for f in seen)


def test_sgd_settings_and_step_schedule(tiny_task, monkeypatch):
    """Both modes run SGD with the given momentum and weight decay, and divide the learning
    rate by 10 every lr_step epochs (20 images, batch 16: two steps an epoch)."""
    seen = []

    class RecordingSGD(torch.optim.SGD):
        def step(self, closure=None):
            group = self.param_groups[0]
            seen.append((round(group["lr"], 12), group["momentum"], group["weight_decay"]))
            return super().step(closure)

    monkeypatch.setattr(torch.optim, "SGD", RecordingSGD)
    model = create_model("convnet", channels=(2, 2), hidden=4, num_classes=5)
    for mode in (fixed_feature, fine_tune):
        seen.clear()
        mode(model, tiny_task, lrs=(0.1,), epochs=5, batch_size=16, lr_step=2, momentum=0.8,
             weight_decay=1e-3, use_cache=False)
        assert seen == [(lr, 0.8, 1e-3) for lr in [0.1] * 4 + [0.01] * 4 + [0.001] * 2]


def test_head_only_adversarial_training_keeps_batchnorm_statistics(tiny_mnist):
    """training.train(train_params="head") with an adversarial loss: the attack restores the
    model's mode after each call, which once put the frozen body back in train mode."""
    x, y = tiny_mnist[0][:32], tiny_mnist[1][:32]
    torch.manual_seed(0)
    model = create_model("resnet_small", width=4)
    body = state_copy(model.body)
    train(model, x, y, TrainConfig(train_params="head", loss="pgd-at", adv_eps=1.0, adv_steps=2,
                                   epochs=1, batch_size=16))
    assert same_state(state_copy(model.body), body)


def test_adversarial_training_buys_l2_robustness(mnist_train, mnist_test):
    """L2 PGD-AT (eps 1.5, 500 images) against the same net trained on clean images: the
    robust net keeps far more accuracy under PGD at eps 1.5 (measured over seeds 0-2:
    0.52-0.54 vs 0.22-0.26), while still classifying clean images well."""
    x, y = subset(*mnist_train, 500, seed=0)
    xe, ye = subset(*mnist_test, 300, seed=0)
    results = {}
    for loss in ("ce", "pgd-at"):
        torch.manual_seed(0)
        model = create_model("mlp", hidden=(64,), activation="relu")
        train(model, x, y, TrainConfig(epochs=10, batch_size=50, lr=1e-2, loss=loss, adv_norm="l2",
                                       adv_eps=1.5 if loss == "pgd-at" else 0.0, adv_steps=5))
        x_adv = pgd(model, xe, ye, norm="l2", eps=1.5, steps=10, seed=0)
        results[loss] = accuracy(model, xe, ye), accuracy(model, x_adv, ye)
    (clean_std, adv_std), (clean_rob, adv_rob) = results["ce"], results["pgd-at"]
    assert clean_std > 0.8 and clean_rob > 0.7
    assert adv_rob > adv_std + 0.15, results


# ----------------------------------------------------------------------------- checkpoints
def robustness_checkpoint(tv_state: dict, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
                          parallel: bool = True) -> dict:
    """A checkpoint laid out like MadryLab's robustness library writes it: the AttackerModel's
    state dict (classifier, its duplicate inside the attacker, normalisers) under 'model';
    ``mean=None`` leaves the normalisers out."""
    p = "module." if parallel else ""
    sd = {}
    for prefix in (f"{p}normalizer.", f"{p}attacker.normalize.") if mean is not None else ():
        sd[prefix + "new_mean"] = torch.tensor(mean).view(3, 1, 1)
        sd[prefix + "new_std"] = torch.tensor(std).view(3, 1, 1)
    for k, v in tv_state.items():
        sd[f"{p}model.{k}"] = v
        sd[f"{p}attacker.model.{k}"] = v
    return {"model": sd, "epoch": 90, "optimizer": {"state": {}, "param_groups": [{"lr": 0.1}]}}


def shape_only(state: dict) -> dict:
    """Same keys and shapes as zero-stride tensors (a few bytes a key in the file)."""
    return {k: torch.zeros((), dtype=v.dtype).expand(v.shape) for k, v in state.items()}


def resnet18_keys() -> set[str]:
    """torchvision's ResNet-18 state-dict keys, spelt out from its definition."""
    bn = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    keys = {"conv1.weight", "fc.weight", "fc.bias"} | {f"bn1.{b}" for b in bn}
    for layer in range(1, 5):
        for block in range(2):
            pre = f"layer{layer}.{block}."
            keys |= {pre + "conv1.weight", pre + "conv2.weight"}
            keys |= {f"{pre}bn{i}.{b}" for i in (1, 2) for b in bn}
        if layer > 1:
            keys |= {f"layer{layer}.0.downsample.0.weight"}
            keys |= {f"layer{layer}.0.downsample.1.{b}" for b in bn}
    return keys


@pytest.mark.parametrize("arch,params", [  # torchvision's documented parameter counts
    ("resnet18", 11_689_512), ("resnet50", 25_557_032), ("wide_resnet50_2", 68_883_240),
    ("wide_resnet50_4", 223_439_144)])   # WRN-50-4: group width 256 (the count of the hand-written build it replaced)
def test_imagenet_resnets_have_torchvision_sizes(arch, params):
    with torch.device("meta"):
        model = imagenet_resnet(arch)
    assert sum(p.numel() for p in model.parameters()) == params
    assert model.head.in_features == (512 if arch == "resnet18" else 2048)


@pytest.fixture(scope="module")
def resnet18_64():
    """torchvision's own ResNet-18 with 10 classes and non-trivial BatchNorm statistics."""
    torch.manual_seed(0)
    tv = tv_models.resnet18(num_classes=10)
    with torch.no_grad():  # so that buffers must load too
        tv.train()(torch.rand(8, 3, 64, 64))
    return tv.eval()


def to_torchvision(model) -> dict:
    return dict(model.state_dict())


@pytest.mark.parametrize("parallel", [True, False])
def test_robustness_checkpoint_roundtrip(tmp_path, resnet18_64, parallel):
    tv = to_torchvision(resnet18_64)
    assert set(tv) == resnet18_keys()
    # with DataParallel prefixes, a normaliser that is not ImageNet's (it must come from the
    # file); without, no normaliser (ImageNet's is the default)
    mean, std = ((0.4, 0.5, 0.6), (0.2, 0.25, 0.3)) if parallel else (None, None)
    path = tmp_path / "resnet18_l2_eps3.ckpt"
    torch.save(robustness_checkpoint(tv, mean, std, parallel), path)
    loaded = load_robustness_checkpoint(path, arch="resnet18", num_classes=10,
                                        input_shape=(3, 64, 64))
    assert not loaded.training
    assert torch.allclose(loaded.normalize.mean.flatten(), torch.tensor(mean or IMAGENET_MEAN))
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = resnet18_64((x - loaded.normalize.mean) / loaded.normalize.std)
        assert torch.equal(loaded(x), want)
        assert loaded.embed(x).shape == (2, 512)


def test_robustness_checkpoint_wrong_architecture(tmp_path, resnet18_64):
    tv = shape_only(to_torchvision(resnet18_64))
    path = tmp_path / "r18.ckpt"
    torch.save(robustness_checkpoint(tv), path)
    with pytest.raises(ValueError, match="expected torchvision resnet50 weights") as err:
        load_robustness_checkpoint(path, arch="resnet50", num_classes=10,
                                   input_shape=(3, 64, 64))
    msg = str(err.value)  # Bottleneck blocks: bn3/conv3 missing, 1x1 convs where 3x3 are
    assert str(path) in msg and "165 missing keys ['layer1.0.bn3.bias'" in msg
    assert "24 wrong shapes (key, in the file, expected)" in msg
    assert "('layer1.0.conv1.weight', (64, 64, 3, 3), (64, 64, 1, 1))" in msg
    with pytest.raises(ValueError, match=r"fc\.weight', \(10, 512\), \(1000, 512\)"):
        load_robustness_checkpoint(path, arch="resnet18", input_shape=(3, 64, 64))


def test_robustness_checkpoint_bad_files(tmp_path, resnet18_64):
    missing = tmp_path / "nope.ckpt"
    with pytest.raises(FileNotFoundError, match="nope.ckpt: expected a robustness-library"):
        load_robustness_checkpoint(missing)
    tv = shape_only(to_torchvision(resnet18_64))
    plain = tmp_path / "plain.pth"
    torch.save(tv, plain)  # a torchvision state dict, not a robustness checkpoint
    with pytest.raises(ValueError, match="expected a robustness checkpoint, a dict with key "
                                         "'model'.*got a dict with keys"):
        load_robustness_checkpoint(plain, arch="resnet18")
    other = tmp_path / "other.ckpt"
    torch.save({"model": {"module.encoder.weight": torch.zeros(2)}}, other)
    with pytest.raises(ValueError, match=r"under 'module.model.\*'.*module.encoder.weight"):
        load_robustness_checkpoint(other, arch="resnet18")
    pickled = tmp_path / "pickled.ckpt"
    torch.save({"model": {}, "args": argparse.Namespace(eps=3.0)}, pickled)
    with pytest.raises(ValueError, match="weights_only=True"):
        load_robustness_checkpoint(pickled, arch="resnet18")
    with pytest.raises(ValueError, match="arch: expected one of"):
        load_robustness_checkpoint(plain, arch="resnet34")


def test_check_checkpoints_lists_every_missing_file(tmp_path):
    present = tmp_path / "eps0.ckpt"
    present.write_bytes(b"x")
    assert check_checkpoints({0: present}) == {0.0: present}
    with pytest.raises(FileNotFoundError, match=r"2 missing: eps 1: .*eps1.ckpt; eps 3: .*eps3"):
        check_checkpoints({3: tmp_path / "eps3.ckpt", 0: present, 1: tmp_path / "eps1.ckpt"})
    with pytest.raises(ValueError, match="non-empty dict"):
        check_checkpoints({})
    with pytest.raises(ValueError, match="eps: expected a value >= 0"):
        check_checkpoints({-1: present})


# ----------------------------------------------------------------------------- tasks
def assert_mnist_format(task: Task):
    for split in ("train", "val", "test"):
        x, y = task.split(split)
        assert x.dtype == torch.float32 and x.shape[1:] == (1, 28, 28)
        assert float(x.min()) >= 0 and float(x.max()) <= 1 and float(x.max()) > 0.5
        assert y.dtype == torch.int64 and set(y.tolist()) == set(range(task.num_classes))


def test_class_task_sizes_disjoint_splits_and_whole_test_set(mnist_train, mnist_test):
    task = class_task("near", "mnist", (5, 6, 7, 8, 9), n_train=500, n_val=250, seed=0)
    assert_mnist_format(task)
    assert torch.bincount(task.y_train).tolist() == [100] * 5
    assert torch.bincount(task.y_val).tolist() == [50] * 5
    x, y = mnist_train
    xt, yt = mnist_test
    tr, va, te = (task.source_index[s] for s in ("train", "val", "test"))
    assert not set(tr.tolist()) & set(va.tolist())
    assert torch.equal(task.x_train, x[tr]) and torch.equal(task.x_val, x[va])
    assert torch.equal(task.y_train, y[tr] - 5) and torch.equal(task.y_test, yt[te] - 5)
    assert len(te) == int((yt >= 5).sum()) > 1000        # every test image of those classes
    few = class_task("few", "mnist", per_class=10, n_val=100, seed=1)
    assert torch.bincount(few.y_train).tolist() == [10] * 10 and len(few.x_test) == 10000
    other = class_task("near", "mnist", (5, 6, 7, 8, 9), n_train=500, n_val=250, seed=1)
    assert not torch.equal(other.source_index["train"], tr)


def test_class_task_bad_arguments():
    with pytest.raises(ValueError, match="exactly one of n_train and per_class"):
        class_task("t", "mnist", n_train=10, per_class=2)
    with pytest.raises(ValueError, match="fewer than"):
        class_task("t", "mnist", (0, 1), per_class=6000, n_val=10)
    with pytest.raises(ValueError, match=r"dataset: expected one of \['mnist', 'fashion-mnist'\]"):
        class_task("t", "cifar", n_train=10)
    with pytest.raises(ValueError, match="classes: expected at least two distinct"):
        class_task("t", "mnist", (5, 5), n_train=10)


def test_downscaled_keeps_shapes_and_removes_detail(tiny_task):
    task = tiny_task
    same = downscaled(task, 28)
    assert torch.equal(same.x_train, task.x_train)  # size = side: unchanged
    low = downscaled(task, 7)
    assert low.name == "tiny@7px"
    assert_mnist_format(low)
    for s in ("train", "val", "test"):
        assert low.split(s)[0].shape == task.split(s)[0].shape
        assert torch.equal(low.split(s)[1], task.split(s)[1])

    def tv(x):  # total variation: high-frequency content
        return float((x[..., 1:, :] - x[..., :-1, :]).abs().mean()
                     + (x[..., :, 1:] - x[..., :, :-1]).abs().mean())

    assert tv(low.x_test) < 0.8 * tv(task.x_test)
    # a 7-pixel image is band-limited: a second pass changes it much less than the first
    first = (low.x_val - task.x_val).norm()
    second = (data.downscale(low.x_val, 7) - low.x_val).norm()
    assert second < 0.5 * first
    # R3's premise: the downscale changes MNIST; it changes nothing on 8x8 images shown at 28
    assert downscale_changes(task, 12) > 1e-2
    x8 = torch.nn.functional.interpolate(torch.rand(20, 1, 8, 8), size=(28, 28), mode="nearest")
    coarse = Task("digits8", x8, torch.arange(20) % 2, x8, torch.arange(20) % 2, x8,
                  torch.arange(20) % 2, 2)
    assert downscale_changes(coarse, 28) == 0.0


def test_paper_task_image_folders(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", 10), ("test", 3)):
        for cls in ("cat", "dog"):
            folder = tmp_path / "pets" / split / cls
            folder.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)).save(
                    folder / f"{i}.png")
    task = paper_task("pets", tmp_path, size=16, val_fraction=0.2)
    assert task.image_shape == (3, 16, 16) and task.num_classes == 2
    assert (len(task.x_train), len(task.x_val), len(task.x_test)) == (16, 4, 6)
    assert torch.bincount(task.y_val).tolist() == [2, 2]
    with pytest.raises(DatasetNotFoundError, match=r"expected the folders .*dtd.*train"):
        paper_task("dtd", tmp_path)
    with pytest.raises(DatasetNotFoundError, match="CIFAR-10"):
        paper_task("cifar10", tmp_path)


def test_paper_hparams_are_the_papers():
    assert PAPER_HPARAMS.as_dict() == dict(lrs=(0.01, 0.001), epochs=150, batch_size=64,
                                           momentum=0.9, weight_decay=5e-4, lr_step=50, seed=0,
                                           augment=False)
    with pytest.raises(AttributeError):
        PAPER_HPARAMS.epochs = 1  # read-only (frozen)


def test_hparams_overrides_and_typos():
    hp = TransferHparams.of(PAPER_HPARAMS, epochs=3, lrs=[0.5])
    assert hp.epochs == 3 and hp.lrs == (0.5,) and hp.lr_step == 50   # the rest is the paper's
    with pytest.raises(TypeError, match=r"unknown transfer hyper-parameter\(s\) \['epoch'\]"):
        TransferHparams.of(epoch=3)


# ----------------------------------------------------------------------------- bad inputs
def test_unknown_task_names():
    with pytest.raises(ValueError, match="task name: expected one of .*'sun397'.*got 'imagenet'"):
        paper_task("imagenet")


@pytest.mark.parametrize("kwargs,match", [
    (dict(lrs=()), "lrs: expected a non-empty sequence"),
    (dict(lrs=0.1), "lrs: expected a non-empty sequence"),
    (dict(lrs=(0.1, -1.0)), "lrs entry: expected a value > 0, got -1.0"),
    (dict(epochs=0), "epochs: expected an int >= 1, got 0"),
    (dict(momentum=1.0), r"momentum: expected a value in \[0, 1\)"),
])
def test_bad_hyperparameters(tiny_task, kwargs, match):
    model = create_model("convnet", channels=(2, 2), hidden=4, num_classes=5)
    for mode in (fixed_feature, fine_tune):
        with pytest.raises(ValueError, match=match):
            mode(model, tiny_task, **{**FAST, **kwargs})


def test_task_must_fit_the_model(tiny_task, resnet18_64):
    model = wrap_torchvision_resnet(resnet18_64, input_shape=(3, 64, 64))
    for mode in (fixed_feature, fine_tune):
        with pytest.raises(ValueError, match=r"gives images of shape \(1, 28, 28\), but the model "
                                             r"expects \(3, 64, 64\)"):
            mode(model, tiny_task, **FAST)


def test_task_validates_its_splits():
    x, y = torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 0, 1])
    with pytest.raises(ValueError, match=r"x_val \(1, 9, 9\)"):
        Task("t", x, y, torch.rand(4, 1, 9, 9), y, x, y, num_classes=2)
    with pytest.raises(ValueError, match=r"y_test: expected class indices in \[0, 2\)"):
        Task("t", x, y, x, y, x, y + 1, num_classes=2)
    with pytest.raises(ValueError, match="pixel values in"):
        Task("t", x * 3, y, x, y, x, y, num_classes=2)
    with pytest.raises(ValueError, match="num_classes an int >= 2"):
        Task("t", x, y * 0, x, y * 0, x, y * 0, num_classes=1)


def test_paper_augmentation_crops_flips_and_is_seeded(tiny_task):
    aug = heads._augmenter(28)
    xb = tiny_task.x_train[:8]
    torch.manual_seed(0)
    a = aug(xb)
    torch.manual_seed(0)
    b = aug(xb)
    assert a.shape == xb.shape and torch.equal(a, b) and 0 <= float(a.min()) <= float(a.max()) <= 1
    assert not torch.equal(a, xb)                                 # crops change the images
    # fixed-feature with augmentation trains the head through the body on fresh crops:
    # same seed, another head than on the plain images (fine-tuning: see above)
    model = create_model("mlp", hidden=(16,), activation="relu", num_classes=10)
    plain = fixed_feature(model, tiny_task, **FAST)
    crops = fixed_feature(model, tiny_task, **{**FAST, "augment": True})
    assert not torch.equal(plain.model.head.weight, crops.model.head.weight)
    for a_, b_ in zip(plain.model.body.state_dict().values(),
                      crops.model.body.state_dict().values()):
        assert torch.equal(a_, b_)                                # the body stays frozen
