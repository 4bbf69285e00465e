"""The decimals the STIR chapters print: what a rebuild keeps (``chapters.stir.digits``).

``benchmarks/rebuild_spread.py`` measured that an MLP's STIR survives other processors'
kernels to 1e-4 and a conv net's moves by up to 0.0014: three decimals for numbers of MLPs
only, two as soon as a convolution net enters. The rules take the decimals for their reasons
only; their verdicts are decided on the unrounded numbers.
"""

from __future__ import annotations

import re

import pytest

from stir_lib import verdicts as V
from stir_lib.chapters import stir as C


def test_mlps_keep_three_decimals_and_any_convolution_net_two():
    S = C.settings("ci")
    assert C.digits(S, "mlp") == 3
    assert C.digits(S, "conv") == C.digits(S, "res") == 2
    assert C.digits(S, "mlp", "conv") == 2          # a cross-architecture number
    assert C.digits(S) == 2                          # every architecture of the zoo
    assert C.digits(C.settings("ci", archs=["conv", "res"], losses_arch="conv")) == 2
    assert C.digits(C.settings("ci", archs=["mlp", "res"]), "mlp") == 3
    # the paper's zoo is all convolution nets
    assert {C.digits(C.settings("paper"), a) for a in C.settings("paper")["archs"]} == {2}


def test_an_architecture_outside_the_zoo_is_an_error_naming_the_zoo():
    with pytest.raises(ValueError, match=r"expected architectures of the zoo \['mlp', 'conv', 'res'\]"):
        C.digits(C.settings("ci"), "r18")


def _decimals(text: str) -> set[int]:
    return {len(m) for m in re.findall(r"\d\.(\d+)", text)}


@pytest.mark.parametrize("d", [2, 3])
def test_rules_print_their_numbers_to_the_given_decimals_and_judge_the_same(d):
    est = V.over_seeds([0.1512, 0.1377, 0.1624])       # beyond noise, a third of 0.44
    n2 = C.n2_adversarial_blocks(est, 0.44, digits=d)
    assert n2.verdict == C.n2_adversarial_blocks(est, 0.44).verdict == "partly"
    assert f"{est.mean:+.{d}f}" in n2.reason and f"±{est.half_width:.{d}f}" in n2.reason
    n3 = C.n3_residual_reference({"AT": est, "V": est}, {"AT": 0.1175, "V": 0.0225}, digits=d)
    assert n3 == C.n3_residual_reference({"AT": est, "V": est}, {"AT": 0.1175, "V": 0.0225})
    assert n3.verdict == "reproduced"             # beyond noise and >= half of both
    n1 = C.n1_seed_pairs([0.90, 0.89, 0.91], [0.96, 0.97, 0.96], [0.97, 0.98, 0.975],
                         C.nanda_n1_effects(), digits=d)
    assert n1.verdict == C.n1_seed_pairs([0.90, 0.89, 0.91], [0.96, 0.97, 0.96],
                                         [0.97, 0.98, 0.975], C.nanda_n1_effects()).verdict
    n6 = C.n6_losses(V.over_seeds([1.0, 2.0, 1.5]), V.over_seeds([0.0123, 0.0151, 0.0140]),
                     digits=d)
    assert n6.verdict == "reproduced" and f"{0.0138:+.{d}f}" in n6.reason
    series = [[0.96, 0.94, 0.93], [0.95, 0.93, 0.925], [0.97, 0.945, 0.94]]
    floor = [[0.99, 0.985, 0.98]] * 3
    n7 = C.n7_updates(series, floor, digits=d)
    assert n7.verdict == C.n7_updates(series, floor).verdict
    # every number of N7's reason (gaps, rises, intervals) carries exactly d decimals
    assert _decimals(n7.reason) == {d}


def test_n4_prints_each_architecture_to_its_own_decimals():
    e = V.over_seeds([0.071, 0.080, 0.074])
    parts = {"mlp": {"vanilla STIR drop": e}, "conv": {"vanilla STIR drop": e}}
    out = C.n4_layers(parts, digits={"mlp": 3, "conv": 2})
    mlp_part, conv_part = out.reason.split("; ")[-2:]
    assert mlp_part.startswith("mlp:") and f"{e.mean:+.3f}" in mlp_part
    assert conv_part.startswith("conv:") and f"{e.mean:+.2f}" in conv_part
    assert f"{e.mean:+.3f}" not in conv_part
    assert out.verdict == C.n4_layers(parts).verdict == "reproduced"
