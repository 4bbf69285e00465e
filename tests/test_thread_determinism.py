"""How the library's results depend on the number of threads.

torch splits large reductions and matrix products between threads (tensors of more than
32,768 elements), so the order of a sum, and its last bits, change with the number of
threads: one training step on one thread and on two gives gradients within float32 rounding,
and training grows such differences (after four steps of TRADES, 2e-4 of a layer's largest
weight). The thread policy
(:mod:`stir_lib.threads`) picks one thread or two from the machine's load, so the book's
build fixes the number (``make book`` runs two lanes with ``STIR_THREADS=1``): then every
result is the same, bit for bit, whatever else the machine runs. Checked here: a fixed number
of threads gives identical results run after run, and one thread against two differs only in
the last bits of a step (the chapters' seeds measure what training makes of such differences).
"""

from __future__ import annotations

import os

import pytest
import torch

from stir_lib.attacks import lbfgs_min_distortion, pgd
from stir_lib.inversion import invert
from stir_lib.models import create_model
from stir_lib.similarity import linear_cka
from stir_lib.training import TrainConfig, train

pytestmark = pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs two cores to compare "
                                "one thread with two")

N = 512


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(0)
    return torch.rand(N, 1, 28, 28, generator=g), torch.randint(0, 10, (N,), generator=g)


def _at(threads: str, monkeypatch, fn):
    monkeypatch.setenv("STIR_THREADS", threads)
    torch.manual_seed(0)
    return fn()


def _trained(name: str, cfg: TrainConfig, x, y, **kwargs) -> dict:
    model = create_model(name, **kwargs)
    train(model, x, y, cfg, progress=False)
    return {k: v.clone() for k, v in model.state_dict().items()}


def _equal(a: dict, b: dict) -> list[str]:
    return [k for k in a if not torch.equal(a[k], b[k])]


CASES = [
    ("fc200-200-10", TrainConfig(epochs=1, batch_size=128, seed=0, weight_decay=(1e-5, 1e-5, 1e-6))),
    ("fc10", TrainConfig(epochs=1, batch_size=128, seed=0)),
    ("ae400-10", TrainConfig(epochs=1, batch_size=128, seed=0, autoencoder_epochs=1)),
    ("fc100-100-10", TrainConfig(epochs=1, batch_size=128, seed=0, loss="pgd-mix", adv_eps=1.5,
                                 adv_steps=3)),
    ("convnet", TrainConfig(epochs=1, batch_size=128, seed=0)),
    ("mnist_res", TrainConfig(epochs=1, batch_size=128, seed=0, loss="trades", adv_eps=1.0,
                              adv_steps=2)),
]
IDS = ["mlp-wd", "fc10", "autoencoder", "pgd-mix", "convnet", "residual-trades"]


@pytest.mark.parametrize("name, cfg", CASES, ids=IDS)
def test_training_on_a_fixed_number_of_threads_is_deterministic(name, cfg, data, monkeypatch):
    x, y = data
    first = _at("1", monkeypatch, lambda: _trained(name, cfg, x, y))
    again = _at("1", monkeypatch, lambda: _trained(name, cfg, x, y))
    assert not _equal(first, again), f"{name}: two runs on one thread differ: {_equal(first, again)}"


@pytest.mark.parametrize("name", ["fc200-200-10", "ae400-10", "convnet", "mnist_res"])
def test_one_thread_and_two_differ_only_in_the_last_bits_of_a_step(name, data):
    """The mechanism: one forward and backward pass on one thread and on two give logits and
    gradients within float32 rounding (1e-5 of their size); training then grows such
    differences (Adam moves a weight by about its learning rate whatever the gradient's size,
    so a rounding-level gradient near zero can move it another way)."""
    x, y = data
    torch.manual_seed(0)
    model = create_model(name)
    before = torch.get_num_threads()
    out = {}
    try:
        for t in (1, 2):
            torch.set_num_threads(t)
            model.zero_grad()
            logits = model(x)
            torch.nn.functional.cross_entropy(logits, y).backward()
            out[t] = [logits.detach()] + [p.grad.clone() for p in model.parameters()]
    finally:
        torch.set_num_threads(before)
    for a, b in zip(out[1], out[2]):
        assert float((a - b).abs().max()) <= 1e-5 * (float(a.abs().max()) or 1.0), name


def test_attacks_inversion_and_cka_are_deterministic_on_fixed_threads(data, monkeypatch):
    x, y = data
    torch.manual_seed(0)
    model = create_model("fc200-200-10").eval()
    runs = []
    for _ in range(2):
        monkeypatch.setenv("STIR_THREADS", "1")
        runs.append({
            "pgd": pgd(model, x[:128], y[:128], eps=1.0, steps=3),
            "lbfgs": lbfgs_min_distortion(model, x[:32], (y[:32] + 1) % 10, search_steps=2,
                                          max_iter=10, progress=False).images,
            "inversion": invert(model, x[:64], steps=5, progress=False).x_prime,
            "cka": torch.tensor(linear_cka(x.flatten(1), x.flatten(1).sin())),
        })
    differ = [k for k in runs[0] if not torch.equal(runs[0][k], runs[1][k])]
    assert not differ, f"two runs on one thread differ: {differ}"
