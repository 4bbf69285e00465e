"""The surface of stir() that users call on their own models: X of any size (batches equal
the one-tensor call), nothing written or changed behind the caller's back (cache off by
default, a model's code in its cache key, torch's thread count restored or left alone),
baselines and an interval over images beside a score, IRIs and results that save and load.

Independent answers: the one-tensor call (linear_cka over all rows) against the batched one
(feature-form sums); inversion.seeds against the batched starts; explicit resamples against
the weighted bootstrap; hand-built baselines against stir_baselines; a fresh construction
under a seed against reinitialised.
"""

from __future__ import annotations

import dataclasses
import gc
import inspect
import math
import sys
import typing
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from stir_lib import cache, stir_batches, threads
from stir_lib import stir as stir_module
from stir_lib.inversion import invert, representation, seeds
from stir_lib.similarity import debiased_cka, linear_cka
from stir_lib.stir import Interval, STIRResult, stir, stir_matrix
from stir_lib.baselines import (Baselines, reinitialised, stir_baselines,
                                     within_class_permutation)

F64 = torch.float64
ROOT = Path(__file__).resolve().parents[1]


def mlp(seed, dtype=F64):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(),
                         nn.Linear(16, 10)).to(dtype).eval()


def images(n=60, seed=1, dtype=F64):
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def labels(n=60):
    return torch.arange(n) % 3


OPTS = dict(seeds=(0, 1), steps=15)


def values(r: STIRResult):
    return np.array(r.m2_given_m1.values + r.m1_given_m2.values + r.cka.values)


# ----------------------------------------------------------------------------- any size of X
def test_a_dataloader_gives_the_one_tensor_result():
    """N = 60 in batches of 16 (the last of 12), (x, y) batches: every score within 1e-5 of
    the one-tensor call (to float64 rounding in fact), the same IRIs and distances."""
    m1, m2, X = mlp(0), mlp(1), images()
    whole = stir(m1, m2, X, return_iris=True, **OPTS)
    loader = DataLoader(TensorDataset(X, labels()), batch_size=16)
    batched = stir(m1, m2, loader, return_iris=True, **OPTS)
    assert batched.n == whole.n == 60
    assert np.abs(values(batched) - values(whole)).max() < 1e-5
    torch.testing.assert_close(batched.iris_m1, whole.iris_m1, rtol=0, atol=1e-12)
    torch.testing.assert_close(batched.iris_m2, whole.iris_m2, rtol=0, atol=1e-12)
    torch.testing.assert_close(batched.distance_m1, whole.distance_m1, rtol=0, atol=1e-12)
    assert torch.equal(batched.evaluations_m2, whole.evaluations_m2)
    assert batched.iris_m1.shape == (2, 60, 1, 8, 8)
    # the scores differ between seeds and directions: the comparison is not of constants
    assert len(set(np.round(values(whole), 6))) == 5


@pytest.mark.parametrize("kind, box", [("noise", (0.0, 1.0)), ("uniform", (-1.0, 1.0)),
                                       ("constant", (0.0, 1.0)), ("pool", (0.0, 1.0))])
def test_batches_of_awkward_sizes_and_every_start_kind(kind, box):
    """A plain list of tensors of sizes 7, 1, 20 and 32, float32 models and images: the
    same result as one tensor (float32 products: within 1e-5)."""
    m1, m2 = mlp(0, torch.float32), mlp(1, torch.float32)
    X = images(dtype=torch.float32) * (box[1] - box[0]) + box[0]
    pool = images(9, seed=4, dtype=torch.float32)
    kw = dict(seeds=(3,), steps=10, seed_kind=kind, box=box, pool=pool)
    whole = stir(m1, m2, X, **kw)
    parts = [X[:7], X[7:8], X[8:28], X[28:]]
    batched = stir(m1, m2, parts, **kw)
    assert np.abs(values(batched) - values(whole)).max() < 1e-5
    torch.testing.assert_close(batched.distance_m1, whole.distance_m1, rtol=0, atol=1e-5)


def _cut(n, rng):
    sizes = []
    while n:
        sizes.append(int(rng.integers(1, min(n, 20) + 1)))
        n -= sizes[-1]
    return sizes


@pytest.mark.parametrize("kind", ["noise", "uniform", "constant", "pool"])
def test_batched_starts_are_the_all_at_once_starts(kind):
    """Starts.take over random cuts of X reproduces inversion.seeds(kind, X, seed) exactly:
    images of 9, 4, 1, 64 and 75 values (not multiples of 16), float32 and float64, two
    boxes; N from 1 to 60."""
    rng = np.random.default_rng(0)
    pool = torch.rand(5, 1, 3, 3)
    for trial in range(60):
        shape = [(1, 3, 3), (1, 2, 2), (1, 1, 1), (1, 8, 8), (3, 5, 5)][trial % 5]
        if kind == "pool":
            shape = (1, 3, 3)
        n = int(rng.integers(1, 61))
        X = torch.zeros((n,) + shape, dtype=(torch.float32, F64)[trial % 2])
        box = ((0.0, 1.0), (-2.0, 3.0))[trial % 3 == 0]
        want = seeds(kind, X, 11, pool=pool, box=box)
        starts, i, got = stir_batches.Starts(kind, 11, pool, box), 0, []
        items = []
        for b in _cut(n, rng):
            items.append((X[i:i + b], None))
            i += b
        for x, _, rest in stir_batches.with_rest(items):
            got.append(starts.take(x, rest))
        assert torch.equal(torch.cat(got), want), (kind, shape, n)


def test_batched_noise_starts_follow_torchs_default_dtype():
    """With float64 as torch's default dtype, randn draws doubles (its other path): the
    batched starts follow it."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(F64)
    try:
        X = torch.zeros(23, 1, 3, 3)
        want = seeds("noise", X, 2)
        starts = stir_batches.Starts("noise", 2)
        got = [starts.take(x, rest) for x, _, rest in
               stir_batches.with_rest([(X[:5], None), (X[5:6], None), (X[6:], None)])]
        assert torch.equal(torch.cat(got), want)
    finally:
        torch.set_default_dtype(before)
    assert stir_batches.draws_match()


def test_with_rest_reads_ahead_only_until_16_values_follow():
    seen = []

    def source():
        for k in range(6):
            seen.append(k)
            yield torch.zeros(2, 3), None                      # 6 values a batch

    it = stir_batches.with_rest(source())
    x, _, rest = next(it)
    assert rest is None and seen == [0, 1, 2, 3]               # 18 >= 16 values ahead
    out = [rest for _, _, rest in it]
    assert out == [None, None, 12, 6, 0]                       # exact once the end is known


def _live_tensor_bytes() -> int:
    """Bytes of every tensor storage Python holds now (each storage once)."""
    gc.collect()
    seen, total = set(), 0
    for o in gc.get_objects():
        if issubclass(type(o), torch.Tensor) and o.device.type == "cpu":
            st = o.untyped_storage()
            if st.data_ptr() not in seen:
                seen.add(st.data_ptr())
                total += st.nbytes()
    return total


@pytest.mark.parametrize("return_iris", [False, True])
def test_a_loader_holds_no_image_it_has_passed(return_iris):
    """The tensors alive between batches, at batch 10 and at batch 40 of 50 images
    (1x16x16, float64: 2 KiB an image): they grow by the distances and evaluations only
    (24 bytes an image), not by images; with return_iris by the two IRIs of each image (the
    measurement sees what is kept)."""
    torch.manual_seed(0)
    m1 = nn.Sequential(nn.Flatten(), nn.Linear(256, 8), nn.ReLU()).double().eval()
    torch.manual_seed(1)
    m2 = nn.Sequential(nn.Flatten(), nn.Linear(256, 8), nn.Tanh()).double().eval()
    live = {}

    def source():
        for k in range(41):
            if k in (10, 40):
                live[k] = _live_tensor_bytes()
            yield torch.rand(50, 1, 16, 16, generator=torch.Generator().manual_seed(k),
                             dtype=F64)

    r = stir(m1, m2, source(), seeds=0, steps=1, return_iris=return_iris)
    per_image = (live[40] - live[10]) / (30 * 50)
    image = 256 * 8
    if return_iris:
        assert per_image >= 2 * image and r.iris_m1.shape == (1, 2050, 1, 16, 16)
    else:
        assert per_image <= 64, per_image
    print(f"live tensor bytes per image passed: {per_image:.1f}")


def test_memory_of_a_loader_does_not_grow_with_n():
    """Fresh processes (benchmarks/stir_memory.py, peak RSS): a DataLoader of N = 4,000
    3x16x16 images peaks at most 8 MB above N = 1,000 (one leaked image per image would be
    +18 MB) and equals the one-tensor STIR within 1e-5; the one-tensor call at N = 4,000
    peaks at least 20 MB above the loader (it holds the starts and IRIs of all of X, 25 MB
    each: the measurement sees memory that grows with N)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import stir_memory
    finally:
        sys.path.pop(0)
    rows = stir_memory.measure(1000, 4000, (3, 16, 16), batch=100, steps=1, tensor=False)
    inc = {k: r["peak_mb"] - r["before_mb"] for k, r in rows.items()}
    assert inc[("loader", 4000)] <= inc[("loader", 1000)] + 8.0, inc
    assert inc[("tensor", 4000)] >= inc[("loader", 4000)] + 20.0, inc
    diff = np.abs(np.array(rows[("loader", 4000)]["values"]) -
                  np.array(rows[("tensor", 4000)]["values"])).max()
    assert diff < 1e-5


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_batches_on_a_gpu_give_the_cpu_result():
    """Models on the GPU, batches from the CPU: the CPU one-tensor result (starts are drawn
    on the CPU); a re-initialised GPU model has the CPU one's weights."""
    m1, m2, X = mlp(0), mlp(1), images()
    cpu = stir(m1, m2, X, **OPTS)
    gpu = stir(mlp(0).cuda(), mlp(1).cuda(), DataLoader(TensorDataset(X), batch_size=16),
               **OPTS)
    assert np.abs(values(gpu) - values(cpu)).max() < 1e-5
    for a, b in zip(reinitialised(m1.cuda(), 3).state_dict().values(),
                    reinitialised(mlp(0), 3).state_dict().values()):
        assert a.is_cuda and torch.equal(a.cpu(), b)


def test_batches_refuse_what_they_cannot_do():
    m1, m2, X = mlp(0), mlp(1), images()
    parts = [X[:30], X[30:]]
    with pytest.raises(ValueError, match="cka must be linear_cka"):
        stir(m1, m2, parts, cka=debiased_cka, **OPTS)
    with pytest.raises(ValueError, match="use_cache: expected False"):
        stir(m1, m2, parts, use_cache=True, **OPTS)
    with pytest.raises(ValueError, match="shuffle"):
        stir(m1, m2, parts, seed_kind="shuffle", **OPTS)
    with pytest.raises(TypeError, match="torch.from_numpy"):
        stir(m1, m2, X.numpy(), **OPTS)
    with pytest.raises(TypeError, match="as batch 1"):
        stir(m1, m2, [X[:30], {"x": X[30:]}], **OPTS)
    with pytest.raises(ValueError, match="at least 2 images"):
        stir(m1, m2, [X[:1]], **OPTS)
    with pytest.raises(ValueError, match="at least 2 images"):
        stir(m1, m2, [], **OPTS)
    with pytest.raises(ValueError, match=r"X \(batch 1\)"):
        stir(m1, m2, [X[:30], X[30:] * 3], **OPTS)           # outside the box


# ----------------------------------------------------------------------------- no surprises
def test_stir_writes_nothing_unless_asked(fresh_cache):
    m1, m2, X = mlp(0), mlp(1), images(12)
    stir(m1, m2, X, seeds=0, steps=3)
    stir_matrix({"a": m1, "b": m2}, X, seeds=0, steps=3)
    assert not fresh_cache.exists() or not any(fresh_cache.rglob("*"))
    stir(m1, m2, X, seeds=0, steps=3, use_cache=True)
    assert len(list((fresh_cache / "inversion").glob("*/payload.pt"))) == 2


def test_a_changed_forward_is_a_new_cache_entry(fresh_cache):
    """Two classes with the same name, parameters and weights whose forward differs: other
    identities, other cache entries. The same model twice: one identity."""
    def make(forward):
        cls = type("Net", (nn.Module,), {"forward": forward,
                                         "__init__": lambda self: (nn.Module.__init__(self),
                                                                   setattr(self, "lin", nn.Linear(64, 8)))[0]})
        cls.__qualname__ = "Net"
        torch.manual_seed(0)
        return nn.Sequential(nn.Flatten(), cls()).eval()

    def forward_a(self, x):
        return self.lin(x).relu()

    def forward_b(self, x):
        return self.lin(x).tanh()

    a, b = make(forward_a), make(forward_b)
    assert repr(a) == repr(b)
    for pa, pb in zip(a.state_dict().values(), b.state_dict().values()):
        assert torch.equal(pa, pb)
    assert cache.model_identity(a) == cache.model_identity(make(forward_a))
    assert cache.model_identity(a) != cache.model_identity(b)
    X = images(6, dtype=torch.float32)
    invert(a, X, steps=2, use_cache=True, progress=False)
    invert(b, X, steps=2, use_cache=True, progress=False)
    assert len(list((fresh_cache / "inversion").glob("*/payload.pt"))) == 2
    # editing forward on the class itself (a re-run cell) changes the identity too
    before = cache.model_identity(a)
    type(a[1]).forward = forward_b
    assert cache.model_identity(a) != before


def test_model_identity_without_source_falls_back_to_the_name():
    namespace = {}
    exec("import torch\nclass Hidden(torch.nn.Module):\n"
         "    def __init__(self):\n        super().__init__()\n"
         "        self.w = torch.nn.Parameter(torch.ones(2))\n"
         "    def forward(self, x):\n        return x * self.w\n", namespace)
    m = namespace["Hidden"]()
    ident = cache.model_identity(m)                  # no source file: no error
    assert ident.startswith("weights:") and ident == cache.model_identity(namespace["Hidden"]())


def test_every_submodules_mode_is_restored():
    """A model training with a frozen (eval-mode) part: both modes back after stir and
    stir_matrix, and the inversion ran in eval mode (dropout off: two runs agree)."""
    def model():
        torch.manual_seed(0)
        m = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.Dropout(0.5), nn.ReLU(),
                          nn.BatchNorm1d(16), nn.Linear(16, 10)).double()
        m.train()
        m[4].eval()                                     # a frozen BatchNorm
        return m

    m1, m2, X = model(), mlp(1), images(12)
    a = stir(m1, m2, X, seeds=0, steps=3)
    assert m1.training and m1[2].training and not m1[4].training and not m2.training
    stir_matrix({"a": m1, "b": m2}, X, seeds=0, steps=3)
    assert m1.training and m1[2].training and not m1[4].training
    assert stir(m1, m2, X, seeds=0, steps=3).m2_given_m1 == a.m2_given_m1


def _thread_counts(model):
    seen = []
    for m in model.modules():
        if isinstance(m, nn.Linear):
            m.register_forward_pre_hook(lambda m, a: seen.append(torch.get_num_threads()))
    return seen


def test_stir_and_invert_restore_the_thread_count(monkeypatch, two_threads):
    monkeypatch.setenv("STIR_THREADS", "1")
    m1, m2, X = mlp(0), mlp(1), images(8)
    seen = _thread_counts(m1)
    stir(m1, m2, X, seeds=0, steps=2)
    assert set(seen) == {1} and torch.get_num_threads() == 2
    stir(m1, m2, [X[:4], X[4:]], seeds=0, steps=2)
    invert(m1, X, steps=2, progress=False)
    assert torch.get_num_threads() == 2


@pytest.mark.parametrize("how", ["manage", "env"])
def test_the_thread_count_can_be_left_alone(monkeypatch, two_threads, how):
    """threads.manage(False) or STIR_THREADS=off: the caller's 2 threads throughout, and no
    call of torch.set_num_threads at all."""
    if how == "manage":
        monkeypatch.setenv("STIR_THREADS", "1")               # would fix 1 if managed
        assert threads.manage(False) is None
    else:
        monkeypatch.setenv("STIR_THREADS", "off")
    assert not threads.managed()
    calls = []
    real = torch.set_num_threads
    monkeypatch.setattr(torch, "set_num_threads", lambda n: (calls.append(n), real(n)))
    m1, m2, X = mlp(0), mlp(1), images(8)
    seen = _thread_counts(m1)
    stir(m1, m2, X, seeds=0, steps=2)
    assert set(seen) == {2} and calls == [] and torch.get_num_threads() == 2
    if how == "manage":
        assert threads.manage(None) is False and threads.managed()
        stir(m1, m2, X, seeds=0, steps=2)
        assert calls                                           # managed again: it sets


# ----------------------------------------------------------------------------- trust
def test_weighted_cka_is_the_cka_of_the_resample():
    g = torch.Generator().manual_seed(0)
    A = torch.randn(40, 7, generator=g, dtype=F64) + 5.0
    B = A @ torch.randn(7, 5, generator=g, dtype=F64) + torch.randn(40, 5, generator=g, dtype=F64)
    idx = torch.randint(40, (6, 40), generator=g)
    W = torch.zeros(6, 40, dtype=F64).scatter_add_(1, idx, torch.ones(6, 40, dtype=F64))
    got = stir_module._weighted_linear_cka(A, B, W)
    want = torch.tensor([linear_cka(A[i], B[i]) for i in idx], dtype=F64)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    ones = torch.ones(1, 40, dtype=F64)                          # no resampling: plain CKA
    assert float(stir_module._weighted_linear_cka(A, B, ones)) == pytest.approx(
        linear_cka(A, B), abs=1e-12)


def test_the_image_interval_is_the_percentile_of_resampled_ckas():
    """stir(bootstrap=B): the interval equals the percentiles of linear_cka recomputed on
    explicitly resampled rows (the same indices), the seeds' mean per resample; the batched
    call gives the same interval."""
    m1, m2, X = mlp(0), mlp(1), images()
    r = stir(m1, m2, X, return_iris=True, bootstrap=50, level=0.9, bootstrap_seed=5, **OPTS)
    r1, r2 = representation(m1, X), representation(m2, X)
    pairs = {"cka": [(r1, r2)],
             "m2_given_m1": [(r2, representation(m2, ri)) for ri in r.iris_m1],
             "m1_given_m2": [(r1, representation(m1, ri)) for ri in r.iris_m2]}
    idx = torch.randint(60, (50, 60), generator=torch.Generator().manual_seed(5))
    for name, ps in pairs.items():
        reps = [np.mean([linear_cka(a[i], b[i]) for a, b in ps]) for i in idx]
        lo, hi = np.quantile(reps, [0.05, 0.95])
        iv = r.image_interval[name]
        assert (iv.low, iv.high) == (pytest.approx(lo, abs=1e-9), pytest.approx(hi, abs=1e-9))
        assert iv.level == 0.9 and iv.replicates == 50 and iv.low < iv.high
    b = stir(m1, m2, [X[:25], X[25:]], bootstrap=50, level=0.9, bootstrap_seed=5, **OPTS)
    for name in pairs:
        assert b.image_interval[name].low == pytest.approx(r.image_interval[name].low, abs=1e-9)
    assert "m2_given_m1_low" in r.summary() and "90% intervals over images" in str(r)


def test_extras_are_opt_in(monkeypatch):
    """The default call computes no interval and keeps no representations."""
    def boom(*a, **k):
        raise AssertionError("called without being asked")

    monkeypatch.setattr(stir_module, "_image_intervals", boom)
    monkeypatch.setattr(stir_module, "_weighted_linear_cka", boom)
    kept = []
    real_run = stir_module._run
    monkeypatch.setattr(stir_module, "_run", lambda *a, **k: kept.append(k["keep_rows"])
                        or real_run(*a, **k))
    r = stir(mlp(0), mlp(1), images(12), seeds=0, steps=2)
    assert r.image_interval is None and r.iris_m1 is None and kept == [False]
    with pytest.raises(ValueError, match="bootstrap: expected 0"):
        stir(mlp(0), mlp(1), images(12), bootstrap=1)
    with pytest.raises(ValueError, match="level"):
        stir(mlp(0), mlp(1), images(12), bootstrap=10, level=95)
    with pytest.raises(ValueError, match="interval over images is for linear CKA"):
        stir(mlp(0), mlp(1), images(12), bootstrap=10, cka=debiased_cka)


def test_within_class_permutation_is_the_chapters_control():
    y = torch.randint(0, 4, (50,), generator=torch.Generator().manual_seed(2))
    # the stir_pairs chapter's code before it moved into the library
    g = torch.Generator().manual_seed(0)
    perm = torch.arange(len(y))
    for c in torch.unique(y):
        idx = torch.nonzero(y == c).flatten()
        perm[idx] = idx[torch.randperm(len(idx), generator=g)]
    got = within_class_permutation(y, seed=0)
    assert torch.equal(got, perm)
    assert torch.equal(y[got], y) and torch.equal(got.sort().values, torch.arange(50))
    assert not torch.equal(got, torch.arange(50))
    assert not torch.equal(within_class_permutation(y, seed=1), got)
    with pytest.raises(ValueError, match="integer class labels"):
        within_class_permutation(y.float())


def test_reinitialised_is_a_fresh_seeded_construction():
    """reset_parameters under seed s gives the weights a construction under seed s gives
    (nn.Linear initialises in its constructor with the same call), leaves the model and
    torch's global random state as they were."""
    trained = mlp(3, torch.float32)                 # float32: as constructed (no .to(dtype))
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(1.0)
    before = {k: v.clone() for k, v in trained.state_dict().items()}
    rng = torch.get_rng_state()
    fresh = reinitialised(trained, seed=7)
    assert torch.equal(torch.get_rng_state(), rng)
    for k, v in trained.state_dict().items():
        assert torch.equal(v, before[k])                          # untouched
    for k, v in fresh.state_dict().items():
        assert torch.equal(v, mlp(7, torch.float32).state_dict()[k])   # = construction under 7
    assert not torch.equal(reinitialised(trained, 8)[1].weight, fresh[1].weight)

    class Scale(nn.Module):
        def __init__(self):
            super().__init__()
            self.s = nn.Parameter(torch.ones(1))

        def forward(self, x):
            return x * self.s

    with pytest.warns(UserWarning, match="keep their trained values"):
        reinitialised(nn.Sequential(nn.Linear(2, 2), Scale()))
    with pytest.raises(ValueError, match="reset_parameters"):
        reinitialised(Scale())


def test_baselines_are_the_hand_built_controls():
    """stir_baselines against its definitions: a re-initialised m2 scores m1's IRIs; m2
    pairs its representation of each image with that of another same-class image's IRI.
    The result inside is stir()'s; a DataLoader of (x, y) gives the same numbers."""
    m1, m2, X, y = mlp(0), mlp(1), images(), labels()
    b = stir_baselines(m1, m2, X, y, init_seed=4, permutation_seed=2, return_iris=True, **OPTS)
    assert isinstance(b, Baselines)
    plain = stir(m1, m2, X, return_iris=True, **OPTS)
    assert b.result == plain
    r2m, r1m = reinitialised(m2, 4), reinitialised(m1, 4)
    perm = within_class_permutation(y, 2)
    assert torch.equal(b.permutation, perm)
    for k, (x1, x2) in enumerate(zip(plain.iris_m1, plain.iris_m2)):
        want = linear_cka(representation(r2m, X), representation(r2m, x1))
        assert b.random_m2_given_m1.values[k] == pytest.approx(want, abs=1e-12)
        want = linear_cka(representation(r1m, X), representation(r1m, x2))
        assert b.random_m1_given_m2.values[k] == pytest.approx(want, abs=1e-12)
        want = linear_cka(representation(m2, X), representation(m2, x1)[perm])
        assert b.permuted_m2_given_m1.values[k] == pytest.approx(want, abs=1e-12)
        want = linear_cka(representation(m1, X), representation(m1, x2)[perm])
        assert b.permuted_m1_given_m2.values[k] == pytest.approx(want, abs=1e-12)
    assert b.permuted_m2_given_m1 != b.result.m2_given_m1
    loader = DataLoader(TensorDataset(X, y), batch_size=16)
    c = stir_baselines(m1, m2, loader, init_seed=4, permutation_seed=2, **OPTS)
    for d in ("random_m2_given_m1", "permuted_m1_given_m2"):
        np.testing.assert_allclose(getattr(c, d).values, getattr(b, d).values, atol=1e-9)
    s = b.summary()
    assert s["random_m2_given_m1"] == b.random_m2_given_m1.mean
    assert "within-class permutation" in str(b)


def test_baselines_say_what_they_need():
    m1, m2, X = mlp(0), mlp(1), images(12)
    only = stir_baselines(m1, m2, X, baselines=("random",), seeds=0, steps=2)
    assert only.permuted_m2_given_m1 is None and only.random_m2_given_m1 is not None
    with pytest.raises(ValueError, match="needs class labels"):
        stir_baselines(m1, m2, X, seeds=0, steps=2)
    pulled = []

    def no_labels():
        for part in (X[:6], X[6:]):
            pulled.append(1)
            yield part

    with pytest.raises(ValueError, match="batch 0 without them"):
        stir_baselines(m1, m2, no_labels(), seeds=0, steps=2)
    assert len(pulled) == 1                                      # refused before any work
    with pytest.raises(ValueError, match="one label per image"):
        stir_baselines(m1, m2, X, labels(5), seeds=0, steps=2)
    with pytest.raises(TypeError, match="options of stir"):
        stir_baselines(m1, m2, X, labels(12), stepz=2)
    with pytest.raises(ValueError, match="baselines"):
        stir_baselines(m1, m2, X, labels(12), baselines=("untrained",))


# ----------------------------------------------------------------------------- a surface
def test_a_result_saves_and_loads_equal(tmp_path):
    r = stir(mlp(0), mlp(1), images(), return_iris=True, bootstrap=20, **OPTS)
    path = tmp_path / "r.pt"
    r.save(path)
    back = STIRResult.load(path)
    assert back == r and isinstance(back.image_interval["cka"], Interval)
    assert back.iris_m1.dtype == r.iris_m1.dtype
    assert dataclasses.replace(r, n=61) != r
    assert dataclasses.replace(r, iris_m1=r.iris_m1 + 1e-9) != r
    assert dataclasses.replace(r, image_interval=None) != r
    plain = stir(mlp(0), mlp(1), images(), **OPTS)
    plain.save(path)
    assert STIRResult.load(path) == plain and plain != r


def test_a_foreign_or_corrupt_file_is_refused_clearly(tmp_path):
    path = tmp_path / "x.pt"
    path.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="torch.load cannot read"):
        STIRResult.load(path)
    torch.save({"weights": torch.ones(2)}, path)
    with pytest.raises(ValueError, match="expected a saved STIRResult"):
        STIRResult.load(path)
    r = stir(mlp(0), mlp(1), images(12), seeds=0, steps=2)
    r.save(path)
    state = torch.load(path, weights_only=True)
    state["format"] = "someone.else/9"
    torch.save(state, path)
    with pytest.raises(ValueError, match="format"):
        STIRResult.load(path)
    with pytest.raises(FileNotFoundError):
        STIRResult.load(tmp_path / "missing.pt")


def test_public_arguments_are_typed():
    for fn in (stir, stir_matrix, stir_baselines, reinitialised, within_class_permutation):
        hints = typing.get_type_hints(fn)                        # resolvable, not just strings
        params = [p for p in inspect.signature(fn).parameters.values()
                  if p.kind is not p.VAR_KEYWORD]
        missing = [p.name for p in params if p.name not in hints]
        assert not missing and "return" in hints, (fn.__name__, missing)
    assert typing.get_type_hints(stir)["m1"] is nn.Module
    defaults = {n: p.default for n, p in inspect.signature(stir).parameters.items()}
    assert math.isclose(defaults["level"], 0.95)
    assert defaults["use_cache"] is False and defaults["bootstrap"] == 0


# ----------------------------------------------------------------------------- what the mutants found
# (tests/mutation/REPORT.md: each test below kills mutants of stir, stir_batches,
# stir_result or baselines that no test caught)
def test_weighted_cka_over_several_blocks_and_small_values():
    """1,100 rows: the Gram matrices are formed in two blocks (2^20 entries each), whose
    sums must add up; values of 1e-4 give HSICs far below 1, where a floor or a threshold
    at 1 would change the score. Each row of counts against linear_cka of its resample."""
    g = torch.Generator().manual_seed(0)
    n = 1100
    A = 1e-4 * torch.randn(n, 3, generator=g, dtype=F64)
    B = A @ torch.randn(3, 2, generator=g, dtype=F64) + 1e-5 * torch.randn(n, 2, generator=g,
                                                                           dtype=F64)
    idx = torch.randint(n, (3, n), generator=g)
    W = torch.zeros(3, n, dtype=F64).scatter_add_(1, idx, torch.ones(3, n, dtype=F64))
    got = stir_module._weighted_linear_cka(A, B, W)
    want = [linear_cka(A[i], B[i]) for i in idx]
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-9)
    assert 0.5 < min(want) < 1.0                       # not a degenerate case


def test_the_image_interval_scores_each_resample_once(monkeypatch):
    """R = 2,000 resamples of 1,100 images are drawn in two chunks (R n <= 2^21 a chunk):
    every resample is scored once per seed, no more. The resample draws do not depend on
    the chunks: torch's generator hands out the same indices in one call or in two."""
    rows_seen = []

    def count(A, B, W):
        rows_seen.append(len(W))
        return torch.zeros(len(W), dtype=F64)

    monkeypatch.setattr(stir_module, "_weighted_linear_cka", count)
    x = torch.randn(1100, 2, dtype=F64)
    stir_module._image_intervals({"cka": (x, [x, x + 1])}, 2000, 0.95, 0)
    assert sum(rows_seen) == 2000 * 2 and len(rows_seen) == 4
    one = torch.randint(1100, (2000, 1100), generator=torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    two = torch.cat([torch.randint(1100, (1906, 1100), generator=g),
                     torch.randint(1100, (94, 1100), generator=g)])
    assert torch.equal(one, two)


def test_bootstrap_and_level_refuse_their_edges():
    X = images(12)
    for bad in (dict(bootstrap=True), dict(bootstrap=False), dict(bootstrap=10, level=0.0),
                dict(bootstrap=10, level=1.0), dict(bootstrap=10, level=1.5)):
        with pytest.raises(ValueError, match="bootstrap|level"):
            stir(mlp(0), mlp(1), X, seeds=0, steps=1, **bad)


def test_distances_and_evaluations_belong_to_their_model():
    """distance_m1 and evaluations_m1 are m1's inversion's (the fast method stops each model
    at its own step), m2's are m2's."""
    m1, m2, X = mlp(0), mlp(1), images(12)
    r = stir(m1, m2, X, seeds=0, method="fast", steps=200)
    for m, d, e in ((m1, r.distance_m1, r.evaluations_m1), (m2, r.distance_m2, r.evaluations_m2)):
        inv = invert(m, X, seed=0, method="fast", steps=200)
        torch.testing.assert_close(d[0], inv.distance, rtol=0, atol=1e-12)
        assert torch.equal(e[0], inv.evaluations)
    assert not torch.equal(r.evaluations_m1, r.evaluations_m2)


def test_defaults_are_the_documented_seeds():
    m1, m2, X, y = mlp(0), mlp(1), images(12), labels(12)
    small = dict(seeds=0, steps=2)
    a = stir(m1, m2, X, bootstrap=20, **small)
    assert a.image_interval == stir(m1, m2, X, bootstrap=20, bootstrap_seed=0,
                                    **small).image_interval
    b = stir_baselines(m1, m2, X, y, **small)
    explicit = stir_baselines(m1, m2, X, y, init_seed=0, permutation_seed=0, **small)
    assert b.summary() == explicit.summary() and (b.init_seed, b.permutation_seed) == (0, 0)
    assert torch.equal(within_class_permutation(y), within_class_permutation(y, 0))
    for k, v in reinitialised(m1).state_dict().items():
        assert torch.equal(v, reinitialised(m1, 0).state_dict()[k])


@pytest.mark.parametrize("option", [dict(fake_relu=True), dict(clamp_start=False)])
def test_the_authors_options_reach_the_inversions(option):
    """stir and stir_matrix pass fake_relu and clamp_start on: their IRIs are invert's with
    the option, which differ from the paper's procedure's; stir_matrix's per-model dict
    applies to that model's IRIs only, and a name it does not know is refused."""
    m1, m2, X = mlp(0), mlp(1), images(12)
    small = dict(seeds=0, steps=3)
    r = stir(m1, m2, X, return_iris=True, **small, **option)
    with_it = invert(m1, X, seed=0, steps=3, **option).x_prime
    assert torch.equal(r.iris_m1[0], with_it)
    assert not torch.equal(with_it, invert(m1, X, seed=0, steps=3).x_prime)
    if "fake_relu" in option:
        *_, iris = stir_matrix({"a": m1, "b": m2}, X, fake_relu={"a": True}, return_iris=True,
                               **small)
        assert torch.equal(iris[("a", 0)], with_it)
        assert torch.equal(iris[("b", 0)], invert(m2, X, seed=0, steps=3).x_prime)
        with pytest.raises(ValueError, match="c"):
            stir_matrix({"a": m1, "b": m2}, X, fake_relu={"c": True}, **small)
    else:
        *_, iris = stir_matrix({"a": m1, "b": m2}, X, return_iris=True, **small, **option)
        assert torch.equal(iris[("a", 0)], with_it)


def test_baselines_report_what_was_asked_and_with_which_seeds():
    m1, m2, X, y = mlp(0), mlp(1), images(12), labels(12)
    small = dict(seeds=0, steps=2)
    perm_only = stir_baselines(m1, m2, X, y, baselines=("permutation",), **small)
    assert perm_only.random_m2_given_m1 is None and perm_only.permuted_m2_given_m1 is not None
    rand_only = stir_baselines(m1, m2, X, baselines=("random",), init_seed=4, **small)
    assert rand_only.permutation is None and rand_only.init_seed == 4
    s = rand_only.summary()
    assert s["m2_given_m1"] == rand_only.result.m2_given_m1.mean
    assert s["m1_given_m2"] == rand_only.result.m1_given_m2.mean
    assert math.isnan(s["permuted_m2_given_m1"]) and math.isnan(s["permuted_m1_given_m2"])
    both = stir_baselines(m1, m2, X, y, init_seed=4, permutation_seed=2, **small)
    assert (both.init_seed, both.permutation_seed) == (4, 2)
    loader = DataLoader(TensorDataset(X, y), batch_size=5)
    with pytest.raises(ValueError, match="one label per image"):
        stir_baselines(m1, m2, loader, labels(5), **small)     # y given, X a loader

    def singles():
        for part in (X[:6], X[6:]):
            yield (part,)

    with pytest.raises(ValueError, match="without them"):
        stir_baselines(m1, m2, singles(), **small)
    with pytest.raises(ValueError, match="integer class labels"):
        within_class_permutation([0, 1, 1])


def test_random_baseline_reads_the_layers_asked_for():
    """With layers other than the default, the re-initialised partners are read at those
    layers (the hand-built control at layer "1", the first Linear's output)."""
    m1, m2, X = mlp(0), mlp(1), images(12)
    b = stir_baselines(m1, m2, X, baselines=("random",), layer1="1", layer2="1",
                       return_iris=True, seeds=0, steps=3)
    r2m = reinitialised(m2, 0)
    want = linear_cka(representation(r2m, X, "1"), representation(r2m, b.result.iris_m1[0], "1"))
    assert b.random_m2_given_m1.values[0] == pytest.approx(want, abs=1e-12)
    r1m = reinitialised(m1, 0)
    want = linear_cka(representation(r1m, X, "1"), representation(r1m, b.result.iris_m2[0], "1"))
    assert b.random_m1_given_m2.values[0] == pytest.approx(want, abs=1e-12)


def test_reinitialised_names_the_parameters_of_a_child_it_cannot_reset():
    """A module whose reset_parameters() resets its own parameters only: its child's
    parameters (no reset of their own) keep their values and are named."""

    class Child(nn.Module):
        def __init__(self):
            super().__init__()
            self.s = nn.Parameter(torch.ones(1))

    class Outer(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(2))
            self.child = Child()

        def reset_parameters(self):
            nn.init.normal_(self.w)

        def forward(self, x):
            return x * self.w * self.child.s

    with pytest.warns(UserWarning, match=r"child\.s"):
        reinitialised(Outer())


def test_loaders_of_one_tuples_and_unclamped_starts_equal_the_one_tensor_call():
    """(x,) batches carry no labels; clamp_start=False draws the batched starts unclamped,
    like the one-tensor call; neither warns on a torch whose draws match."""
    import warnings

    m1, m2, X = mlp(0), mlp(1), images(20)
    small = dict(seeds=0, steps=3, return_iris=True)

    def singles():
        for part in (X[:7], X[7:]):
            yield (part,)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        whole = stir(m1, m2, X, clamp_start=False, **small)
        parts = stir(m1, m2, singles(), clamp_start=False, **small)
    torch.testing.assert_close(parts.iris_m1, whole.iris_m1, rtol=0, atol=1e-12)
    assert not torch.equal(whole.iris_m1, stir(m1, m2, X, **small).iris_m1)


def test_a_torch_whose_draws_differ_is_warned_about_noise_only(monkeypatch):
    monkeypatch.setattr(stir_batches, "draws_match", lambda: False)
    stir_batches._warn_once.cache_clear()
    stir_batches.check_draws("uniform")
    with pytest.warns(UserWarning, match="draws normals differently"):
        stir_batches.check_draws("noise")
    stir_batches._warn_once.cache_clear()
    with pytest.warns(UserWarning, match="draws normals differently"):     # through stir
        stir(mlp(0), mlp(1), iter([images(4)]), seeds=0, steps=1)
    stir_batches._warn_once.cache_clear()


def test_batched_starts_refuse_bad_seeds_and_pools():
    with pytest.raises(TypeError, match="seed"):
        stir_batches.Starts("noise", True)
    for pool in (None, torch.empty(0, 1, 8, 8)):
        with pytest.raises(ValueError, match="non-empty pool"):
            stir_batches.Starts("pool", 0, pool=pool)
    assert stir_batches.Starts("noise", 0, clamp=False).clamp is False


def test_starts_of_sixteen_values_in_two_batches_equal_the_one_tensor_draw():
    """16 values in all (two images of 8): the block path of randn(16), read ahead."""
    X = torch.rand(2, 1, 2, 4, generator=torch.Generator().manual_seed(0))
    want = seeds("noise", X, 3)
    starts = stir_batches.Starts("noise", 3)
    got = [starts.take(x, rest) for x, _, rest in
           stir_batches.with_rest(stir_batches.batches([X[:1], X[1:]]))]
    torch.testing.assert_close(torch.cat(got), want, rtol=0, atol=0)


def test_results_with_and_without_iris_differ_and_load_by_their_fields(tmp_path):
    r = stir(mlp(0), mlp(1), images(12), seeds=0, steps=2, return_iris=True, bootstrap=20)
    assert dataclasses.replace(r, iris_m1=None) != r
    s = r.summary()
    for name in ("m2_given_m1", "m1_given_m2", "cka"):
        assert (s[name + "_low"], s[name + "_high"]) == (r.image_interval[name].low,
                                                         r.image_interval[name].high)
    path = tmp_path / "r.pt"
    r.save(path)
    full = torch.load(path, weights_only=True)
    required = {f.name for f in dataclasses.fields(STIRResult) if f.default is not None}
    torch.save({k: v for k, v in full.items() if k in required}, path)   # no format, no options
    bare = STIRResult.load(path)
    assert bare.iris_m1 is None and bare.m2_given_m1 == r.m2_given_m1
    for broken in ({k: v for k, v in full.items() if k != "n"}, {**full, "extra": 1}):
        torch.save(broken, path)
        with pytest.raises(ValueError, match="expected a saved STIRResult"):
            STIRResult.load(path)
