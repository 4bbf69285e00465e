"""How a transfer trains its heads and chooses among them, against independent answers.

* `_fit` is plain torch SGD (momentum, weight decay, the lr divided by 10 every lr_step
  epochs, a seeded batch order): a loop written by hand gives the same weights and losses.
* The chosen learning rate is the best on validation (ties to the earlier rate), each
  reported validation accuracy is that of a head trained with that rate alone, and the
  test accuracy is the returned model's on the test split: selection reads test once.
* Hyper-parameters are checked at their boundaries; a task read at another size is resized.

Written against the mutation report (tests/mutation/REPORT.md).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from stir_lib.attacks import accuracy
from stir_lib.models import ImageModel
from stir_lib.transfer import Task, TransferHparams, fine_tune, fixed_feature, heads


def noisy_task(seed=0, n=(48, 24, 30)):
    """Three classes, each a brighter pixel of a 3x3 image under heavy noise: learnable,
    not perfectly, so learning rates differ in validation accuracy."""
    g = torch.Generator().manual_seed(seed)

    def split(m):
        y = torch.arange(m) % 3
        x = 0.5 + 0.25 * torch.randn(m, 1, 3, 3, generator=g)
        x.view(m, -1)[torch.arange(m), y] += 0.3
        return x.clamp(0, 1), y

    return Task("noisy", *split(n[0]), *split(n[1]), *split(n[2]), num_classes=3)


def body(seed=0):
    torch.manual_seed(seed)
    return ImageModel([("flatten", nn.Flatten()), ("hidden", nn.Linear(9, 6)),
                       ("relu", nn.ReLU())], nn.Linear(6, 3), (1, 3, 3))


# ----------------------------------------------------------------------------- _fit
def sgd_by_hand(module, x, y, *, lr, epochs, batch_size, momentum, weight_decay, lr_step,
                seed):
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(module.parameters(), lr=lr, momentum=momentum,
                          weight_decay=weight_decay)
    losses = []
    for epoch in range(epochs):
        rate = lr * 0.1 ** (epoch // lr_step) if lr_step else lr
        for group in opt.param_groups:
            group["lr"] = rate
        total = 0.0
        for idx in torch.randperm(len(x), generator=g).split(batch_size):
            loss = F.cross_entropy(module(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        losses.append(total / len(x))
    return losses


@pytest.mark.parametrize("lr_step", [None, 2, 3])
def test_fit_is_sgd_with_a_step_schedule(lr_step):
    task = noisy_task()
    kw = dict(lr=0.3, epochs=7, batch_size=10, momentum=0.8, weight_decay=1e-2,
              lr_step=lr_step, seed=5)
    torch.manual_seed(1)
    a = nn.Linear(9, 3)
    b = nn.Linear(9, 3)
    b.load_state_dict(a.state_dict())
    x = task.x_train.flatten(1)
    got = heads._fit(a, x, task.y_train, lambda xb: xb, progress=False, desc="", **kw)
    want = sgd_by_hand(b, x, task.y_train, **kw)
    assert got == pytest.approx(want, rel=1e-6)
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)
    assert not a.training                                 # left in eval mode


def test_fit_trains_in_the_mode_it_is_told():
    modes = []
    net = nn.Sequential(nn.Linear(9, 3))
    net.register_forward_pre_hook(lambda m, i: modes.append(m.training))
    task = noisy_task()
    for train_mode in (True, False):
        modes.clear()
        heads._fit(net, task.x_train.flatten(1), task.y_train, lambda xb: xb, lr=0.1, epochs=1,
                   batch_size=16, momentum=0.0, weight_decay=0.0, lr_step=None, seed=0,
                   progress=False, desc="", train_mode=train_mode)
        assert modes and all(m is train_mode for m in modes)


# ----------------------------------------------------------------------------- selection
def test_best_is_the_first_of_the_best():
    assert heads._best([0.5, 0.7, 0.7, 0.2], (1, 2, 3, 4)) == 1
    assert heads._best([0.9, 0.7], (1, 2)) == 0
    assert heads._best([0.1, 0.7], (1, 2)) == 1


@pytest.mark.parametrize("mode", [fixed_feature, fine_tune])
def test_the_reported_numbers_are_those_of_each_rate_alone(mode):
    task, model = noisy_task(), body()
    lrs = (0.5, 0.05, 0.005)
    kw = dict(epochs=6, batch_size=12, lr_step=4, use_cache=False)
    r = mode(model, task, lrs=lrs, **kw)
    alone = {lr: mode(model, task, lrs=(lr,), **kw) for lr in lrs}
    for lr in lrs:
        assert r.val_acc[lr] == alone[lr].val_acc[lr]
        assert r.loss[lr] == alone[lr].loss[lr] and len(r.loss[lr]) == 6
    best = max(lrs, key=lambda lr: (r.val_acc[lr], -lrs.index(lr)))
    assert r.lr == best and len(set(r.val_acc.values())) > 1
    assert r.test_acc == alone[best].test_acc
    assert r.test_acc == pytest.approx(accuracy(r.model, task.x_test, task.y_test))
    assert r.mode == ("fixed-feature" if mode is fixed_feature else "fine-tune")
    assert r.task == "noisy" and r.hparams["lrs"] == lrs and r.hparams["epochs"] == 6
    for a, b in zip(r.model.state_dict().values(), alone[best].model.state_dict().values()):
        assert torch.equal(a, b)


def test_a_task_read_at_another_size_is_resized():
    task = noisy_task()
    big = Task("big", *(torch.nn.functional.interpolate(t, size=(6, 6)) if t.ndim == 4 else t
                       for t in (task.x_train, task.y_train, task.x_val, task.y_val,
                                 task.x_test, task.y_test)), num_classes=3, input_size=3)
    read = heads._reader(big, torch.device("cpu"))
    assert read(big.x_val).shape == (len(big.x_val), 1, 3, 3)
    same = heads._reader(task, torch.device("cpu"))
    assert torch.equal(same(task.x_val), task.x_val)
    r = fixed_feature(body(), big, lrs=(0.1,), epochs=2, use_cache=False)   # a 3x3 model
    assert 0.0 <= r.test_acc <= 1.0 and r.val_acc[0.1] == r.val_acc[r.lr]


# ----------------------------------------------------------------------------- hparams
def test_hparams_boundaries():
    ok = TransferHparams(momentum=0.0, weight_decay=0.0, seed=0, lr_step=None, epochs=1,
                         batch_size=1, lrs=[0.1, 0.2])
    assert ok.lrs == (0.1, 0.2) and ok.momentum == 0.0 and ok.lr_step is None
    assert TransferHparams(augment=1).augment is True
    for bad, match in [(dict(momentum=1.0), r"momentum: expected a value in \[0, 1\)"),
                       (dict(momentum=-0.1), "momentum"),
                       (dict(lrs=0.1), "lrs: expected a non-empty sequence"),
                       (dict(lrs=()), "lrs: expected a non-empty sequence"),
                       (dict(lrs=(0.1, 0.1)), "lrs: expected distinct"),
                       (dict(lrs=(0.1, 0.0)), "lrs entry"),
                       (dict(epochs=0), "epochs"), (dict(batch_size=0), "batch_size"),
                       (dict(lr_step=0), "lr_step"), (dict(seed=-1), "seed"),
                       (dict(weight_decay=-1e-3), "weight_decay")]:
        with pytest.raises(ValueError, match=match):
            TransferHparams(**bad)
    assert TransferHparams.of(ok, epochs=3).as_dict() == {**ok.as_dict(), "epochs": 3}
    with pytest.raises(TypeError, match=r"unknown transfer hyper-parameter\(s\) \['epoch'\]"):
        TransferHparams.of(epoch=3)


def test_hparams_name_the_field_at_fault_and_convert_numbers():
    for bad, match in [(dict(momentum=-0.1), r"^momentum: expected a value >= 0"),
                       (dict(weight_decay=-1.0), r"^weight_decay: expected a value >= 0"),
                       (dict(epochs=0), r"^epochs: expected an int >= 1"),
                       (dict(batch_size=0), r"^batch_size: expected an int >= 1"),
                       (dict(lr_step=0), r"^lr_step: expected an int >= 1"),
                       (dict(seed=-1), r"^seed: expected an int >= 0"),
                       (dict(lrs={0.1, 0.01}), r"^lrs: expected a non-empty sequence")]:
        with pytest.raises(ValueError, match=match):
            TransferHparams(**bad)
    h = TransferHparams(momentum=0, weight_decay=0, lrs=[1])
    assert type(h.momentum) is float and type(h.weight_decay) is float
    assert h.lrs == (1.0,) and type(h.lrs[0]) is float


# ----------------------------------------------------------------------------- keys, cache
def test_the_cache_key_names_source_task_hparams_and_code(tmp_path, monkeypatch):
    from stir_lib import cache
    monkeypatch.setenv("STIR_CACHE", str(tmp_path))
    task, model = noisy_task(), body()
    kw = dict(lrs=(0.1,), epochs=2)
    r = fixed_feature(model, task, use_cache=False, **kw)
    assert not any(tmp_path.iterdir())                       # use_cache=False writes nothing
    hp = TransferHparams.of(**kw).as_dict()
    want = cache.config_key("transfer", {
        "mode": "fixed-feature", "source": cache.model_identity(model), "task": "noisy",
        "task_data": task.fingerprint(), "hparams": hp, "code": heads.code_version()})
    assert r.key == want
    stored = fixed_feature(model, task, **kw)
    assert stored.key == want and (tmp_path / "transfer" / want / "payload.pt").is_file()
    tuned = fine_tune(model, task, use_cache=False, **kw)
    assert tuned.key != want
    from stir_lib import models
    assert heads.code_version() == cache.code_version(models, heads)   # the models' code too


def test_augmented_crops_are_images_of_the_input():
    task = noisy_task()
    torch.manual_seed(0)
    out = heads._augmenter(3)(task.x_train[:16])
    assert out.shape == (16, 1, 3, 3)
    assert 0.0 <= float(out.min()) and float(out.max()) <= 1.0
    assert float(out.std()) > 0.05 and 0.2 < float(out.mean()) < 0.8
