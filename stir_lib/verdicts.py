"""Verdict rules: how the book decides "reproduced", "partly", "not reproduced" or "not tested".

A verdict is a claim about evidence, so every rule here compares an effect *of the paper's
kind* with the paper's size of it, and with the noise measured between independently
trained models (model seeds), not only between repeated measurements of one model.

The building block is :class:`Estimate`: a mean with the half-width of its 95 %
confidence interval, from per-seed values (Student's t, ``ddof=1``), from a Welch
two-sample comparison, or from paired differences. An effect is *beyond noise* when its
interval excludes zero on the side the claim predicts. With fewer than two seeds the
noise is not measured and a rule that needs it returns "not tested".

Three generic rules cover most claims:

* :func:`effect_rule`: the claim predicts an effect of a given sign and the paper reports
  its size ``E_p``. *Reproduced*: beyond noise and at least ``fraction`` (default 0.5) of
  ``E_p``; *partly*: beyond noise and at least ``partly_fraction`` (default 0.2) of
  ``E_p``; *not reproduced* otherwise (no effect beyond noise, the wrong sign, or under a
  fifth of the paper's size).
* :func:`sign_rule`: the same where the paper reports the direction but no number:
  *reproduced* beyond noise, *not reproduced* otherwise (no "partly" without a size).
* :func:`equivalence_rule`: the claim says two things do *not* differ. *Reproduced*
  when the whole interval lies within ±margin; *not reproduced* when it lies wholly
  outside; *partly* in between.

The claim rules below (``s1_...`` to ``r5_...``) name the quantity, the paper's effect,
the thresholds and the noise floor in their docstrings, and combine the generic rules.
Each returns a :class:`Verdict` (the verdict and a one-line reason) and never prints.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

__all__ = ["VERDICTS", "Verdict", "Estimate", "over_seeds", "welch", "paired", "exact",
           "effect_rule", "sign_rule", "equivalence_rule", "at_most_rule", "not_tested",
           "combine", "spearman_over_seeds"]

VERDICTS = ("reproduced", "partly", "not reproduced", "not tested")
_CONF = 0.95


@dataclass(frozen=True)
class Verdict:
    """A verdict and its one-line reason."""

    verdict: str
    reason: str

    def __post_init__(self):
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict: expected one of {VERDICTS}, got {self.verdict!r}")
        if not self.reason:
            raise ValueError("a verdict needs a one-line reason, got an empty string")


@dataclass(frozen=True)
class Estimate:
    """A measured quantity: ``mean`` ± ``half_width`` (95 % confidence), from ``n`` seeds.

    ``half_width`` is NaN when the noise was not measured (fewer than two seeds) and 0
    for an exact value (a paper's number taken as given). ``values`` keeps the per-seed
    values when there are any. Build with :func:`over_seeds`, :func:`welch`,
    :func:`paired` or :func:`exact`.
    """

    mean: float
    half_width: float
    n: int
    values: tuple[float, ...] = field(default=(), compare=False)
    sd: float = float("nan")   # between-seed standard deviation (ddof=1) where defined

    @property
    def measured(self) -> bool:
        """True when the noise is known (a finite half-width)."""
        return math.isfinite(self.half_width)

    @property
    def low(self) -> float:
        return self.mean - self.half_width

    @property
    def high(self) -> float:
        return self.mean + self.half_width

    def beyond_noise(self, sign: int = +1) -> bool:
        """The interval excludes 0 on the side of ``sign`` (False when noise is unknown)."""
        if not self.measured:
            return False
        return self.low > 0 if sign > 0 else self.high < 0

    def __str__(self) -> str:
        return self.format()

    def format(self, digits: int = 3, unit: str = "") -> str:
        """``mean ± half-width (n seeds)``; the half-width is a 95 % interval."""
        if not self.measured:
            return f"{self.mean:.{digits}f}{unit} (n = {self.n}, noise not measured)"
        if self.half_width == 0 and self.n <= 1:
            return f"{self.mean:.{digits}f}{unit}"
        return f"{self.mean:.{digits}f}{unit} ± {self.half_width:.{digits}f} (n = {self.n})"


def _t(df: float) -> float:
    return float(stats.t.ppf(0.5 + _CONF / 2, df))


def _finite(values, name: str) -> np.ndarray:
    a = np.asarray(list(values), dtype=float)
    if a.ndim != 1 or a.size == 0:
        raise ValueError(f"{name}: expected a non-empty sequence of numbers, got {values!r}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name}: expected finite numbers, got {a.tolist()}")
    return a


def over_seeds(values: Iterable[float], name: str = "values") -> Estimate:
    """Mean of per-seed values with a Student-t 95 % half-width (sd with ddof=1).

    Each value must come from an independently trained model (or replicate of a
    zoo); one value gives an :class:`Estimate` whose noise is not measured.
    """
    a = _finite(values, name)
    n = a.size
    if n < 2:
        return Estimate(float(a.mean()), float("nan"), n, tuple(a.tolist()))
    sd = float(a.std(ddof=1))
    return Estimate(float(a.mean()), _t(n - 1) * sd / math.sqrt(n), n, tuple(a.tolist()), sd)


def exact(value: float) -> Estimate:
    """A number taken as given (half-width 0), e.g. a paper's point value."""
    return Estimate(float(value), 0.0, 1, (float(value),), 0.0)


def welch(a: Iterable[float], b: Iterable[float]) -> Estimate:
    """mean(a) - mean(b) with Welch's 95 % half-width (unequal variances, ddof=1).

    For groups of independently trained models that are not paired. Either group with a
    single value leaves the noise unmeasured (half-width NaN).
    """
    x, y = _finite(a, "a"), _finite(b, "b")
    diff = float(x.mean() - y.mean())
    if x.size < 2 or y.size < 2:
        return Estimate(diff, float("nan"), min(x.size, y.size))
    vx, vy = x.var(ddof=1) / x.size, y.var(ddof=1) / y.size
    se = math.sqrt(vx + vy)
    if se == 0:
        return Estimate(diff, 0.0, min(x.size, y.size), sd=0.0)
    df = (vx + vy) ** 2 / ((vx ** 2 / (x.size - 1) if vx else 0.0)
                           + (vy ** 2 / (y.size - 1) if vy else 0.0))
    return Estimate(diff, _t(df) * se, min(x.size, y.size), sd=se * math.sqrt(2))


def paired(a: Iterable[float], b: Iterable[float]) -> Estimate:
    """Mean of the paired differences a_i - b_i (same seed or same replicate), t interval."""
    x, y = _finite(a, "a"), _finite(b, "b")
    if x.size != y.size:
        raise ValueError(f"paired: expected two sequences of the same length, got {x.size} "
                         f"and {y.size}; use welch() for unpaired groups")
    return over_seeds(x - y, "paired differences")


def not_tested(reason: str) -> Verdict:
    """The claim's premise is absent at this scale (no residual net, one width, ...)."""
    return Verdict("not tested", reason)


def _fmt(v: float, digits: int) -> str:
    return f"{v:+.{digits}f}"


def effect_rule(ours: Estimate, paper_effect: float, *, what: str, sign: int = +1,
                fraction: float = 0.5, partly_fraction: float = 0.2,
                digits: int = 3) -> Verdict:
    """Judge an effect the paper reports with a size.

    ``ours`` is the measured effect (with its between-seed 95 % interval), oriented so
    that the claim predicts ``sign`` (+1: positive); ``paper_effect`` is the paper's
    value of the same quantity (same orientation, so ``sign * paper_effect > 0``).

    * *reproduced*: ``sign * ours`` beyond noise and >= ``fraction`` x |paper|;
    * *partly*: beyond noise and >= ``partly_fraction`` x |paper|;
    * *not reproduced*: not beyond noise, the wrong sign, or smaller;
    * *not tested*: the noise was not measured (fewer than two seeds).
    """
    if sign * paper_effect <= 0:
        raise ValueError(f"{what}: expected the paper's effect {paper_effect} to have the "
                         f"predicted sign {sign:+d}")
    if not 0 < partly_fraction <= fraction:
        raise ValueError(f"expected 0 < partly_fraction <= fraction, got {partly_fraction} "
                         f"and {fraction}")
    size = abs(paper_effect)
    val = sign * ours.mean
    where = (f"{what} {_fmt(ours.mean, digits)} (95% CI ±{ours.half_width:.{digits}f}, "
             f"n={ours.n}) vs the paper's {_fmt(paper_effect, digits)}")
    if not ours.measured:
        return not_tested(f"{what}: one seed only, so the noise between models is not "
                          f"measured ({_fmt(ours.mean, digits)})")
    if not ours.beyond_noise(sign):
        return Verdict("not reproduced", f"{where}: not beyond seed noise")
    if val >= fraction * size:
        return Verdict("reproduced", f"{where}: beyond noise, >= {fraction:g} of the paper's")
    if val >= partly_fraction * size:
        return Verdict("partly", f"{where}: beyond noise but < {fraction:g} of the paper's")
    return Verdict("not reproduced", f"{where}: beyond noise but < {partly_fraction:g} of "
                                     f"the paper's size")


def sign_rule(ours: Estimate, *, what: str, sign: int = +1, digits: int = 3) -> Verdict:
    """Judge a direction the paper reports without a number: reproduced when beyond noise in
    the predicted direction, not reproduced otherwise, not tested without a noise floor."""
    where = f"{what} {_fmt(ours.mean, digits)} (95% CI ±{ours.half_width:.{digits}f}, n={ours.n})"
    if not ours.measured:
        return not_tested(f"{what}: one seed only, noise not measured")
    if ours.beyond_noise(sign):
        return Verdict("reproduced", f"{where}: beyond noise in the paper's direction")
    return Verdict("not reproduced", f"{where}: not beyond noise in the paper's direction")


def equivalence_rule(ours: Estimate, margin: float, *, what: str, digits: int = 3) -> Verdict:
    """Judge a claim that two things do not differ (an equivalence, TOST-style).

    *Reproduced*: the 95 % interval of the difference lies within ±``margin``; *not
    reproduced*: it lies wholly outside (a difference larger than the margin, beyond
    noise); *partly*: otherwise (the data cannot tell); *not tested* without noise.
    """
    if margin <= 0:
        raise ValueError(f"margin: expected > 0, got {margin}")
    where = (f"{what} {_fmt(ours.mean, digits)}, 95% CI [{ours.low:+.{digits}f}, "
             f"{ours.high:+.{digits}f}] (n={ours.n}), margin ±{margin:g}")
    if not ours.measured:
        return not_tested(f"{what}: noise not measured")
    if -margin <= ours.low and ours.high <= margin:
        return Verdict("reproduced", f"{where}: equivalent within the margin")
    if ours.low > margin or ours.high < -margin:
        return Verdict("not reproduced", f"{where}: differs by more than the margin")
    return Verdict("partly", f"{where}: interval crosses the margin")


def at_most_rule(ours: Estimate, reproduced_max: float, partly_max: float, *, what: str,
                 digits: int = 3, unit: str = "") -> Verdict:
    """Judge a quantity the claim says is small: its upper 95 % bound against two limits.

    *Reproduced*: upper bound <= ``reproduced_max``; *partly*: <= ``partly_max``; *not
    reproduced*: larger. A quantity with unmeasured noise is judged by its mean only
    where the mean already exceeds ``partly_max`` (then "not reproduced"), else "not tested".
    """
    if not reproduced_max <= partly_max:
        raise ValueError(f"expected reproduced_max <= partly_max, got {reproduced_max} and "
                         f"{partly_max}")
    if not ours.measured:
        if ours.mean > partly_max:
            return Verdict("not reproduced", f"{what} {ours.mean:.{digits}f}{unit} > "
                                             f"{partly_max:g}{unit} even without noise")
        return not_tested(f"{what}: noise not measured")
    top = ours.high
    where = f"{what} {ours.mean:.{digits}f}{unit} (upper 95% bound {top:.{digits}f}{unit})"
    if top <= reproduced_max:
        return Verdict("reproduced", f"{where} <= {reproduced_max:g}{unit}")
    if top <= partly_max:
        return Verdict("partly", f"{where} <= {partly_max:g}{unit} but > {reproduced_max:g}{unit}")
    return Verdict("not reproduced", f"{where} > {partly_max:g}{unit}")


_RANK = {"reproduced": 3, "partly": 2, "not reproduced": 1}


def combine(parts: Mapping[str, Verdict], *, how: str = "all") -> Verdict:
    """Combine the verdicts of a claim's parts.

    ``how="all"``: the claim needs every part. Reproduced when all are; not reproduced
    when all parts are not reproduced; partly otherwise (some part holds at least
    partly). Parts that are "not tested" are left out; all "not tested" gives "not tested".
    """
    if how != "all":
        raise ValueError(f"how: expected 'all', got {how!r}")
    tested = {k: v for k, v in parts.items() if v.verdict != "not tested"}
    reason = "; ".join(f"{k}: {v.verdict}" for k, v in parts.items())
    if not tested:
        return not_tested(reason)
    ranks = [_RANK[v.verdict] for v in tested.values()]
    if min(ranks) == 3:
        return Verdict("reproduced", reason)
    if max(ranks) == 1:
        return Verdict("not reproduced", reason)
    return Verdict("partly", reason)


def spearman_over_seeds(x: Sequence[Sequence[float]], y: Sequence[Sequence[float]]) -> Estimate:
    """Spearman correlation of x and y computed within each seed, as an :class:`Estimate`.

    ``x[s]`` and ``y[s]`` are the paired series of seed ``s`` (e.g. source accuracy and
    transfer accuracy across eps). A seed whose series is constant is skipped.
    """
    rhos = []
    for xs, ys in zip(x, y):
        xs, ys = np.asarray(xs, float), np.asarray(ys, float)
        if xs.size < 3 or np.ptp(xs) == 0 or np.ptp(ys) == 0:
            continue
        rhos.append(float(stats.spearmanr(xs, ys).statistic))
    if not rhos:
        return Estimate(float("nan"), float("nan"), 0)
    return over_seeds(rhos, "spearman")


def count_rule(cells: Mapping[str, Estimate], *, what: str, sign: int = +1,
               min_effect: float = 0.0) -> Verdict:
    """Judge "consistently": every cell's effect beyond noise in the predicted direction.

    A cell counts for (against) the claim when its interval excludes 0 on the predicted
    (opposite) side *and* its mean is at least ``min_effect`` in size: a difference of
    1e-4 between two saturated scores is beyond noise but says nothing either way.
    *Reproduced*: all cells; *partly*: at least half of them and none against;
    *not reproduced*: otherwise; *not tested*: no cell has a noise floor.
    """
    measured = {k: v for k, v in cells.items() if v.measured}
    if not measured:
        return not_tested(f"{what}: noise not measured")
    right = [k for k, v in measured.items() if v.beyond_noise(sign) and abs(v.mean) >= min_effect]
    wrong = [k for k, v in measured.items() if v.beyond_noise(-sign) and abs(v.mean) >= min_effect]
    reason = (f"{what}: beyond noise in the paper's direction in {len(right)} of "
              f"{len(measured)} cells ({', '.join(right) or 'none'}), the other way in "
              f"{len(wrong)}" + (f" (effects under {min_effect:g} count for neither)"
                                 if min_effect else ""))
    if len(right) == len(measured):
        return Verdict("reproduced", reason)
    if 2 * len(right) >= len(measured) and not wrong:
        return Verdict("partly", reason)
    return Verdict("not reproduced", reason)


# =============================================================================== claims
# Szegedy et al. 2014 ------------------------------------------------------------------
def s1_units_vs_random(purity_difference: Estimate, margin: float = 0.1) -> Verdict:
    """S1: units are no more semantically coherent than random directions.

    Quantity: mean label purity of the top-k held-out images along each unit minus along
    each random direction, one value per independently trained network (seed). The paper
    reports no number ("equally coherent", Figures 1-2), i.e. a difference of 0.
    Equivalence margin ±0.1 of purity (a tenth of its scale, visible by eye): reproduced
    when the 95 % interval over seeds lies inside it (see :func:`equivalence_rule`).
    """
    return equivalence_rule(purity_difference, margin,
                            what="purity difference, units - random directions")


def s2_adversarial_examples(success: Mapping[str, Estimate], ratio: Mapping[str, Estimate]
                            ) -> Verdict:
    """S2: every model has adversarial examples at small distortion.

    Quantities per model (over seeds): the attack's success rate (fraction of attacked
    images reaching their target) and the mean minimum distortion divided by the paper's
    (Table 1: 0.058-0.14 RMS). *Reproduced*: every model's success >= 0.99 and the upper
    95 % bound of its ratio <= 1.5 (not more perceptible than the paper's); *partly*:
    success >= 0.9 and ratio <= 3; *not reproduced*: otherwise (a model the attack cannot
    fool, or only with distortions three times the paper's). The verdict is the weakest
    model's.
    """
    if set(success) != set(ratio) or not success:
        raise ValueError("s2: expected success and ratio for the same, non-empty set of models")
    per = {}
    for m in success:
        top, s_min = ratio[m].high if ratio[m].measured else ratio[m].mean, min(
            success[m].values or (success[m].mean,))
        per[m] = ("reproduced" if s_min >= 0.99 and top <= 1.5 else
                  "partly" if s_min >= 0.9 and top <= 3 else "not reproduced")
    worst = min(per.values(), key=lambda v: _RANK[v])
    bad = [m for m, v in per.items() if v == worst] if worst != "reproduced" else []
    ratios = ", ".join(f"{m} {ratio[m].mean:.2f}" for m in ratio)
    return Verdict(worst, f"success >= {min(min(e.values or (e.mean,)) for e in success.values()):.2f}"
                          f" on every model; distortion / paper's: {ratios}"
                          + (f"; weakest: {', '.join(bad)}" if bad else ""))


def s3_cross_model(excess: Estimate, paper_excess: float) -> Verdict:
    """S3: many adversarial examples made for one model are misclassified by others.

    Quantity: the median over Table 2's 30 off-diagonal cells of (cell - the fed model's
    error under Gaussian noise of std 0.1), in points, one value per seed (each seed a
    fresh set of the six models). Paper: :func:`stir_lib.paper.t2_transfer_effect` (7.8
    points; median cell 21.9 %). :func:`effect_rule` with half the paper's effect.
    """
    return effect_rule(excess, paper_excess, what="median transfer above noise (points)",
                       digits=1)


def s4_cross_training_set(excess: Estimate, paper_excess: float) -> Verdict:
    """S4: many adversarial examples transfer to a model trained on a disjoint half.

    Quantity: the median over Table 4's four P1 <-> P2 cells of the magnified sets (RMS
    0.1) of (cell - the fed model's error under noise of std 0.1), one value per seed.
    Paper: :func:`stir_lib.paper.t4_transfer_effect` (32.4 points). :func:`effect_rule`.
    """
    return effect_rule(excess, paper_excess,
                       what="median disjoint-half transfer above noise (points)", digits=1)


def s5_noise(increase: Estimate) -> Verdict:
    """S5: Gaussian noise of the same or larger distortion barely changes the error.

    Quantity: the largest increase of a model's error (points) under Gaussian noise of
    std 0.1 (and 0.06 on the P1/P2 models) over its error on the same clean images, over
    all models, one value per seed. Paper: at most 0.7 points (Table 2's noise row minus
    Table 1). *Reproduced*: upper 95 % bound <= 5 points; *partly*: <= 10; else not.
    """
    return at_most_rule(increase, 5.0, 10.0, what="largest error increase under noise",
                        digits=1, unit=" pts")


def s6_adversarial_training(error_drop: Estimate, paper_drop: float) -> Verdict:
    """S6: training on adversarial examples lowers the test error of a 100-100-10 net.

    Quantity: test error with weight decay only minus test error with adversarial
    training (points), paired by seed. Paper: 1.6 % -> below 1.2 % (a drop of at least
    0.4 points; section 4.2). :func:`effect_rule` with half the paper's drop.
    """
    return effect_rule(error_drop, paper_drop, what="test-error drop (points)", digits=2)


def s7_first_layer(gain_above_one: Estimate) -> Verdict:
    """S7 (first layers): instability can start in the first layer.

    Quantity: the largest observed gain ||phi_1(x + r) - phi_1(x)|| / ||r|| of the first
    stage along the attack's adversarial perturbations, minus 1, one value per trained
    conv net (seed): a measured amplification, not the bound (which is > 1 for almost any
    layer). Paper: Conv. 1's bound 2.75 (Table 5), no observed gain. :func:`sign_rule`.
    """
    return sign_rule(gain_above_one, what="first-stage gain - 1")


def s7_alexnet(ratios: Sequence[float] | None) -> Verdict:
    """S7 (Table 5): AlexNet's per-layer upper bounds.

    Quantity: our bound of each of the 8 conv/FC layers divided by the paper's (Table 5),
    for torchvision's pretrained AlexNet. *Reproduced*: every ratio in [2/3, 1.5];
    *partly*: in [1/3, 3]; else not. No weights: not tested.
    """
    if ratios is None:
        return not_tested("no AlexNet ImageNet weights in this build (nothing is downloaded)")
    r = np.asarray(list(ratios), float)
    where = f"ratios ours / paper's {', '.join(f'{v:.2f}' for v in r)}"
    if ((r >= 2 / 3) & (r <= 1.5)).all():
        return Verdict("reproduced", f"{where}: all within [2/3, 1.5]")
    if ((r >= 1 / 3) & (r <= 3)).all():
        return Verdict("partly", f"{where}: all within [1/3, 3]")
    return Verdict("not reproduced", f"{where}: some outside [1/3, 3]")


# Nanda et al. 2022 --------------------------------------------------------------------
def n1_seed_pairs(v_stir: Sequence[float], v_cka: Sequence[float], a_stir: Sequence[float],
                  paper: Mapping[str, float]) -> Verdict:
    """N1: vanilla pairs have high CKA but much lower STIR; AT pairs have high STIR.

    Quantities, one value per pair of seeds of one architecture (both STIR directions
    averaged): (a) vanilla CKA - vanilla STIR (paired); (b) AT STIR - vanilla STIR
    (Welch). Paper (its ResNet18 pair table): (a) 0.384, (b) 0.353. Each part by
    :func:`effect_rule` (half the paper's effect reproduces it); both needed. The pairs
    of three seeds share models, so their spread is a lower bound on the noise.
    """
    a = paired(v_cka, v_stir)
    b = welch(a_stir, v_stir)
    return combine({
        "CKA - STIR (vanilla)": effect_rule(a, paper["cka_minus_stir"], what="CKA - STIR"),
        "AT - vanilla STIR": effect_rule(b, paper["at_minus_vanilla"], what="AT - V STIR"),
    })


def n2_adversarial_blocks(at_minus_v: Estimate, paper_effect: float) -> Verdict:
    """N2: adversarial training gives higher STIR across architectures.

    Quantity: mean cross-architecture STIR of the AT block minus that of the V block,
    one value per replicate of the zoo (the models of one seed). Paper (poster matrix):
    :func:`stir_lib.paper.nanda_blocks` (0.45). :func:`effect_rule`.
    """
    return effect_rule(at_minus_v, paper_effect, what="AT - V cross-architecture STIR")


def n3_residual_reference(diffs: Mapping[str, Estimate] | None,
                          paper: Mapping[str, float]) -> Verdict:
    """N3: STIR is higher when a residual network is the reference (rows read as references).

    Quantity per block (AT, V): mean cross-architecture STIR of the rows whose reference
    is residual minus that of the other rows, one value per replicate. Paper (poster):
    AT 0.115, V 0.097. :func:`effect_rule` per block; both needed. No residual network in
    the zoo: not tested.
    """
    if diffs is None:
        return not_tested("no residual network in the zoo at this scale")
    return combine({k: effect_rule(v, paper[k], what=f"{k}: residual - other rows")
                    for k, v in diffs.items()})


def n4_layers(parts: Mapping[str, Mapping[str, Estimate]]) -> Verdict:
    """N4: shared invariance drops for later layers, less for AT; STIR drops more than CKA.

    Per architecture, three quantities over seed pairs: (i) vanilla STIR at the first
    layer minus at the last; (ii) the vanilla drop minus the AT drop (Welch); (iii) the
    vanilla STIR drop minus the vanilla CKA drop. The paper gives a figure, no numbers:
    each part by :func:`sign_rule`; all three needed per architecture, and every
    architecture for "reproduced".
    """
    per = {arch: combine({k: sign_rule(v, what=k) for k, v in p.items()})
           for arch, p in parts.items()}
    out = combine(per)
    detail = "; ".join(f"{arch}: " + ", ".join(
        f"{k} {v.mean:+.3f}±{v.half_width:.3f}" for k, v in p.items()) for arch, p in parts.items())
    return Verdict(out.verdict, detail)


def n5_at_higher(cells: Mapping[str, Estimate]) -> Verdict:
    """N5: across layers and random initialisations, AT pairs have higher STIR.

    Quantity per (architecture, layer): AT pairs' STIR minus vanilla pairs' (Welch over
    seed pairs). No paper number: :func:`count_rule` ("consistently"), where a difference
    under 0.01 (a hundredth of STIR's scale, e.g. two pairs both at 0.999 on a first
    layer) counts for neither side.
    """
    return count_rule(cells, what="AT - V STIR per architecture and layer", min_effect=0.01)


def n6_losses(robust_spread: Estimate, seed_minus_loss: Estimate) -> Verdict:
    """N6: TRADES, MART and PGD-AT models are about equally robust, yet share only a
    moderate part of their invariances.

    Quantities: (a) the spread (max - min, points) of the three losses' robust accuracy,
    one value per seed: similar when its upper 95 % bound is <= 5 points (partly <= 10);
    (b) STIR between AT seed pairs minus STIR between different losses of one seed
    (Welch): changing the loss costs more shared invariance than changing the seed
    (:func:`sign_rule`; the paper gives no number). Both needed.
    """
    return combine({
        "similar robustness": at_most_rule(robust_spread, 5.0, 10.0,
                                           what="robust-accuracy spread", digits=1, unit=" pts"),
        "moderate STIR": sign_rule(seed_minus_loss, what="AT seed-pair STIR - cross-loss STIR"),
    })


def n7_updates(series: Sequence[Sequence[float]]) -> Verdict:
    """N7: updating a model with more data raises STIR monotonically, with diminishing
    returns.

    ``series[s][k]``: STIR (both directions averaged) between the k-th model of seed s's
    update chain and its update. (a) rise: last minus first (paired over seeds,
    :func:`sign_rule`); (b) monotone: no step falls beyond noise; (c) diminishing: the
    first step's change exceeds the last step's. *Reproduced*: all three; *partly*: (a)
    without (b) or (c); *not reproduced*: no rise beyond noise.
    """
    a = np.asarray(series, float)
    if a.ndim != 2 or a.shape[1] < 3:
        raise ValueError(f"series: expected (seeds, >= 3 steps), got shape {a.shape}")
    rise = over_seeds(a[:, -1] - a[:, 0])
    steps = {f"step {k + 1}": over_seeds(a[:, k + 1] - a[:, k]) for k in range(a.shape[1] - 1)}
    dim = over_seeds((a[:, 1] - a[:, 0]) - (a[:, -1] - a[:, -2]))
    if not rise.measured:
        return not_tested("one chain only: noise not measured")
    up = rise.beyond_noise(+1)
    monotone = not any(v.beyond_noise(-1) for v in steps.values())
    diminishing = dim.beyond_noise(+1)
    reason = (f"rise {rise.mean:+.3f}±{rise.half_width:.3f}, "
              f"{'no step falls' if monotone else 'a step falls'} beyond noise, "
              f"first minus last step {dim.mean:+.3f}±{dim.half_width:.3f}")
    if up and monotone and diminishing:
        return Verdict("reproduced", reason)
    if up:
        return Verdict("partly", reason)
    return Verdict("not reproduced", reason)


def majority_rule(cells: Mapping[str, Estimate], *, what: str, sign: int = +1) -> Verdict:
    """Judge "on most": *reproduced* when more than half the cells are beyond noise in the
    predicted direction and none the other way; *partly* when at least one is and more go
    the predicted way than the other; *not reproduced* otherwise."""
    measured = {k: v for k, v in cells.items() if v.measured}
    if not measured:
        return not_tested(f"{what}: noise not measured")
    right = [k for k, v in measured.items() if v.beyond_noise(sign)]
    wrong = [k for k, v in measured.items() if v.beyond_noise(-sign)]
    reason = (f"{what}: beyond noise in the paper's direction on {len(right)} of "
              f"{len(measured)} ({', '.join(right) or 'none'}), the other way on {len(wrong)}")
    if 2 * len(right) > len(measured) and not wrong:
        return Verdict("reproduced", reason)
    if right and len(right) > len(wrong):
        return Verdict("partly", reason)
    return Verdict("not reproduced", reason)


# Salman et al. 2020 -------------------------------------------------------------------
def r1_robust_transfer(gains: Mapping[str, Estimate]) -> Verdict:
    """R1: robust sources transfer better than standard ones on most downstream sets.

    Quantity per task (one mode): test accuracy from the source at the best eps > 0
    (chosen on validation) minus from the eps-0 source, paired by seed (points). Paper:
    robust better on most of 12 sets (ResNet-50 fixed-feature CIFAR-10 +17.0 points).
    :func:`majority_rule` over the tasks.
    """
    return majority_rule(gains, what="best robust - standard test accuracy")


def r2_best_eps_differs(losses: Mapping[str, Estimate], best: Mapping[str, float]) -> Verdict:
    """R2: the best eps depends on the downstream set.

    ``best``: each task's best eps (validation); ``losses``: for each ordered pair of tasks
    (A, B) whose best eps differ, A's test accuracy at its own best eps minus at B's,
    paired by seed. *Reproduced*: some task loses beyond noise at another's best eps;
    *partly*: the best eps differ but no loss is beyond noise; *not reproduced*: one best
    eps for every task.
    """
    if len(set(best.values())) < 2:
        return Verdict("not reproduced", "every task has the same best eps "
                                         f"({next(iter(best.values())):g})")
    beyond = [k for k, v in losses.items() if v.beyond_noise(+1)]
    where = "best eps " + ", ".join(f"{t} {e:g}" for t, e in best.items())
    if beyond:
        return Verdict("reproduced", f"{where}; loss at another task's best eps beyond noise "
                                     f"for {', '.join(beyond)}")
    return Verdict("partly", f"{where}; no loss at another task's best eps is beyond noise")


def r3_granularity(shifts: Mapping[str, Estimate], untestable: Sequence[str] = ()) -> Verdict:
    """R3: downscaling a downstream set makes its best eps larger.

    Quantity per task whose coarse copy differs from it: the best eps (per seed, on
    validation) of the coarse copy minus that of the full-resolution task. Tasks whose
    images the downscale does not change are left out (their copy is the same task).
    :func:`majority_rule`; no testable task: not tested.
    """
    if not shifts:
        return not_tested("no task whose images the downscale changes" +
                          (f" ({', '.join(untestable)} unchanged)" if untestable else ""))
    return majority_rule(shifts, what="best eps coarse - full")


def r4_source_accuracy(fixed_eps: Estimate | None, across_eps: Estimate | None) -> Verdict:
    """R4: at fixed eps, better source accuracy means better transfer; across eps the
    linear relation between source and transfer accuracy breaks.

    (a) ``fixed_eps``: Spearman correlation between source accuracy and transfer accuracy
    across sources of the same eps (widths), per seed, averaged over tasks; positive beyond
    noise. (b) ``across_eps``: the same across eps (one width); the relation breaks when it
    is negative beyond noise (robust sources less accurate but transferring better). Each
    by :func:`sign_rule`; None where the sources' accuracies do not differ (premise
    absent: not tested).
    """
    parts = {}
    parts["fixed eps"] = (not_tested("sources of one eps do not differ in accuracy")
                          if fixed_eps is None else
                          sign_rule(fixed_eps, what="Spearman, fixed eps", sign=+1))
    parts["across eps"] = (not_tested("source accuracy does not change with eps")
                           if across_eps is None else
                           sign_rule(across_eps, what="Spearman, across eps", sign=-1))
    out = combine(parts)
    return Verdict(out.verdict, "; ".join(f"{k}: {v.reason}" for k, v in parts.items()))


def r5_width(gain_growth: Mapping[str, Estimate] | None) -> Verdict:
    """R5: the gains from robustness grow with network width.

    Quantity per task: (robust - standard transfer accuracy) of the widest source minus
    that of the narrowest, paired by seed. :func:`majority_rule`; one width: not tested.
    """
    if not gain_growth:
        return not_tested("sources of one width only")
    return majority_rule(gain_growth, what="robust gain, widest - narrowest")
