"""CKA's edges: which argument an error names, the smallest inputs, the blocked and split
reductions, the choice between the two exact forms, and the numpy median.

tests/test_similarity.py checks the values (published numbers, numpy references, the
invariances); these tests pin the paths that only large or unusual inputs take, by
shrinking the block sizes, and the messages a user sees. Written against the mutation
report (tests/mutation/REPORT.md).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from stir_lib import similarity as S
from stir_lib.batch_cka import LinearCKASums


def pair(n=12, d1=5, d2=4, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d1, generator=g, dtype=dtype)
    Y = X[:, :d2] @ torch.randn(d2, d2, generator=g, dtype=dtype) \
        + 0.5 * torch.randn(n, d2, generator=g, dtype=dtype)
    return X, Y


# ----------------------------------------------------------------------------- messages
@pytest.mark.parametrize("fn", [S.linear_cka, S.debiased_cka, S.rbf_cka])
def test_errors_name_the_argument_at_fault(fn):
    X, Y = pair()
    with pytest.raises(TypeError, match=r"^X: expected a torch.Tensor"):
        fn(X.tolist(), Y)
    with pytest.raises(TypeError, match=r"^Y: expected a torch.Tensor"):
        fn(X, Y.tolist())
    Xn, Yn = X.clone(), Y.clone()
    Xn[3, 1], Yn[2, 0] = float("nan"), float("inf")
    with pytest.raises(ValueError, match=r"^X: expected finite"):
        fn(Xn, Y)
    with pytest.raises(ValueError, match=r"^Y: expected finite"):
        fn(X, Yn)
    with pytest.raises(ValueError, match=r"^X: expected at least one feature with non-zero"):
        fn(torch.ones(12, 3, dtype=torch.float64), Y)
    with pytest.raises(ValueError, match=r"^Y: expected at least one feature with non-zero"):
        fn(X, torch.ones(12, 3, dtype=torch.float64))


def test_overflow_names_the_argument_and_dtype():
    X, Y = pair(dtype=torch.float32)
    big = torch.full((12, 5), 3e38) * torch.sign(torch.randn(12, 5)).abs()
    big[0] = 1.0                                   # not constant; the column sums overflow
    with pytest.raises(ValueError, match=r"^X: expected features whose sums and products fit "
                                         r"in torch.float32"):
        S.linear_cka(big, Y)
    with pytest.raises(ValueError, match=r"^Y: expected features whose sums and products fit "
                                         r"in torch.float32"):
        S.linear_cka(X, big[:, :4])
    # centred values fit, but their products do not: the inner products overflow
    huge = X * 1e19
    for fn in (S.linear_cka, S.debiased_cka):
        with pytest.raises(ValueError, match=r"^X or Y: expected features whose sums and "
                                             r"products fit in torch.float32"):
            fn(huge, Y, form="feature")


# ----------------------------------------------------------------------------- small inputs
def test_two_rows_and_one_column():
    """Two examples are the fewest linear CKA accepts (any two centred rows are collinear:
    CKA 1); one feature column is a valid representation."""
    X = torch.tensor([[0.0, 1.0], [2.0, 5.0]], dtype=torch.float64)
    Y = torch.tensor([[3.0], [-1.0]], dtype=torch.float64)
    assert S.linear_cka(X, Y) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="at least 2 rows"):
        S.linear_cka(X[:1], Y[:1])
    x1, y1 = pair(d1=1, d2=1)
    r = np.corrcoef(x1[:, 0].numpy(), y1[:, 0].numpy())[0, 1]
    assert S.linear_cka(x1, y1) == pytest.approx(r ** 2, rel=1e-12)   # CKA of 1-D = r^2


def test_a_representation_with_no_columns_is_constant():
    X, Y = pair()
    with pytest.raises(ValueError, match=r"^X: expected at least one feature"):
        S.linear_cka(X[:, :0], Y)


def test_constant_detection_looks_past_the_first_rows():
    X, Y = pair()
    X[1] = X[0]                      # the first two rows agree, the rest do not
    assert S.linear_cka(X, Y) == pytest.approx(S.linear_cka(X.clone(), Y), abs=0)
    assert not S._is_constant(X) and S._is_constant(torch.ones(4, 2))


def test_debiased_cka_at_its_smallest_n():
    """The unbiased estimator needs n >= 4 (its normaliser is n (n - 3))."""
    X, Y = pair(n=4)
    v = S.debiased_cka(X, Y)
    assert math.isfinite(v)
    K, L = X @ X.T, Y @ Y.T
    ref = S.hsic_unbiased(K, L) / math.sqrt(S.hsic_unbiased(K, K) * S.hsic_unbiased(L, L))
    assert v == pytest.approx(ref, rel=1e-9)


def test_negative_unbiased_hsic_is_refused():
    with pytest.raises(ValueError, match="positive unbiased HSIC"):
        S._cka_from_hsic(0.1, -1e-3, 1.0)
    with pytest.raises(ValueError, match="positive unbiased HSIC"):
        S._cka_from_hsic(0.1, 1.0, 0.0)
    with pytest.raises(ValueError, match="positive unbiased HSIC"):
        S._cka_from_hsic(0.1, 0.0, 1.0)
    assert S._cka_from_hsic(0.5, 0.25, 4.0) == 0.5
    assert S._cka_from_hsic(0.3, 0.5, 0.5) == pytest.approx(0.6)


# ----------------------------------------------------------------------------- blocked paths
@pytest.mark.parametrize("form", ["feature", "gram"])
def test_blocked_and_split_reductions_equal_the_direct_ones(monkeypatch, form):
    """Large inputs are reduced in float64 blocks and A A^T in symmetric halves; shrinking
    the thresholds sends a small input down those paths, which must give the same values."""
    X, Y = pair(n=40, d1=7, d2=6, seed=3)
    direct = (S.linear_cka(X, Y, form=form), S.debiased_cka(X, Y, form=form))
    monkeypatch.setattr(S, "_BLOCK", 10)
    monkeypatch.setattr(S, "_MIN_SPLIT", 3)
    blocked = (S.linear_cka(X, Y, form=form), S.debiased_cka(X, Y, form=form))
    assert blocked == (pytest.approx(direct[0], rel=1e-12), pytest.approx(direct[1], rel=1e-12))


def test_frob_dot_blocks_cover_every_row(monkeypatch):
    A = torch.arange(1.0, 61.0, dtype=torch.float64).reshape(12, 5)
    B = torch.linspace(-1, 2, 60, dtype=torch.float64).reshape(12, 5)
    ref = float((A * B).sum())
    for block in (1, 7, 10, 59, 60):
        monkeypatch.setattr(S, "_BLOCK", block)
        assert S._frob_dot(A, B) == pytest.approx(ref, rel=1e-14)
        assert S._sq_frob(A) == pytest.approx(float((A * A).sum()), rel=1e-14)


def test_float32_reductions_are_accumulated_in_float64():
    """2^24 float32 products of about 1e6: a float32 sum is off in the 8th digit; the
    reductions round each product once and accumulate in float64."""
    g = torch.Generator().manual_seed(0)
    A = torch.rand(1 << 12, 1 << 12, generator=g) + 1000.0        # float32, 2^24 entries
    ref = float((A * A).double().sum())
    assert S._frob_dot(A, A) == pytest.approx(ref, rel=1e-12)
    assert S._sq_frob(A) == pytest.approx(float(A.double().square().sum()), rel=1e-12)


def test_blocked_float32_reductions_are_accumulated_in_float64(monkeypatch):
    g = torch.Generator().manual_seed(1)
    A = torch.rand(1 << 10, 1 << 10, generator=g) + 1000.0
    monkeypatch.setattr(S, "_BLOCK", 1 << 14)                     # 64 blocks of 16 rows
    assert S._frob_dot(A, A) == pytest.approx(float((A * A).double().sum()), rel=1e-13)


def test_integer_features_are_computed_in_float64():
    X, Y = pair(n=30, dtype=torch.float64)
    Xi = (X * 1000).round().to(torch.int64)
    want = S.linear_cka(Xi.double(), Y.float().double())
    assert S.linear_cka(Xi, Y.float()) == pytest.approx(want, rel=1e-12)


def test_rbf_cka_computes_in_float64():
    X, Y = pair(n=30)
    assert S.rbf_cka(X.float(), Y.float()) == pytest.approx(
        S.rbf_cka(X.float().double(), Y.float().double()), rel=1e-12)
    two = S.rbf_cka(X[:2], Y[:2])                  # the fewest rows: any two points agree
    assert two == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"at least 2 rows \(examples\) for CKA, got 1"):
        S.rbf_cka(X[:1], Y[:1])


def test_small_scale_features_are_not_constant():
    X, Y = pair(n=20)
    sums = LinearCKASums().update(X * 1e-4, Y * 1e-4)
    assert sums.compute() == pytest.approx(S.linear_cka(X, Y), rel=1e-9)


def test_halves_cover_the_matrix_once():
    """Every entry of A A^T is counted once: diagonal blocks with weight 1, an
    off-diagonal block with weight 2 for itself and its mirror."""
    for m in (1, 5, S._MIN_SPLIT - 1, S._MIN_SPLIT, 1001):
        cover = np.zeros((m, m))
        for i, j, w in S._halves(m):
            r, c = np.arange(m)[i], np.arange(m)[j]
            if i == j:
                cover[np.ix_(r, c)] += w
            else:
                cover[np.ix_(r, c)] += w / 2
                cover[np.ix_(c, r)] += w / 2
        np.testing.assert_allclose(cover, 1.0)
    assert len(S._halves(S._MIN_SPLIT - 1)) == 1 and len(S._halves(S._MIN_SPLIT)) == 3


# ----------------------------------------------------------------------------- form choice
def test_the_cheaper_form_is_chosen_by_the_documented_counts():
    """_choose_form picks the form with fewer multiply-adds, as its docstring counts them;
    both forms give the same CKA (tests/test_similarity.py), so this pins speed only."""
    def counts(n, d1, d2):
        feature = n * (d1 * d2 + 0.75 * (d1 ** 2 + d2 ** 2)) + (d1 ** 2 + d2 ** 2 + d1 * d2)
        gram = 0.75 * n ** 2 * (d1 + d2) + 3 * n ** 2
        return feature, gram

    grid = itertools.product(list(range(2, 80)) + [200, 1000, 5000],
                             [1, 2, 4, 7, 10, 16, 33, 64, 512], [1, 3, 4, 7, 10, 20, 64, 700])
    chosen = {"feature": 0, "gram": 0}
    for n, d1, d2 in grid:
        f, g = counts(n, d1, d2)
        form = S._choose_form(n, d1, d2, "auto")
        assert form == ("feature" if f <= g else "gram"), (n, d1, d2)
        chosen[form] += 1
    assert min(chosen.values()) > 100           # the grid spans both sides of the crossover
    # exact ties go to the feature form
    for n, d1, d2 in [(4, 2, 4), (6, 1, 7), (15, 10, 10)]:
        f, g = counts(n, d1, d2)
        assert f == g and S._choose_form(n, d1, d2, "auto") == "feature"
    assert S._choose_form(10, 5, 5, "gram") == "gram"
    with pytest.raises(ValueError, match=r"^form: expected one of"):
        S._choose_form(10, 5, 5, "fast")


# ----------------------------------------------------------------------------- rbf
def test_median_is_numpys():
    for v in ([3.0], [4.0, 1.0], [5.0, 1.0, 3.0], [2.0, 8.0, 4.0, 6.0], list(range(11, 0, -1))):
        assert float(S._median_numpy(torch.tensor(v))) == np.median(v)


def test_rbf_bandwidth_needs_distinct_rows():
    X = torch.zeros(6, 3, dtype=torch.float64)
    X[0, 0] = 1.0                                  # most row pairs coincide: median 0
    _, Y = pair(n=6)
    with pytest.raises(ValueError, match=r"^X: expected a positive median squared distance"):
        S.rbf_cka(X, Y)
    small = pair(n=8)[0] * 1e-3                    # a median below 1 is still a bandwidth
    assert 0 < S.rbf_cka(small, pair(n=8)[1]) <= 1


# ----------------------------------------------------------------------------- batch sums
def test_linear_cka_sums_edges():
    X, Y = pair(n=10)
    sums = LinearCKASums()
    with pytest.raises(ValueError, match="at least 2 examples"):
        sums.compute()
    sums.update(X[:1], Y[:1])
    with pytest.raises(ValueError, match="at least 2 examples.*got 1"):
        sums.compute()
    sums.update(X[1:2], Y[1:2])
    assert sums.n == 2 and sums.compute() == pytest.approx(S.linear_cka(X[:2], Y[:2]))
    sums.reset()
    assert sums.n == 0
    sums.update(X, Y)
    assert sums.n == 10 and sums.compute() == pytest.approx(S.linear_cka(X, Y), rel=1e-12)
    const = LinearCKASums().update(torch.ones(5, 3), Y[:5])
    with pytest.raises(ValueError, match="constant representation"):
        const.compute()
    const = LinearCKASums().update(X[:5], torch.ones(5, 3))
    with pytest.raises(ValueError, match="constant representation"):
        const.compute()
