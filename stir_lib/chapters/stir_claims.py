"""The STIR chapters' paper numbers and claim rules N1-N6 (Nanda et al. 2022).

The paper's values (its pair table, the poster's STIR and CKA matrices) and the quantities
computed from them the way :mod:`stir_lib.chapters.stir` computes ours, and the rules that
judge N1-N6 (N7 sits with its update chain in :mod:`stir_lib.chapters.stir`, whose
``RULES`` record every rule). :mod:`stir_lib.chapters.stir` re-exports all of it, so the
notebooks read everything from there.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType

import numpy as np
import pandas as pd

from ..verdicts import (Estimate, Verdict, at_most_rule, combine, count_rule, effect_rule,
                        not_tested, over_seeds, paired, sign_rule, welch)

__all__ = ["NANDA_N1", "NANDA_NAMES", "NANDA_STIR", "NANDA_CKA", "nanda_n1_effects",
           "nanda_blocks", "nanda_asymmetry", "SOURCES", "n1_seed_pairs",
           "n2_adversarial_blocks", "n3_residual_reference", "n4_layers", "N5_CEILING",
           "n5_premise", "n5_cells", "n5_at_higher", "N6_SIMILAR_PTS", "n6_losses", "n7_updates",
           "REBUILD_DIGITS", "digits"]

#: Decimals of a STIR, CKA or IRI-distance number that a rebuild keeps, by whether the
#: models it comes from convolve. ``benchmarks/rebuild_spread.py`` (2026-12-07) rebuilt the
#: MLP and the conv net under other processors' vector kernels (AVX2, SSE on an AVX-512
#: machine): the MLP's STIR moved by under 1e-4, the conv net's by up to 0.0014 (0.0008 from
#: its 1,000 inversion steps alone). So an MLP's number is printed to 3 decimals and a
#: number that any convolution net enters to 2; a rebuild on the same kind of machine
#: reproduces every digit (a530c08 against 13b1819), another processor may still move a
#: printed digit where a value sits at a rounding boundary.
REBUILD_DIGITS = MappingProxyType({"dense": 3, "conv": 2})


def digits(S: Mapping, *archs: str) -> int:
    """Decimals to print for a number computed from the zoo's ``archs`` (every architecture
    of ``S["archs"]`` when none is given): :data:`REBUILD_DIGITS` of the least reproducible
    of them. An architecture is dense when its registry model is the fully connected
    ``mlp``; every other architecture of the zoos convolves."""
    names = archs or tuple(S["archs"])
    unknown = [a for a in names if a not in S["archs"]]
    if unknown:
        raise ValueError(f"digits: expected architectures of the zoo {list(S['archs'])}, "
                         f"got {unknown}")
    return min(REBUILD_DIGITS["dense" if S["archs"][a][0] == "mlp" else "conv"] for a in names)


def _is_residual(arch: str) -> bool:
    """The residual architectures of the zoos: ``res`` (MNIST), ``r18`` and ``r34`` (CIFAR)."""
    return arch.startswith("r")


def _asymmetry(frame: pd.DataFrame, residual: Sequence[str], other: Sequence[str]) -> float:
    """Mean over (r, o) of ``frame.loc[r, o] - frame.loc[o, r]`` (rows are references)."""
    if not residual or not other:
        raise ValueError(f"N3 asymmetry: expected at least one residual and one other model, "
                         f"got residual {list(residual)} and other {list(other)}")
    missing = [n for n in (*residual, *other) if n not in frame.index or n not in frame.columns]
    if missing:
        raise ValueError(f"N3 asymmetry: expected {missing} among the matrix's rows and "
                         f"columns, got rows {list(frame.index)}; pass the full STIR matrix")
    return float(np.mean([float(frame.loc[r, o]) - float(frame.loc[o, r])
                          for r in residual for o in other]))


# ----------------------------------------------------------------------------- the paper's numbers
# Nanda, Speicher, Kolling, Dickerson, Gummadi & Weller (2022), ICML. Checked against
# book/paper_targets.md by tests/test_paper_values.py.
#: The table of two CIFAR-10 ResNet18s differing only in initial weights: (mean, std).
NANDA_N1 = MappingProxyType({
    "vanilla": {"STIR(m1|m2)": (0.605, 0.013), "STIR(m2|m1)": (0.562, 0.023),
                "CKA": (0.967, 0.000)},
    "adversarial": {"STIR(m1|m2)": (0.934, 0.003), "STIR(m2|m1)": (0.939, 0.002),
                    "CKA": (0.937, 0.000)},
})

NANDA_NAMES = ["AT-r18", "AT-r34", "AT-v16", "AT-v19", "V-r18", "V-r34", "V-v16", "V-v19"]
#: STIR matrix from the poster (CIFAR-10), rows reordered to match the columns; the poster
#: does not say which of row and column is the reference (the book reads rows).
NANDA_STIR = pd.DataFrame([
    [1.00, 0.94, 0.93, 0.92, 0.51, 0.52, 0.52, 0.56],
    [0.94, 1.00, 0.93, 0.92, 0.56, 0.58, 0.55, 0.56],
    [0.85, 0.82, 1.00, 0.82, 0.39, 0.41, 0.36, 0.35],
    [0.78, 0.78, 0.84, 1.00, 0.41, 0.39, 0.35, 0.39],
    [0.38, 0.41, 0.29, 0.29, 1.00, 0.68, 0.43, 0.42],
    [0.44, 0.36, 0.28, 0.28, 0.60, 1.00, 0.43, 0.34],
    [0.38, 0.26, 0.30, 0.28, 0.41, 0.34, 1.00, 0.38],
    [0.32, 0.26, 0.21, 0.14, 0.43, 0.35, 0.41, 1.00]],
    index=pd.Index(NANDA_NAMES, name="reference (row)"),
    columns=pd.Index(NANDA_NAMES, name="scored by"))
#: CKA matrix from the poster (CIFAR-10).
NANDA_CKA = pd.DataFrame([
    [1.00, 0.94, 0.92, 0.84, 0.55, 0.56, 0.54, 0.55],
    [0.94, 1.00, 0.90, 0.84, 0.56, 0.57, 0.55, 0.55],
    [0.92, 0.90, 1.00, 0.86, 0.54, 0.55, 0.54, 0.54],
    [0.84, 0.84, 0.86, 1.00, 0.58, 0.58, 0.58, 0.61],
    [0.55, 0.56, 0.54, 0.58, 1.00, 0.95, 0.94, 0.88],
    [0.56, 0.57, 0.55, 0.58, 0.95, 1.00, 0.94, 0.89],
    [0.54, 0.55, 0.54, 0.58, 0.94, 0.94, 1.00, 0.90],
    [0.55, 0.55, 0.54, 0.61, 0.88, 0.89, 0.90, 1.00]],
    index=pd.Index(NANDA_NAMES, name="row"), columns=pd.Index(NANDA_NAMES, name="column"))


def nanda_n1_effects() -> dict:
    """The paper's N1 effects from its pair table: vanilla CKA minus vanilla STIR (mean of
    both directions) and AT STIR minus vanilla STIR (means of both directions)."""
    v, a = NANDA_N1["vanilla"], NANDA_N1["adversarial"]
    v_stir = (v["STIR(m1|m2)"][0] + v["STIR(m2|m1)"][0]) / 2
    a_stir = (a["STIR(m1|m2)"][0] + a["STIR(m2|m1)"][0]) / 2
    return {"cka_minus_stir": v["CKA"][0] - v_stir, "at_minus_vanilla": a_stir - v_stir}


def nanda_blocks(frame: pd.DataFrame | None = None) -> dict:
    """The AT and V blocks' entries of the poster's STIR matrix between *different*
    architectures (N2: 12 cells each), as arrays."""
    frame = NANDA_STIR if frame is None else frame
    out = {}
    for kind in ("AT", "V"):
        names = [n for n in frame.index if n.startswith(kind + "-")]
        out[kind] = np.array([float(frame.loc[a, b]) for a in names for b in names
                              if a.split("-")[1] != b.split("-")[1]])
    return out


def nanda_asymmetry(frame: pd.DataFrame | None = None) -> dict:
    """N3's quantity in the poster's STIR matrix, computed as :func:`residual_asymmetry`
    computes ours: per block (AT, V), the mean over (residual r in r18/r34, other o in
    v16/v19) pairs of ``frame.loc[r, o] - frame.loc[o, r]`` = STIR(o | r) - STIR(r | o),
    rows read as references. The poster gives +0.1175 (AT) and +0.0225 (V).
    Residual-residual cells (r18 vs r34), which a zoo with one residual architecture
    cannot have, do not enter.
    """
    frame = NANDA_STIR if frame is None else frame
    out = {}
    for kind in ("AT", "V"):
        names = [n for n in frame.index if n.startswith(kind + "-")]
        res = [n for n in names if _is_residual(n.split("-")[1])]
        other = [n for n in names if not _is_residual(n.split("-")[1])]
        out[kind] = _asymmetry(frame, res, other)
    return out


#: Where each claim's paper value is.
SOURCES = MappingProxyType({
    "N1": "Nanda et al. 2022, table of two ResNet18s differing only in initial weights",
    "N2": "Nanda et al. 2022, STIR matrix across architectures (poster)",
    "N3": "Nanda et al. 2022, STIR matrix across architectures (poster), rows as references",
    "N4": "Nanda et al. 2022, layer-wise STIR figure (no numbers)",
    "N5": "Nanda et al. 2022, layer-wise STIR figure (no numbers)",
    "N6": "Nanda et al. 2022, STIR across training losses (no numbers)",
    "N7": "Nanda et al. 2022, STIR under model updates with more data (no numbers)",
})


# ----------------------------------------------------------------------------- claim rules
# ----------------------------------------------------------------------------- claim rules
def n1_seed_pairs(v_stir: Sequence[float], v_cka: Sequence[float], a_stir: Sequence[float],
                  paper: Mapping[str, float], digits: int = 3) -> Verdict:
    """N1: vanilla pairs have high CKA but much lower STIR; AT pairs have high STIR.

    Quantities, one value per pair of seeds of one architecture (both STIR directions
    averaged): (a) vanilla CKA - vanilla STIR (paired); (b) AT STIR - vanilla STIR
    (Welch). Paper (its ResNet18 pair table): (a) 0.384, (b) 0.353. Each part by
    :func:`effect_rule` (half the paper's effect reproduces it); both needed. The pairs
    of three seeds share models, so their spread is a lower bound on the noise.
    ``digits``: decimals of the reason's numbers (:func:`digits`).
    """
    a = paired(v_cka, v_stir)
    b = welch(a_stir, v_stir)
    return combine({
        "CKA - STIR (vanilla)": effect_rule(a, paper["cka_minus_stir"], what="CKA - STIR",
                                             digits=digits),
        "AT - vanilla STIR": effect_rule(b, paper["at_minus_vanilla"], what="AT - V STIR",
                                          digits=digits),
    })


def n2_adversarial_blocks(at_minus_v: Estimate, paper_effect: float, digits: int = 3) -> Verdict:
    """N2: adversarial training gives higher STIR across architectures.

    Quantity: mean cross-architecture STIR of the AT block minus that of the V block,
    one value per replicate of the zoo (the models of one seed). Paper (poster matrix):
    :func:`nanda_blocks` (0.45). :func:`effect_rule`.
    """
    return effect_rule(at_minus_v, paper_effect, what="AT - V cross-architecture STIR",
                       digits=digits)


def n3_residual_reference(diffs: Mapping[str, Estimate] | None,
                          paper: Mapping[str, float], digits: int = 3) -> Verdict:
    """N3: STIR is higher when a residual network is the reference.

    Quantity per training (AT, V): the paired asymmetry STIR(other | residual) -
    STIR(residual | other), averaged over the (residual, non-residual) architecture pairs
    of one zoo replicate (:func:`residual_asymmetry`; rows are references, so it is
    ``stir[r, o] - stir[o, r]``), one value per replicate (seed). Paper: the same quantity
    in the poster's matrix (:func:`nanda_asymmetry`): AT +0.1175, V +0.0225.
    Thresholds (:func:`effect_rule` per training): *reproduced* when beyond the noise
    between replicates (95 % interval excludes 0) and at least half the paper's value,
    *partly* beyond noise and at least a fifth, else *not reproduced*; both trainings
    needed (:func:`combine`). No residual or no non-residual network in the zoo, or one
    replicate only: not tested.
    """
    if diffs is None:
        return not_tested("the zoo has no (residual, non-residual) pair of architectures")
    if set(diffs) != set(paper):
        raise ValueError(f"N3: expected our and the paper's values for the same trainings, "
                         f"got ours {sorted(diffs)} and the paper's {sorted(paper)}")
    return combine({k: effect_rule(v, paper[k], what=f"{k}: STIR(o|r) - STIR(r|o)",
                                   digits=digits) for k, v in diffs.items()})


def n4_layers(parts: Mapping[str, Mapping[str, Estimate]],
              digits: Mapping[str, int] | None = None) -> Verdict:
    """N4: shared invariance drops for later layers, less for AT; STIR drops more than CKA.

    Per architecture, three quantities over seed pairs: (i) vanilla STIR at the first
    layer minus at the last; (ii) the vanilla drop minus the AT drop (Welch); (iii) the
    vanilla STIR drop minus the vanilla CKA drop. The paper gives a figure, no numbers:
    each part by :func:`sign_rule`; all three needed per architecture, and every
    architecture for "reproduced". ``digits``: per architecture, the decimals of its numbers
    (:func:`digits`; 3 where not given).
    """
    d = dict(digits or {})
    per = {arch: combine({k: sign_rule(v, what=k, digits=d.get(arch, 3)) for k, v in p.items()})
           for arch, p in parts.items()}
    out = combine(per)
    detail = "; ".join(f"{arch}: " + ", ".join(
        f"{k} {v.mean:+.{d.get(arch, 3)}f}±{v.half_width:.{d.get(arch, 3)}f}" for k, v in p.items())
        for arch, p in parts.items())
    return Verdict(out.verdict, detail)


#: STIR's maximum (a linear CKA): N5's ceiling.
N5_CEILING = 1.0


def n5_premise(at_pairs: Sequence[float], v_pairs: Sequence[float]) -> tuple[bool, str]:
    """Whether one (architecture, layer) cell can show N5: ``(present, why)``.

    ``at_pairs``, ``v_pairs``: the STIR (both directions averaged) of each seed pair of the
    AT and the vanilla models at that layer. The premise is *absent* when both trainings
    are at STIR's ceiling within their own noise: the upper end of each training's 95 %
    interval over its seed pairs (:func:`~stir_lib.verdicts.over_seeds`) reaches
    ``N5_CEILING`` = 1. There neither training can be higher than the other, so the cell
    says nothing about the claim. Stated before the run, from the procedure: STIR is a CKA,
    at most 1, and at layers the inversion can reproduce the input through (early layers are
    close to injective) both trainings' IRIs are the images themselves as far as the layer
    can tell. With unmeasured noise (one pair) the premise is taken as present and the
    count rule leaves the cell out as unmeasured.
    """
    a, v = over_seeds(at_pairs, "AT pair STIR"), over_seeds(v_pairs, "V pair STIR")
    if not (a.measured and v.measured):
        return True, "noise not measured"
    a_top, v_top = a.high >= N5_CEILING, v.high >= N5_CEILING
    why = (f"upper 95 % bounds AT {a.high:.4f}, V {v.high:.4f} "
           f"{'both reach' if a_top and v_top else 'not both at'} {N5_CEILING:g}")
    return not (a_top and v_top), why


def n5_cells(cells: Mapping[str, tuple[Sequence[float], Sequence[float]]]) -> pd.DataFrame:
    """Per (architecture, layer) cell: each training's mean pair STIR and its upper 95 %
    bound, whether N5's premise holds (:func:`n5_premise`), and AT - V (Welch) with its
    half-width; the table the notebook shows beside the verdict."""
    rows = []
    for k, (at, v) in cells.items():
        a, b = over_seeds(at, "AT pair STIR"), over_seeds(v, "V pair STIR")
        present, why = n5_premise(at, v)
        d = welch(at, v)
        rows.append({"cell": k, "AT mean": a.mean, "AT upper": a.high, "V mean": b.mean,
                     "V upper": b.high, "premise": "present" if present else "absent",
                     "why": why, "AT - V": d.mean, "± (95 %)": d.half_width})
    return pd.DataFrame(rows).set_index("cell")


def n5_at_higher(cells: Mapping[str, tuple[Sequence[float], Sequence[float]]]) -> Verdict:
    """N5: across layers and random initialisations, AT pairs have consistently higher STIR.

    ``cells[k] = (at_pairs, v_pairs)``: per (architecture, layer) cell, the STIR of each
    seed pair of the AT and of the vanilla models. Quantity per cell: AT minus V pair
    STIR (:func:`~stir_lib.verdicts.welch` over seed pairs). The paper gives a figure, no
    number. A cell whose premise is absent (both trainings at the ceiling within their
    own noise, :func:`n5_premise`) counts for neither side; the others are judged by
    :func:`~stir_lib.verdicts.count_rule` with no minimum effect: *reproduced* when every
    judged cell is beyond noise in the paper's direction, *partly* when at least half are
    and none goes the other way, *not reproduced* otherwise; *not tested* when every cell's
    premise is absent (or no cell's noise is measured).
    """
    if not cells:
        raise ValueError("N5: expected at least one (architecture, layer) cell, got none")
    judged, absent = {}, []
    for k, (at, v) in cells.items():
        present, _ = n5_premise(at, v)
        if present:
            judged[k] = welch(at, v)
        else:
            absent.append(k)
    note = (f"; premise absent (both trainings within noise of STIR = {N5_CEILING:g}) in "
            f"{len(absent)} of {len(cells)} cells ({', '.join(absent)})" if absent else "")
    if not judged:
        return not_tested(f"every cell at the ceiling: N5's premise is absent{note}")
    out = count_rule(judged, what="AT - V STIR per architecture and layer")
    return Verdict(out.verdict, out.reason + note)


#: N6's premise: the three losses' robust accuracies are similar when the upper 95 % bound
#: over seeds of their spread (max - min) is at most this many points (the limit the rule
#: has used for "similar" since 2026-12-01).
N6_SIMILAR_PTS = 5.0


def n6_losses(robust_spread: Estimate, seed_minus_loss: Estimate, digits: int = 3) -> Verdict:
    """N6: TRADES, MART and PGD-AT models have similar robustness, yet share only a
    moderate part of their invariances.

    Premise (checked, not scored): ``robust_spread``, the spread (max - min, points) of the
    three losses' robust accuracy, one value per seed, the losses trained with the same
    optimiser budget (:func:`loss_recipe`). Similar when its upper 95 % bound is at most
    ``N6_SIMILAR_PTS`` (5) points; otherwise, or with unmeasured noise, *not tested*.
    Finding: ``seed_minus_loss``, STIR between AT seed pairs (one loss) minus STIR between
    different losses of one seed (both directions averaged, Welch): changing the loss costs
    more shared invariance than changing the seed. The paper gives no number:
    :func:`~stir_lib.verdicts.sign_rule`, *reproduced* beyond noise in that direction,
    *not reproduced* otherwise, *not tested* without a noise floor. ``digits``: decimals of
    the finding's numbers (:func:`digits`).
    """
    premise = at_most_rule(robust_spread, N6_SIMILAR_PTS, N6_SIMILAR_PTS,
                           what="robust-accuracy spread", digits=1, unit=" pts")
    if premise.verdict != "reproduced":
        return not_tested(f"premise (similar robustness) not met: {premise.reason}")
    finding = sign_rule(seed_minus_loss, what="AT seed-pair STIR - cross-loss STIR", digits=digits)
    return Verdict(finding.verdict, f"premise met ({premise.reason}); {finding.reason}")


def n7_updates(series: Sequence[Sequence[float]], floor: Sequence[Sequence[float]],
               digits: int = 3) -> Verdict:
    """N7: updating a model with more data raises STIR monotonically, with diminishing
    returns (rule of 2026-12-06).

    ``series[s][k]``: STIR (both directions averaged) between the k-th model of chain s and
    its update (the model on the next, larger set); ``floor[s][k]``: STIR between that
    update and its same-data control (same images and initial weights, another batch
    order), i.e. what retraining on the *same* data shares. The gap floor - series is the
    shared invariance an update loses to its new data beyond what batch order alone costs.
    All differences are paired over chains (95 % t intervals).

    * premise: the first update's gap is positive beyond noise (the data change moves the
      model beyond training noise at the smallest sizes); else *not tested*: the chain
      cannot show an effect of data at this scale;
    * (a) rise: the last update's STIR minus the first's is positive beyond noise, *and*
      the gap closes (first gap minus last gap positive beyond noise), so that the rise is
      not only the floor rising with the set size;
    * (b) monotone: no update's STIR falls beyond noise from the previous one's;
    * (c) diminishing: the first step's rise minus the last step's is positive beyond noise.

    *Reproduced*: (a), (b) and (c); *partly*: (a) without (b) or (c); *not reproduced*: no
    rise (a). One chain: noise not measured, *not tested*. ``digits``: decimals of the
    reason's numbers (:func:`digits`).
    """
    a, f = np.asarray(series, float), np.asarray(floor, float)
    if a.ndim != 2 or a.shape[1] < 3:
        raise ValueError(f"series: expected (chains, >= 3 updates), got shape {a.shape}")
    if f.shape != a.shape:
        raise ValueError(f"floor: expected the series' shape {a.shape} (one same-data control "
                         f"per update), got {f.shape}")
    if a.shape[0] < 2:
        return not_tested("one chain only: noise not measured")
    gap = f - a
    first_gap = over_seeds(gap[:, 0])
    rise = over_seeds(a[:, -1] - a[:, 0])
    closes = over_seeds(gap[:, 0] - gap[:, -1])
    steps = {f"update {k + 2}": over_seeds(a[:, k + 1] - a[:, k]) for k in range(a.shape[1] - 1)}
    dim = over_seeds((a[:, 1] - a[:, 0]) - (a[:, -1] - a[:, -2]))
    def pm(e):
        return f"{e.mean:+.{digits}f}±{e.half_width:.{digits}f}"

    reason = f"first update's gap to the same-data floor {pm(first_gap)}"
    if not first_gap.beyond_noise(+1):
        return not_tested(f"{reason}: not beyond noise, so the updates do not change the model "
                          f"beyond retraining on the same data")
    up = rise.beyond_noise(+1) and closes.beyond_noise(+1)
    monotone = not any(v.beyond_noise(-1) for v in steps.values())
    diminishing = dim.beyond_noise(+1)
    reason += (f"; rise {pm(rise)}, gap closes by {pm(closes)}, "
               f"{'no update falls' if monotone else 'an update falls'} beyond noise, "
               f"first minus last step {pm(dim)}")
    if up and monotone and diminishing:
        return Verdict("reproduced", reason)
    if up:
        return Verdict("partly", reason)
    return Verdict("not reproduced", reason)
