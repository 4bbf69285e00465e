"""Tests for stir_lib.training on a tiny real problem (200 MNIST images).

Every property here is one a wrong implementation breaks: the loss falls, weight decay
shrinks the weights it penalises, frozen parameters stay bit-identical, a second
``trained_model`` call loads instead of training, and bad configurations are refused.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from stir_lib import training
from stir_lib.models import create_model
from stir_lib.training import TrainConfig, data_fingerprint, train, trained_model

FAST = dict(epochs=3, batch_size=50, lr=1e-2)


def state_copy(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def same_state(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def fresh(name, seed=0, **kw):
    torch.manual_seed(seed)
    return create_model(name, **kw)


def ce(model, x, y):
    with torch.no_grad():
        return float(F.cross_entropy(model.eval()(x), y))


def test_train_reduces_loss(tiny_fc10, tiny_mnist):
    x, y = tiny_mnist
    model, history = tiny_fc10
    losses = history["loss"]
    assert len(losses) == 5 and all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < 0.5 * losses[0]
    # measured independently of the history: better than the same net untrained
    assert ce(model, x, y) < 0.5 * ce(fresh("fc10"), x, y)
    acc = float((model(x).argmax(1) == y).float().mean())
    assert acc > 0.9  # 200 images, 7,850 parameters: nearly separable
    assert not model.training and history["seconds"] > 0


def test_train_is_deterministic_given_seed(tiny_mnist):
    x, y = tiny_mnist[0][:100], tiny_mnist[1][:100]
    a, b, c = fresh("fc10"), fresh("fc10"), fresh("fc10")
    train(a, x, y, TrainConfig(seed=1, **FAST))
    train(b, x, y, TrainConfig(seed=1, **FAST))
    train(c, x, y, TrainConfig(seed=2, **FAST))  # other batch order
    assert same_state(state_copy(a), state_copy(b))
    assert not same_state(state_copy(a), state_copy(c))


def test_weight_decay_shrinks_weights(tiny_mnist):
    x, y = tiny_mnist
    plain, decayed = fresh("fc10"), fresh("fc10")
    train(plain, x, y, TrainConfig(weight_decay=0.0, **FAST))
    train(decayed, x, y, TrainConfig(weight_decay=1.0, **FAST))
    n_plain = float(plain.head.weight.detach().norm())
    n_decayed = float(decayed.head.weight.detach().norm())
    assert n_decayed < 0.5 * n_plain
    # biases are not penalised: decay does not pull them to zero
    assert float(decayed.head.bias.detach().abs().max()) > 1e-3


def test_weight_decay_tuple_targets_each_matrix(tiny_mnist):
    x, y = tiny_mnist
    plain, decayed = fresh("fc100-100-10"), fresh("fc100-100-10")
    train(plain, x, y, TrainConfig(weight_decay=(0.0, 0.0, 0.0), **FAST))
    train(decayed, x, y, TrainConfig(weight_decay=(0.0, 0.0, 1.0), **FAST))
    n_plain, n_decayed = (float(m.head.weight.detach().norm()) for m in (plain, decayed))
    assert n_decayed < 0.5 * n_plain


@pytest.mark.parametrize("name,wd", [("fc10", (0.1, 0.1)), ("fc100-100-10", (1e-5, 1e-5)),
                                     ("fc100-100-10", (1e-5,) * 4)])
def test_weight_decay_tuple_of_wrong_length(tiny_mnist, name, wd):
    x, y = tiny_mnist
    with pytest.raises(ValueError, match=rf"one lambda per weight matrix .*got {len(wd)}"):
        train(fresh(name), x, y, TrainConfig(weight_decay=wd, epochs=1))


def test_head_only_training_freezes_body(tiny_mnist):
    x, y = tiny_mnist[0][:64], tiny_mnist[1][:64]
    model = fresh("resnet_small", width=4)  # BatchNorm: running statistics must not move
    body0, head0 = state_copy(model.body), state_copy(model.head)
    train(model, x, y, TrainConfig(train_params="head", epochs=2, batch_size=32, lr=1e-2))
    assert same_state(state_copy(model.body), body0)
    assert not torch.equal(model.head.weight, head0["weight"])
    assert all(p.requires_grad for p in model.parameters())  # unfrozen again afterwards
    assert not model.training


def test_autoencoder_pretraining_trains_the_encoder_only(tiny_mnist):
    x, y = tiny_mnist
    model = fresh("ae400-10", code=32)
    body0, head0 = state_copy(model.body), state_copy(model.head)
    # epochs=0: only the autoencoder phase runs, and it must not touch the classifier head
    history = train(model, x, y, TrainConfig(autoencoder_epochs=2, epochs=0, batch_size=50))
    assert history["loss"] == []
    assert not torch.equal(model.body.code[0].weight, body0["code.0.weight"])
    assert same_state(state_copy(model.head), head0)


def test_autoencoder_then_classifier(tiny_mnist):
    x, y = tiny_mnist
    model = fresh("ae400-10", code=32)
    history = train(model, x, y, TrainConfig(autoencoder_epochs=1, **FAST))
    assert history["loss"][-1] < history["loss"][0]


@pytest.mark.parametrize("cfg", [
    dict(autoencoder_epochs=1),   # pre-training penalises only the encoder's matrices
    dict(train_params="head"),    # head-only training penalises only the head's
])
def test_weight_decay_tuple_valid_for_the_model_is_valid_in_every_mode(tiny_mnist, cfg):
    """A tuple with one lambda per weight matrix of the model (the documented contract:
    "one lambda per weight, in parameter order") must not be rejected because a phase of
    training penalises a subset of the matrices."""
    x, y = tiny_mnist[0][:50], tiny_mnist[1][:50]
    model = fresh("ae400-10", code=16)
    n_weights = sum(p.ndim >= 2 for p in model.parameters())
    train(model, x, y, TrainConfig(weight_decay=(1e-5,) * n_weights, epochs=1, **cfg))


@pytest.mark.parametrize("loss", ["pgd-at", "pgd-mix", "trades", "mart"])
def test_adversarial_losses_run(tiny_mnist, loss):
    x, y = tiny_mnist[0][:40], tiny_mnist[1][:40]
    model = fresh("fc10")
    w0 = model.head.weight.detach().clone()
    history = train(model, x, y, TrainConfig(loss=loss, adv_eps=1.0, adv_steps=2, epochs=1,
                                             batch_size=20))
    assert len(history["loss"]) == 1 and history["loss"][0] == history["loss"][0]
    assert not torch.equal(model.head.weight, w0)


@pytest.mark.parametrize("field,value,match", [
    ("loss", "hinge", "loss: expected one of"),
    ("optimizer", "lbfgs", "optimizer: expected one of"),
    ("lr_schedule", "linear", "lr_schedule: expected one of"),
    ("augment", "mixup", "augment: expected one of"),
    ("train_params", "body", "train_params: expected one of"),
])
def test_bad_config_names(tiny_mnist, field, value, match):
    x, y = tiny_mnist
    with pytest.raises(ValueError, match=match) as err:
        train(fresh("fc10"), x, y, TrainConfig(**{field: value}, epochs=1))
    assert repr(value) in str(err.value)


def test_step_schedule_needs_a_step(tiny_mnist):
    with pytest.raises(ValueError, match="needs lr_step >= 1"):
        train(fresh("fc10"), *tiny_mnist, TrainConfig(lr_schedule="step", epochs=1))


@pytest.mark.parametrize("loss", ["pgd-at", "trades"])
def test_adversarial_loss_needs_positive_eps(tiny_mnist, loss):
    x, y = tiny_mnist
    with pytest.raises(ValueError, match="needs adv_eps > 0, got 0"):
        train(fresh("fc10"), x, y, TrainConfig(loss=loss, adv_eps=0.0, epochs=1))


def test_bad_data(tiny_mnist):
    x, y = tiny_mnist
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        train(fresh("fc10"), x * 255, y, TrainConfig(epochs=1))
    with pytest.raises(ValueError, match=r"class indices in \[0, 10\)"):
        train(fresh("fc10"), x, y + 10, TrainConfig(epochs=1))
    with pytest.raises(ValueError, match="expected shape"):
        train(fresh("fc10"), x, y[:-1], TrainConfig(epochs=1))


# ----------------------------------------------------------------------------- trained_model
@pytest.fixture
def counted_train(monkeypatch, fresh_cache):
    calls = []
    real = training.train

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(training, "train", counting)
    return calls


def test_trained_model_is_cached(tiny_mnist, counted_train):
    x, y = tiny_mnist
    cfg = TrainConfig(**FAST)
    first = trained_model("fc10", x, y, cfg)
    second = trained_model("fc10", x, y, cfg)
    assert len(counted_train) == 1
    assert first.key == second.key and first.history == second.history
    assert same_state(state_copy(first.model), state_copy(second.model))
    assert not second.model.training
    # the cached weights are the trained ones: the same run by hand gives the same weights
    by_hand = fresh("fc10", seed=cfg.seed)
    training.train(by_hand, x, y, cfg)
    assert same_state(state_copy(by_hand), state_copy(second.model))


def test_trained_model_key_covers_everything(tiny_mnist, counted_train):
    x, y = tiny_mnist[0][:60], tiny_mnist[1][:60]
    cfg = TrainConfig(epochs=1, batch_size=30)
    base = trained_model("fc10", x, y, cfg)
    x2 = x.clone()
    x2[0, 0, 0, 0] = 0.5  # one pixel
    y2 = y.clone()
    y2[0] = (y2[0] + 1) % 10  # one label
    init = {k: torch.zeros_like(v) for k, v in base.model.state_dict().items()}
    variants = [
        trained_model("fc10", x, y, TrainConfig(epochs=1, batch_size=30, seed=1)),
        trained_model("fc10", x2, y, cfg),
        trained_model("fc10", x, y2, cfg),
        trained_model("fc10", x, y, TrainConfig(epochs=1, batch_size=30, lr=2e-3)),
        trained_model("mlp", x, y, cfg, model_kwargs={"hidden": (8,)}),
        trained_model("mlp", x, y, cfg, model_kwargs={"hidden": (9,)}),
        trained_model("fc10", x, y, cfg, init_state=init),
    ]
    keys = [base.key] + [v.key for v in variants]
    assert len(set(keys)) == len(keys)
    assert len(counted_train) == len(keys)  # each one trained, none found another's entry
    assert data_fingerprint(x, y) != data_fingerprint(x2, y)


def test_trained_model_fine_tunes_from_init_state(tiny_mnist, counted_train):
    x, y = tiny_mnist[0][:60], tiny_mnist[1][:60]
    start = trained_model("fc10", x, y, TrainConfig(epochs=2, batch_size=30))
    zero_epochs = trained_model("fc10", x, y, TrainConfig(epochs=0),
                                init_state=start.model.state_dict())
    assert same_state(state_copy(zero_epochs.model), state_copy(start.model))


# ------------------------------------------------------------------ resuming, devices, augmentation
_RESUME_SCRIPT = r"""
import sys, torch
from stir_lib.data import mnist, subset
from stir_lib.models import create_model
from stir_lib.training import TrainConfig, train
x, y = subset(*mnist("train"), 600, seed=0)
torch.manual_seed(0)
model = create_model("fc100-100-10")
train(model, x, y, TrainConfig(epochs=int(sys.argv[2]), batch_size=20, seed=3), checkpoint=sys.argv[1])
"""


def test_killed_training_resumes_to_the_same_weights(tmp_path, monkeypatch):
    """Kill a training run (SIGKILL) after its first checkpoint, resume it in this process,
    and compare with an uninterrupted run of the same seed: the final weights are equal."""
    import os
    import subprocess
    import sys
    import time

    from stir_lib.data import mnist, subset

    monkeypatch.setenv("STIR_THREADS", "1")
    epochs, ckpt = 60, tmp_path / "ckpt.pt"
    env = {**os.environ, "STIR_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", _RESUME_SCRIPT, str(ckpt), str(epochs)],
                            env=env)
    deadline = time.time() + 120
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.kill()
    proc.wait()
    assert ckpt.exists(), "the run wrote no checkpoint before it ended"
    done = torch.load(ckpt, weights_only=True)["epoch"]
    assert 1 <= done < epochs, f"expected a run killed mid-way, it reached epoch {done}"
    x, y = subset(*mnist("train"), 600, seed=0)
    cfg = TrainConfig(epochs=epochs, batch_size=20, seed=3)
    torch.manual_seed(0)
    resumed = create_model("fc100-100-10")
    history = train(resumed, x, y, cfg, checkpoint=ckpt)
    assert history["resumed_at_epoch"] == done and len(history["loss"]) == epochs
    torch.manual_seed(0)
    straight = create_model("fc100-100-10")
    train(straight, x, y, cfg)
    assert same_state(state_copy(resumed), state_copy(straight))


def test_corrupt_checkpoint_is_ignored(tmp_path, tiny_mnist):
    ckpt = tmp_path / "ckpt.pt"
    ckpt.write_bytes(b"not a checkpoint")
    with pytest.warns(UserWarning, match="unreadable"):
        history = train(fresh("fc10"), *tiny_mnist, TrainConfig(epochs=2), checkpoint=ckpt)
    assert history["resumed_at_epoch"] == 0 and len(history["loss"]) == 2


def test_training_on_an_explicit_device(tiny_mnist):
    """Everything follows the model's device: a model on torch.device('cpu') trains with
    data and adversarial examples there (on a GPU machine the same code runs on CUDA)."""
    dev = torch.device("cpu")
    model = fresh("fc100-100-10").to(dev)
    x, y = tiny_mnist
    history = train(model, x.to(dev), y.to(dev),
                    TrainConfig(epochs=1, loss="pgd-at", adv_eps=1.0, adv_steps=2))
    assert history["images_per_second"] > 0
    assert all(p.device == dev for p in model.parameters())


def test_snapshots_keep_the_weights_of_those_epochs(tiny_mnist):
    model = fresh("fc10")
    history = train(model, *tiny_mnist, TrainConfig(epochs=3, snapshots=(1, 3), **{
        k: v for k, v in FAST.items() if k != "epochs"}))
    assert sorted(history["snapshots"]) == [1, 3]
    assert same_state(history["snapshots"][3], state_copy(model))
    assert not same_state(history["snapshots"][1], state_copy(model))
    with pytest.raises(ValueError, match="snapshots"):
        train(fresh("fc10"), *tiny_mnist, TrainConfig(epochs=2, snapshots=(5,)))


def test_crop_flip_is_a_per_sample_shift_or_flip():
    """Each augmented image is its source shifted by at most 4 pixels (zeros shifted in)
    and maybe mirrored; different samples get different crops; seeded."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(64, 3, 8, 8)
    out = training._crop_flip(x, 4, g)
    again = training._crop_flip(x, 4, torch.Generator().manual_seed(0))
    assert torch.equal(out, again) and out.shape == x.shape
    pad = torch.nn.functional.pad(x, (4, 4, 4, 4))
    shifts = set()
    for i in range(len(x)):
        hits = [(dy, dx, f) for dy in range(9) for dx in range(9) for f in (False, True)
                if torch.equal(out[i], (pad[i, :, dy:dy + 8, dx:dx + 8].flip(-1) if f else
                                        pad[i, :, dy:dy + 8, dx:dx + 8]))]
        assert hits, f"sample {i} is not a crop of its padded source"
        shifts.add(hits[0])
    assert len(shifts) > 10   # per-sample, not one crop for the batch
