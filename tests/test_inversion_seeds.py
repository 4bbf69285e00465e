"""The starts of an inversion and invert's documented defaults, against independent answers.

`seeds` draws x'_0 in [0, 1] and maps it to another box by lo + (hi - lo) u; it takes any
floating batch (N, ...) with N >= 1 (>= 2 for "shuffle"), a pool of any size >= 1, and
returns x's dtype. `invert`'s defaults (seed 0, patience 10, the flattened layer) are
pinned by behaviour, and a start is checked as the model's own input. Written against
the mutation report (tests/mutation/REPORT.md).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from stir_lib import inversion as inv
from stir_lib.models import ImageModel


def images(n=4, seed=1, shape=(1, 4, 4), dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.rand((n,) + shape, generator=g).to(dtype)


def linear_model(d_in=16, d_out=5):
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(d_in, d_out)).eval()


@pytest.mark.parametrize("kind", ["noise", "uniform", "constant"])
def test_another_box_is_the_unit_draw_mapped_affinely(kind):
    x = images(200)
    unit = inv.seeds(kind, x, 3)
    assert float(unit.min()) >= 0.0 and float(unit.max()) <= 1.0
    mapped = inv.seeds(kind, x, 3, box=(-1.0, 2.0))
    torch.testing.assert_close(mapped, -1.0 + 3.0 * unit)
    shifted = inv.seeds(kind, x, 3, box=(1.0, 3.0))                  # low 1: not the unit box
    torch.testing.assert_close(shifted, 1.0 + 2.0 * unit)
    half = inv.seeds(kind, x, 3, box=(0.0, 2.0))                     # high 2
    torch.testing.assert_close(half, 2.0 * unit)


def test_uniform_starts_fill_the_box():
    u = inv.seeds("uniform", images(500), 1, box=(-1.0, 2.0))
    assert -1.0 <= float(u.min()) < -0.99 and 1.99 < float(u.max()) <= 2.0
    assert float(u.mean()) == pytest.approx(0.5, abs=0.02)


def test_the_default_seed_is_zero():
    x = images(8)                                   # 7! cycles: two seeds differ
    for kind in ("noise", "uniform", "constant", "shuffle"):
        assert torch.equal(inv.seeds(kind, x), inv.seeds(kind, x, 0))
        assert not torch.equal(inv.seeds(kind, x), inv.seeds(kind, x, 1))
    model = linear_model()
    a, b = inv.invert(model, x, steps=2), inv.invert(model, x, steps=2, seed=0)
    assert torch.equal(a.initial_distance, b.initial_distance)
    assert not torch.equal(a.initial_distance, inv.invert(model, x, steps=2, seed=1).initial_distance)


def test_any_floating_batch_and_small_pools_and_pairs_are_accepted():
    flat = torch.rand(5, 3)                                            # (N, D): 2-D is a batch
    assert inv.seeds("uniform", flat, 0).shape == (5, 3)
    pair = images(2)
    assert torch.equal(inv.seeds("shuffle", pair, 0), pair.flip(0))   # the only derangement of 2
    one = images(1, seed=9)
    starts = inv.seeds("pool", images(3), 0, pool=one)                # a pool of one image
    assert all(torch.equal(s, one[0]) for s in starts)
    wide = inv.seeds("pool", images(3), 0, pool=images(6, seed=2, dtype=torch.float64))
    assert wide.dtype == torch.float32
    assert inv.seeds("uniform", images(3, dtype=torch.float64), 0).dtype == torch.float64


def test_bad_seed_inputs_are_named():
    x = images()
    with pytest.raises(ValueError, match=r"^seed_kind: expected one of"):
        inv.seeds("gauss", x, 0)
    for bad in ([[0.5]], torch.zeros(3, 2, dtype=torch.long), torch.zeros(3)):
        with pytest.raises(TypeError, match=r"^x: expected a floating-point batch"):
            inv.seeds("uniform", bad, 0)
    for bad in (True, 1.0, "1"):
        with pytest.raises(TypeError, match=r"^seed: expected an int"):
            inv.seeds("uniform", x, bad)
    with pytest.raises(ValueError, match=r"^pool: expected images of shape \(M, 1, 4, 4\)"):
        inv.seeds("pool", x, 0, pool=x.numpy())
    with pytest.raises(ValueError, match=r"^pool: expected images of shape \(M, 1, 4, 4\)"):
        inv.seeds("pool", x, 0, pool=torch.rand(3, 1, 5, 5))
    with pytest.raises(ValueError, match=r"pool"):
        inv.seeds("pool", x, 0, pool=x[:0])
    with pytest.raises(ValueError, match=r"at least 2 images"):
        inv.seeds("shuffle", x[:1], 0)
    for box in [(1.0, 1.0), (1.0, 0.0)]:
        with pytest.raises(ValueError, match=r"^box: expected \(low, high\) with low < high"):
            inv.seeds("uniform", x, 0, box=box)


def test_fast_stops_after_four_plateaus_of_ten_steps_by_default():
    """Started at the targets nothing improves: the first check sets the mark, the next
    four cut, so a sample stops after 5 x patience = 50 evaluations by default."""
    model, x = linear_model(), images()
    r = inv.invert(model, x, method="fast", start=x.clone(), steps=200)
    assert r.evaluations.tolist() == [50] * len(x)


def test_mean_pooled_inversion_scores_the_mean_pooled_distance():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Flatten(),
                          nn.Linear(48, 2)).eval()
    x = images(3)
    r = inv.invert(model, x, "1", steps=3, spatial="mean")
    want = inv.relative_distance(model, r.x_prime, x, "1", spatial="mean")
    torch.testing.assert_close(r.distance, want.float(), rtol=1e-5, atol=1e-7)
    flat = inv.relative_distance(model, r.x_prime, x, "1", spatial="flatten")
    assert not torch.allclose(flat.float(), r.distance, rtol=1e-3)
    h = inv._rep(model, x, "1")                                       # the default: flattened
    assert h.shape == (3, 48)


def test_a_start_is_checked_as_the_model_s_own_input():
    image_model = ImageModel([("flatten", nn.Flatten()), ("fc", nn.Linear(16, 4))],
                             nn.Linear(4, 2), (1, 4, 4))
    x = images(2)
    with pytest.raises(ValueError, match=r"^start: expected images of size \(4, 4\)"):
        inv.invert(image_model, x, steps=1, start=torch.rand(2, 1, 5, 5))
    model = linear_model()
    with pytest.raises(ValueError, match=r"^start: expected values in the box \[0, 1\]"):
        inv.invert(model, x, steps=1, start=x + 2.0)
    wide = (-0.5 + x).clamp(-1.0, 2.0)                                 # valid in [-1, 2] only
    r = inv.invert(model, x, steps=1, start=wide, box=(-1.0, 2.0))
    assert r.seed_kind == "start"


def test_constant_starts_are_one_grey_per_image():
    """"constant": every pixel of a start is the same value, drawn once per image, so a
    batch of images (more images than channels) gets different greys."""
    x = torch.rand(5, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    s = inv.seeds("constant", x, seed=2)
    flat = s.flatten(1)
    assert torch.equal(flat, flat[:, :1].expand_as(flat))          # one value per image
    assert len(set(flat[:, 0].tolist())) == 5                        # a grey each
