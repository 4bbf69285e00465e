"""The shared statistics and generic verdict rules of stir_lib.verdicts: every rule can
return each of its verdicts, and returns the right one (the claim rules are tested in
tests/test_claims.py).

For each rule: the paper's own numbers (with their reported spreads) give "reproduced";
a null input (identical groups, an effect of zero with the measured noise, a shuffled
order) gives "not reproduced"; inputs just inside and just outside each threshold give
the neighbouring verdicts; an absent premise gives "not tested". The tests assert the
verdict itself.
"""

from __future__ import annotations

import numpy as np
import pytest

from stir_lib import verdicts as V


def seeds(mean, sd=0.01, n=3):
    """n per-seed values with exactly this mean and sample sd."""
    base = np.array([-1.0, 0.0, 1.0]) if n == 3 else np.linspace(-1, 1, n)
    base = base / base.std(ddof=1)
    return (mean + sd * base).tolist()


def est(mean, half_width):
    return V.Estimate(mean, half_width, 3)


# ----------------------------------------------------------------------------- estimates
def test_over_seeds_is_the_t_interval():
    e = V.over_seeds([1.0, 2.0, 3.0])
    assert e.mean == 2.0 and e.sd == pytest.approx(1.0)
    assert e.half_width == pytest.approx(4.302653 / np.sqrt(3), rel=1e-5)   # t(0.975, 2)
    assert not V.over_seeds([1.0]).measured


def test_welch_and_paired_differ_as_they_should():
    a, b = [1.0, 2.0, 3.0], [1.1, 2.1, 3.1]
    p = V.paired(a, b)
    assert p.mean == pytest.approx(-0.1) and p.half_width == pytest.approx(0.0, abs=1e-12)
    w = V.welch(a, b)
    assert w.mean == pytest.approx(-0.1) and w.half_width > 1.0     # unpaired: seed spread counts
    with pytest.raises(ValueError, match="same length"):
        V.paired([1, 2], [1, 2, 3])


# ----------------------------------------------------------------------------- generic rules
@pytest.mark.parametrize("mean, hw, verdict", [
    (0.35, 0.01, "reproduced"),          # the paper's size
    (0.0, 0.05, "not reproduced"),       # null
    (0.176, 0.01, "reproduced"),         # just above half of 0.35
    (0.174, 0.01, "partly"),             # just below half
    (0.071, 0.01, "partly"),             # just above a fifth
    (0.069, 0.01, "not reproduced"),     # just below a fifth
    (0.05, 0.051, "not reproduced"),     # interval touches 0
    (-0.3, 0.01, "not reproduced"),      # the wrong sign
])
def test_effect_rule_thresholds(mean, hw, verdict):
    assert V.effect_rule(est(mean, hw), 0.35, what="x").verdict == verdict


def test_effect_rule_without_noise_is_not_tested():
    assert V.effect_rule(V.over_seeds([0.3]), 0.35, what="x").verdict == "not tested"


@pytest.mark.parametrize("mean, hw, verdict", [
    (0.0, 0.05, "reproduced"), (0.048, 0.05, "reproduced"), (0.052, 0.05, "partly"),
    (0.0, 0.11, "partly"),
    (0.2, 0.05, "not reproduced"), (-0.2, 0.09, "not reproduced")])
def test_equivalence_rule(mean, hw, verdict):
    assert V.equivalence_rule(est(mean, hw), 0.1, what="d").verdict == verdict


@pytest.mark.parametrize("mean, hw, verdict", [
    (1.0, 1.0, "reproduced"), (4.9, 0.05, "reproduced"), (4.9, 0.2, "partly"),
    (9.9, 0.2, "not reproduced"), (9.0, 0.9, "partly"), (20.0, 1.0, "not reproduced")])
def test_at_most_rule(mean, hw, verdict):
    assert V.at_most_rule(est(mean, hw), 5, 10, what="q").verdict == verdict


def test_count_and_majority_rules():
    up, flat, down = est(0.1, 0.01), est(0.0, 0.01), est(-0.1, 0.01)
    assert V.count_rule({"a": up, "b": up}, what="c").verdict == "reproduced"
    assert V.count_rule({"a": up, "b": flat}, what="c").verdict == "partly"
    assert V.count_rule({"a": up, "b": flat, "c": flat}, what="c").verdict == "not reproduced"
    assert V.count_rule({"a": up, "b": down}, what="c").verdict == "not reproduced"
    assert V.majority_rule({"a": up, "b": up, "c": flat}, what="m").verdict == "reproduced"
    assert V.majority_rule({"a": up, "b": flat, "c": flat}, what="m").verdict == "partly"
    assert V.majority_rule({"a": up, "b": down, "c": down}, what="m").verdict == "not reproduced"
    assert V.majority_rule({"a": flat, "b": flat}, what="m").verdict == "not reproduced"


def test_combine():
    r, p, n, t = (V.Verdict(v, "x") for v in V.VERDICTS)
    assert V.combine({"a": r, "b": r}).verdict == "reproduced"
    assert V.combine({"a": r, "b": n}).verdict == "partly"
    assert V.combine({"a": n, "b": n}).verdict == "not reproduced"
    # a claim with an untested part is never "reproduced" (rule of 2026-12-06; before: it was)
    assert V.combine({"a": r, "b": t}).verdict == "partly"
    assert V.combine({"a": n, "b": t}).verdict == "not reproduced"
    assert V.combine({"a": p, "b": t}).verdict == "partly"
    assert V.combine({"a": p, "b": p}).verdict == "partly"
    assert V.combine({"a": t, "b": t}).verdict == "not tested"
    assert V.combine({"a": r}).verdict == "reproduced"
    with pytest.raises(ValueError, match="at least one part"):
        V.combine({})
