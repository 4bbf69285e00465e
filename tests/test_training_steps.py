"""The training loop, step by step, against a loop written by hand.

`train` is minibatch SGD or Adam on cross-entropy (or an adversarial loss) plus the
penalty sum_W lambda ||W||_F^2 on weight matrices, with a per-step learning-rate factor
(cosine to 0 over the run, a /10 step every lr_step epochs, or constant) and a seeded
batch order. A plain loop with torch's optimisers and the documented factor gives the
same weights and epoch losses; the penalty, the PGD-AT and half-clean losses and the
arguments handed to the attack are written out too. Written against the mutation report
(tests/mutation/REPORT.md).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from stir_lib import training
from stir_lib.models import ImageModel
from stir_lib.training import TrainConfig, train


def tiny_model(seed=0):
    torch.manual_seed(seed)
    return ImageModel([("flatten", nn.Flatten()), ("fc", nn.Linear(4, 5)), ("relu", nn.ReLU())],
                      nn.Linear(5, 3), (1, 2, 2))


def tiny_data(n=22, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 2, 2, generator=g), torch.randint(0, 3, (n,), generator=g)


def by_hand(model, x, y, cfg: TrainConfig):
    params = list(model.parameters())
    if cfg.optimizer == "adam":
        opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.optim_weight_decay)
    else:
        opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                              weight_decay=cfg.optim_weight_decay)
    per_epoch = math.ceil(len(x) / cfg.batch_size)
    total = cfg.epochs * per_epoch
    g = torch.Generator().manual_seed(cfg.seed)
    g_aug = torch.Generator().manual_seed(cfg.seed + 2)
    weights = [p for p in params if p.ndim >= 2]
    lams = ([cfg.weight_decay] * len(weights) if isinstance(cfg.weight_decay, (int, float))
            else list(cfg.weight_decay))
    losses, step = [], 0
    model.train()
    for _ in range(cfg.epochs):
        run = 0.0
        for idx in torch.randperm(len(x), generator=g).split(cfg.batch_size):
            if cfg.lr_schedule == "cosine":
                factor = 0.5 * (1 + math.cos(math.pi * step / total))
            elif cfg.lr_schedule == "step":
                factor = 0.1 ** ((step // per_epoch) // cfg.lr_step)
            else:
                factor = 1.0
            for group in opt.param_groups:
                group["lr"] = cfg.lr * factor
            xb = x[idx] if cfg.augment == "none" else training._crop_flip(x[idx], 4, g_aug)
            loss = F.cross_entropy(model(xb), y[idx])
            loss = loss + sum(lam * w.pow(2).sum() for lam, w in zip(lams, weights) if lam)
            opt.zero_grad()
            loss.backward()
            opt.step()
            run += float(loss.detach()) * len(idx)
            step += 1
        losses.append(run / len(x))
    return losses


@pytest.mark.parametrize("cfg", [
    TrainConfig(epochs=3, batch_size=8, optimizer="sgd", lr=0.3, momentum=0.7,
                lr_schedule="cosine", seed=4),
    TrainConfig(epochs=5, batch_size=5, optimizer="sgd", lr=0.2, momentum=0.0,
                lr_schedule="step", lr_step=2, weight_decay=1e-2, seed=1),
    TrainConfig(epochs=3, batch_size=22, optimizer="adam", lr=0.05, lr_schedule="constant",
                optim_weight_decay=1e-3, weight_decay=(0.0, 3e-2), seed=2),
    TrainConfig(epochs=2, batch_size=7, optimizer="adam", lr=0.02, lr_schedule="cosine",
                seed=0),
    TrainConfig(epochs=3, batch_size=6, optimizer="sgd", lr=0.1, momentum=0.5,
                optim_weight_decay=0.05, lr_schedule="step", lr_step=1, augment="crop-flip",
                seed=6),
])
def test_train_is_the_loop_it_documents(cfg):
    x, y = tiny_data()
    a, b = tiny_model(), tiny_model()
    hist = train(a, x, y, cfg, progress=False)
    want = by_hand(b, x, y, cfg)
    assert hist["loss"] == pytest.approx(want, rel=1e-5)
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)
    assert not a.training and all(p.requires_grad for p in a.parameters())


@torch.no_grad()
def test_weight_penalty_is_lambda_times_squared_frobenius_of_matrices_only():
    model = tiny_model()
    W1, W2 = model.body.fc.weight, model.head.weight
    want = 0.1 * W1.pow(2).sum() + 0.1 * W2.pow(2).sum()
    assert float(training._weight_penalty(model, 0.1)) == pytest.approx(float(want))
    per = float(training._weight_penalty(model, (0.2, 0.0)))
    assert per == pytest.approx(float(0.2 * W1.pow(2).sum()))
    head_only = float(training._weight_penalty(model, (0.2, 0.5), trained=model.head))
    assert head_only == pytest.approx(float(0.5 * W2.pow(2).sum()))
    assert training._weight_penalty(model, 0.0) == 0.0
    assert training._weight_penalty(model, 0) == 0.0
    with pytest.raises(ValueError, match=r"one lambda per weight matrix of the model \(2\), got 3"):
        training._weight_penalty(model, (0.1, 0.1, 0.1))


def fixed_attack(monkeypatch, delta):
    calls = []

    def fake(model, xb, yb, **kw):
        calls.append(kw)
        return (xb + delta).clamp(0, 1)
    monkeypatch.setattr(training, "pgd", fake)
    return calls


@torch.no_grad()
def test_pgd_at_and_half_clean_losses(monkeypatch):
    model, (x, y) = tiny_model(), tiny_data(6)
    delta = 0.1 * torch.ones_like(x)
    calls = fixed_attack(monkeypatch, delta)
    cfg = TrainConfig(loss="pgd-at", adv_eps=0.3, adv_steps=5, adv_norm="linf",
                      adv_step_size=0.07)
    x_adv = (x + delta).clamp(0, 1)
    at = training._adv_loss(model, x, y, cfg, step_seed=11)
    assert float(at) == pytest.approx(float(F.cross_entropy(model(x_adv), y)), rel=1e-6)
    mix = training._adv_loss(model, x, y, TrainConfig(loss="pgd-mix", adv_eps=0.3), 12)
    want = 0.5 * (F.cross_entropy(model(x), y) + F.cross_entropy(model(x_adv), y))
    assert float(mix) == pytest.approx(float(want), rel=1e-6)
    assert calls[0] == dict(norm="linf", eps=0.3, steps=5, step_size=0.07, seed=11)
    assert calls[1] == dict(norm="l2", eps=0.3, steps=7, step_size=None, seed=12)
    clean = training._adv_loss(model, x, y, TrainConfig(), 0)
    assert float(clean) == pytest.approx(float(F.cross_entropy(model(x), y)), rel=1e-6)


@pytest.mark.parametrize("loss", ["trades", "mart"])
def test_trades_and_mart_hand_the_attack_their_settings(monkeypatch, loss):
    model, (x, y) = tiny_model(), tiny_data(6)
    calls = fixed_attack(monkeypatch, 0.05)
    cfg = TrainConfig(loss=loss, adv_eps=0.25, adv_steps=3, adv_norm="linf", adv_step_size=0.1)
    training._adv_loss(model, x, y, cfg, step_seed=9)
    kw = dict(calls[0])
    if loss == "trades":
        assert callable(kw.pop("loss"))       # the KL to the clean prediction, not CE
    assert kw == dict(norm="linf", eps=0.25, steps=3, step_size=0.1, seed=9)


def test_adversarial_training_seeds_each_step_apart(monkeypatch):
    calls = fixed_attack(monkeypatch, 0.0)
    x, y = tiny_data(10)
    cfg = TrainConfig(loss="pgd-at", adv_eps=0.1, epochs=2, batch_size=5, seed=3)
    train(tiny_model(), x, y, cfg, progress=False)
    assert [c["seed"] for c in calls] == [3 * 1_000_003 + s for s in range(4)]


def test_no_epochs_train_nothing_at_no_rate():
    x, y = tiny_data()
    model = tiny_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    hist = train(model, x, y, TrainConfig(epochs=0), progress=False)
    assert hist["loss"] == [] and hist["images_per_second"] == 0.0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_history_counts_the_images_and_time():
    x, y = tiny_data()
    hist = train(tiny_model(), x, y, TrainConfig(epochs=2, batch_size=8), progress=False)
    assert len(hist["loss"]) == 2 and hist["resumed_at_epoch"] == 0
    assert 0 < hist["seconds"] < 0.9                      # the clock starts at zero
    assert hist["images_per_second"] == pytest.approx(2 * len(x) / hist["seconds"], rel=1e-6)
    assert hist["snapshots"] == {}


# ----------------------------------------------------------------------------- autoencoder
def autoencoder_by_hand(model, x, cfg):
    """The body as the encoder of a sigmoid autoencoder: a fresh linear decoder to the
    pixels, squared error summed over pixels and averaged over the batch, plus the penalty
    on the body's weights, Adam at cfg.lr, batches in the order of a generator seeded
    cfg.seed + 1 (after torch.manual_seed(cfg.seed), as train sets it)."""
    torch.manual_seed(cfg.seed)
    g = torch.Generator().manual_seed(cfg.seed + 1)
    decoder = nn.Sequential(nn.Linear(model.head.in_features, x[0].numel()), nn.Sigmoid())
    opt = torch.optim.Adam(list(model.body.parameters()) + list(decoder.parameters()),
                           lr=cfg.lr)
    lam = cfg.weight_decay
    for _ in range(cfg.autoencoder_epochs):
        for idx in torch.randperm(len(x), generator=g).split(cfg.batch_size):
            xb = x[idx]
            loss = ((decoder(model.body(xb)) - xb.flatten(1)) ** 2).sum() / len(xb)
            loss = loss + lam * model.body.fc.weight.pow(2).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()


def test_autoencoder_pretraining_is_the_loop_it_documents():
    x, y = tiny_data(20)
    cfg = TrainConfig(epochs=1, autoencoder_epochs=3, batch_size=6, lr=0.05,
                      weight_decay=1e-2, train_params="head", seed=3)
    a, b = tiny_model(), tiny_model()
    train(a, x, y, cfg, progress=False)
    autoencoder_by_hand(b, x, cfg)
    for p, q in zip(a.body.parameters(), b.body.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- crop-flip
def test_crop_flip_draws_every_shift_and_flips_half():
    """Each image is its zero-padded self shifted by (dy, dx) in [-pad, pad] each, uniform,
    and flipped left-right with probability 1/2."""
    pad, n = 2, 4000
    g0 = torch.Generator().manual_seed(0)
    base = torch.rand(1, 1, 5, 5, generator=g0) + 1.0            # no pixel is 0
    out = training._crop_flip(base.expand(n, 1, 5, 5).contiguous(), pad,
                              torch.Generator().manual_seed(1))
    padded = F.pad(base, (pad,) * 4)[0, 0]
    seen, flips = torch.zeros(2 * pad + 1, 2 * pad + 1), 0
    for img in out[:, 0]:
        hit = None
        for oy in range(2 * pad + 1):
            for ox in range(2 * pad + 1):
                crop = padded[oy:oy + 5, ox:ox + 5]
                for flip in (False, True):
                    if torch.equal(img, crop.flip(-1) if flip else crop):
                        hit = (oy, ox, flip)
        assert hit is not None
        seen[hit[0], hit[1]] += 1
        flips += hit[2]
    assert bool((seen > 0).all())                                 # every shift, 0 and 2 pad too
    expected = n / (2 * pad + 1) ** 2
    assert float(seen.min()) > 0.6 * expected and float(seen.max()) < 1.4 * expected
    assert abs(flips / n - 0.5) < 0.04


# ----------------------------------------------------------------------------- messages
def test_bad_training_data_is_named():
    x, y = tiny_data()
    model = tiny_model()
    with pytest.raises(ValueError, match=r"^x: expected 1 channel\(s\)"):
        train(model, x.expand(-1, 3, -1, -1), y, TrainConfig(epochs=1))
    with pytest.raises(ValueError, match=r"^x: expected images of size \(2, 2\)"):
        train(model, torch.rand(len(y), 1, 3, 3), y, TrainConfig(epochs=1))
    with pytest.raises(ValueError, match=r"^y: expected class indices in \[0, 3\)"):
        train(model, x, y + 3, TrainConfig(epochs=1))


def test_half_clean_loss_hands_the_attack_its_step(monkeypatch):
    model, (x, y) = tiny_model(), tiny_data(6)
    calls = fixed_attack(monkeypatch, 0.05)
    cfg = TrainConfig(loss="pgd-mix", adv_eps=0.3, adv_steps=4, adv_norm="linf",
                      adv_step_size=0.11)
    training._adv_loss(model, x, y, cfg, step_seed=5)
    assert calls[0] == dict(norm="linf", eps=0.3, steps=4, step_size=0.11, seed=5)


# ----------------------------------------------------------------------------- cached models
def mnist_like(n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)


def test_a_model_can_start_from_another_cached_model(tmp_path, monkeypatch):
    from stir_lib import attacks, cache, models
    from stir_lib.training import model_key, trained_model
    monkeypatch.setenv("STIR_CACHE", str(tmp_path))
    x, y = mnist_like()
    start = trained_model("fc10", x, y, TrainConfig(epochs=2, batch_size=20))
    again = trained_model("fc10", x, y, TrainConfig(epochs=0), init_key=start.key)
    for a, b in zip(again.model.state_dict().values(), start.model.state_dict().values()):
        assert torch.equal(a, b)
    key = model_key("fc10", x, y, TrainConfig(epochs=0), init_key=start.key)
    assert key["init"] == f"model:{start.key}" and again.key == cache.config_key("model", key)
    by_state = model_key("fc10", x, y, TrainConfig(epochs=0),
                         init_state=start.model.state_dict())
    assert by_state["init"] == training.data_fingerprint(*start.model.state_dict().values())
    assert set(key) == {"name", "model_kwargs", "config", "data", "init", "code"}
    assert (key["name"], key["model_kwargs"], key["config"]) == \
        ("fc10", {}, dict(training.asdict(TrainConfig(epochs=0))))
    assert key["data"] == training.data_fingerprint(x, y)
    assert key["code"] == cache.code_version(models, attacks, training)
    assert model_key("fc10", x, y, TrainConfig())["init"] is None
    with pytest.raises(ValueError, match="init_key 'nope': expected the key of a trained model"):
        trained_model("fc10", x, y, TrainConfig(epochs=0), init_key="nope")
    with pytest.raises(ValueError, match="init_state or init_key, not both"):
        model_key("fc10", x, y, TrainConfig(), init_state={}, init_key="k")


def test_a_step_every_epoch_is_allowed():
    x, y = tiny_data()
    train(tiny_model(), x, y, TrainConfig(epochs=2, lr_schedule="step", lr_step=1))
    with pytest.raises(ValueError, match="lr_step >= 1"):
        train(tiny_model(), x, y, TrainConfig(epochs=2, lr_schedule="step", lr_step=0))


# ----------------------------------------------------------------------------- head-only penalty
def test_head_only_training_penalises_the_head_alone():
    """With the body frozen, the penalty (and the loss the history reports) covers the
    head's weights only: one full-batch epoch reports CE + lambda ||W_head||^2 of the
    initial model (the loss is taken before the step)."""
    x, y = tiny_data(12)
    model = tiny_model()
    with torch.no_grad():
        want = float(F.cross_entropy(model(x), y) + 0.3 * model.head.weight.pow(2).sum())
        body_term = float(0.3 * model.body.fc.weight.pow(2).sum())
    assert body_term > 0.05                         # a body term would show
    hist = train(model, x, y, TrainConfig(epochs=1, batch_size=12, train_params="head",
                                          weight_decay=0.3, lr=0.1), progress=False)
    assert hist["loss"][0] == pytest.approx(want, rel=1e-6)


# ----------------------------------------------------------------------------- checkpoints
def test_checkpoint_holds_the_last_unfinished_epoch_and_resumes_in_process(tmp_path):
    """After every epoch but the last, the whole state is written; a fresh model resumed
    from it finishes with the same weights, losses and generator states as the run that
    wrote it (SGD momentum, a cosine schedule and crop-flip draws included)."""
    x, y = tiny_data()
    cfg = TrainConfig(epochs=3, batch_size=8, optimizer="sgd", lr=0.3, momentum=0.7,
                      lr_schedule="cosine", augment="crop-flip", snapshots=(1, 3), seed=4)
    ckpt = tmp_path / "run.pt"
    a = tiny_model()
    hist_a = train(a, x, y, cfg, progress=False, checkpoint=ckpt)
    state = torch.load(ckpt, weights_only=True)
    assert state["epoch"] == 2 and state["step"] == 2 * math.ceil(len(x) / 8)
    assert state["losses"] == hist_a["loss"][:2] and set(state["snapshots"]) == {1}
    b = tiny_model(seed=9)                        # other initial weights: all come from the file
    hist_b = train(b, x, y, cfg, progress=False, checkpoint=ckpt)
    assert hist_b["resumed_at_epoch"] == 2 and hist_b["loss"] == hist_a["loss"]
    assert set(hist_b["snapshots"]) == {1, 3}
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), name
    assert 0 < state["seconds"] < hist_a["seconds"]           # two of the three epochs
    state["seconds"] = 1000.0                                  # as if they had taken long
    torch.save(state, ckpt)
    c = tiny_model(seed=9)
    hist_c = train(c, x, y, cfg, progress=False, checkpoint=ckpt)
    assert 1000.0 < hist_c["seconds"] < 1005.0                 # the earlier runs' time counts
    run = hist_c["seconds"] - 1000.0                           # the rate is this run's own
    assert hist_c["images_per_second"] == pytest.approx(len(x) / run, rel=1e-3)
    one = tmp_path / "one.pt"
    train(tiny_model(), x, y, TrainConfig(epochs=1, batch_size=8), progress=False,
          checkpoint=one)
    assert not one.exists()                       # a one-epoch run has no unfinished epoch


class _NotATensor:
    pass


def test_a_checkpoint_with_arbitrary_objects_is_not_unpickled(tmp_path):
    """Checkpoints are read with weights_only=True: a file that would run arbitrary
    unpickling is refused, removed and training starts over."""
    ckpt = tmp_path / "odd.pt"
    torch.save({"model": _NotATensor()}, ckpt)
    with pytest.warns(UserWarning, match="unreadable"):
        assert training._load_checkpoint(ckpt) is None
    assert not ckpt.exists()


def test_autoencoder_pretraining_on_a_single_image():
    x, y = tiny_data(1)
    model = tiny_model()
    before = model.body.fc.weight.detach().clone()
    train(model, x, y, TrainConfig(epochs=1, autoencoder_epochs=2, batch_size=4, lr=0.1,
                                   train_params="head"), progress=False)
    assert not torch.equal(model.body.fc.weight, before)


# ----------------------------------------------------------------------------- cached, interrupted
def test_an_interrupted_cached_training_resumes_from_its_checkpoint(tmp_path, monkeypatch):
    """trained_model checkpoints into the cache's checkpoint file for its key; a run that
    dies in its second epoch resumes there (history says so), ends with the weights of an
    uninterrupted run, and the finished entry removes the checkpoint."""
    from stir_lib import cache
    from stir_lib.training import model_key, trained_model
    x, y = mnist_like(30)
    cfg = TrainConfig(epochs=3, batch_size=10, seed=2)
    kwargs = {"hidden": (7,), "activation": "relu"}
    monkeypatch.setenv("STIR_CACHE", str(tmp_path / "straight"))
    straight = trained_model("mlp", x, y, cfg, model_kwargs=kwargs)
    assert straight.key == cache.config_key("model", model_key("mlp", x, y, cfg, kwargs))
    assert len(straight.history["loss"]) == 3 and straight.history["resumed_at_epoch"] == 0
    assert cache.model_identity(straight.model) == f"model:{straight.key}"

    monkeypatch.setenv("STIR_CACHE", str(tmp_path / "broken"))
    real, steps = training._adv_loss, []

    def dies_in_epoch_two(*args, **kw):
        steps.append(1)
        if len(steps) == 4:                       # 3 steps an epoch: the 2nd epoch's 1st step
            raise KeyboardInterrupt
        return real(*args, **kw)
    monkeypatch.setattr(training, "_adv_loss", dies_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        trained_model("mlp", x, y, cfg, model_kwargs=kwargs)
    key = model_key("mlp", x, y, cfg, kwargs)
    assert cache.checkpoint_path("model", key).exists()
    monkeypatch.setattr(training, "_adv_loss", real)
    resumed = trained_model("mlp", x, y, cfg, model_kwargs=kwargs)
    assert resumed.key == straight.key and resumed.history["resumed_at_epoch"] == 1
    assert resumed.history["loss"] == straight.history["loss"]
    for a, b in zip(resumed.model.state_dict().values(), straight.model.state_dict().values()):
        assert torch.equal(a, b)
    assert not cache.checkpoint_path("model", key).exists()


def test_the_key_of_a_model_started_from_another_covers_its_arguments(tmp_path, monkeypatch):
    from stir_lib import cache
    from stir_lib.training import model_key, trained_model
    monkeypatch.setenv("STIR_CACHE", str(tmp_path))
    x, y = mnist_like(20)
    kwargs = {"hidden": (5,)}
    start = trained_model("mlp", x, y, TrainConfig(epochs=1, batch_size=10), model_kwargs=kwargs)
    again = trained_model("mlp", x, y, TrainConfig(epochs=0), model_kwargs=kwargs,
                          init_key=start.key)
    want = model_key("mlp", x, y, TrainConfig(epochs=0), kwargs, init_key=start.key)
    assert want["model_kwargs"] == kwargs and again.key == cache.config_key("model", want)
