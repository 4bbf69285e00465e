"""Tests for stir_lib.similarity: check values, invariances, two-method agreement, errors.

The references below are written here in plain numpy, independently of the
library: Gram-form linear CKA with the centring matrix H, and the U-centred
debiased CKA of Kornblith et al.'s notebook.
"""

import numpy as np
import pytest
import torch

from stir_lib.batch_cka import MinibatchCKA, minibatch_cka
from stir_lib.similarity import debiased_cka, hsic_unbiased, linear_cka, rbf_cka


# ---------------------------------------------------------------- references

def ref_linear_cka(X, Y):
    """Gram form <HKH, HLH> / (||HKH|| ||HLH||), float64 numpy."""
    X, Y = np.asarray(X, np.float64), np.asarray(Y, np.float64)
    n = X.shape[0]
    H = np.eye(n) - np.ones((n, n)) / n
    Xc, Yc = H @ X, H @ Y
    K, L = Xc @ Xc.T, Yc @ Yc.T          # = H K H, H L H
    return (K * L).sum() / np.sqrt((K * K).sum() * (L * L).sum())


def u_centre(K):
    """U-centring of a Gram matrix (Kornblith et al. notebook, unbiased=True)."""
    K = np.array(K, np.float64)
    n = K.shape[0]
    np.fill_diagonal(K, 0)
    means = K.sum(0) / (n - 2)
    means -= means.sum() / (2 * (n - 1))
    K -= means[:, None] + means[None, :]
    np.fill_diagonal(K, 0)
    return K


def ref_hsic_u(K, L):
    n = K.shape[0]
    return (u_centre(K) * u_centre(L)).sum() / (n * (n - 3))


def ref_debiased_cka(X, Y):
    X, Y = np.asarray(X, np.float64), np.asarray(Y, np.float64)
    K, L = X @ X.T, Y @ Y.T
    return ref_hsic_u(K, L) / np.sqrt(ref_hsic_u(K, K) * ref_hsic_u(L, L))


def random_orthogonal(d, rng):
    Q, R = np.linalg.qr(rng.standard_normal((d, d)))
    return Q * np.sign(np.diag(R))


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def pair(rng):
    X = rng.standard_normal((120, 15))
    Y = X @ rng.standard_normal((15, 12)) + rng.standard_normal((120, 12))
    return X, Y


# ---------------------------------------------------------------- check values

def test_notebook_check_values():
    # PAPER_TARGETS section 4: Kornblith et al.'s notebook, quoted to 5 decimals
    np.random.seed(1337)
    X = np.random.randn(100, 10)
    Y = np.random.randn(100, 10) + X
    assert linear_cka(X, Y) == pytest.approx(0.55761, abs=1e-5)
    assert rbf_cka(X, Y, threshold=0.5) == pytest.approx(0.65483, abs=1e-5)
    assert debiased_cka(X, Y) == pytest.approx(0.51346, abs=1e-5)
    # numpy and torch inputs give the same number
    assert linear_cka(torch.from_numpy(X), torch.from_numpy(Y)) == linear_cka(X, Y)


# ---------------------------------------------------------------- linear CKA

@pytest.mark.parametrize("form", ["feature", "gram"])
def test_self_similarity_is_one(pair, form):
    X, _ = pair
    assert linear_cka(X, X, form=form) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(torch.tensor(X, dtype=torch.float32), torch.tensor(X, dtype=torch.float32),
                      form=form) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("form", ["feature", "gram"])
def test_invariant_to_orthogonal_maps_and_isotropic_scaling(pair, rng, form):
    X, Y = pair
    base = linear_cka(X, Y, form=form)
    Qx, Qy = random_orthogonal(X.shape[1], rng), random_orthogonal(Y.shape[1], rng)
    assert linear_cka(X @ Qx, Y @ Qy, form=form) == pytest.approx(base, abs=1e-12)
    assert linear_cka(3.7 * X, 0.02 * Y, form=form) == pytest.approx(base, abs=1e-12)


def test_not_invariant_to_general_invertible_maps(pair, rng):
    X, Y = pair
    A = np.diag(np.logspace(-2, 2, X.shape[1])) @ random_orthogonal(X.shape[1], rng)
    assert np.linalg.matrix_rank(A) == X.shape[1]           # invertible
    assert abs(linear_cka(X @ A, Y) - linear_cka(X, Y)) > 0.2


def test_feature_form_equals_gram_form(pair):
    X, Y = pair
    assert linear_cka(X, Y, form="feature") == pytest.approx(linear_cka(X, Y, form="gram"),
                                                             abs=1e-12)
    assert linear_cka(X, Y) == pytest.approx(ref_linear_cka(X, Y), abs=1e-12)


@pytest.mark.parametrize("offset", [1e4, 1e6])
@pytest.mark.parametrize("n,d,form", [(400, 24, "feature"), (400, 24, "gram"),
                                      (60, 300, "gram"), (60, 300, "feature")])
def test_float32_with_large_offset_matches_float64_reference(rng, n, d, form, offset):
    # the centring pitfall: float32 features riding on a constant offset. At 1e6
    # a single float32 mean-subtraction pass is already off by ~1e-3 in CKA.
    Z = rng.standard_normal((n, d))
    X = (Z + rng.uniform(offset / 2, 2 * offset, d)).astype(np.float32)
    Y = (Z[:, : d // 2] @ rng.standard_normal((d // 2, d)) + rng.standard_normal((n, d))
         + rng.uniform(offset / 2, 2 * offset, d)).astype(np.float32)
    ref = ref_linear_cka(X, Y)              # float64 on the same float32 values
    # the data does trigger the pitfall: float32 centring after the Gram is wrong
    Xt, Yt = torch.from_numpy(X), torch.from_numpy(Y)
    H = torch.eye(n) - 1.0 / n
    K, L = H @ (Xt @ Xt.T) @ H, H @ (Yt @ Yt.T) @ H
    naive = float((K * L).sum() / (K.norm() * L.norm()))
    assert not abs(naive - ref) < 1e-3
    assert linear_cka(Xt, Yt, form=form) == pytest.approx(ref, abs=1e-5)


def test_blocked_reductions_and_symmetric_halves_agree(rng, monkeypatch):
    # n, d large enough that A A^T is split into halves by default: check both
    # the split and the float64 row blocks against the unsplit, unblocked values
    import stir_lib.similarity as sim
    X = rng.standard_normal((301, 263))
    Y = X[:, :100] @ rng.standard_normal((100, 257)) + rng.standard_normal((301, 257))

    def values():
        return [linear_cka(X, Y, form="feature"), linear_cka(X, Y, form="gram"),
                debiased_cka(X, Y, form="feature"), debiased_cka(X, Y, form="gram")]

    split = values()
    monkeypatch.setattr(sim, "_MIN_SPLIT", 10**9)       # never split
    whole = values()
    monkeypatch.setattr(sim, "_BLOCK", 1000)            # many float64 row blocks
    blocked = values()
    assert split == pytest.approx(whole, abs=1e-12)
    assert blocked == pytest.approx(whole, abs=1e-12)
    assert whole[:2] == pytest.approx([ref_linear_cka(X, Y)] * 2, abs=1e-12)
    assert whole[2:] == pytest.approx([ref_debiased_cka(X, Y)] * 2, abs=1e-12)


def test_form_auto_picks_cheaper_form():
    import stir_lib.similarity as sim
    assert sim._choose_form(10_000, 512, 512, "auto") == "feature"
    assert sim._choose_form(1_000, 4096, 4096, "auto") == "gram"


# ---------------------------------------------------------------- RBF CKA

def test_rbf_cka_invariances_and_linear_limit(pair, rng):
    X, Y = pair
    base = rbf_cka(X, Y, threshold=0.8)
    assert rbf_cka(X, X) == pytest.approx(1.0, abs=1e-12)
    # the median rule makes sigma scale with the data; distances ignore rotations
    Q = random_orthogonal(X.shape[1], rng)
    assert rbf_cka(5.0 * X @ Q + 3.0, Y, threshold=0.8) == pytest.approx(base, abs=1e-10)
    # a very wide kernel is 1 - D^2 / (2 sigma^2) + ..., and -H D^2 H / 2 = H X X^T H
    assert rbf_cka(X, Y, threshold=1e3) == pytest.approx(linear_cka(X, Y), abs=1e-6)
    assert abs(rbf_cka(X, Y, threshold=0.2) - linear_cka(X, Y)) > 0.05


# ---------------------------------------------------------------- unbiased HSIC, debiased CKA

def test_hsic_unbiased_equals_u_centred_inner_product(rng):
    X, Y = rng.standard_normal((30, 5)), rng.standard_normal((30, 7))
    K, L = X @ X.T, np.exp(-((Y[:, None] - Y[None]) ** 2).sum(-1) / 10)
    assert hsic_unbiased(K, L) == pytest.approx(ref_hsic_u(K, L), rel=1e-10)
    assert hsic_unbiased(torch.from_numpy(K), torch.from_numpy(K)) == pytest.approx(
        ref_hsic_u(K, K), rel=1e-10)


def test_hsic_unbiased_is_unbiased(rng):
    # y = x + noise, x ~ N(0, I_2): population HSIC (linear kernel) = ||Cov(x, y)||_F^2 = 2
    n, reps = 12, 600
    vals, biased = [], []
    for _ in range(reps):
        x = rng.standard_normal((n, 2))
        y = x + rng.standard_normal((n, 2))
        K, L = x @ x.T, y @ y.T
        vals.append(hsic_unbiased(K, L))
        H = np.eye(n) - 1.0 / n
        biased.append(np.trace(K @ H @ L @ H) / (n - 1) ** 2)
    vals = np.array(vals)
    se = vals.std(ddof=1) / np.sqrt(reps)
    assert abs(vals.mean() - 2.0) < 4 * se
    assert np.mean(biased) - 2.0 > 4 * se               # the plug-in estimator is biased


@pytest.mark.parametrize("form", ["feature", "gram"])
def test_debiased_cka_matches_u_centred_reference(pair, rng, form):
    X, Y = pair
    assert debiased_cka(X, Y, form=form) == pytest.approx(ref_debiased_cka(X, Y), abs=1e-12)
    # d >> n, float32 with offset: off-diagonal Grams keep the precision
    Xw = (rng.standard_normal((40, 500)) + 1e3).astype(np.float32)
    Yw = (Xw[:, :250] @ rng.standard_normal((250, 300)) / 16
          + rng.standard_normal((40, 300))).astype(np.float32)
    assert debiased_cka(Xw, Yw, form=form) == pytest.approx(ref_debiased_cka(Xw, Yw), abs=1e-5)


# ---------------------------------------------------------------- minibatch CKA

def test_minibatch_one_batch_equals_debiased(pair):
    X, Y = pair
    full = debiased_cka(X, Y)
    assert minibatch_cka(X, Y, batch_size=len(X)) == pytest.approx(full, abs=1e-12)
    assert MinibatchCKA().update(X, Y).compute() == pytest.approx(full, abs=1e-12)


def test_minibatch_close_to_full_for_large_n(rng):
    n = 4000
    X = rng.standard_normal((n, 20))
    Y = X @ rng.standard_normal((20, 20)) + 2 * rng.standard_normal((n, 20))
    full = debiased_cka(X, Y)
    assert minibatch_cka(X, Y, batch_size=400) == pytest.approx(full, abs=5e-3)


def test_minibatch_sums_hsic_not_mean_of_batch_ckas(rng):
    # batch A: large scale, Y tied to X; batch B: small scale, Y independent of X
    xa = 10 * rng.standard_normal((50, 6))
    ya = xa + rng.standard_normal((50, 6))
    xb, yb = rng.standard_normal((50, 6)), rng.standard_normal((50, 6))
    batches = [(xa, ya), (xb, yb)]
    acc = MinibatchCKA()
    for x, y in batches:
        acc.update(torch.from_numpy(x), torch.from_numpy(y))
    h = np.array([[ref_hsic_u(x @ x.T, y @ y.T), ref_hsic_u(x @ x.T, x @ x.T),
                   ref_hsic_u(y @ y.T, y @ y.T)] for x, y in batches]).sum(0)
    expected = h[0] / np.sqrt(h[1] * h[2])
    mean_of_ckas = np.mean([debiased_cka(x, y) for x, y in batches])
    assert acc.compute() == pytest.approx(expected, abs=1e-10)
    assert abs(acc.compute() - mean_of_ckas) > 0.2
    assert acc.n_batches == 2 and acc.n_examples == 100
    # minibatch_cka splits rows in order: same batches, same answer
    X, Y = np.vstack([xa, xb]), np.vstack([ya, yb])
    assert minibatch_cka(X, Y, batch_size=50) == pytest.approx(expected, abs=1e-10)


def test_minibatch_merges_short_tail(pair):
    X, Y = pair                                           # n = 120 = 3 * 39 + 3
    acc = MinibatchCKA()
    for a, b in [(0, 39), (39, 78), (78, 120)]:
        acc.update(X[a:b], Y[a:b])
    assert minibatch_cka(X, Y, batch_size=39) == pytest.approx(acc.compute(), abs=1e-12)


# ---------------------------------------------------------------- bad inputs

@pytest.mark.parametrize("fn", [linear_cka, rbf_cka, debiased_cka])
def test_bad_inputs_raise(fn, rng):
    X = rng.standard_normal((20, 4))
    with pytest.raises(ValueError, match="same number of rows"):
        fn(X, X[:10])
    with pytest.raises(ValueError, match="2-D"):
        fn(X[:, 0], X[:, 0])
    with pytest.raises(ValueError, match="2-D"):
        fn(X.reshape(20, 2, 2), X)
    with pytest.raises(TypeError, match="torch.Tensor"):
        fn(X.tolist(), X)
    for bad in (np.nan, np.inf):
        Xb = X.copy()
        Xb[3, 1] = bad
        with pytest.raises(ValueError, match="finite"):
            fn(X, Xb)
        with pytest.raises(ValueError, match="finite"):
            fn(torch.tensor(Xb, dtype=torch.float32), torch.tensor(X, dtype=torch.float32))
    for const in (0.0, 0.1, 12345.678):
        with pytest.raises(ValueError, match="non-zero variance"):
            fn(np.full((20, 4), const), X)
        with pytest.raises(ValueError, match="non-zero variance"):
            fn(X, torch.full((20, 4), const, dtype=torch.float32))
    with pytest.raises(ValueError, match="at least"):
        fn(X[:1], X[:1] + 1)


@pytest.mark.parametrize("fn", [linear_cka, debiased_cka])
def test_float32_overflow_raises_and_ints_are_exact(fn, rng):
    X = rng.standard_normal((30, 4))
    big = torch.tensor(X * 1e21, dtype=torch.float32)        # squares overflow float32
    with pytest.raises(ValueError, match="overflow"):
        fn(big, torch.tensor(X, dtype=torch.float32))
    assert fn(big.double(), X) == pytest.approx(1.0, abs=1e-6)
    Xi = rng.integers(-5, 6, size=(30, 4))
    assert fn(Xi, X) == fn(Xi.astype(np.float64), X)


def test_small_n_and_parameters_raise(rng):
    X = rng.standard_normal((3, 4))
    with pytest.raises(ValueError, match="n > 3"):
        debiased_cka(X, X)
    with pytest.raises(ValueError, match="n > 3"):
        hsic_unbiased(X @ X.T, X @ X.T)
    with pytest.raises(ValueError, match="square"):
        hsic_unbiased(X, X)
    with pytest.raises(ValueError, match="n > 3"):
        MinibatchCKA().update(X, X)
    X = rng.standard_normal((20, 4))
    with pytest.raises(ValueError, match="threshold"):
        rbf_cka(X, X, threshold=0.0)
    with pytest.raises(ValueError, match="bandwidth"):
        rbf_cka(np.vstack([np.zeros((15, 4)), X[:5]]), X)   # median distance 0
    with pytest.raises(ValueError, match="form"):
        linear_cka(X, X, form="svd")
    with pytest.raises(ValueError, match="batch_size"):
        minibatch_cka(X, X, batch_size=3)
    with pytest.raises(TypeError, match="batch_size"):
        minibatch_cka(X, X, batch_size=8.0)
    with pytest.raises(ValueError, match="update"):
        MinibatchCKA().compute()
    acc = MinibatchCKA().update(X, X)
    with pytest.raises(ValueError, match="feature sizes"):
        acc.update(X[:, :3], X)
