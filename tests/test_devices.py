"""Device-agnostic code: everything runs on the device of the model it is given.

A GPU is not needed to test this: every function below runs with an explicit
``torch.device("cpu")`` model and data while torch's *default* device is "meta" (a device
with no data), so any tensor the library creates without naming a device lands on "meta"
and the call fails. On a CUDA machine ``benchmarks/gpu_check.py`` runs the same paths on
the GPU and compares them with the CPU.
"""

from __future__ import annotations

import pytest
import torch

from stir_lib.attacks import accuracy, gaussian_noise, lbfgs_min_distortion, pgd
from stir_lib.inversion import invert
from stir_lib.models import create_model, resolve_device
from stir_lib.similarity import debiased_cka, linear_cka
from stir_lib.stir import stir, stir_matrix
from stir_lib.training import TrainConfig, train, trained_model
from stir_lib.transfer import Task, fine_tune, fixed_feature

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def batch(mnist_test):
    x, y = mnist_test
    return x[:48].contiguous(), y[:48].contiguous()


@pytest.fixture
def nets():
    """An MLP and a conv net, built on the CPU (before the default device changes)."""
    torch.manual_seed(0)
    return (create_model("mlp", hidden=(32,), activation="relu").to(CPU),
            create_model("mnist_conv").to(CPU))


@pytest.fixture
def on_meta(nets):
    """Make "meta" the default device for factory functions inside the test."""
    with torch.device("meta"):
        yield nets


@pytest.mark.parametrize("cfg", [
    dict(loss="ce"), dict(loss="pgd-at", adv_eps=1.0, adv_steps=2, augment="crop-flip"),
    dict(loss="trades", adv_eps=1.0, adv_steps=2), dict(loss="mart", adv_eps=1.0, adv_steps=2),
    dict(loss="pgd-mix", adv_eps=1.0, adv_steps=2, adv_norm="linf"),
])
def test_training_follows_the_model_device(batch, on_meta, cfg):
    for model in on_meta:
        history = train(model, *batch, TrainConfig(epochs=1, batch_size=16, **cfg))
        assert history["loss"][0] == history["loss"][0]
        assert all(p.device == CPU for p in model.parameters())


def test_attacks_inversion_stir_cka_follow_the_model_device(batch, on_meta):
    x, y = batch
    mlp, conv = on_meta
    assert pgd(conv, x, y, eps=1.0, steps=2).device == CPU
    assert pgd(mlp, x, y, norm="linf", eps=0.1, steps=2).device == CPU
    assert gaussian_noise(x, 0.1).device == CPU
    res = lbfgs_min_distortion(mlp, x[:6], (y[:6] + 1) % 10, search_steps=2, max_iter=5)
    assert res.images.device == CPU and 0 <= accuracy(mlp, x, y) <= 1
    for method in ("reference", "fast"):
        inv = invert(conv, x[:6], "block", method=method, steps=12, patience=2)
        assert inv.x_prime.device == CPU
    r = stir(mlp, conv, x[:8], steps=3, use_cache=False)
    assert 0 <= r.m2_given_m1.mean <= 1
    S, C = stir_matrix({"a": mlp, "b": conv}, x[:8], steps=3, use_cache=False)
    assert S.shape == (2, 2)
    a, b = torch.randn(20, 5, device=CPU), torch.randn(20, 7, device=CPU)
    assert 0 <= linear_cka(a, b) <= 1 and debiased_cka(a, b) <= 1


def test_transfer_follows_the_model_device(batch, on_meta):
    x, y = batch
    mlp, _ = on_meta
    y2 = y % 2
    task = Task("t", x[:24], y2[:24], x[24:36], y2[24:36], x[36:], y2[36:], 2)
    for run in (fixed_feature, fine_tune):
        r = run(mlp, task, lrs=(0.01,), epochs=1, batch_size=8, lr_step=None, use_cache=False)
        assert 0 <= r.test_acc <= 1 and next(r.model.parameters()).device == CPU


def test_trained_model_on_an_explicit_device(tiny_mnist, fresh_cache):
    out = trained_model("fc10", *tiny_mnist, TrainConfig(epochs=1), device=CPU)
    assert next(out.model.parameters()).device == CPU


def test_resolve_device():
    assert resolve_device(None) == CPU and resolve_device("cpu") == CPU
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="expected 'auto', 'cpu'"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")


def test_results_do_not_depend_on_the_default_device(batch):
    """The same calls with "meta" as torch's default device give the same numbers as with
    the CPU default: nothing is created on, or drawn from, the default device."""
    x, y = batch

    def nets_():        # built before the default device changes
        torch.manual_seed(0)
        return (create_model("mlp", hidden=(32,), activation="relu").to(CPU),
                create_model("mnist_conv").to(CPU),
                create_model("mlp", hidden=(8,), activation="relu").to(CPU))

    def run(mlp, conv, model):
        hist = train(model, x, y, TrainConfig(epochs=1, batch_size=16, loss="pgd-at",
                                              adv_eps=1.0, adv_steps=2))
        return dict(
            pgd=pgd(conv, x, y, eps=1.0, steps=2), noise=gaussian_noise(x, 0.1),
            inv=invert(conv, x[:6], "block", method="fast", steps=12, patience=2).x_prime,
            stir=stir(mlp, conv, x[:8], steps=3, use_cache=False).m2_given_m1.values,
            cka=linear_cka(x[:20].flatten(1), x[20:40].flatten(1)),
            loss=hist["loss"], weights=next(model.parameters()).detach().clone())

    torch.manual_seed(1)
    ref = run(*nets_())
    nets = nets_()
    torch.manual_seed(1)
    with torch.device("meta"):
        got = run(*nets)
    for k in ref:                       # (tensors made here, outside the meta block)
        a, b = (torch.as_tensor(v) for v in (got[k], ref[k]))
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=k)
