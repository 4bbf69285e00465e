"""The plan's cost model: work counted as the jobs run, and the fit that turns it into seconds.

* an inversion's FLOPs are 4 per MAC of the model *up to its layer* (no weight gradients,
  the pass stops there), checked against the MACs written out by hand for an MLP;
* each training loss's passes per step (PGD's attack steps have no weight gradients; TRADES
  adds a clean pass; head-only training runs the body forward only);
* the fit recovers known rates from exact synthetic timings, puts a family's time on its
  passes when it grows with passes alone, and refuses negative measurements;
* a prediction is flops / rate + passes * seconds per pass, snapshots cost nothing, and an
  uncalibrated family is named in the error;
* the stored calibration covers every family with usable numbers.
"""

from __future__ import annotations

import dataclasses
import math

import pytest

from stir_lib import jobs as J
from stir_lib.jobs import calibration, cost
from stir_lib.training import TrainConfig

HIDDEN = (("hidden", (32, 16)), ("num_classes", 5))
DATA = J.Data("mnist", "test", n=300)          # 300 images, 10 classes


def test_macs_stop_at_the_layer():
    whole = 784 * 32 + 32 * 16 + 16 * 5
    assert J.macs_per_example("mlp", HIDDEN) == whole
    assert J.macs_per_example("mlp", HIDDEN, "h1") == 784 * 32
    assert J.macs_per_example("mlp", HIDDEN, "h2") == 784 * 32 + 32 * 16
    assert J.macs_per_example("mlp", HIDDEN, "flatten") == 0


def test_inversion_counts_a_forward_and_an_input_backward_to_its_layer():
    train = J.Train("mlp", TrainConfig(epochs=1, seed=0), DATA, HIDDEN)
    inv = J.Invert(train, DATA, layer="h2", steps=10)
    assert inv.flops() == 4.0 * (784 * 32 + 32 * 16) * 11 * 300      # 10 steps + the scoring pass
    assert inv.calls() == 11                                          # 300 images: one batch of 500
    assert cost.family(inv) == "inversion/dense"


@pytest.mark.parametrize("loss, extra, factor, passes", [
    ("ce", {}, 6, 1),
    ("pgd-at", {"adv_eps": 1.0, "adv_steps": 3}, 6 + 4 * 3, 1 + 3),
    ("pgd-at", {"adv_eps": 0.0, "adv_steps": 3}, 6, 1),              # eps 0: no attack runs
    ("pgd-mix", {"adv_eps": 1.0, "adv_steps": 2}, 12 + 8, 2 + 2),
    ("trades", {"adv_eps": 1.0, "adv_steps": 2}, 12 + 8 + 2, 2 + 2 + 1),
    ("mart", {"adv_eps": 1.0, "adv_steps": 2}, 12 + 8, 2 + 2),
])
def test_training_passes_per_step(loss, extra, factor, passes):
    cfg = TrainConfig(epochs=2, batch_size=128, seed=0, loss=loss, **extra)
    job = J.Train("mlp", cfg, DATA, HIDDEN)
    macs = 784 * 32 + 32 * 16 + 16 * 5
    assert job.flops() == macs * 300 * factor * 2
    assert job.calls() == passes * 2 * math.ceil(300 / 128)
    assert cost.family(job) == "model/dense"


def test_head_only_training_runs_the_body_forward_only():
    cfg = TrainConfig(epochs=1, batch_size=300, seed=0, train_params="head")
    job = J.Train("mlp", cfg, DATA, HIDDEN)
    assert job.flops() == 2.0 * (784 * 32 + 32 * 16 + 16 * 5) * 300


def test_fit_recovers_known_rates():
    rows = []
    for flops, calls in ((1e9, 10), (5e9, 10), (2e9, 300), (8e9, 40)):
        rows.append(("a", flops, calls, flops / 2e9 + calls * 0.01))
        rows.append(("b", flops, calls, flops / 5e10 + calls * 0.002))
    fitted = cost.fit(rows)
    assert fitted["a"]["flops_per_second"] == pytest.approx(2e9, rel=1e-6)
    assert fitted["a"]["seconds_per_call"] == pytest.approx(0.01, rel=1e-6)
    assert fitted["b"]["flops_per_second"] == pytest.approx(5e10, rel=1e-6)
    assert fitted["b"]["seconds_per_call"] == pytest.approx(0.002, rel=1e-6)
    assert fitted["a"]["jobs"] == 4


def test_fit_puts_time_on_passes_when_it_grows_with_passes_alone():
    rows = [("c", f, n, n * 0.02) for f, n in ((9e9, 10), (1e9, 50), (4e9, 200))]
    fitted = cost.fit(rows)
    assert fitted["c"]["flops_per_second"] == math.inf
    assert fitted["c"]["seconds_per_call"] == pytest.approx(0.02)


def test_fit_refuses_negative_measurements():
    with pytest.raises(ValueError, match="non-negative"):
        cost.fit([("a", 1e9, 10, -1.0)])


def test_prediction_is_flops_at_the_rate_plus_the_passes():
    job = J.Train("mlp", TrainConfig(epochs=1, batch_size=100, seed=0), DATA, HIDDEN)
    rates = {"model/dense": {"flops_per_second": 1e9, "seconds_per_call": 0.5}}
    assert cost.predict_seconds(job, rates) == pytest.approx(job.flops() / 1e9 + 3 * 0.5)
    snap = J.Snapshot(J.Train("mlp", TrainConfig(epochs=2, seed=0, snapshots=(1,)), DATA,
                              HIDDEN), 1)
    assert cost.family(snap) is None and cost.predict_seconds(snap, rates) == 0.0
    with pytest.raises(KeyError, match="model/dense"):
        cost.predict_seconds(job, {"model/conv": rates["model/dense"]})
    assert cost.total_seconds([job, job], rates) == cost.predict_seconds(job, rates)


def test_the_stored_calibration_covers_every_family():
    assert set(calibration.RATES) == set(cost.FAMILIES)
    for fam, r in calibration.RATES.items():
        assert r["flops_per_second"] > 1e9, fam          # above 1 GFLOP/s (or inf)
        assert 0 <= r["seconds_per_call"] < 0.1, fam
        assert r["jobs"] >= 10, fam
    assert 0 < calibration.NOTEBOOK_SECONDS < 600


def test_the_szegedy_chapters_list_the_models_their_notebooks_train():
    """chapters.MODEL_JOBS at ci: blind spots trains per seed Table 1's six, Table 3's
    three (P1 and P2 kept apart: two entries of FC100-100-10 on 30,000 images) and S6's two;
    units its three scored nets and the judge; Lipschitz the units chapter's conv nets of
    seeds 0-2, the adversarially trained one on its 10,000 images and blind spots' MLPs of
    seed 0 (shared: the same jobs, counted once)."""
    from stir_lib.chapters import MODEL_JOBS
    from stir_lib.chapters import blind_spots as B, lipschitz as L, units as U

    jobs = {nb: MODEL_JOBS[nb]("ci") for nb in MODEL_JOBS}
    b = jobs["blind_spots"]
    assert len(b) == len(set(b)) == 11 * len(B.settings("ci")["seeds"])
    halves = [j for j in b if j.data.count() == 30000]
    assert sorted(j.arch for j in halves) == sorted(["fc100-100-10", "fc123-456-10",
                                                     "fc100-100-10"] * 3)
    assert {cost.family(j) for j in b} == {"model/dense"}
    ae = [j for j in b if j.arch == "ae400-10"]
    assert all(j.config.autoencoder_epochs == B.settings("ci")["ae_epochs"] for j in ae)
    u = jobs["units_vs_random"]
    assert [j.config.seed for j in u] == [0, 1, 2, U.JUDGE_SEED_OFFSET]
    lip = jobs["lipschitz"]
    shared = set(lip) & (set(u) | set(b))
    assert len(shared) == 5 and len(set(lip) - shared) == 1      # only the AT conv net is its own
    (own,) = set(lip) - shared
    assert own.config.loss == "pgd-at" and own.data.count() == L.settings("ci")["n_adv_train"]
    # a counted job's work is the training it does: more epochs, proportionally more
    j = b[0]
    longer = J.Train(j.arch, dataclasses.replace(j.config, epochs=2 * j.config.epochs), j.data)
    assert longer.flops() == pytest.approx(2 * j.flops()) and longer.calls() == 2 * j.calls()


def test_the_szegedy_attacks_are_counted_per_solve_and_image():
    """chapters.ATTACK_JOBS at ci: blind spots attacks Table 1's six and Table 3's three
    models per seed and seed 0's FC100-100-10 once more with the cross-entropy; Lipschitz
    each of its six models once. An attack's work is n images x solves x iterations, at 4
    FLOPs per MAC (float64 forward and input backward), its passes one per batch of 1,000."""
    from stir_lib.chapters import ATTACK_JOBS
    from stir_lib.chapters import blind_spots as B, lipschitz as L
    from stir_lib.jobs.base import macs_per_example

    b, lip = ATTACK_JOBS["blind_spots"]("ci"), ATTACK_JOBS["lipschitz"]("ci")
    S = B.settings("ci")
    assert len(b) == 9 * len(S["seeds"]) + 1
    assert [a.loss for a in b].count("ce") == 1
    assert {a.n for a in b} == {S["n_attack"]} and {a.search_steps for a in b} == {S["search_steps"]}
    assert {a.model for a in lip} == set(L.model_jobs("ci"))
    assert {cost.family(a) for a in b + lip} == {"attack/lbfgs"}
    a = lip[0]
    SL = L.settings("ci")
    assert a.calls() == SL["search_steps"] * SL["max_iter"]          # 100 images: one batch
    assert a.flops() == 4.0 * macs_per_example("convnet") * SL["n_probe"] * a.calls()
    two = dataclasses.replace(a, n=1500)
    assert two.calls() == 2 * a.calls() and two.flops() == pytest.approx(15 * a.flops())
