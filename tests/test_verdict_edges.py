"""The generic rules of stir_lib.verdicts at their exact boundaries, and the reasons they print.

tests/test_verdicts.py drives every rule to each verdict from inside its regions; these
tests pin what sits *on* each threshold (a rule's docstring says ">=" or "<=", and an
off-by-one comparison would move a verdict that the scorecard prints), and the full
one-line reason of each rule: the reason is what a reader of the scorecard sees beside the
verdict, so its numbers, digits and units are part of the result. Written against the
mutation report (tests/mutation/REPORT.md), whose surviving mutants these kill.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from stir_lib import verdicts as V


def est(mean, half_width, n=3):
    return V.Estimate(mean, half_width, n)


# ----------------------------------------------------------------------------- estimates
def test_values_are_floats_and_counted():
    e = V.over_seeds(np.array([1, 2, 4], dtype=np.int64))
    assert e.n == 3 and e.values == (1.0, 2.0, 4.0)
    assert all(type(v) is float for v in e.values)
    one = V.over_seeds([2])
    assert one.n == 1 and one.values == (2.0,) and math.isnan(one.half_width)
    two = V.over_seeds([1.0, 3.0])            # two seeds already measure the noise
    assert two.measured and two.n == 2 and two.values == (1.0, 3.0)
    assert two.half_width == pytest.approx(12.706205 * math.sqrt(2) / math.sqrt(2), rel=1e-6)


def test_exact_is_a_point_with_zero_width():
    e = V.exact(2.5)
    assert (e.mean, e.half_width, e.n, e.values, e.sd) == (2.5, 0.0, 1, (2.5,), 0.0)
    assert e.measured and e.low == e.high == 2.5


def test_bad_values_name_the_argument():
    with pytest.raises(ValueError, match=r"^values: expected a non-empty sequence"):
        V.over_seeds([])
    with pytest.raises(ValueError, match=r"^values: expected a non-empty"):
        V.over_seeds([[1.0, 2.0], [3.0, 4.0]])          # 2-D, not empty
    with pytest.raises(ValueError, match=r"^distortion: expected a non-empty"):
        V.over_seeds_or_infinite([[1.0, 2.0]], "distortion")
    with pytest.raises(ValueError, match=r"^values: expected a non-empty"):
        V.over_seeds_or_infinite([[1.0, 2.0]])
    with pytest.raises(ValueError, match=r"^a: expected finite"):
        V.welch([1.0, float("nan")], [1.0, 2.0])
    with pytest.raises(ValueError, match=r"^b: expected finite"):
        V.welch([1.0, 2.0], [1.0, float("inf")])
    with pytest.raises(ValueError, match=r"^a: expected finite"):
        V.paired([1.0, float("nan")], [1.0, 2.0])
    with pytest.raises(ValueError, match=r"^b: expected finite"):
        V.paired([1.0, 2.0], [float("nan"), 2.0])


def test_an_infinite_seed_makes_the_mean_infinite():
    e = V.over_seeds_or_infinite([1.0, float("inf"), 2.0])
    assert e.mean == float("inf") and not e.measured and e.n == 3
    finite = V.over_seeds_or_infinite([1.0, 2.0, 3.0])
    assert finite == V.over_seeds([1.0, 2.0, 3.0]) and finite.values == (1.0, 2.0, 3.0)


def test_paired_keeps_the_differences():
    p = V.paired([3.0, 5.0, 4.0], [1.0, 2.0, 4.0])
    assert p.values == (2.0, 3.0, 0.0) and p.n == 3


# ----------------------------------------------------------------------------- verdicts
def test_verdict_rejects_unknown_words_and_empty_reasons():
    with pytest.raises(ValueError, match=r"expected one of .*'not tested'.*got 'maybe'"):
        V.Verdict("maybe", "a reason")
    with pytest.raises(ValueError, match="one-line reason"):
        V.Verdict("partly", "")


# ----------------------------------------------------------------------------- effect_rule
def test_effect_rule_boundaries():
    paper = 0.5      # half of it (0.25) and a fifth (0.1) are exact in binary
    # exactly half the paper's size (beyond noise) is reproduced, exactly a fifth is partly
    assert V.effect_rule(est(0.25, 0.01), paper, what="x").verdict == "reproduced"
    assert V.effect_rule(est(0.1, 0.01), paper, what="x").verdict == "partly"
    # fractions: partly_fraction == fraction is allowed; zero or above fraction is not
    assert V.effect_rule(est(0.25, 0.01), paper, what="x", fraction=0.5,
                         partly_fraction=0.5).verdict == "reproduced"
    with pytest.raises(ValueError, match="partly_fraction"):
        V.effect_rule(est(0.2, 0.01), paper, what="x", partly_fraction=0.0)
    with pytest.raises(ValueError, match="partly_fraction"):
        V.effect_rule(est(0.2, 0.01), paper, what="x", partly_fraction=0.6)
    # the paper's effect must have the predicted sign and cannot be zero
    for bad in (0.0, -0.4):
        with pytest.raises(ValueError, match="predicted sign"):
            V.effect_rule(est(0.2, 0.01), bad, what="x")
    assert V.effect_rule(est(-0.3, 0.01), -0.4, what="x", sign=-1).verdict == "reproduced"


def test_effect_rule_reasons():
    r = V.effect_rule(est(0.3, 0.05), 0.4, what="gap")
    assert r.reason == ("gap +0.300 (95% CI ±0.050, n=3) vs the paper's +0.400: beyond "
                        "noise, >= 0.5 of the paper's")
    r = V.effect_rule(est(0.1, 0.05), 0.4, what="gap", digits=2)
    assert r.reason == ("gap +0.10 (95% CI ±0.05, n=3) vs the paper's +0.40: beyond noise "
                        "but < 0.5 of the paper's")
    r = V.effect_rule(est(0.06, 0.05), 0.4, what="gap")
    assert r.reason.endswith(": beyond noise but < 0.2 of the paper's size")
    r = V.effect_rule(est(0.06, 0.1), 0.4, what="gap")
    assert r.reason.endswith(": not beyond seed noise")
    r = V.effect_rule(est(0.06, float("nan"), 1), 0.4, what="gap")
    assert r == V.Verdict("not tested", "gap: one seed only, so the noise between models "
                                        "is not measured (+0.060)")


# ----------------------------------------------------------------------------- sign_rule
def test_sign_rule_reasons():
    assert V.sign_rule(est(0.3, 0.1), what="d").reason == (
        "d +0.300 (95% CI ±0.100, n=3): beyond noise in the paper's direction")
    assert V.sign_rule(est(0.3, 0.4), what="d").reason == (
        "d +0.300 (95% CI ±0.400, n=3): not beyond noise in the paper's direction")
    assert V.sign_rule(est(-0.3, 0.1), what="d", sign=-1).verdict == "reproduced"
    assert V.sign_rule(est(0.3, float("nan"), 1), what="d") == V.Verdict(
        "not tested", "d: one seed only, noise not measured")


# ----------------------------------------------------------------------------- equivalence
def test_equivalence_rule_boundaries():
    # (binary-exact numbers, so that each interval ends exactly on the margin)
    # an interval that touches the margin from inside is equivalent
    assert V.equivalence_rule(est(0.0, 0.5), 0.5, what="e").verdict == "reproduced"
    assert V.equivalence_rule(est(0.25, 0.25), 0.5, what="e").verdict == "reproduced"
    assert V.equivalence_rule(est(-0.25, 0.25), 0.5, what="e").verdict == "reproduced"
    # an interval that starts exactly at the margin is not wholly outside it
    assert V.equivalence_rule(est(0.75, 0.25), 0.5, what="e").verdict == "partly"
    assert V.equivalence_rule(est(-0.75, 0.25), 0.5, what="e").verdict == "partly"
    assert V.equivalence_rule(est(-1.0, 0.25), 0.5, what="e").verdict == "not reproduced"
    assert V.equivalence_rule(est(-0.25, 0.625), 0.5, what="e").verdict == "partly"
    with pytest.raises(ValueError, match="margin"):
        V.equivalence_rule(est(0.0, 0.1), 0.0, what="e")


def test_equivalence_rule_reasons():
    assert V.equivalence_rule(est(0.01, 0.02), 0.1, what="e").reason == (
        "e +0.010, 95% CI [-0.010, +0.030] (n=3), margin ±0.1: equivalent within the margin")
    assert V.equivalence_rule(est(0.5, 0.02), 0.1, what="e").reason.endswith(
        ": differs by more than the margin")
    assert V.equivalence_rule(est(0.1, 0.02), 0.1, what="e").reason.endswith(
        ": interval crosses the margin")
    assert V.equivalence_rule(est(0.1, float("nan"), 1), 0.1, what="e") == V.Verdict(
        "not tested", "e: noise not measured")


# ----------------------------------------------------------------------------- at_most_rule
def test_at_most_rule_boundaries():
    assert V.at_most_rule(est(0.75, 0.25), 1.0, 2.0, what="m").verdict == "reproduced"
    assert V.at_most_rule(est(1.75, 0.25), 1.0, 2.0, what="m").verdict == "partly"
    assert V.at_most_rule(est(1.75, 0.5), 1.0, 2.0, what="m").verdict == "not reproduced"
    assert V.at_most_rule(est(0.5, 0.1), 1.0, 1.0, what="m").verdict == "reproduced"
    # noise unmeasured: a mean beyond partly_max is already too large; at it, not tested
    assert V.at_most_rule(est(2.5, float("nan"), 1), 1.0, 2.0, what="m").verdict == \
        "not reproduced"
    assert V.at_most_rule(est(2.0, float("nan"), 1), 1.0, 2.0, what="m").verdict == "not tested"


def test_at_most_rule_reasons():
    assert V.at_most_rule(est(0.5, 0.1), 1.0, 2.0, what="m").reason == (
        "m 0.500 (upper 95% bound 0.600) <= 1")
    assert V.at_most_rule(est(1.5, 0.1), 1.0, 2.0, what="m", unit=" px", digits=1).reason == (
        "m 1.5 px (upper 95% bound 1.6 px) <= 2 px but > 1 px")
    assert V.at_most_rule(est(2.5, 0.1), 1.0, 2.0, what="m").reason == (
        "m 2.500 (upper 95% bound 2.600) > 2")
    assert V.at_most_rule(est(2.5, float("nan"), 1), 1.0, 2.0, what="m", unit="%") == V.Verdict(
        "not reproduced", "m 2.500% > 2% even without noise")
    assert V.at_most_rule(est(1.5, float("nan"), 1), 1.0, 2.0, what="m") == V.Verdict(
        "not tested", "m: noise not measured")


# ----------------------------------------------------------------------------- combine
def test_combine_reason_lists_every_part():
    parts = {"a": V.Verdict("reproduced", "r"), "b": V.Verdict("not tested", "r")}
    assert V.combine(parts) == V.Verdict("partly", "a: reproduced; b: not tested (only a tested)")
    parts["c"] = V.Verdict("reproduced", "r")
    assert V.combine(parts).reason.endswith("(only a, c tested)")


# ----------------------------------------------------------------------------- counts
def test_count_rule_boundaries_and_reason():
    cells = {"x": est(0.2, 0.1), "y": est(0.05, 0.01), "z": est(0.0, 0.1)}
    # an effect exactly at min_effect counts
    v = V.count_rule(cells, what="c", min_effect=0.05)
    assert v == V.Verdict("partly", "c: beyond noise in the paper's direction in 2 of 3 cells "
                                    "(x, y), the other way in 0 (effects under 0.05 count "
                                    "for neither)")
    wrong = {"x": est(0.2, 0.1), "y": est(-0.05, 0.01)}
    v = V.count_rule(wrong, what="c", min_effect=0.05)
    assert v == V.Verdict("not reproduced", "c: beyond noise in the paper's direction in 1 "
                                            "of 2 cells (x), the other way in 1 (effects "
                                            "under 0.05 count for neither)")
    v = V.count_rule({"x": est(0.0, 0.1)}, what="c")
    assert v == V.Verdict("not reproduced", "c: beyond noise in the paper's direction in 0 "
                                            "of 1 cells (none), the other way in 0")
    assert V.count_rule({"x": est(0.0, float("nan"), 1)}, what="c") == V.Verdict(
        "not tested", "c: noise not measured")


def test_majority_rule_boundaries_and_reason():
    # exactly half the cells is not a majority
    half = {"x": est(0.2, 0.1), "y": est(0.0, 0.1)}
    assert V.majority_rule(half, what="m") == V.Verdict(
        "partly", "m: beyond noise in the paper's direction on 1 of 2 (x), the other way on 0")
    tie = {"x": est(0.2, 0.1), "y": est(-0.2, 0.1), "z": est(0.0, 0.1)}
    assert V.majority_rule(tie, what="m").verdict == "not reproduced"
    three = {"x": est(0.2, 0.1), "y": est(0.2, 0.1), "z": est(0.0, 0.1), "w": est(0.0, 0.1),
             "v": est(0.2, 0.1)}
    assert V.majority_rule(three, what="m") == V.Verdict(                # 3 of 5
        "reproduced", "m: beyond noise in the paper's direction on 3 of 5 (x, y, v), the "
                      "other way on 0")
    assert V.majority_rule({"x": est(0.0, 0.1)}, what="m").reason == (
        "m: beyond noise in the paper's direction on 0 of 1 (none), the other way on 0")
    assert V.majority_rule({"x": est(0.0, float("nan"), 1)}, what="m") == V.Verdict(
        "not tested", "m: noise not measured")


# ----------------------------------------------------------------------------- welch edges
def test_welch_with_a_single_value_leaves_the_noise_unmeasured():
    for a, b in (([1.0], [0.5, 0.7]), ([1.0, 1.2], [0.5])):
        w = V.welch(a, b)
        assert w.mean == pytest.approx(np.mean(a) - np.mean(b)) and w.n == 1
        assert not w.measured and not w.beyond_noise()


def test_welch_with_constant_groups():
    both = V.welch([2.0, 2.0, 2.0], [1.0, 1.0])
    assert (both.mean, both.half_width, both.n) == (1.0, 0.0, 2) and both.beyond_noise()
    # one constant group: Welch's degrees of freedom are the other group's n - 1
    a, b = [1.0, 1.0, 1.0, 1.0], [0.2, 0.5, 0.3]
    w = V.welch(a, b)
    se = np.std(b, ddof=1) / np.sqrt(3)
    assert w.half_width == pytest.approx(4.302652729911275 * se, rel=1e-9)      # t(0.975, 2)
    w2 = V.welch(b, a)
    assert w2.half_width == pytest.approx(w.half_width, rel=1e-12) and w2.mean == -w.mean
    assert math.isnan(w.sd)           # a difference of two groups has no between-seed sd


def test_welch_with_two_seeds_on_one_side_is_measured():
    from scipy import stats
    a, b = [1.0, 2.0], [0.0, 0.5, 1.5]
    w = V.welch(a, b)
    ci = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert w.measured and w.n == 2
    assert (w.low, w.high) == (pytest.approx(ci.low, rel=1e-9), pytest.approx(ci.high, rel=1e-9))
    assert V.welch(b, a).n == 2


def test_unmeasured_noise_is_never_beyond_it():
    e = V.Estimate(5.0, float("nan"), 1)
    assert not e.beyond_noise(+1) and not e.beyond_noise(-1)
    assert V.Estimate(-0.5, 0.25, 3).beyond_noise(-1) and not V.Estimate(-0.5, 0.25, 3).beyond_noise(+1)
    # an interval that ends at 0 does not exclude it, on either side
    assert not V.Estimate(-0.5, 0.5, 3).beyond_noise(-1)
    assert not V.Estimate(0.5, 0.5, 3).beyond_noise(+1)


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
def test_paired_differences_that_overflow_are_refused():
    with pytest.raises(ValueError, match=r"^paired differences: expected finite"):
        V.paired([1e308, 1.0], [-1e308, 0.0])


# ----------------------------------------------------------------------------- spearman
def test_spearman_is_zero_for_a_constant_second_series():
    assert V.spearman([1.0, 2.0, 3.0], [4.0, 4.0, 4.0]) == 0.0
    assert V.spearman([1.0, 2.0, 3.0], [2.0, 3.0, 3.5]) == pytest.approx(1.0)


def test_spearman_over_seeds_skips_constant_and_short_series():
    # skipped seeds come first and between: a skipped seed does not end the loop
    x = [[1.0, 1.0, 1.0], [0.0, 1.0, 2.0, 3.0], [0.0, 1.0], [0.0, 1.0, 2.0, 3.0], [0, 1, 2]]
    y = [[1.0, 2.0, 3.0], [1.0, 2.0, 4.0, 3.0], [1.0, 2.0], [4.0, 3.0, 2.0, 1.0], [5, 5, 5]]
    e = V.spearman_over_seeds(x, y)
    assert e.n == 2 and e.values == pytest.approx((0.8, -1.0))
    ref = V.over_seeds([0.8, -1.0])
    assert (e.mean, e.half_width) == (pytest.approx(ref.mean), pytest.approx(ref.half_width))
    none = V.spearman_over_seeds([[1.0, 1.0, 1.0]], [[1.0, 2.0, 3.0]])
    assert math.isnan(none.mean) and not none.measured and none.n == 0
    with pytest.raises(ValueError, match="^spearman: expected finite"):
        V.spearman_over_seeds([[0.0, 1.0, 2.0]], [[0.0, 1.0, float("nan")]])
