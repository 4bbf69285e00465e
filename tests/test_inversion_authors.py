"""The public STIR code's two departures from the paper's procedure, as opt-in options of the
inversion (``book/paper_targets.md`` section 6): ``fake_relu`` (a straight-through final ReLU
during the steps) and ``clamp_start=False`` (the first step from the raw Gaussian start).

Each option is checked against a hand-written computation on a small ReLU network, the
defaults against the call without the options, and the keys and the STIR plumbing that carry
them.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from stir_lib import straight_relu
from stir_lib.inversion import _rep, invert, relative_distance, seeds
from stir_lib.models import create_model
from stir_lib.stir import stir

SHAPE = (1, 4, 4)


@pytest.fixture
def net():
    torch.manual_seed(3)
    return create_model("mlp", activation="relu", hidden=(16, 8), input_shape=SHAPE).eval()


@pytest.fixture
def x():
    return torch.rand(12, *SHAPE, generator=torch.Generator().manual_seed(5))


class _HandST(torch.autograd.Function):
    """relu forward, identity backward, written out (no detach trick)."""

    @staticmethod
    def forward(ctx, h):
        return h.clamp_min(0)

    @staticmethod
    def backward(ctx, g):
        return g


class _HandSTModule(nn.Module):
    def forward(self, h):
        return _HandST.apply(h)


def _with_last(net: nn.Module, module: nn.Module) -> nn.Module:
    """A copy of the MLP whose last stage's ReLU is ``module``."""
    other = copy.deepcopy(net)
    other.body.h2[1] = module
    return other


def _dist(model, z, target, layer="h2"):
    return (_rep(model, z, layer) - target).norm(dim=1) / target.norm(dim=1)


# --------------------------------------------------------------------------- fake_relu
def test_fake_relu_gradient_is_the_straight_through_one(net, x):
    z = torch.rand_like(x)
    with torch.no_grad():
        target = _rep(net, x, "h2")
    read = straight_relu.straight_through(lambda v: _rep(net, v, "h2"), x[:1], "'h2'")
    zz = z.clone().requires_grad_(True)
    d = (read(zz) - target).norm(dim=1) / target.norm(dim=1)
    (g_st,) = torch.autograd.grad(d.sum(), zz)
    # by hand: the pre-activation a(z) from a copy whose last ReLU is the identity, the
    # forward value relu(a); the ReLU's derivative taken as 1 in the chain rule
    pre = _with_last(net, nn.Identity())
    zh = z.clone().requires_grad_(True)
    a = _rep(pre, zh, "h2")                                            # (N, 8)
    r = a.clamp_min(0).detach()
    u = (r - target) / ((r - target).norm(dim=1, keepdim=True) * target.norm(dim=1, keepdim=True))
    (g_hand,) = torch.autograd.grad(a, zh, grad_outputs=u)
    torch.testing.assert_close(g_st, g_hand, rtol=1e-5, atol=1e-7)
    # the forward value is the true one, and the true gradient differs (units are clipped)
    torch.testing.assert_close(d.detach(), _dist(net, z, target), rtol=0, atol=0)
    zt = z.clone().requires_grad_(True)
    (g_true,) = torch.autograd.grad(_dist(net, zt, target).sum(), zt)
    assert bool((a <= 0).any()) and not torch.allclose(g_true, g_st, atol=1e-6)


def test_fake_relu_inversion_matches_a_hand_straight_through_model(net, x):
    ours = invert(net, x, steps=25, fake_relu=True, progress=False)
    hand = invert(_with_last(net, _HandSTModule()), x, steps=25, progress=False)
    torch.testing.assert_close(ours.x_prime, hand.x_prime, rtol=0, atol=1e-6)
    torch.testing.assert_close(ours.distance, hand.distance, rtol=0, atol=1e-6)
    # the distances are the true ones (the plain model's), and the option changes the IRIs
    torch.testing.assert_close(ours.distance, relative_distance(net, ours.x_prime, x),
                               rtol=1e-5, atol=1e-7)
    plain = invert(net, x, steps=25, progress=False)
    torch.testing.assert_close(ours.initial_distance, plain.initial_distance, rtol=0, atol=0)
    assert not torch.equal(ours.x_prime, plain.x_prime)


def test_defaults_are_the_call_without_the_options(net, x):
    a = invert(net, x, steps=15, progress=False)
    b = invert(net, x, steps=15, progress=False, fake_relu=False, clamp_start=True)
    for f in ("x_prime", "distance", "initial_distance", "history", "evaluations"):
        assert torch.equal(getattr(a, f), getattr(b, f)), f


def test_fake_relu_reaches_a_functional_relu_before_pooling():
    torch.manual_seed(0)
    m = create_model("resnet_small", width=4).eval()      # BasicBlock ends in torch.relu
    x = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    r = invert(m, x, "pool", steps=3, fake_relu=True, progress=False)
    plain = invert(m, x, "pool", steps=3, progress=False)
    assert not torch.equal(r.x_prime, plain.x_prime)
    torch.testing.assert_close(r.distance, relative_distance(m, r.x_prime, x, "pool"),
                               rtol=1e-4, atol=1e-6)


def test_fake_relu_refuses_a_layer_not_ending_in_a_relu(x):
    sig = create_model("mlp", activation="sigmoid", hidden=(16, 8), input_shape=SHAPE)
    with pytest.raises(ValueError, match=r"expected the layer to end in a ReLU.*no ReLU call"):
        invert(sig, x, steps=2, fake_relu=True, progress=False)
    conv = create_model("convnet")                         # conv1: Conv, ReLU, MaxPool
    xi = torch.rand(2, 1, 28, 28)
    with pytest.raises(ValueError, match=r"max_pool2d.*after its last ReLU.*fake_relu=False"):
        invert(conv, xi, "conv1", steps=2, fake_relu=True, progress=False)
    with pytest.raises(TypeError, match="fake_relu: expected a bool"):
        invert(sig, x, steps=2, fake_relu=1, progress=False)


# --------------------------------------------------------------------------- clamp_start
def test_unclamped_start_takes_the_first_step_from_the_raw_draw(net, x):
    eta, seed = 0.5, 7
    raw = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed))
    assert torch.equal(seeds("noise", x, seed, clamp=False), raw)
    assert torch.equal(seeds("noise", x, seed), raw.clamp(0, 1))
    r = invert(net, x, steps=1, seed=seed, clamp_start=False, step_size=eta, progress=False)
    with torch.no_grad():
        target = _rep(net, x, "h2")
    z = raw.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(_dist(net, z, target).sum(), z)
    step = g.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
    z1 = (raw - eta * g / step).clamp(0, 1)                         # the first iterate
    zc = raw.clamp(0, 1)                                            # the start's projection
    with torch.no_grad():
        d1, dc = _dist(net, z1, target), _dist(net, zc, target)
    better = (d1 < dc).view(-1, 1, 1, 1)
    torch.testing.assert_close(r.x_prime, torch.where(better, z1, zc), rtol=0, atol=1e-6)
    torch.testing.assert_close(r.distance, torch.minimum(d1, dc), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(r.initial_distance, dc, rtol=0, atol=0)
    assert int(r.evaluations[0]) == 3 and len(r.history) == 2
    # the step from the clamped start (the default) lands elsewhere
    d = invert(net, x, steps=1, seed=seed, step_size=eta, progress=False)
    zd = zc.clone().requires_grad_(True)
    (gd,) = torch.autograd.grad(_dist(net, zd, target).sum(), zd)
    assert not torch.allclose(gd, g)
    assert torch.equal(d.initial_distance, r.initial_distance)


def test_unclamped_start_returns_iris_in_the_box(net, x):
    r = invert(net, x, steps=20, clamp_start=False, progress=False)
    assert float(r.x_prime.min()) >= 0 and float(r.x_prime.max()) <= 1
    torch.testing.assert_close(r.distance, relative_distance(net, r.x_prime, x),
                               rtol=1e-5, atol=1e-7)
    assert bool((r.distance <= r.initial_distance).all())
    assert r.history[0] == pytest.approx(float(r.initial_distance.mean()), rel=1e-6)
    # with an explicit start outside the box too
    raw = seeds("noise", x, 3, clamp=False)
    e = invert(net, x, steps=20, start=raw, clamp_start=False, progress=False)
    f = invert(net, x, steps=20, seed=3, clamp_start=False, progress=False)
    assert torch.equal(e.x_prime, f.x_prime)
    with pytest.raises(ValueError, match=r"start: expected pixel values in \[0, 1\]"):
        invert(net, x, steps=2, start=raw, progress=False)


def test_unclamped_start_refuses_what_it_does_not_apply_to(net, x):
    with pytest.raises(ValueError, match="expected seed_kind='noise'"):
        invert(net, x, steps=2, seed_kind="uniform", clamp_start=False, progress=False)
    with pytest.raises(ValueError, match="expected method='reference'"):
        invert(net, x, steps=2, method="fast", clamp_start=False, progress=False)


# --------------------------------------------------------------------------- keys and STIR
def test_invert_job_key_changes_with_each_option_only():
    from stir_lib.jobs import Data, Invert, Train
    from stir_lib.training import TrainConfig
    model = Train("mlp", TrainConfig(epochs=0, seed=0), Data("mnist", "train", n=8),
                  (("activation", "relu"), ("hidden", (16, 8))))
    X = Data("mnist", "test", n=4)
    base = Invert(model, X, steps=5)
    keys = {base.key(), Invert(model, X, steps=5, fake_relu=True).key(),
            Invert(model, X, steps=5, clamp_start=False).key(),
            Invert(model, X, steps=5, fake_relu=True, clamp_start=False).key()}
    assert len(keys) == 4
    same = Invert(model, X, steps=5, fake_relu=False, clamp_start=True)
    assert same.key() == base.key() and same.key_config() == base.key_config()
    assert "fake_relu" not in base.key_config() and "clamp_start" not in base.key_config()


def test_stir_runs_both_directions_with_the_options(net, x):
    torch.manual_seed(4)
    other = create_model("mlp", activation="relu", hidden=(16, 8), input_shape=SHAPE)
    r = stir(net, other, x, steps=10, fake_relu=True, clamp_start=False, progress=False)
    for m, dist in ((net, r.distance_m1), (other, r.distance_m2)):
        inv = invert(m, x, steps=10, fake_relu=True, clamp_start=False, progress=False)
        assert torch.equal(dist[0], inv.distance)
    mixed = stir(net, other, x, steps=10, fake_relu=(True, False), progress=False)
    plain = stir(net, other, x, steps=10, progress=False)
    assert torch.equal(mixed.distance_m2, plain.distance_m2)
    assert not torch.equal(mixed.distance_m1, plain.distance_m1)
    with pytest.raises(TypeError, match="fake_relu"):
        stir(net, other, x, steps=2, fake_relu=(True,), progress=False)


def test_paper_scale_uses_the_authors_choices():
    from stir_lib.chapters import stir as C
    for scale in ("smoke", "ci"):
        S = C.settings(scale)
        assert C.authors_options(S, "mlp") == dict(fake_relu=False, clamp_start=True)
    S = C.settings("paper")
    assert C.authors_options(S, "resnet18_cifar") == dict(fake_relu=True, clamp_start=False)
    assert C.authors_options(S, "resnet34_cifar", "layer4")["fake_relu"]
    assert not C.authors_options(S, "resnet18_cifar", "layer3")["fake_relu"]
    assert C.authors_options(S, "vgg16_cifar") == dict(fake_relu=False, clamp_start=False)
    jobs = C.matrix_jobs(S, C.zoo(S))
    assert {(j.model.arch, j.fake_relu, j.clamp_start) for j in jobs} == {
        ("resnet18_cifar", True, False), ("resnet34_cifar", True, False),
        ("vgg16_cifar", False, False), ("vgg19_cifar", False, False)}


# ------------------------------------------------------------------ in-place and keyword forms
class _SideEffect(nn.Module):
    """Rectifies in place and returns the tensor it rectified (the call's result unused)."""

    def __init__(self, how: str):
        super().__init__()
        torch.manual_seed(0)
        self.lin, self.how = nn.Linear(16, 6), how
        self.act = nn.ReLU(inplace=True)

    def forward(self, x):
        h = self.lin(x.flatten(1))
        if self.how == "method":
            h.relu_()                       # Tensor.relu_, for its side effect
        else:
            self.act(h)                     # F.relu(h, inplace=True), for its side effect
        return h


@pytest.mark.parametrize("how", ["method", "module"])
def test_straight_through_keeps_an_in_place_relu_in_place(how):
    """An in-place last ReLU whose result is not used: the straight-through call must still
    rectify the tensor in place, so the read value is relu(h), with the identity gradient."""
    model = _SideEffect(how).eval()
    z = torch.rand(5, 1, 4, 4, generator=torch.Generator().manual_seed(1), requires_grad=True)
    read = straight_relu.straight_through(model, z.detach(), "h")
    out = read(z)
    pre = model.lin(z.flatten(1))
    assert torch.equal(out, pre.relu())
    (g,) = torch.autograd.grad(out.sum(), z)
    (want,) = torch.autograd.grad(pre.sum(), z)      # identity through the ReLU
    torch.testing.assert_close(g, want)


def test_straight_through_does_not_write_into_its_input():
    """The ReLU of a view of the input (no layer before it): the straight-through value is a
    new tensor (writing into z's view would be an in-place change of a leaf)."""
    def read(z):
        return torch.relu(z.flatten(1) - 0.5)

    z = torch.rand(4, 1, 2, 2, generator=torch.Generator().manual_seed(2), requires_grad=True)
    fast = straight_relu.straight_through(read, z.detach(), "flat")
    view_only = straight_relu.straight_through(lambda v: torch.relu(v.flatten(1)), z.detach(), "v")
    assert torch.equal(fast(z), read(z))
    (g,) = torch.autograd.grad(view_only(z).sum(), z)
    assert torch.equal(g, torch.ones_like(z))            # identity: every unit passes gradient
    assert z.grad is None and torch.equal(view_only(z), z.detach().flatten(1).relu())


def test_keyword_arguments_reach_the_calls_they_belong_to():
    """A mean over the spatial axes given by keyword after the last ReLU (a ResNet's pooled
    read): the straight-through read is the plain read's value."""
    torch.manual_seed(4)
    conv = nn.Conv2d(1, 3, 3).eval()

    def read(z):
        return torch.relu(conv(z)).mean(dim=(2, 3))

    z = torch.rand(2, 1, 6, 6, generator=torch.Generator().manual_seed(3))
    fast = straight_relu.straight_through(read, z, "pool")
    with torch.no_grad():
        assert fast(z).shape == (2, 3) and torch.equal(fast(z), read(z))
