"""The Szegedy chapters' computed quantities on inputs whose answer is known, and every
branch of the S1, S5 and S7 rules of 2026-12-06 (issue 20)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from stir_lib import verdicts as V
from stir_lib.attacks import gaussian_noise, rms_distortion
from stir_lib.chapters import blind_spots as Z, lipschitz as L, units as U
from stir_lib.models import ImageModel, create_model


def est(mean, half_width, n=3):
    return V.Estimate(mean, half_width, n)


# ----------------------------------------------------------------------------- S1
def test_s1_is_judged_only_where_the_control_sees_a_difference_beyond_the_margin():
    control_ok = est(0.30, 0.05)                      # interval [0.25, 0.35], above 0.1
    assert U.s1_units_vs_random(est(0.0, 0.05), control_ok).verdict == "reproduced"
    assert U.s1_units_vs_random(est(0.3, 0.05), control_ok).verdict == "not reproduced"
    assert U.s1_units_vs_random(est(-0.3, 0.05), control_ok).verdict == "not reproduced"
    assert U.s1_units_vs_random(est(0.08, 0.05), control_ok).verdict == "partly"
    # the control beyond noise but its interval reaching into the margin: the measure is
    # not shown to see a difference of the margin's size, whatever the claim's interval
    for weak in (est(0.13, 0.05), est(0.10, 0.0), est(0.5, float("nan"), 1), est(-0.3, 0.05)):
        v = U.s1_units_vs_random(est(0.0, 0.01), weak)
        assert v.verdict == "not tested", weak
        assert "control" in v.reason
    assert U.s1_units_vs_random(est(0.0, 0.01), est(0.2, 0.05), margin=0.2).verdict == "not tested"
    with pytest.raises(ValueError, match="margin"):
        U.s1_units_vs_random(est(0.0, 0.01), control_ok, margin=0)


# ----------------------------------------------------------------------------- S5
class _Constant(nn.Module):
    """Answers class ``c`` whatever the image."""

    def __init__(self, c):
        super().__init__()
        self.c = c

    def forward(self, x):
        out = torch.zeros(len(x), 10)
        out[:, self.c] = 1.0
        return out


class _Bright(nn.Module):
    """Class 1 when the image's mean pixel exceeds 0.5, else class 0."""

    def forward(self, x):
        m = x.flatten(1).mean(1)
        return torch.stack([0.5 - m, m - 0.5], 1)


def test_noise_errors_compares_each_model_with_itself_on_the_same_noisy_images():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(64, 1, 4, 4, generator=g) * 0.2 + 0.4          # means near 0.5
    y = (x.flatten(1).mean(1) > 0.5).long()
    t = Z.noise_errors({"const": _Constant(0), "bright": _Bright(), "bright2": _Bright()},
                       x, y, stds=(0.3, 0.1), draws=3, seed=2)
    assert list(t["std"]) == [0.1] * 3 + [0.3] * 3                # sorted, one row per model
    const = t[t.model == "const"]
    assert (const["increase"] == 0).all()                          # noise cannot move it
    assert const["clean error %"].iloc[0] == pytest.approx(100 * float((y != 0).float().mean()))
    b, b2 = t[t.model == "bright"], t[t.model == "bright2"]
    assert b["noisy error %"].tolist() == b2["noisy error %"].tolist()   # the same draws
    assert (b["clean error %"] == 0).all() and (b["increase"] > 0).all()
    # the mean over draws, draw d seeded seed * 1000 + d
    expected = np.mean([100 * float((_Bright()(gaussian_noise(x, 0.3, seed=2000 + d)).argmax(1) != y)
                                    .float().mean()) for d in range(3)])
    assert b[b["std"] == 0.3]["noisy error %"].iloc[0] == pytest.approx(expected)
    rms = np.mean([float(rms_distortion(x, gaussian_noise(x, 0.1, seed=2000 + d)).mean())
                   for d in range(3)])
    assert b[b["std"] == 0.1]["noise RMS"].iloc[0] == pytest.approx(rms)
    with pytest.raises(ValueError, match="draws"):
        Z.noise_errors({"c": _Constant(0)}, x, y, draws=0)
    with pytest.raises(ValueError, match="stds"):
        Z.noise_errors({"c": _Constant(0)}, x, y, stds=(0.0,))


def test_adversarial_increase_counts_only_successful_attacks_for_the_distortion():
    x = torch.zeros(4, 1, 2, 2)
    x_adv = x.clone()
    x_adv[:2] += 0.8                                               # two perturbed images
    a = dict(x=x, y=torch.zeros(4, dtype=torch.long), x_adv=x_adv,
             success=torch.tensor([True, False, False, False]), dist=rms_distortion(x, x_adv))
    inc, rms = Z.adversarial_increase(_Bright(), a)
    assert inc == pytest.approx(50.0)                              # 2 of 4 flipped, none before
    assert rms == pytest.approx(0.8)
    a["success"] = torch.zeros(4, dtype=torch.bool)
    assert Z.adversarial_increase(_Bright(), a)[1] == math.inf


def test_noise_to_adversarial_takes_the_smallest_level_of_at_least_the_distortion():
    noise = pd.DataFrame([
        {"model": "a", "std": 0.1, "increase": 1.0, "noise RMS": 0.07},
        {"model": "a", "std": 0.3, "increase": 6.0, "noise RMS": 0.2},
        {"model": "b", "std": 0.1, "increase": 2.0, "noise RMS": 0.07},
        {"model": "b", "std": 0.3, "increase": 9.0, "noise RMS": 0.2},
        {"model": "c", "std": 0.1, "increase": 2.0, "noise RMS": 0.07},
        {"model": "c", "std": 0.3, "increase": 9.0, "noise RMS": 0.2}])
    out = Z.noise_to_adversarial(noise, {"a": (100.0, 0.05), "b": (80.0, 0.1), "c": (90.0, 0.25)})
    assert out.loc["a", "std"] == 0.1 and out.loc["a", "ratio"] == pytest.approx(0.01)
    assert out.loc["b", "std"] == 0.3 and out.loc["b", "ratio"] == pytest.approx(9 / 80)
    assert math.isnan(out.loc["c", "ratio"])                      # no level reaches 0.25
    out = Z.noise_to_adversarial(noise, {"a": (0.0, 0.05)})       # examples that fool nothing
    assert math.isnan(out.loc["a", "ratio"])


def test_the_papers_s5_value_is_fc10_1_at_std_0_3():
    # FC10(1): distortion 0.14 > 0.1, so the std-0.3 row: (22.7 - 20) / (100 - 20); every
    # other model's ratio is smaller (FC10(1e-2) at std 0.1: 0.7 / 90.6)
    assert Z.paper_noise_ratio() == pytest.approx(2.7 / 80)


def test_s5_rule_branches():
    p = 0.04
    assert Z.s5_noise(est(0.05, 0.02), p).verdict == "reproduced"        # 0.07 <= 0.08
    assert Z.s5_noise(est(0.08, 0.0), p).verdict == "reproduced"         # on the bound
    assert Z.s5_noise(est(0.10, 0.05), p).verdict == "partly"            # 0.15 <= 0.2
    assert Z.s5_noise(est(0.20, 0.05), p).verdict == "not reproduced"
    assert Z.s5_noise(est(0.05, float("nan"), 1), p).verdict == "not tested"
    assert Z.s5_noise(est(0.5, float("nan"), 1), p).verdict == "not reproduced"
    v = Z.s5_noise(est(0.05, 0.02), p, missing=["FC10(1)"])
    assert v.verdict == "partly" and "FC10(1)" in v.reason           # never reproduced
    assert Z.s5_noise(est(0.20, 0.05), p, missing=["m"]).verdict == "not reproduced"
    assert Z.s5_noise(V.Estimate(float("nan"), float("nan"), 0), p).verdict == "not tested"
    # the paper's own numbers pass its rule
    assert Z.s5_noise(est(Z.paper_noise_ratio(), 0.0), Z.paper_noise_ratio()).verdict == "reproduced"
    with pytest.raises(ValueError, match="paper_ratio"):
        Z.s5_noise(est(0.05, 0.02), 0.0)


# ----------------------------------------------------------------------------- S7
def _linear_net(weight):
    lin = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
    lin.weight.data = weight.clone()
    head = nn.Linear(weight.shape[0], 2)
    return ImageModel([("lin", nn.Sequential(nn.Flatten(), lin))], head, (1, 1, weight.shape[1]))


def test_gain_ratio_is_zero_for_an_orthogonal_stage_and_log_a_along_a_stretched_axis():
    d = 16
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=torch.Generator().manual_seed(0)))
    x = torch.rand(5, 1, 1, d)
    x_adv = x + 0.1 * torch.randn(5, 1, 1, d)
    r = L.gain_ratios(_linear_net(q), x, x_adv, draws=4)
    first = r[r.stage == "lin"]
    assert np.allclose(first["adversarial gain"], 1, atol=1e-5)
    assert np.allclose(first["log ratio"], 0, atol=1e-5)
    # stretch one axis by a = 10 and perturb along it: the adversarial gain is a, a random
    # direction's gain E sqrt(1 + (a^2 - 1) u_1^2) over u uniform on the sphere (computed
    # here from an independent sample of a million directions)
    a = 10.0
    w = torch.eye(d)
    w[0, 0] = a
    x_adv = x.clone()
    x_adv[..., 0] += 0.1
    first = L.gain_ratios(_linear_net(w), x, x_adv, draws=400)
    first = first[first.stage == "lin"]
    assert np.allclose(first["adversarial gain"], a, rtol=1e-5)
    u = torch.randn(1_000_000, d, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    u1 = u[:, 0] / u.norm(dim=1)
    expected = math.log(a / float(torch.sqrt(1 + (a * a - 1) * u1 ** 2).mean()))
    assert first["log ratio"].mean() == pytest.approx(expected, abs=0.03)
    assert expected > 0.3                                          # far from the orthogonal 0


def test_gain_ratio_of_the_first_stage_does_not_depend_on_how_layers_are_scaled():
    torch.manual_seed(0)
    net = create_model("convnet").eval()
    scaled = create_model("convnet").eval()
    scaled.load_state_dict(net.state_dict())
    with torch.no_grad():   # conv1 x 4, conv2 / 4: ReLU and max-pooling commute with the scale
        scaled.body.conv1[0].weight.mul_(4)
        scaled.body.conv1[0].bias.mul_(4)
        scaled.body.conv2[0].weight.div_(4)
    x = torch.rand(6, 1, 28, 28)
    x_adv = (x + 0.05 * torch.randn_like(x)).clamp(0, 1)
    assert torch.allclose(net(x), scaled(x), atol=1e-4)            # the same function
    r, rs = (L.gain_ratios(m, x, x_adv, draws=3, seed=1) for m in (net, scaled))
    f, fs = r[r.stage == "conv1"], rs[rs.stage == "conv1"]
    assert np.allclose(fs["adversarial gain"], 4 * f["adversarial gain"].to_numpy(), rtol=1e-4)
    assert np.allclose(fs["log ratio"], f["log ratio"], atol=1e-5)
    assert list(r.stage.unique()) == ["conv1", "conv2", "fc", "head"]


def test_gain_ratio_refuses_bad_input_and_skips_unperturbed_images():
    net = _linear_net(torch.eye(4))
    x = torch.rand(3, 1, 1, 4)
    x_adv = x.clone()
    x_adv[0] += 0.1
    r = L.gain_ratios(net, x, x_adv, draws=2)
    assert set(r["image"]) == {0}
    with pytest.raises(ValueError, match="draws"):
        L.gain_ratios(net, x, x_adv, draws=0)
    with pytest.raises(ValueError, match="same shape"):
        L.gain_ratios(net, x, x_adv[:2], draws=1)


def test_s7_rule_branches_and_the_untested_table_5_part():
    assert L.s7_first_layer(est(0.2, 0.1)).verdict == "reproduced"
    assert L.s7_first_layer(est(0.05, 0.1)).verdict == "not reproduced"
    assert L.s7_first_layer(est(-0.2, 0.1)).verdict == "not reproduced"
    assert L.s7_first_layer(est(0.2, float("nan"), 1)).verdict == "not tested"
    first = L.s7_first_layer(est(0.2, 0.1))
    combined = V.combine({"first layer": first, "AlexNet Table 5": L.s7_alexnet(None)})
    assert combined.verdict == "partly" and "only first layer tested" in combined.reason
    both = V.combine({"first layer": first, "AlexNet Table 5": L.s7_alexnet([1.0] * 8)})
    assert both.verdict == "reproduced"
    assert L.s7_alexnet([1.0] * 7 + [2.0]).verdict == "partly"
    assert L.s7_alexnet([1.0] * 7 + [4.0]).verdict == "not reproduced"


# ----------------------------------------------------------------------------- S3, S4, S6
def test_cross_excess_of_the_papers_table_is_the_papers_effect_and_reads_rows_as_made_for():
    labels = list(Z.SZEGEDY_MODELS)
    assert Z.cross_excess(Z.SZEGEDY_T2, labels) == pytest.approx(Z.t2_transfer_effect())
    flipped = Z.SZEGEDY_T2.copy()
    flipped.loc[labels, labels] = Z.SZEGEDY_T2.loc[labels, labels].to_numpy().T
    assert Z.cross_excess(flipped, labels) != pytest.approx(Z.t2_transfer_effect())


def test_cross_table_rows_are_the_examples_columns_the_model_fed():
    x = torch.zeros(4, 1, 2, 2)
    models = {"zero": _Constant(0), "one": _Constant(1)}
    adv = {"zero": dict(x=x, y=torch.ones(4, dtype=torch.long), x_adv=x, dist=torch.zeros(4)),
           "one": dict(x=x, y=torch.zeros(4, dtype=torch.long), x_adv=x + 0.1,
                       dist=torch.full((4,), 0.1))}
    t = Z.cross_table(models, adv, "zero", seed=0)
    # the examples made for "zero" carry label 1: "zero" (answers 0) misclassifies all of them
    assert t.loc["zero", "zero"] == 100 and t.loc["zero", "one"] == 0
    assert t.loc["one", "zero"] == 0 and t.loc["one", "one"] == 100
    assert t.loc["one", "distortion"] == pytest.approx(0.1)


def test_disjoint_excess_of_the_papers_table_4_is_the_papers_effect():
    t = Z.SZEGEDY_T4.copy()
    t["RMS"] = 0.0
    idx = list(t.index)
    groups = {"native": idx[0:3], "noise": [idx[3], idx[7]], "magnified": idx[4:7]}
    assert Z.disjoint_excess(t, groups) == pytest.approx(Z.t4_transfer_effect())
    # the four cells between halves: (made for P1 models, fed P2) and back
    cells = [t.loc[groups["magnified"][r], t.columns[c]] for r, c in Z.DISJOINT]
    assert sorted(cells) == sorted(Z.t4_disjoint())


def test_untested_and_partial_branches_of_s3_s4_s6():
    one = V.over_seeds([5.0])
    assert Z.s3_cross_model(one, Z.t2_transfer_effect()).verdict == "not tested"
    assert Z.s4_cross_training_set(one, Z.t4_transfer_effect()).verdict == "not tested"
    assert Z.s6_adversarial_training(V.over_seeds([0.12, 0.13, 0.14]), 0.4).verdict == "partly"
    assert Z.s6_adversarial_training(V.over_seeds([0.03, 0.04, 0.05]), 0.4).verdict == "not reproduced"
    assert Z.s3_cross_model(V.over_seeds([2.0, 2.5, 3.0]), 7.8).verdict == "partly"


# ----------------------------------------------------------------------------- S1's quantity
def test_top_images_and_label_purity_on_a_layer_whose_units_are_the_labels():
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])
    phi = torch.nn.functional.one_hot(labels, 3).float() * torch.linspace(1, 2, 10)[:, None]
    top = U.top_images(phi, torch.eye(3), 3)
    # unit c picks the three images of label c with the largest activation, best first
    assert top.tolist() == [[9, 6, 3], [7, 4, 1], [8, 5, 2]]
    assert U.label_purity(labels, top).tolist() == [1.0, 1.0, 1.0]
    # a direction mixing classes 0 and 1 equally picks both
    mixed = U.top_images(phi, torch.tensor([[1.0, 1.0, 0.0]]) / 2 ** 0.5, 4)
    assert set(labels[mixed[0]].tolist()) == {0, 1}
    assert U.label_purity(labels, mixed).item() == pytest.approx(0.5)
    assert U.label_purity(labels, torch.tensor([[0, 1, 2, 3]])).item() == pytest.approx(0.5)
    with pytest.raises(ValueError, match="directions"):
        U.top_images(phi, torch.eye(4), 3)
