"""The claim rules of the chapters (stir_lib.chapters.<chapter>: S1-S7, N1-N7, R1-R5), each
driven to the verdicts it can give: the paper's own numbers give "reproduced", null inputs
"not reproduced", inputs around each threshold the neighbouring verdicts, an absent premise
"not tested" (the same scheme as tests/test_verdicts.py, whose helpers build the inputs).
"""

from __future__ import annotations

import numpy as np
from test_verdicts import est, seeds

from stir_lib import verdicts as V
from stir_lib.chapters import blind_spots as Z, lipschitz as L, stir as C, transfer as T, units as U


# ----------------------------------------------------------------------------- Szegedy et al.
def test_s1_units_vs_random():
    control = V.over_seeds(seeds(0.5, 0.01))    # output units far more coherent: seen
    assert U.s1_units_vs_random(V.over_seeds(seeds(0.0, 0.01)), control).verdict == "reproduced"
    assert U.s1_units_vs_random(V.over_seeds(seeds(0.3, 0.01)), control).verdict == "not reproduced"
    assert U.s1_units_vs_random(V.over_seeds(seeds(0.08, 0.02)), control).verdict == "partly"
    assert U.s1_units_vs_random(V.over_seeds([0.0]), control).verdict == "not tested"
    blind = V.over_seeds(seeds(0.0, 0.01))      # a control the measure cannot see
    assert U.s1_units_vs_random(V.over_seeds(seeds(0.0, 0.01)), blind).verdict == "not tested"


def test_s2_adversarial_examples():
    models = list(Z.SZEGEDY_T1.index)
    ok = {m: V.over_seeds([1.0, 1.0, 1.0]) for m in models}
    same = {m: V.over_seeds(seeds(1.0, 0.02)) for m in models}          # the paper's distortions
    assert Z.s2_adversarial_examples(ok, same).verdict == "reproduced"
    big = dict(same, **{"FC10(1)": V.over_seeds(seeds(2.0, 0.05))})     # one model 2x the paper's
    assert Z.s2_adversarial_examples(ok, big).verdict == "partly"
    fail = dict(ok, **{"AE400-10": V.over_seeds([0.0, 0.0, 0.0])})     # the attack cannot fool it
    assert Z.s2_adversarial_examples(fail, same).verdict == "not reproduced"
    huge = dict(same, **{"FC10(1e-4)": V.over_seeds(seeds(5.0, 0.1))})
    assert Z.s2_adversarial_examples(ok, huge).verdict == "not reproduced"


def test_s3_s4_from_the_papers_tables():
    e3, e4 = Z.t2_transfer_effect(), Z.t4_transfer_effect()
    assert Z.s3_cross_model(V.over_seeds(seeds(e3, 0.5)), e3).verdict == "reproduced"
    assert Z.s3_cross_model(V.over_seeds(seeds(0.0, 0.5)), e3).verdict == "not reproduced"
    assert Z.s3_cross_model(V.over_seeds(seeds(0.3 * e3, 0.1)), e3).verdict == "partly"
    assert Z.s4_cross_training_set(V.over_seeds(seeds(e4, 2.0)), e4).verdict == "reproduced"
    assert Z.s4_cross_training_set(V.over_seeds(seeds(1.0, 3.0)), e4).verdict == "not reproduced"


def test_s5_noise_from_the_papers_tables():
    p = Z.paper_noise_ratio()
    assert Z.s5_noise(V.over_seeds(seeds(p, 0.003)), p).verdict == "reproduced"
    assert Z.s5_noise(V.over_seeds(seeds(0.5, 0.02)), p).verdict == "not reproduced"  # noise fools
    assert Z.s5_noise(V.over_seeds(seeds(3.5 * p, 0.003)), p).verdict == "partly"


def test_s6_adversarial_training():
    drop = Z.SZEGEDY_S6["weight decay"] - Z.SZEGEDY_S6["adversarial (below)"]
    assert Z.s6_adversarial_training(V.over_seeds(seeds(drop, 0.05)), drop).verdict == "reproduced"
    assert Z.s6_adversarial_training(V.over_seeds(seeds(0.0, 0.05)), drop).verdict == "not reproduced"


def test_s7_rules():
    assert L.s7_first_layer(V.over_seeds(seeds(0.3, 0.05))).verdict == "reproduced"
    assert L.s7_first_layer(V.over_seeds(seeds(-0.3, 0.05))).verdict == "not reproduced"
    assert L.s7_alexnet([1.0] * 8).verdict == "reproduced"
    assert L.s7_alexnet([1.0] * 7 + [2.0]).verdict == "partly"
    assert L.s7_alexnet([1.0] * 7 + [5.0]).verdict == "not reproduced"
    assert L.s7_alexnet(None).verdict == "not tested"


# ----------------------------------------------------------------------------- Nanda et al.
def _n1(v_stir, v_cka, a_stir):
    return C.n1_seed_pairs(v_stir, v_cka, a_stir, C.nanda_n1_effects()).verdict


def test_n1_from_the_papers_table():
    p = C.NANDA_N1
    v = np.mean([p["vanilla"]["STIR(m1|m2)"][0], p["vanilla"]["STIR(m2|m1)"][0]])
    a = np.mean([p["adversarial"]["STIR(m1|m2)"][0], p["adversarial"]["STIR(m2|m1)"][0]])
    assert _n1(seeds(v, 0.02), seeds(0.967, 0.001), seeds(a, 0.003)) == "reproduced"
    same = seeds(0.95, 0.01)
    assert _n1(same, same, same) == "not reproduced"                      # identical groups
    # CKA above STIR as in the paper, but adversarial training adds nothing: partly
    assert _n1(seeds(v, 0.02), seeds(0.967, 0.001), seeds(v, 0.02)) == "partly"


def test_n2_n3():
    pb = C.nanda_blocks()
    p2 = float(pb["AT"].mean() - pb["V"].mean())
    assert C.n2_adversarial_blocks(V.over_seeds(seeds(p2, 0.02)), p2).verdict == "reproduced"
    assert C.n2_adversarial_blocks(V.over_seeds(seeds(0.0, 0.02)), p2).verdict == "not reproduced"
    assert C.n2_adversarial_blocks(V.over_seeds(seeds(0.3 * p2, 0.02)), p2).verdict == "partly"
    assert C.n2_adversarial_blocks(V.over_seeds([p2]), p2).verdict == "not tested"
    p3 = C.nanda_asymmetry()                  # STIR(other | residual) - STIR(residual | other)
    ours = {k: V.over_seeds(seeds(v, 0.005)) for k, v in p3.items()}
    assert C.n3_residual_reference(ours, p3).verdict == "reproduced"
    null = {k: V.over_seeds(seeds(0.0, 0.01)) for k in p3}
    assert C.n3_residual_reference(null, p3).verdict == "not reproduced"
    assert C.n3_residual_reference(None, p3).verdict == "not tested"


def test_n5():   # N4's branches: tests/test_stir_rules.py::test_n4_every_branch
    up, down = (seeds(0.9, 0.01), seeds(0.7, 0.01)), (seeds(0.7, 0.01), seeds(0.9, 0.01))
    assert C.n5_at_higher({"a": up, "b": up}).verdict == "reproduced"
    assert C.n5_at_higher({"a": up, "b": down}).verdict == "not reproduced"
    # a layer where both trainings reach STIR = 1 within their noise counts for neither side
    ceiling = ([0.9998, 0.9999, 1.0], [0.9997, 0.9999, 1.0])
    assert C.n5_at_higher({"a": up, "b": ceiling}).verdict == "reproduced"
    assert C.n5_at_higher({"a": ceiling}).verdict == "not tested"
    # below the ceiling, no minimum effect: a small difference beyond noise counts
    small = (seeds(0.9990, 0.0001), seeds(0.9993, 0.0001))
    assert C.n5_at_higher({"a": up, "b": small}).verdict == "not reproduced"


def test_n6():
    assert C.n6_losses(est(2.0, 1.0), est(0.1, 0.02)).verdict == "reproduced"
    assert C.n6_losses(est(2.0, 1.0), est(0.0, 0.02)).verdict == "not reproduced"
    # similar robustness is the premise: where it fails the finding is not tested
    assert C.n6_losses(est(30.0, 2.0), est(0.1, 0.02)).verdict == "not tested"


# ----------------------------------------------------------------------------- Salman et al.
def test_r1_r5():
    up, flat = est(5.0, 1.0), est(0.0, 1.0)
    assert T.r1_robust_transfer({"a": up, "b": up, "c": flat}).verdict == "reproduced"
    assert T.r1_robust_transfer({"a": flat, "b": flat}).verdict == "not reproduced"
    assert T.r5_width({"a": up, "b": up}).verdict == "reproduced"
    assert T.r5_width(None).verdict == "not tested"


def test_r2():
    assert T.r2_best_eps_differs({"a at b": est(3.0, 1.0)}, {"a": 0.5, "b": 3.0}).verdict == "reproduced"
    assert T.r2_best_eps_differs({"a at b": est(0.5, 1.0)}, {"a": 0.5, "b": 3.0}).verdict == "partly"
    assert T.r2_best_eps_differs({}, {"a": 1.0, "b": 1.0}).verdict == "not reproduced"


def test_r3_r4():
    assert T.r3_granularity({"a": est(1.0, 0.5), "b": est(2.0, 0.5)}).verdict == "reproduced"
    assert T.r3_granularity({"a": est(0.0, 0.5)}).verdict == "not reproduced"
    assert T.r3_granularity({}, ["digits"]).verdict == "not tested"
    # R4: (within-eps correlation, within - across eps paired by seed)
    assert T.r4_source_accuracy(est(0.8, 0.2), est(0.5, 0.2)).verdict == "reproduced"
    assert T.r4_source_accuracy(est(0.8, 0.2), est(0.0, 0.2)).verdict == "partly"
    assert T.r4_source_accuracy(est(0.0, 0.2), est(0.0, 0.2)).verdict == "not reproduced"
    assert T.r4_source_accuracy(None, None).verdict == "not tested"
