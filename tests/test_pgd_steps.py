"""PGD step by step against a loop written by hand, and the attacks' small helpers.

Projected gradient descent (Madry et al. 2018): from a start in the eps-ball, steps of
length alpha along sign(grad) (Linf) or grad / ||grad||_2 (L2), each followed by the
projection onto the ball and onto the [0, 1] box. A hand loop gives the same iterates;
the random starts have the documented distributions (uniform in the Linf cube; in the L2
ball, a uniform direction at a radius whose d-th power is uniform); the default step is
2.5 eps / steps. Written against the mutation report (tests/mutation/REPORT.md).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import stats
from torch import nn

from stir_lib import attacks
from stir_lib.attacks import accuracy, gaussian_noise, pgd, predict, rms_distortion


def model_and_data(seed=0, n=6):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.Tanh(), nn.Linear(8, 3)).eval()
    g = torch.Generator().manual_seed(seed + 1)
    x = 0.2 + 0.6 * torch.rand(n, 3, 2, 2, generator=g)
    y = torch.randint(0, 3, (n,), generator=g)
    return model, x, y


def pgd_by_hand(model, x, y, norm, eps, steps, alpha, targeted=False, delta0=None):
    delta = torch.zeros_like(x) if delta0 is None else delta0.clone()
    delta = (x + delta).clamp(0, 1) - x
    for _ in range(steps):
        delta.requires_grad_(True)
        loss = F.cross_entropy(model(x + delta), y, reduction="sum")
        (g,) = torch.autograd.grad(-loss if targeted else loss, delta)
        with torch.no_grad():
            if norm == "linf":
                delta = (delta + alpha * g.sign()).clamp(-eps, eps)
            else:
                gn = g.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
                delta = delta + alpha * g / gn
                dn = delta.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
                delta = delta * torch.clamp(eps / dn, max=1.0)
            delta = (x + delta).clamp(0, 1) - x
    return (x + delta).detach()


@pytest.mark.parametrize("norm, eps, steps, alpha", [("linf", 0.1, 4, 0.03),
                                                     ("l2", 0.5, 5, 0.2),
                                                     ("l2", 0.3, 3, None),
                                                     ("linf", 0.05, 6, None)])
@pytest.mark.parametrize("targeted", [False, True])
def test_pgd_without_a_random_start_is_the_hand_loop(norm, eps, steps, alpha, targeted):
    model, x, y = model_and_data()
    got = pgd(model, x, y, norm=norm, eps=eps, steps=steps, step_size=alpha,
              random_start=False, targeted=targeted)
    want = pgd_by_hand(model, x, y, norm, eps, steps, alpha or 2.5 * eps / steps, targeted)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    moved = (got - x).flatten(1)
    size = moved.abs().amax(1) if norm == "linf" else moved.norm(dim=1)
    assert bool((size <= eps + 1e-6).all()) and bool((size > 0).all())


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_the_random_start_is_drawn_from_the_seeded_generator(norm):
    model, x, y = model_and_data()
    eps = 0.2
    g = torch.Generator().manual_seed(7)
    start = attacks._NORMS[norm].sample(x, eps, g)
    got = pgd(model, x, y, norm=norm, eps=eps, steps=3, step_size=0.05, seed=7)
    want = pgd_by_hand(model, x, y, norm, eps, 3, 0.05, delta0=start)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    assert not torch.equal(got, pgd(model, x, y, norm=norm, eps=eps, steps=3, step_size=0.05,
                                    seed=8))


def test_linf_start_is_uniform_in_the_cube():
    x = torch.zeros(2000, 1, 2, 2)
    d = attacks._linf_sample(x, 0.3, torch.Generator().manual_seed(0)).flatten()
    assert float(d.abs().max()) <= 0.3 and float(d.min()) < -0.29 and float(d.max()) > 0.29
    assert stats.kstest(d.numpy() / 0.3, "uniform", args=(-1, 2)).pvalue > 1e-3


@pytest.mark.parametrize("shape", [(1, 2, 2), (3, 4, 4)])
def test_l2_start_is_uniform_in_the_ball(shape):
    """Uniform in the d-ball: the radius r has (r / eps)^d uniform on [0, 1], the direction
    uniform on the sphere (its coordinates average to 0)."""
    x = torch.zeros((4000,) + shape, dtype=torch.float64)
    d = attacks._l2_sample(x, 0.5, torch.Generator().manual_seed(1)).flatten(1)
    r = d.norm(dim=1) / 0.5
    dim = int(np.prod(shape))
    assert float(r.max()) <= 1.0 + 1e-12
    assert stats.kstest((r ** dim).numpy(), "uniform").pvalue > 1e-3
    unit = d / d.norm(dim=1, keepdim=True)
    assert float(unit.mean(0).abs().max()) < 4 / np.sqrt(4000)


def test_zero_radius_or_zero_steps_return_a_copy():
    model, x, y = model_and_data()
    for kw in (dict(eps=0.0), dict(eps=0.1, steps=0)):
        out = pgd(model, x, y, **kw)
        assert torch.equal(out, x) and out is not x


def test_a_custom_loss_is_ascended():
    model, x, y = model_and_data()
    seen = []

    def margin(logits, t):
        seen.append(logits.shape)
        return logits.gather(1, t[:, None]).squeeze(1)       # ascend the true logit

    out = pgd(model, x, y, eps=0.3, steps=4, random_start=False, loss=margin)
    with torch.no_grad():
        before = model(x).gather(1, y[:, None])
        after = model(out).gather(1, y[:, None])
    assert len(seen) == 4 and bool((after > before).all())


def test_the_box_binds_at_the_edges():
    model, _, y = model_and_data()
    x = torch.ones(6, 3, 2, 2)
    x[:, 0] = 0.0
    out = pgd(model, x, y, norm="linf", eps=0.5, steps=3, random_start=True)
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


# ----------------------------------------------------------------------------- helpers
def test_rms_distortion_is_the_root_mean_square_per_image():
    x = torch.zeros(2, 1, 2, 2)
    xa = x.clone()
    xa[0, 0, 0, 0] = 0.4
    xa[1] = 0.3
    torch.testing.assert_close(rms_distortion(x, xa), torch.tensor([0.2, 0.3]))


def test_gaussian_noise_is_seeded_clipped_and_of_its_std():
    x = torch.full((200, 1, 10, 10), 0.5)
    a, b = gaussian_noise(x, 0.1, seed=3), gaussian_noise(x, 0.1, seed=3)
    assert torch.equal(a, b) and not torch.equal(a, gaussian_noise(x, 0.1, seed=4))
    assert float((a - x).std()) == pytest.approx(0.1, rel=0.02)
    assert float((a - x).mean()) == pytest.approx(0.0, abs=0.003)
    wide = gaussian_noise(x, 2.0)
    assert float(wide.min()) == 0.0 and float(wide.max()) == 1.0
    want = (x + 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(3))).clamp(0, 1)
    assert torch.equal(a, want)


def test_predict_and_accuracy_in_batches():
    model, x, y = model_and_data(n=9)
    with torch.no_grad():
        want = model(x).argmax(1)
    for b in (1, 4, 9, 100):
        assert torch.equal(predict(model, x, batch_size=b), want)
    assert accuracy(model, x, y, batch_size=2) == pytest.approx(float((want == y).float().mean()))
    empty = predict(model, x[:0])
    assert empty.shape == (0,) and empty.dtype == torch.long
    assert attacks._device(nn.ReLU()) == torch.device("cpu")


def test_eval_mode_restores_the_mode():
    m = nn.Sequential(nn.Dropout())
    m.train()
    with attacks.eval_mode(m):
        assert not m.training
    assert m.training
    m.eval()
    with attacks.eval_mode(m):
        pass
    assert not m.training


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_a_random_start_outside_the_box_is_clipped_before_the_first_gradient(norm):
    model, x, y = model_and_data()
    x = (x > 0.5).float()                                     # every pixel at 0 or 1
    g = torch.Generator().manual_seed(2)
    start = attacks._NORMS[norm].sample(x, 0.4, g)
    got = pgd(model, x, y, norm=norm, eps=0.4, steps=2, step_size=0.1, seed=2)
    want = pgd_by_hand(model, x, y, norm, 0.4, 2, 0.1, delta0=start)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


def test_pgd_defaults():
    model, x, y = model_and_data()
    torch.testing.assert_close(
        pgd(model, x, y, eps=0.3),
        pgd(model, x, y, eps=0.3, norm="l2", steps=10, step_size=0.075, random_start=True,
            targeted=False, seed=0), rtol=0, atol=0)
    assert torch.equal(gaussian_noise(x, 0.1), gaussian_noise(x, 0.1, seed=0))


def test_pgd_names_the_bad_argument():
    model, x, y = model_and_data()
    with pytest.raises(ValueError, match=r"^norm: expected one of"):
        pgd(model, x, y, norm="l1", eps=0.1)
    with pytest.raises(ValueError, match=r"^eps: expected a value >= 0"):
        pgd(model, x, y, eps=-0.1)
    with pytest.raises(ValueError, match=r"^x: expected an image batch"):
        pgd(model, x[0], y, eps=0.1)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_random_starts_keep_the_images_dtype_and_work_for_one_image(norm):
    x64 = torch.rand(3, 1, 2, 2, dtype=torch.float64)
    d = attacks._NORMS[norm].sample(x64, 0.1, torch.Generator().manual_seed(0))
    assert d.dtype == torch.float64 and d.shape == x64.shape
    one = attacks._NORMS[norm].sample(x64[:1], 0.1, torch.Generator().manual_seed(0))
    assert one.shape == (1, 1, 2, 2)
    assert float(one.flatten(1).norm(dim=1).max() if norm == "l2" else one.abs().max()) <= 0.1
