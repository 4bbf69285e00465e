"""Tests against answers computed independently of the code under test: closed forms and
SciPy. Each fails for a plausible bug that the other tests let through (a PGD step that does
nothing, an interval with 1.96 or a wrong degrees of freedom instead of Welch's t)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from stir_lib import verdicts as V
from stir_lib.attacks import pgd


# ----------------------------------------------------------------------------- PGD
def _linear_pair(seed: int = 0, side: int = 6):
    """A two-class linear classifier on side x side grey images, and images in the middle
    of the box (0.5) so that no pixel reaches 0 or 1 within the radii used below."""
    g = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(side * side, 2))
    with torch.no_grad():
        model[1].weight.copy_(torch.randn(2, side * side, generator=g))
        model[1].bias.zero_()
    x = 0.5 + 0.05 * (torch.rand(8, 1, side, side, generator=g) - 0.5)
    return model, x


def _margin(model, x):
    """logit of class 1 minus logit of class 0: the quantity the attack on label 0 raises."""
    with torch.no_grad():
        z = model(x)
    return z[:, 1] - z[:, 0]


@pytest.mark.parametrize("norm,random_start,reach", [
    ("linf", True, 0.99), ("linf", False, 0.99), ("l2", False, 0.99),
    # L2 from a random start: the default rule (10 steps of 2.5 eps / 10) turns the start
    # towards v by a total arc that leaves tan(angle / 2) at no less than e^-2.5 of where it
    # began (a start at right angles ends at least 9.4 degrees off: 98.7 % of the optimum)
    ("l2", True, 0.95),
])
def test_pgd_reaches_the_closed_form_optimum_of_a_linear_model(norm, random_start, reach):
    """For logits W x + b and label 0, cross-entropy grows with the margin v . x (v = w1 - w0),
    so the best perturbation in the ball is eps sign(v) (L-inf: the margin grows by
    eps ||v||_1) or eps v / ||v||_2 (L2: by eps ||v||_2). PGD with the default step rule
    must reach that within 1 % (L2 from a random start: within the rule's own bound)."""
    model, x = _linear_pair()
    v = (model[1].weight[1] - model[1].weight[0]).detach()
    eps = 0.02 if norm == "linf" else 0.3
    best_gain = eps * (v.abs().sum() if norm == "linf" else v.norm())
    assert float((eps * v.abs() / v.norm()).max()) < 0.4 and eps < 0.4   # the box is inactive
    y = torch.zeros(len(x), dtype=torch.long)
    x_adv = pgd(model, x, y, norm=norm, eps=eps, steps=10, random_start=random_start)
    gain = _margin(model, x_adv) - _margin(model, x)
    assert torch.all(gain >= reach * best_gain), (gain / best_gain).tolist()
    assert torch.all(gain <= best_gain * (1 + 1e-4))          # and not beyond the ball
    delta = (x_adv - x).flatten(1)
    size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    assert torch.all(size <= eps * (1 + 1e-5))


def test_pgd_without_a_random_start_moves_by_its_steps_alone():
    """No random start: the whole gain comes from the gradient steps (a step that does
    nothing leaves the images where they are)."""
    model, x = _linear_pair(1)
    y = torch.zeros(len(x), dtype=torch.long)
    x_adv = pgd(model, x, y, norm="linf", eps=0.02, steps=10, random_start=False)
    v = (model[1].weight[1] - model[1].weight[0]).detach()
    gain = _margin(model, x_adv) - _margin(model, x)
    assert torch.all(gain >= 0.99 * 0.02 * v.abs().sum())


def test_targeted_pgd_moves_towards_the_target():
    model, x = _linear_pair(2)
    target = torch.ones(len(x), dtype=torch.long)      # raise class 1's logit over class 0's
    x_adv = pgd(model, x, target, norm="l2", eps=0.3, steps=10, targeted=True, random_start=False)
    v = (model[1].weight[1] - model[1].weight[0]).detach()
    gain = _margin(model, x_adv) - _margin(model, x)
    assert torch.all(gain >= 0.99 * 0.3 * v.norm())


# ----------------------------------------------------------------------------- intervals
def test_welch_interval_equals_scipys_with_unequal_variances_and_sizes():
    a = [0.91, 0.93, 0.90, 0.95, 0.97]
    b = [0.80, 0.86, 0.79]
    est = V.welch(a, b)
    ci = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert est.mean == pytest.approx(np.mean(a) - np.mean(b), abs=1e-12)
    assert est.low == pytest.approx(ci.low, rel=1e-9)
    assert est.high == pytest.approx(ci.high, rel=1e-9)


def test_paired_and_over_seeds_intervals_equal_scipys():
    a = [0.61, 0.58, 0.66, 0.57]
    b = [0.55, 0.57, 0.59, 0.50]
    est = V.paired(a, b)
    ci = stats.ttest_rel(a, b).confidence_interval(0.95)
    assert (est.low, est.high) == (pytest.approx(ci.low, rel=1e-9), pytest.approx(ci.high, rel=1e-9))
    one = V.over_seeds(a)
    ci1 = stats.ttest_1samp(a, 0.0).confidence_interval(0.95)
    assert (one.low, one.high) == (pytest.approx(ci1.low, rel=1e-9), pytest.approx(ci1.high, rel=1e-9))


def test_spearman_equals_scipys_and_is_zero_for_a_constant_series():
    x, y = [1.0, 2.0, 3.0, 4.0, 5.0], [2.0, 1.0, 4.0, 3.0, 5.0]
    assert V.spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic)
    assert V.spearman([1.0, 1.0, 1.0], y[:3]) == 0.0


def test_over_seeds_or_infinite():
    assert V.over_seeds_or_infinite([1.0, 2.0, 3.0]) == V.over_seeds([1.0, 2.0, 3.0])
    est = V.over_seeds_or_infinite([1.0, float("inf"), 3.0])
    assert est.mean == float("inf") and not est.measured and est.n == 3


# ----------------------------------------------------------------------------- training losses
def _losses_setup(monkeypatch):
    """A fixed linear 3-class model on 2x2 images, a batch, and the attack replaced by a fixed
    perturbation, so each loss can be written out by hand in numpy."""
    from stir_lib import training

    g = torch.Generator().manual_seed(3)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    with torch.no_grad():
        model[1].weight.copy_(torch.randn(3, 4, generator=g))
        model[1].bias.copy_(torch.randn(3, generator=g))
    x = torch.rand(5, 1, 2, 2, generator=g)
    y = torch.tensor([0, 1, 2, 1, 0])
    delta = 0.2 * (torch.rand(5, 1, 2, 2, generator=g) - 0.5)
    monkeypatch.setattr(training, "pgd", lambda model, xb, yb, **kw: (xb + delta).clamp(0, 1))
    W = model[1].weight.detach().double().numpy()
    b = model[1].bias.detach().double().numpy()

    def probs(images):
        z = images.flatten(1).double().numpy() @ W.T + b
        e = np.exp(z - z.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    p, q = probs(x), probs((x + delta).clamp(0, 1))       # clean, adversarial
    return training, model, x, y, p, q


def test_trades_loss_is_its_formula(monkeypatch):
    """TRADES (Zhang et al. 2019): CE(f(x), y) + beta * mean KL(p(x) || p(x_adv))."""
    training, model, x, y, p, q = _losses_setup(monkeypatch)
    cfg = training.TrainConfig(loss="trades", adv_eps=0.1, adv_steps=1, beta=6.0)
    got = float(training._adv_loss(model, x, y, cfg, 0).detach())
    n = np.arange(len(y))
    ce = -np.log(p[n, y]).mean()
    kl = (p * (np.log(p) - np.log(q))).sum(1).mean()
    assert got == pytest.approx(ce + 6.0 * kl, rel=1e-5)
    assert kl > 1e-3          # the robust term is really there (the fixture's delta moves p)
    reversed_kl = (q * (np.log(q) - np.log(p))).sum(1).mean()
    assert abs((ce + 6.0 * reversed_kl) - got) > 1e-4   # the KL's direction is told apart


def test_mart_loss_is_its_formula(monkeypatch):
    """MART (Wang et al. 2020): BCE(p(x_adv), y) + beta * mean KL(p(x) || p(x_adv)) (1 - p_y(x)),
    BCE = CE(f(x_adv), y) - log(1.0001 - max_{k != y} p_k(x_adv))."""
    training, model, x, y, p, q = _losses_setup(monkeypatch)
    cfg = training.TrainConfig(loss="mart", adv_eps=0.1, adv_steps=1, beta=6.0)
    got = float(training._adv_loss(model, x, y, cfg, 0).detach())
    n = np.arange(len(y))
    other = q.copy()
    other[n, y] = 0.0
    bce = -np.log(q[n, y]).mean() - np.log(1.0001 - other.max(1)).mean()
    kl = (p * (np.log(p) - np.log(q + 1e-12))).sum(1)          # the code guards log(0) with 1e-12
    want = bce + 6.0 * (kl * (1.0 - p[n, y])).mean()
    assert got == pytest.approx(want, rel=1e-5)
    unweighted = bce + 6.0 * kl.mean()
    assert abs(unweighted - got) > 1e-4        # the (1 - p_y) weight is told apart


# ----------------------------------------------------------------------------- inversion
def test_reference_inversion_takes_the_papers_normalised_step_of_0_5():
    """Nanda et al.'s procedure, one step written out: for a linear representation A z the
    relative distance ||A (z - x)|| / ||A x|| has the gradient direction A^T A (z - x), so
    one step from z0 lands at clamp(z0 - 0.5 u), u that direction normalised per image
    (L2 over the image). A halved or unnormalised step lands elsewhere."""
    from stir_lib.inversion import _DEFAULTS, invert

    assert _DEFAULTS["reference"] == (1000, 0.5)       # the paper: 1,000 steps of L2 size 0.5
    g = torch.Generator().manual_seed(4)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 6, bias=False))
    with torch.no_grad():
        model[1].weight.copy_(torch.randn(6, 16, generator=g))
    x = 0.25 + 0.5 * torch.rand(3, 1, 4, 4, generator=g)
    z0 = 0.25 + 0.5 * torch.rand(3, 1, 4, 4, generator=g)   # far from x: the step helps
    A = model[1].weight.detach().double()
    r = (z0 - x).flatten(1).double()
    direction = r @ A.T @ A
    u = direction / direction.norm(dim=1, keepdim=True)
    z1 = (z0.flatten(1).double() - 0.5 * u).clamp(0, 1)

    def dist(z):   # the relative representation distance of eq. (1)
        return ((z - x.flatten(1).double()) @ A.T).norm(dim=1) / (x.flatten(1).double() @ A.T).norm(dim=1)

    # each image keeps its best iterate: the step where it lowered the distance, else z0
    better = dist(z1) < dist(z0.flatten(1).double())
    assert better.any() and (~better).any()    # both cases occur in this fixture
    want = torch.where(better[:, None], z1, z0.flatten(1).double()).view_as(z0).float()
    got = invert(model, x, "output", method="reference", steps=1, start=z0)   # default step
    assert torch.allclose(got.x_prime, want, atol=1e-5)
    moved = (got.x_prime - z0).flatten(1).norm(dim=1)
    assert moved[better].tolist() == pytest.approx([0.5] * int(better.sum()), abs=1e-4)


# ----------------------------------------------------------------------------- CKA over batches
def test_linear_cka_sums_over_batches_equal_the_all_at_once_value():
    from stir_lib.batch_cka import LinearCKASums
    from stir_lib.similarity import linear_cka

    g = torch.Generator().manual_seed(5)
    X = torch.randn(1000, 12, generator=g, dtype=torch.float64)
    Y = X @ torch.randn(12, 7, generator=g, dtype=torch.float64) + \
        0.5 * torch.randn(1000, 7, generator=g, dtype=torch.float64) + 3.0   # offset: centring
    whole = linear_cka(X, Y)
    sums = LinearCKASums()
    for lo, hi in ((0, 1), (1, 333), (333, 640), (640, 1000)):     # uneven, one of one row
        sums.update(X[lo:hi], Y[lo:hi])
    assert sums.n == 1000
    assert sums.compute() == pytest.approx(whole, rel=1e-10)
    assert 0.1 < whole < 0.99
    with pytest.raises(ValueError, match="feature sizes"):
        sums.update(X[:5, :3], Y[:5])
    with pytest.raises(ValueError, match="at least 2 examples"):
        LinearCKASums().compute()


# ----------------------------------------------------------------------------- STIR results
def test_stir_returns_its_iris_and_a_result_saves_and_loads_exactly(tmp_path):
    from stir_lib.stir import STIRResult, stir

    torch.manual_seed(0)
    m1 = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 4))
    m2 = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 4))
    X = torch.rand(12, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    r = stir(m1, m2, X, seeds=(0, 1), steps=20, use_cache=False, return_iris=True)
    assert r.iris_m1.shape == (2, 12, 1, 4, 4) and r.iris_m2.shape == (2, 12, 1, 4, 4)
    assert not torch.equal(r.iris_m1[0], r.iris_m1[1])          # one set per seed
    assert float(r.iris_m1.min()) >= 0 and float(r.iris_m1.max()) <= 1   # in the box
    plain = stir(m1, m2, X, seeds=(0, 1), steps=20, use_cache=False)
    assert plain.iris_m1 is None and plain.m2_given_m1 == r.m2_given_m1
    path = tmp_path / "pair.pt"
    r.save(path)
    back = STIRResult.load(path)
    for name in ("m2_given_m1", "m1_given_m2", "cka", "seeds", "layer1", "layer2", "method",
                 "seed_kind", "n"):
        assert getattr(back, name) == getattr(r, name), name
    for name in ("distance_m1", "distance_m2", "evaluations_m1", "evaluations_m2", "iris_m1",
                 "iris_m2"):
        assert torch.equal(getattr(back, name), getattr(r, name)), name
