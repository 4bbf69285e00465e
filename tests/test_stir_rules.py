"""The STIR chapters' computed quantities on small matrices whose answer is known (the
orientation of the pair rows, the block means, N3's paired asymmetry, the seed pairs, the
N6 budget), and every branch of the N1-N6 rules (issue 19)."""

from __future__ import annotations

import matplotlib
import numpy as np
import pandas as pd
import pytest

matplotlib.use("Agg")

from stir_lib import verdicts as V  # noqa: E402
from stir_lib.chapters import stir as C  # noqa: E402


def seeds(mean, sd=0.01, n=3):
    """n per-seed values with exactly this mean and sample sd."""
    base = np.array([-1.0, 0.0, 1.0]) if n == 3 else np.linspace(-1, 1, n)
    return (mean + sd * base / base.std(ddof=1)).tolist()


def est(mean, half_width, n=3):
    return V.Estimate(mean, half_width, n)


def zoo_matrix(S, fill=0.5, diagonal=1.0):
    """A STIR matrix over the zoo's names (rows: references), every cell ``fill``."""
    names = list(C.zoo(S))
    frame = pd.DataFrame(fill, index=pd.Index(names, name="reference"),
                         columns=pd.Index(names, name="scored by"))
    for n in names:
        frame.loc[n, n] = diagonal
    return frame


@pytest.fixture(scope="module")
def S():
    return C.settings("smoke")     # archs mlp, conv, res; seeds 0, 1


# ----------------------------------------------------------------------------- quantities
def test_seed_pairs_are_every_pair_of_seeds_lower_seed_first():
    S3 = C.settings("ci")
    pairs = C.seed_pairs(S3, "AT", "conv")
    assert pairs == [("AT-conv-0", "AT-conv-1"), ("AT-conv-0", "AT-conv-2"),
                     ("AT-conv-1", "AT-conv-2")]
    assert C.seed_pairs(C.settings("smoke"), "V", "mlp") == [("V-mlp-0", "V-mlp-1")]


def test_pair_rows_read_rows_as_references():
    names = ["V-mlp-0", "V-mlp-1"]
    stir = pd.DataFrame([[1.0, 0.9], [0.4, 1.0]], index=names, columns=names)
    cka = pd.DataFrame([[1.0, 0.7], [0.7, 1.0]], index=names, columns=names)
    (row,) = C.pair_rows(stir, cka, [("V-mlp-0", "V-mlp-1")])
    # the one asymmetric cell: row V-mlp-0 (the reference m1), column V-mlp-1 scores it
    assert row["STIR(m2|m1)"] == 0.9 and row["STIR(m1|m2)"] == 0.4
    assert row["STIR"] == pytest.approx(0.65) and row["CKA"] == 0.7
    (flipped,) = C.pair_rows(stir.T, cka, [("V-mlp-0", "V-mlp-1")])
    assert flipped["STIR(m2|m1)"] == 0.4          # a transposed matrix swaps the directions


def test_block_means_average_the_cross_architecture_cells_of_one_replicate(S):
    stir = zoo_matrix(S, fill=0.5)
    stir.loc["AT-mlp-0", "AT-conv-0"] = 0.8        # one AT cell of seed 0
    stir.loc["V-res-1", "V-mlp-1"] = 0.1           # a V cell of the other seed
    stir.loc["AT-mlp-0", "V-mlp-0"] = 0.0          # across trainings: in no block
    b0, b1 = C.block_means(stir, S, 0), C.block_means(stir, S, 1)
    assert b0["AT"] == pytest.approx((5 * 0.5 + 0.8) / 6) and b0["V"] == pytest.approx(0.5)
    assert b1["AT"] == pytest.approx(0.5) and b1["V"] == pytest.approx((5 * 0.5 + 0.1) / 6)
    assert set(b0) == {"AT", "V"}                  # the diagonal (1.0) never enters


def test_residual_asymmetry_is_stir_other_given_residual_minus_the_reverse(S):
    stir = zoo_matrix(S, fill=0.5)
    stir.loc["AT-res-0", "AT-mlp-0"] = 0.8         # STIR(mlp | res): res is the reference
    a = C.residual_asymmetry(stir, S, 0)
    # two (residual, other) pairs: (res, mlp) +0.3, (res, conv) 0
    assert a["AT"] == pytest.approx(0.15) and a["V"] == pytest.approx(0.0)
    assert C.residual_asymmetry(stir.T, S, 0)["AT"] == pytest.approx(-0.15)   # orientation
    assert C.residual_asymmetry(stir, S, 1) == {"AT": 0.0, "V": 0.0}           # another seed
    stir.loc["AT-conv-0", "AT-mlp-0"] = 0.0        # a cell between two non-residual nets
    assert C.residual_asymmetry(stir, S, 0)["AT"] == pytest.approx(0.15)


def test_residual_asymmetry_needs_both_kinds_of_architecture():
    S = C.settings("smoke", archs=["mlp", "conv"])
    assert C.residual_asymmetry(zoo_matrix(S), S, 0) is None
    S_res = C.settings("smoke")
    with pytest.raises(ValueError, match="rows and columns"):
        C.residual_asymmetry(zoo_matrix(S), S_res, 0)


def test_the_papers_asymmetry_from_its_matrix():
    p = C.nanda_asymmetry()
    assert p["AT"] == pytest.approx(0.1175) and p["V"] == pytest.approx(0.0225)
    # by hand from the poster: (r18|r34 reference, v16|v19 scored) minus the reverse
    m = C.NANDA_STIR
    at = np.mean([m.loc[f"AT-{r}", f"AT-{o}"] - m.loc[f"AT-{o}", f"AT-{r}"]
                  for r in ("r18", "r34") for o in ("v16", "v19")])
    assert p["AT"] == pytest.approx(at)
    t = C.nanda_asymmetry(C.NANDA_STIR.T)          # columns read as references instead
    assert t["AT"] == pytest.approx(-0.1175) and t["V"] == pytest.approx(-0.0225)


# ----------------------------------------------------------------------------- N6's budget
@pytest.mark.parametrize("scale", ["smoke", "ci", "paper"])
def test_losses_train_with_the_at_recipes_budget(scale):
    S = C.settings(scale)
    at = C.recipe(S, "AT", S["losses_arch"])
    for n, job in C.loss_models(S).items():
        for key in ("epochs", "batch_size", "optimizer", "lr", "lr_schedule"):
            assert getattr(job.config, key) == at[key], (n, key)
        assert job.config.loss in ("trades", "mart")


def test_loss_recipe_refuses_a_budget_typed_twice():
    S = C.settings("ci", loss_recipe=dict(epochs=10, adv_norm="l2", adv_eps=1.5, beta=6.0))
    with pytest.raises(ValueError, match="epochs=10 where AT has 12"):
        C.loss_recipe(S)
    same = C.settings("ci", loss_recipe=dict(epochs=12, adv_norm="l2", adv_eps=1.5, beta=6.0))
    assert C.loss_recipe(same)["epochs"] == 12


# ----------------------------------------------------------------------------- N1, N2
def _n1(v_stir, v_cka, a_stir):
    return C.n1_seed_pairs(v_stir, v_cka, a_stir, C.nanda_n1_effects()).verdict


def test_n1_every_branch():
    e = C.nanda_n1_effects()
    v = 0.5
    assert _n1(seeds(v), seeds(v + e["cka_minus_stir"]), seeds(v + e["at_minus_vanilla"])) \
        == "reproduced"
    assert _n1(seeds(v), seeds(v + 0.3 * e["cka_minus_stir"]),
               seeds(v + 0.3 * e["at_minus_vanilla"])) == "partly"     # a third of the paper's
    assert _n1(seeds(v), seeds(v), seeds(v)) == "not reproduced"
    assert _n1([v], [0.97], [0.93]) == "not tested"                    # one pair: no noise


def test_n2_every_branch():
    p2 = float(C.nanda_blocks()["AT"].mean() - C.nanda_blocks()["V"].mean())
    rule = C.n2_adversarial_blocks
    assert rule(V.over_seeds(seeds(p2, 0.02)), p2).verdict == "reproduced"
    assert rule(V.over_seeds(seeds(0.3 * p2, 0.02)), p2).verdict == "partly"
    assert rule(V.over_seeds(seeds(0.0, 0.02)), p2).verdict == "not reproduced"
    assert rule(V.over_seeds([p2]), p2).verdict == "not tested"


# ----------------------------------------------------------------------------- N3
def test_n3_every_branch_against_the_papers_asymmetry():
    p = C.nanda_asymmetry()
    rule = C.n3_residual_reference

    def ours(at, v, sd=0.005):
        return {"AT": V.over_seeds(seeds(at, sd)), "V": V.over_seeds(seeds(v, sd))}

    assert rule(ours(p["AT"], p["V"]), p).verdict == "reproduced"
    assert rule(ours(p["AT"], 0.3 * p["V"], 0.001), p).verdict == "partly"   # V a third
    assert rule(ours(p["AT"], 0.0), p).verdict == "partly"                    # V absent
    assert rule(ours(0.0, 0.0), p).verdict == "not reproduced"
    assert rule(ours(-p["AT"], -p["V"]), p).verdict == "not reproduced"       # reversed
    assert rule(None, p).verdict == "not tested"
    one = {"AT": V.over_seeds([p["AT"]]), "V": V.over_seeds([p["V"]])}
    assert rule(one, p).verdict == "not tested"
    with pytest.raises(ValueError, match="same trainings"):
        rule({"AT": V.over_seeds(seeds(0.1))}, p)


# ----------------------------------------------------------------------------- N4
def test_n4_every_branch():
    good = {"vanilla STIR drop": est(0.3, 0.05), "vanilla drop - AT drop": est(0.2, 0.05),
            "STIR drop - CKA drop": est(0.25, 0.05)}
    flat = {k: est(0.0, 0.05) for k in good}
    assert C.n4_layers({"mlp": good, "conv": good}).verdict == "reproduced"
    assert C.n4_layers({"mlp": good, "conv": flat}).verdict == "partly"
    assert C.n4_layers({"mlp": flat}).verdict == "not reproduced"
    unmeasured = {k: est(0.3, float("nan"), 1) for k in good}
    assert C.n4_layers({"mlp": unmeasured}).verdict == "not tested"


# ----------------------------------------------------------------------------- N5
CEIL_AT, CEIL_V = [0.9998, 0.9999, 1.0], [0.9997, 0.9999, 1.0]    # both reach 1 within noise
UP, DOWN = (seeds(0.9, 0.01), seeds(0.7, 0.01)), (seeds(0.7, 0.01), seeds(0.9, 0.01))
FLAT = (seeds(0.8, 0.01), seeds(0.8, 0.01))


def test_n5_premise_is_both_trainings_at_the_ceiling_within_their_noise():
    present, why = C.n5_premise(CEIL_AT, CEIL_V)
    assert not present and "both reach" in why
    assert C.n5_premise(CEIL_AT, seeds(0.9))[0]                # vanilla has room
    assert C.n5_premise(seeds(0.9), CEIL_V)[0]
    # close to 1 but each interval below it: judged, however small the difference
    near_at, near_v = seeds(0.9991, 0.0001), seeds(0.9981, 0.0001)
    assert C.n5_premise(near_at, near_v)[0]
    assert C.n5_at_higher({"a": (near_at, near_v)}).verdict == "reproduced"
    assert C.n5_premise([0.9999], [1.0]) == (True, "noise not measured")


def test_n5_every_branch():
    rule = C.n5_at_higher
    assert rule({"a": UP, "b": UP}).verdict == "reproduced"
    assert rule({"a": UP, "b": FLAT}).verdict == "partly"
    assert rule({"a": UP, "b": FLAT, "c": FLAT}).verdict == "not reproduced"   # under half
    assert rule({"a": UP, "b": DOWN}).verdict == "not reproduced"              # one against
    assert rule({"a": FLAT, "b": FLAT}).verdict == "not reproduced"
    ceiling = (CEIL_AT, CEIL_V)
    v = rule({"a": ceiling, "b": ceiling})
    assert v.verdict == "not tested" and "premise" in v.reason
    # a premise-absent cell counts for neither side: UP alone decides
    v = rule({"a": UP, "b": ceiling})
    assert v.verdict == "reproduced" and "premise absent" in v.reason and "b" in v.reason
    assert rule({"a": ([0.9], [0.7])}).verdict == "not tested"                # one pair each
    with pytest.raises(ValueError, match="at least one"):
        rule({})


def test_n5_cells_show_the_premise_per_cell():
    t = C.n5_cells({"mlp/h1": (CEIL_AT, CEIL_V), "mlp/h2": UP})
    assert list(t["premise"]) == ["absent", "present"]
    assert t.loc["mlp/h2", "AT - V"] == pytest.approx(0.2)
    assert t.loc["mlp/h1", "AT upper"] >= 1 and t.loc["mlp/h2", "V upper"] < 1


# ----------------------------------------------------------------------------- N6
def test_n6_is_judged_on_the_finding_only_where_the_premise_holds():
    similar, apart = est(2.0, 1.0), est(12.0, 2.0)
    assert C.n6_losses(similar, est(0.1, 0.02)).verdict == "reproduced"
    assert C.n6_losses(similar, est(0.0, 0.02)).verdict == "not reproduced"
    assert C.n6_losses(similar, est(-0.1, 0.02)).verdict == "not reproduced"
    v = C.n6_losses(apart, est(0.1, 0.02))
    assert v.verdict == "not tested" and "premise" in v.reason
    assert C.n6_losses(est(4.0, 2.0), est(0.1, 0.02)).verdict == "not tested"   # bound 6 > 5
    assert C.n6_losses(est(2.0, float("nan"), 1), est(0.1, 0.02)).verdict == "not tested"
    assert C.n6_losses(similar, est(0.1, float("nan"), 1)).verdict == "not tested"


# ----------------------------------------------------------------------------- figures
def test_heatmaps_use_the_papers_fixed_scale():
    from stir_lib.plotting import SIMILARITY_CMAP, matrix_heatmap

    ours = pd.DataFrame([[1.0, 0.57], [0.6, 1.0]], index=["a", "b"], columns=["a", "b"])
    ax = matrix_heatmap(ours)
    mesh = ax.collections[0]
    assert mesh.get_clim() == (0.0, 1.0) and mesh.get_cmap().name == SIMILARITY_CMAP
    ax2 = matrix_heatmap(C.NANDA_STIR)
    assert ax2.collections[0].get_clim() == mesh.get_clim()
    with pytest.raises(ValueError, match="vmin"):
        matrix_heatmap(ours, vmin=1.0, vmax=0.0)
    matplotlib.pyplot.close("all")


def test_the_rounds_strings_agree_with_the_package():
    from stir_lib import chapters

    assert C.ROUND == chapters.ROUND and C.PREVIOUS_BUILD == chapters.PREVIOUS_BUILD
