"""STIR assembled by hand from its parts, for every option it passes on.

STIR(m2 | m1) = CKA(m2(X), m2(X')) with X' the IRIs of m1 (Nanda et al. 2022, eq. 1). These
tests build that number from `invert`, `representation` and `linear_cka` directly, with
non-default layers, boxes, spatial pooling, batch sizes and several seeds, and check that
`stir` and `stir_matrix` give exactly it; plus the Score and summary arithmetic and the
checks of the seeds argument. Written against the mutation report
(tests/mutation/REPORT.md).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from stir_lib.inversion import invert, representation
from stir_lib.similarity import linear_cka
from stir_lib.stir import Score, stir, stir_matrix

F64 = torch.float64


def conv(seed):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.Tanh(), nn.Flatten(),
                         nn.Linear(48, 5)).to(F64).eval()


def images(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 4, 4, generator=g, dtype=F64) * 2 - 1     # in [-1, 1]


OPTS = dict(spatial="mean", box=(-1.0, 1.0), batch_size=4, steps=6, seed_kind="uniform")


def by_hand(m1, m2, X, l1, l2, seed, **o):
    rk = dict(spatial=o["spatial"], box=o["box"], batch_size=o["batch_size"])
    iris = invert(m1, X, l1, seed=seed, steps=o["steps"], seed_kind=o["seed_kind"],
                  **rk).x_prime
    return linear_cka(representation(m2, X, l2, **rk), representation(m2, iris, l2, **rk)), iris


def test_stir_is_cka_of_the_scoring_model_on_the_other_models_iris():
    m1, m2, X = conv(0), conv(1), images()
    r = stir(m1, m2, X, layer1="1", layer2="1", seeds=(3, 5), use_cache=False,
             return_iris=True, **OPTS)
    for k, seed in enumerate((3, 5)):
        want21, iris1 = by_hand(m1, m2, X, "1", "1", seed, **OPTS)
        want12, iris2 = by_hand(m2, m1, X, "1", "1", seed, **OPTS)
        assert r.m2_given_m1.values[k] == pytest.approx(want21, rel=1e-12)
        assert r.m1_given_m2.values[k] == pytest.approx(want12, rel=1e-12)
        torch.testing.assert_close(r.iris_m1[k], iris1, rtol=0, atol=0)
        torch.testing.assert_close(r.iris_m2[k], iris2, rtol=0, atol=0)
    rk = dict(spatial="mean", box=(-1.0, 1.0))
    assert r.cka.values == (pytest.approx(linear_cka(representation(m1, X, "1", **rk),
                                                     representation(m2, X, "1", **rk))),)
    assert r.distance_m1.shape == r.evaluations_m2.shape == (2, len(X))
    assert r.evaluations_m1.eq(OPTS["steps"] + 1).all()
    assert (r.seeds, r.layer1, r.layer2, r.n, r.seed_kind, r.method) == \
        ((3, 5), "1", "1", 6, "uniform", "reference")
    no_iris = stir(m1, m2, X, layer1="1", layer2="1", seeds=(3, 5), use_cache=False, **OPTS)
    assert no_iris.iris_m1 is None and no_iris.iris_m2 is None
    assert no_iris.m2_given_m1 == r.m2_given_m1


def test_stir_matrix_rows_are_stir_of_the_reference():
    models = {"a": conv(0), "b": conv(1), "c": conv(2)}
    X = images()
    S, C, sd, iris = stir_matrix(models, X, layers={"a": "1", "b": "1", "c": "1"}, seeds=(3, 5),
                                 use_cache=False, return_std=True, return_iris=True, **OPTS)
    for a in models:
        for b in models:
            vals = [by_hand(models[a], models[b], X, "1", "1", s, **OPTS)[0] for s in (3, 5)]
            assert S.loc[a, b] == pytest.approx(np.mean(vals), rel=1e-12)
            assert sd.loc[a, b] == pytest.approx(np.std(vals, ddof=1), rel=1e-9, abs=1e-12)
    assert set(iris) == {(n, s) for n in models for s in (3, 5)}
    np.testing.assert_allclose(C.values, C.values.T)
    assert S.index.name == "reference" and S.columns.name == "scored by"
    one = stir_matrix(models, X, layers={"a": "1", "b": "1", "c": "1"}, seeds=3,
                      use_cache=False, return_std=True, **OPTS)
    assert one[2].isna().all().all()
    with pytest.raises(ValueError, match=r"^layers: expected keys among the model names"):
        stir_matrix(models, X, layers={"z": "1"}, **OPTS)


def test_score_arithmetic_and_summary():
    s = Score((0.5, 0.7, 0.9))
    assert s.mean == pytest.approx(0.7) and float(s) == s.mean
    assert s.std == pytest.approx(0.2)
    assert math.isnan(Score((0.4,)).std)
    assert str(s) == "0.700 ± 0.200" and str(Score((0.4,))) == "0.400 (1 seed)"
    m1, m2, X = conv(0), conv(1), images()
    r = stir(m1, m2, X, seeds=(0, 1), use_cache=False, **OPTS)
    summ = r.summary()
    assert summ == {
        "m2_given_m1": r.m2_given_m1.mean, "m2_given_m1_std": r.m2_given_m1.std,
        "m1_given_m2": r.m1_given_m2.mean, "m1_given_m2_std": r.m1_given_m2.std,
        "cka": r.cka.mean, "cka_std": summ["cka_std"],
        "distance_m1": pytest.approx(float(r.distance_m1.mean())),
        "distance_m2": pytest.approx(float(r.distance_m2.mean()))}
    assert math.isnan(summ["cka_std"])


@pytest.mark.parametrize("seeds, error, match", [
    (True, TypeError, "seeds: expected an int or a sequence"),
    (2.0, TypeError, "seeds: expected an int or a sequence"),
    ((), ValueError, "seeds: expected a non-empty sequence of ints"),
    ((1, True), ValueError, "seeds: expected a non-empty sequence of ints"),
    ((1, 2, 1), ValueError, "seeds: expected distinct seeds"),
])
def test_bad_seeds_are_refused(seeds, error, match):
    with pytest.raises(error, match=match):
        stir(conv(0), conv(1), images(), seeds=seeds, use_cache=False, **OPTS)
    with pytest.raises(error, match=match):
        stir_matrix({"a": conv(0)}, images(), seeds=seeds, use_cache=False, **OPTS)


def test_one_image_is_too_few():
    for call in (lambda: stir(conv(0), conv(1), images(1), use_cache=False, **OPTS),
                 lambda: stir_matrix({"a": conv(0)}, images(1), use_cache=False, **OPTS)):
        with pytest.raises(ValueError, match=r"^X: expected at least 2 images"):
            call()


# ----------------------------------------------------------------------------- arguments
def test_errors_name_the_argument_at_fault():
    m, X = conv(0), images()
    kw = dict(use_cache=False, **OPTS)
    with pytest.raises(TypeError, match=r"^m1: expected a torch.nn.Module"):
        stir("model", m, X, **kw)
    with pytest.raises(TypeError, match=r"^m2: expected a torch.nn.Module"):
        stir(m, "model", X, **kw)
    with pytest.raises(ValueError, match=r"^layer1: expected a module path"):
        stir(m, m, X, layer1="nope", **kw)
    with pytest.raises(ValueError, match=r"^layer2: expected a module path"):
        stir(m, m, X, layer2="nope", **kw)
    with pytest.raises(ValueError, match=r"^X: expected values in the box \[0, 1\]"):
        stir(m, m, X, use_cache=False)                  # X in [-1, 1], default box
    with pytest.raises(TypeError, match=r"^models\['b'\]: expected a torch.nn.Module"):
        stir_matrix({"a": m, "b": 3}, X, **kw)
    with pytest.raises(ValueError, match=r"^layers\['a'\]: expected a module path"):
        stir_matrix({"a": m}, X, layers={"a": "nope"}, **kw)
    with pytest.raises(ValueError, match=r"^X: expected values in the box \[0, 1\]"):
        stir_matrix({"a": m}, X, use_cache=False)
    with pytest.raises(TypeError, match=r"^models: expected a non-empty dict"):
        stir_matrix([m], X, **kw)
    with pytest.raises(TypeError, match=r"^models: expected a non-empty dict"):
        stir_matrix({}, X, **kw)


def test_image_models_check_the_images_by_the_name_x():
    from stir_lib.models import create_model
    net = create_model("fc10").eval()
    wrong = torch.rand(3, 1, 20, 20)
    for m1, m2 in ((net, conv(0)), (conv(0), net)):
        with pytest.raises(ValueError, match=r"^X: expected .*28"):
            stir(m1, m2, wrong, use_cache=False)
    with pytest.raises(ValueError, match=r"^X: expected .*28"):
        stir_matrix({"a": net}, wrong, use_cache=False)


def test_two_images_are_enough():
    m1, m2, X = conv(0), conv(1), images(2)
    r = stir(m1, m2, X, use_cache=False, **OPTS)
    assert r.n == 2 and len(r.m2_given_m1.values) == 1
    S, C = stir_matrix({"a": m1, "b": m2}, X, use_cache=False, **OPTS)
    assert S.shape == C.shape == (2, 2)


def test_step_size_and_pool_reach_the_inversion():
    m1, m2, X = conv(0), conv(1), images()
    pool = images(9, seed=4)
    kw = dict(OPTS, seed_kind="pool")
    r = stir(m1, m2, X, layer1="1", layer2="1", step_size=0.05, pool=pool, use_cache=False,
             return_iris=True, **kw)
    rk = dict(spatial="mean", box=(-1.0, 1.0), batch_size=4)
    inv = invert(m1, X, "1", seed=0, steps=OPTS["steps"], step_size=0.05, seed_kind="pool",
                 pool=pool, **rk)
    torch.testing.assert_close(r.iris_m1[0], inv.x_prime, rtol=0, atol=0)
    S, _, iris = stir_matrix({"a": m1}, X, layers={"a": "1"}, step_size=0.05, pool=pool,
                             use_cache=False, return_iris=True, **kw)
    torch.testing.assert_close(iris[("a", 0)], inv.x_prime, rtol=0, atol=0)


def test_stir_matrix_caches_its_inversions_only_when_asked(tmp_path, monkeypatch):
    monkeypatch.setenv("STIR_CACHE", str(tmp_path))
    stir_matrix({"a": conv(0)}, images(), **OPTS)
    assert not tmp_path.exists() or not any(tmp_path.iterdir())      # the default writes nothing
    stir_matrix({"a": conv(0)}, images(), use_cache=True, **OPTS)
    assert len(list((tmp_path / "inversion").iterdir())) == 1


# ----------------------------------------------------------------------------- golden value
def authors_procedure(m_ref, m_score, X, seed=0, steps=1000, eta=0.5):
    """Nanda et al.'s STIR(m_score | m_ref), written out with plain torch: start from
    standard noise clipped to [0, 1]; 1,000 steps x' <- clip(x' - 0.5 g / ||g||_2) on the
    relative distance ||m_ref(x') - m_ref(x)|| / ||m_ref(x)||, per image, keeping each
    image's best iterate; then linear CKA (Kornblith et al. 2019) of m_score on X and on
    the IRIs, over all of X."""
    with torch.no_grad():
        target = m_ref(X)
    tn = target.norm(dim=1)
    z = torch.randn(X.shape, generator=torch.Generator().manual_seed(seed)).clamp(0, 1)
    best, best_d = z.clone(), torch.full((len(X),), float("inf"))
    for _ in range(steps + 1):
        z.requires_grad_(True)
        d = (m_ref(z) - target).norm(dim=1) / tn
        (g,) = torch.autograd.grad(d.sum(), z)
        with torch.no_grad():
            better = d < best_d
            best[better], best_d[better] = z[better], d[better]
            gn = g.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
            z = (z - eta * g / gn).clamp(0, 1)

    def cka(a, b):
        a, b = a - a.mean(0), b - b.mean(0)
        return float((b.T @ a).norm() ** 2 / ((a.T @ a).norm() * (b.T @ b).norm()))

    with torch.no_grad():
        return cka(m_score(X).double(), m_score(best).double())


def test_golden_stir_value_by_the_authors_procedure():
    """STIR of two fixed tiny MLPs at their outputs, with the paper's defaults. The values
    were recorded once (2026-12-06) from this implementation and agree with the authors'
    procedure written out above; a change to the inversion's step, start, stopping or
    scoring, or to CKA, moves them."""
    def mlp(seed):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Flatten(), nn.Linear(16, 6), nn.ReLU(), nn.Linear(6, 4)).eval()

    m1, m2 = mlp(0), mlp(1)
    X = torch.rand(8, 1, 4, 4, generator=torch.Generator().manual_seed(2))
    r = stir(m1, m2, X, layer1="output", layer2="output", seeds=0, use_cache=False)
    assert r.m2_given_m1.mean == pytest.approx(authors_procedure(m1, m2, X), abs=2e-6)
    assert r.m1_given_m2.mean == pytest.approx(authors_procedure(m2, m1, X), abs=2e-6)
    assert (r.m2_given_m1.mean, r.m1_given_m2.mean, r.cka.mean) == pytest.approx(GOLDEN, abs=2e-6)


GOLDEN = (0.1154386, 0.5259514, 0.2442096)   # STIR(m2|m1), STIR(m1|m2), CKA


def test_stir_matrix_passes_the_method_on():
    models, X = {"a": conv(0)}, images()
    kw = dict(OPTS, steps=12)
    _, _, iris = stir_matrix(models, X, layers={"a": "1"}, method="fast", use_cache=False,
                             return_iris=True, **kw)
    rk = dict(spatial="mean", box=(-1.0, 1.0), batch_size=4)
    want = invert(models["a"], X, "1", seed=0, method="fast", steps=12, seed_kind="uniform",
                  **rk).x_prime
    torch.testing.assert_close(iris[("a", 0)], want, rtol=0, atol=0)


def test_one_seed_has_no_std_and_no_warning():
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, _, sd = stir_matrix({"a": conv(0), "b": conv(1)}, images(), seeds=0,
                               use_cache=False, return_std=True, **OPTS)
    assert sd.isna().all().all() and all(str(t) == "float64" for t in sd.dtypes)


class Tag(str):
    """A str subclass: pickled as a class of this module, not as a plain string."""


def test_a_saved_result_with_foreign_objects_is_refused(tmp_path):
    import pickle
    r = stir(conv(0), conv(1), images(), use_cache=False, **OPTS)
    path = tmp_path / "r.pt"
    r.save(path)
    state = torch.load(path, weights_only=True)
    state["layer1"] = Tag(state["layer1"])              # would run this module's code on load
    torch.save(state, path)
    with pytest.raises(ValueError, match="expected a file written by STIRResult.save") as err:
        type(r).load(path)                              # refused, no code run, said clearly
    assert isinstance(err.value.__cause__, pickle.UnpicklingError)
