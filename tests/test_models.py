"""Tests for stir_lib.models: one interface (features, embed, head, input checks) for all.

Small models are run on a batch of two; the big ones (AlexNet, ResNet-34, VGG-16/19) are
built and run once on the smallest input they accept, since their weights are random and
only the wiring is under test.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torchvision.models as tv_models
from torch import nn

from stir_lib.models import (CIFAR_MEAN, CIFAR_STD, IMAGENET_MEAN, IMAGENET_STD, ImageModel,
                             alexnet, create_model, list_models, load_torchvision_alexnet,
                             model_info)

BIG = {"alexnet", "resnet34_cifar", "vgg16_cifar", "vgg19_cifar"}
SMALL = [n for n in list_models() if n not in BIG]


def batch(model: ImageModel, n: int = 2, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, *model.input_shape, generator=g)


@pytest.fixture(scope="module", params=SMALL)
def small_model(request):
    torch.manual_seed(0)
    return request.param, create_model(request.param).eval()


def test_registry_is_complete():
    names = list_models()
    assert names == sorted(names) and BIG <= set(names)
    assert {"fc10", "fc100-100-10", "fc200-200-10", "fc123-456-10", "ae400-10"} <= set(names)
    assert list_models("fc*") == ["fc10", "fc100-100-10", "fc123-456-10", "fc200-200-10"]
    assert all(model_info(n) for n in names)


def test_unknown_model_name_lists_valid_names():
    with pytest.raises(ValueError, match="unknown model name 'fc11'") as err:
        create_model("fc11")
    for name in list_models():
        assert repr(name) in str(err.value)
    with pytest.raises(ValueError, match="fc10"):
        model_info("nope")


def test_forward_shape(small_model):
    name, model = small_model
    with torch.no_grad():
        out = model(batch(model))
    assert out.shape == (2, model.num_classes) and torch.isfinite(out).all()


def test_every_layer_readable_and_logits_equal_forward(small_model):
    _, model = small_model
    x = batch(model)
    with torch.no_grad():
        logits = model(x)
        for name in model.layer_names:
            f = model.features(x, name)
            assert isinstance(f, torch.Tensor) and f.shape[0] == 2, name
        assert torch.equal(model.features(x, "logits"), logits)
        assert model.layer_names[-1] == "logits"


def test_features_list_is_one_pass_dict(small_model):
    _, model = small_model
    x = batch(model)
    names = model.layer_names[::-1]  # any order, returned in the order asked
    with torch.no_grad():
        got = model.features(x, names)
        singles = {n: model.features(x, n) for n in names}
    assert isinstance(got, dict) and list(got) == names
    for n in names:
        assert torch.equal(got[n], singles[n]), n


def test_penultimate_flattened_is_embed(small_model):
    _, model = small_model
    x = batch(model)
    with torch.no_grad():
        pen = model.features(x, model.penultimate)
        emb = model.embed(x)
        assert torch.equal(pen.flatten(1), emb)
        assert emb.shape == (2, model.head.in_features)
        assert torch.allclose(model.head(emb), model(x))
    assert model.layer_names[-2] == model.penultimate


def test_features_stops_after_last_requested_stage(small_model):
    _, model = small_model
    calls = []
    hooks = [model.body[-1].register_forward_hook(lambda *a: calls.append("last")),
             model.head.register_forward_hook(lambda *a: calls.append("head"))]
    try:
        with torch.no_grad():
            model.features(batch(model), model.layer_names[0])
            assert calls == (["last"] if len(model.body) == 1 else [])  # never the head
            calls.clear()
            model.features(batch(model), "logits")
            assert calls == ["last", "head"]
    finally:
        for h in hooks:
            h.remove()


def test_unknown_layer(small_model):
    _, model = small_model
    with pytest.raises(ValueError, match="layer") as err:
        model.features(batch(model), "no_such_layer")
    assert "logits" in str(err.value) and "'no_such_layer'" in str(err.value)
    with pytest.raises(ValueError, match="no_such_layer"):
        model.features(batch(model), ["logits", "no_such_layer"])


def test_replace_head_keeps_body(small_model):
    name, model = small_model
    model = copy.deepcopy(model)
    body_before = {k: v.clone() for k, v in model.body.state_dict().items()}
    x = batch(model)
    with torch.no_grad():
        emb_before = model.embed(x)
    out = model.replace_head(3)
    assert out is model and model.num_classes == 3
    with torch.no_grad():
        assert model(x).shape == (2, 3)
        assert torch.equal(model.embed(x), emb_before)
    body_after = model.body.state_dict()
    assert body_after.keys() == body_before.keys()
    assert all(torch.equal(body_after[k], body_before[k]) for k in body_before)


def test_check_input(small_model):
    _, model = small_model
    x = batch(model)
    assert model.check_input(x) is x
    c, h, w = model.input_shape
    with pytest.raises(ValueError, match=r"expected an image batch of shape \(N, C, H, W\)"):
        model.check_input(x[0])
    with pytest.raises(ValueError, match=rf"expected {c} channel\(s\), got shape"):
        model.check_input(torch.rand(2, c + 2, h, w))
    with pytest.raises(ValueError, match=rf"expected images of size \({h}, {w}\), got \({h + 1}"):
        model.check_input(torch.rand(2, c, h + 1, w))
    with pytest.raises(ValueError, match=r"expected pixel values in \[0, 1\], got range"):
        model.check_input(x * 255)
    below = x.clone()
    below[1, 0, 0, 0] = -0.5
    with pytest.raises(ValueError, match=r"got range \[-0\.5, "):
        model.check_input(below)
    with pytest.raises(TypeError, match="floating-point"):
        model.check_input((x * 255).to(torch.uint8))
    with pytest.raises(ValueError, match="NaN"):
        model.check_input(torch.full_like(x, float("nan")))


# ----------------------------------------------------------------------------- big models
@pytest.mark.parametrize("name", ["resnet34_cifar", "vgg16_cifar", "vgg19_cifar"])
def test_big_cifar_models_build_and_run(name):
    torch.manual_seed(0)
    model = create_model(name).eval()
    assert model.input_shape == (3, 32, 32) and model.num_classes == 10
    x = batch(model, n=1)
    with torch.no_grad():
        out = model(x)
        pen = model.features(x, model.penultimate)
    assert out.shape == (1, 10) and pen.shape == (1, model.head.in_features)


def test_alexnet_builds_and_runs_at_224():
    torch.manual_seed(0)
    model = alexnet().eval()
    assert model.layer_names == ["features", "classifier", "logits"]
    x = batch(model, n=1)
    with torch.no_grad():
        feats = model.features(x, ["features", "logits"])
    assert feats["features"].shape == (1, 256, 6, 6) and feats["logits"].shape == (1, 1000)


# ----------------------------------------------------------------------------- normalisation
@pytest.mark.parametrize("name,mean,std", [
    ("resnet18_cifar", CIFAR_MEAN, CIFAR_STD), ("resnet34_cifar", CIFAR_MEAN, CIFAR_STD),
    ("vgg16_cifar", CIFAR_MEAN, CIFAR_STD), ("alexnet", IMAGENET_MEAN, IMAGENET_STD),
    ("resnet_small", (0.5,), (0.5,)),
])
def test_normalisation_is_inside(name, mean, std):
    model = create_model(name)
    c, h, w = model.input_shape
    m = torch.tensor(mean).view(1, c, 1, 1).expand(1, c, h, w)
    s = torch.tensor(std).view(1, c, 1, 1)
    assert torch.allclose(model.normalize(m), torch.zeros(1, c, h, w), atol=1e-6)
    assert torch.allclose(model.normalize(m + s), torch.ones(1, c, h, w), atol=1e-5)


def test_mlps_do_not_normalise():
    assert isinstance(create_model("fc10").normalize, nn.Identity)


# ----------------------------------------------------------------------------- torchvision AlexNet
def shape_only(state: dict) -> dict:
    """Same keys and shapes, with zero-stride tensors so the file is a few bytes a key."""
    return {k: torch.zeros(1).expand(v.shape) for k, v in state.items()}


@pytest.fixture(scope="module")
def tv_keys():
    with torch.device("meta"):
        return {k: v.shape for k, v in tv_models.alexnet().state_dict().items()}


def test_alexnet_is_torchvisions():
    """The registry's AlexNet shares torchvision's modules: same parameters, same function."""
    torch.manual_seed(0)
    ours = alexnet(num_classes=10).eval()
    assert sum(p.numel() for p in ours.parameters()) == 61_100_840 - 4097 * 990  # documented: 61.1M
    assert isinstance(ours.body.features, torch.nn.Sequential) and len(ours.body.features) == 13


def test_torchvision_alexnet_roundtrip(tmp_path):
    torch.manual_seed(0)
    tv = tv_models.alexnet(num_classes=10).eval()
    path = tmp_path / "alexnet.pth"
    torch.save(tv.state_dict(), path)
    loaded = load_torchvision_alexnet(path)
    assert loaded.num_classes == 10  # taken from the file's classifier.6
    x = batch(loaded, n=2)
    with torch.no_grad():
        assert torch.equal(loaded.eval()(x), tv((x - loaded.normalize.mean) / loaded.normalize.std))


@pytest.mark.parametrize("fault,key", [
    ("missing", "features.0.weight"),
    ("shape", "classifier.4.weight"),
    ("unexpected", "features.99.weight"),
])
def test_torchvision_alexnet_wrong_file(tmp_path, tv_keys, fault, key):
    state = shape_only({k: torch.empty(s, device="meta") for k, s in tv_keys.items()})
    if fault == "missing":
        del state[key]
    elif fault == "shape":
        state[key] = torch.zeros(1).expand(4096, 100)
    else:
        state[key] = torch.zeros(3)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match="expected torchvision AlexNet weights") as err:
        load_torchvision_alexnet(path)
    assert key in str(err.value) and str(path) in str(err.value)
    if fault == "shape":
        assert "(4096, 100)" in str(err.value) and "(4096, 4096)" in str(err.value)


def test_torchvision_alexnet_not_a_state_dict(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([torch.zeros(2)], path)
    with pytest.raises(ValueError, match="expected a state dict, got list"):
        load_torchvision_alexnet(path)
