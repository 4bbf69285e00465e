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

Each claim rule has a :class:`RuleRecord` in its chapter's ``RULES``: the claim's words it
tests, the date it last changed and, for a rule changed in the current round, the verdict
the previous rule gave and why the rule changed (argued from the paper's claim).

The claim rules (``s1_...`` to ``r5_...``) live with their chapters, in
``stir_lib.chapters.<chapter>``, beside the paper values they compare with; each names
the quantity, the paper's effect, the thresholds and the noise floor in its docstring,
combines the rules of this module, and returns a :class:`Verdict` (the verdict and a
one-line reason) without printing.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

__all__ = ["VERDICTS", "Verdict", "Estimate", "over_seeds", "welch", "paired", "exact",
           "effect_rule", "sign_rule", "equivalence_rule", "at_most_rule", "not_tested",
           "combine", "spearman", "spearman_over_seeds", "over_seeds_or_infinite", "count_rule",
           "majority_rule", "RANK", "RuleRecord", "rule_records"]

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
class RuleRecord:
    """What a claim rule tests and when it last changed (the scorecard lists them).

    ``words``: the claim's words the rule tests (from ``PAPER_TARGETS.md``); ``changed``:
    the ISO date the rule last changed; ``previous``: for a rule changed in the current
    round, the verdict the old rule gave on the last build before the change (else None),
    ``previous_build`` which build that was, and ``why`` the rule changed, argued from the
    paper's claim, never from our result.
    """

    claim: str
    words: str
    changed: str
    previous: str | None = None
    previous_build: str = ""
    why: str = ""

    def __post_init__(self):
        import datetime

        if not self.claim or not self.words:
            raise ValueError(f"a rule record needs the claim's id and words, got "
                             f"claim={self.claim!r}, words={self.words!r}")
        try:
            datetime.date.fromisoformat(self.changed)
        except (TypeError, ValueError):
            raise ValueError(f"{self.claim}: changed: expected an ISO date such as "
                             f"'2026-12-06', got {self.changed!r}") from None
        if self.previous is not None:
            if self.previous not in VERDICTS:
                raise ValueError(f"{self.claim}: previous: expected one of {VERDICTS}, got "
                                 f"{self.previous!r}")
            if not self.why or not self.previous_build:
                raise ValueError(f"{self.claim}: a changed rule needs why it changed and the "
                                 f"build its previous verdict comes from")


def rule_records(*records: RuleRecord):
    """``claim -> RuleRecord``, read-only; one record per claim."""
    from types import MappingProxyType

    out = {}
    for r in records:
        if r.claim in out:
            raise ValueError(f"two rule records for {r.claim}")
        out[r.claim] = r
    return MappingProxyType(out)


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
    sd: float = float("nan")   # between-seed standard deviation (ddof=1) of one group of
    #                            seeds (over_seeds, paired, exact); NaN for a Welch difference

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


def over_seeds_or_infinite(values: Iterable[float], name: str = "values") -> Estimate:
    """:func:`over_seeds`, except that an infinite value (a seed whose attack never
    succeeded has no finite distortion) makes the mean infinite and the noise unmeasured."""
    a = np.asarray(list(values), float)
    if np.isfinite(a).all():
        return over_seeds(a, name)
    return Estimate(float("inf"), float("nan"), int(a.size))


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
        return Estimate(diff, 0.0, min(x.size, y.size))
    df = (vx + vy) ** 2 / (vx ** 2 / (x.size - 1) + vy ** 2 / (y.size - 1))
    return Estimate(diff, _t(df) * se, min(x.size, y.size))


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


#: Order of the tested verdicts, best first (for combining parts of a claim).
RANK = {"reproduced": 3, "partly": 2, "not reproduced": 1}


def combine(parts: Mapping[str, Verdict], *, how: str = "all") -> Verdict:
    """Combine the verdicts of a claim's parts.

    ``how="all"``: the claim needs every part. *Reproduced* only when every part was
    tested and reproduced; *not reproduced* when every tested part is not reproduced;
    *partly* otherwise: some part holds at least partly, or every tested part is
    reproduced but another was not tested (the reason names the untested parts: a claim
    of which a part was not tested is never "reproduced"). All parts "not tested" gives
    "not tested".
    """
    if how != "all":
        raise ValueError(f"how: expected 'all', got {how!r}")
    if not parts:
        raise ValueError("combine: expected at least one part, got none")
    tested = {k: v for k, v in parts.items() if v.verdict != "not tested"}
    untested = [k for k in parts if k not in tested]
    reason = "; ".join(f"{k}: {v.verdict}" for k, v in parts.items())
    if not tested:
        return not_tested(reason)
    ranks = [RANK[v.verdict] for v in tested.values()]
    if max(ranks) == 1:
        return Verdict("not reproduced", reason)
    if min(ranks) == 3 and not untested:
        return Verdict("reproduced", reason)
    if min(ranks) == 3:
        return Verdict("partly", f"{reason} (only {', '.join(tested)} tested)")
    return Verdict("partly", reason)


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation of two paired series; 0 (no relation) when either is
    constant. :func:`spearman_over_seeds` instead leaves such a seed out."""
    xs, ys = np.asarray(x, float), np.asarray(y, float)
    if np.ptp(xs) == 0 or np.ptp(ys) == 0:
        return 0.0
    return float(stats.spearmanr(xs, ys).statistic)


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
        rhos.append(spearman(xs, ys))
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
