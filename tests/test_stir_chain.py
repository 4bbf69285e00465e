"""N7's chains (rule of 2026-12-06): every size gets the same optimiser-step budget, the
sets are nested, each same-data control shares its chain model's images and initial
weights but not its batch order, and every branch of the N7 rule."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stir_lib.chapters import stir as C
from stir_lib.models import create_model


@pytest.mark.parametrize("scale", ["smoke", "ci"])
def test_every_size_gets_the_same_number_of_optimiser_steps(scale):
    S = C.settings(scale)
    bs = C.recipe(S, "V", S["losses_arch"])["batch_size"]
    steps = {n: C.chain_epochs(S, n) * -(-n // bs) for n in S["chain"]["sizes"]}
    assert set(steps.values()) == {S["chain"]["steps"]}, steps
    sizes = S["chain"]["sizes"]
    assert all(b == 2 * a for a, b in zip(sizes, sizes[1:]))          # each update doubles


def test_paper_scale_keeps_the_step_schedule_at_the_same_fractions_of_the_run():
    S = C.settings("paper")
    for n, job in C.update_chain(S, 0):
        cfg = job.config
        assert cfg.lr_step * 3 == pytest.approx(cfg.epochs, rel=0.02), (n, cfg.epochs, cfg.lr_step)
        steps = cfg.epochs * -(-n // cfg.batch_size)
        assert steps == pytest.approx(S["chain"]["steps"], rel=0.01)


def test_chain_sets_are_nested_and_controls_share_data_and_initial_weights():
    S = C.settings("smoke", n_train=600)
    chain, controls = C.update_chain(S, 1), C.chain_controls(S, 1)
    assert [n for n, _ in controls] == [n for n, _ in chain][1:]
    xs = [job.data.load()[0] for _, job in chain]
    for small, big in zip(xs, xs[1:]):
        assert torch.equal(big[: len(small)], small)                   # nested: a prefix
    by_size = dict(chain)
    for n, ctrl in controls:
        assert ctrl.data == by_size[n].data                             # the same images
        assert ctrl.config.epochs == by_size[n].config.epochs
        assert ctrl.config.seed != by_size[n].config.seed               # another batch order
        assert ctrl.init is not None and ctrl.init.config.epochs == 0
        assert ctrl.init.config.seed == by_size[n].config.seed
    # the init job's weights are the chain's initial weights (trained_model seeds them so)
    init = controls[0][1].init.run("cpu").model
    registry, kwargs, _ = S["archs"][S["losses_arch"]]
    torch.manual_seed(1)
    fresh = create_model(registry, **dict(kwargs))
    for (k, v), (_, w) in zip(init.state_dict().items(), fresh.state_dict().items()):
        assert torch.equal(v, w), k
    # other chains draw other shuffles
    assert not torch.equal(C.update_chain(S, 2)[0][1].data.load()[0], xs[0])


def test_chain_refuses_bad_sizes():
    S = C.settings("smoke")
    S["chain"] = dict(S["chain"], sizes=(512, 256, 1024))
    with pytest.raises(ValueError, match="increasing"):
        C.update_chain(S, 0)


def _chains(rows, noise=0.004, seed=0):
    """Three chains: ``rows`` plus small, different per-chain offsets."""
    rng = np.random.default_rng(seed)
    base = np.asarray(rows, float)
    return (base + rng.normal(0, noise, size=(3, base.size))).tolist()


def test_n7_rule_branches():
    rising = _chains([0.60, 0.80, 0.88, 0.90])
    floor = _chains([0.95, 0.95, 0.95, 0.95], seed=1)                # the gap closes
    assert C.n7_updates(rising, floor).verdict == "reproduced"
    linear = _chains([0.60, 0.70, 0.80, 0.90])
    assert C.n7_updates(linear, floor).verdict == "partly"           # no diminishing returns
    dip = _chains([0.60, 0.85, 0.75, 0.90])
    assert C.n7_updates(dip, floor).verdict == "partly"              # an update falls
    flat = _chains([0.80, 0.80, 0.80, 0.80])
    assert C.n7_updates(flat, floor).verdict == "not reproduced"
    # the rise is only the floor rising: the gap to the floor does not close
    rising_floor = [list(np.asarray(r) + 0.05) for r in rising]
    v = C.n7_updates(rising, rising_floor)
    assert v.verdict == "not reproduced" and "gap closes" in v.reason
    # updates indistinguishable from retraining on the same data: premise absent
    v = C.n7_updates(rising, rising)
    assert v.verdict == "not tested" and "floor" in v.reason
    assert C.n7_updates(rising[:1], floor[:1]).verdict == "not tested"
    with pytest.raises(ValueError, match="floor"):
        C.n7_updates(rising, [r[:3] for r in floor])
    with pytest.raises(ValueError, match="updates"):
        C.n7_updates([r[:2] for r in rising], [r[:2] for r in floor])


def test_stir_options_give_the_notebooks_the_plans_inversion_settings():
    ci = C.settings("ci")
    assert C.stir_options(ci, "V-mlp-0", "V-mlp-1") == dict(fake_relu=(False, False),
                                                             clamp_start=True)
    paper = C.settings("paper")
    pair = C.stir_options(paper, "V-r18-0", "V-v16-0")
    assert pair == dict(fake_relu=(True, False), clamp_start=False)
    many = C.stir_options(paper, "AT-r18-0", "AT-r34-0", "AT-v19-0")
    assert many == dict(fake_relu={"AT-r18-0": True, "AT-r34-0": True, "AT-v19-0": False},
                        clamp_start=False)
    # at an early layer of a ResNet the flag does not act in the authors' code
    assert C.stir_options(paper, "V-r18-0", "V-r18-1", layer="layer2")["fake_relu"] == (False, False)
    # chain models (not zoo names) are losses_arch's: a ResNet at paper scale
    assert C.stir_options(paper, "chain-a", "chain-b")["fake_relu"] == (True, True)
    # the same settings as the plan's Invert jobs
    zoo = C.zoo(paper)
    jobs = {j.model.label: j for j in C.matrix_jobs(paper, zoo)}
    for n in ("V-r18-0", "V-v16-0"):
        assert jobs[n].fake_relu == C.stir_options(paper, n, n)["fake_relu"][0]
        assert jobs[n].clamp_start is False
