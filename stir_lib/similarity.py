"""Representation similarity: linear, RBF and debiased CKA of all examples at once (over
batches of examples: :mod:`stir_lib.batch_cka`).

Centred kernel alignment compares two representations of the same n examples,
X (n, d1) and Y (n, d2), through their Gram matrices K = X X^T and L = Y Y^T:

    CKA(K, L) = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))                     (1)

References
----------
- Kornblith, Norouzi, Lee & Hinton (2019), "Similarity of Neural Network
  Representations Revisited", ICML: linear and RBF CKA, the feature-space form
  of linear CKA, the median bandwidth rule, and its public notebook's check
  values.
- Song, Smola, Gretton, Bedo & Borgwardt (2012), "Feature Selection via
  Dependence Maximization", JMLR 13: the unbiased HSIC estimator HSIC_1.
- Nguyen, Raghu & Kornblith (2021), "Do Wide and Deep Networks Learn the Same
  Things?", ICLR: minibatch CKA, which sums unbiased HSIC over batches.

Numerics (see PAPER_TARGETS.md section 4). Features are centred *before* any
product, in two passes (subtract the mean, then the mean of what is left), so a
large constant offset in float32 features costs no precision; the products stay
in the input precision (they are the whole cost), and every reduction of a
product (Frobenius norms, Gram inner products) is summed in float64.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from . import threads

from .validation import check_choice, check_finite, check_matrix_pair, check_positive, check_tensor

__all__ = ["debiased_cka", "hsic_unbiased", "linear_cka", "rbf_cka", "FORMS"]

FORMS = ("auto", "feature", "gram")


# ----------------------------------------------------------------------------
# input preparation
# ----------------------------------------------------------------------------

def _as_tensor(x, name: str) -> torch.Tensor:
    """numpy arrays become tensors (sharing memory); anything else must be a tensor."""
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    check_tensor(x, name)
    if x.is_complex():
        raise TypeError(f"{name}: expected real features, got dtype {x.dtype}; "
                        f"pass x.real or x.abs()")
    return x


def _compute_dtype(X: torch.Tensor, Y: torch.Tensor) -> torch.dtype:
    """float64 if either input is float64 or integer (exact), else float32."""
    dts = [t.dtype if t.is_floating_point() else torch.float64 for t in (X, Y)]
    dt = torch.promote_types(*dts)
    return torch.float64 if dt == torch.float64 else torch.float32


def _check_structure(X, Y, names, min_rows: int, why: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Types, shapes, rows and device; the finite check comes free with the means.

    validation.check_matrix_pair would also scan every entry for NaN/inf, an
    extra pass that costs 15-30 % of linear_cka on a 10,000 x 512 pair; the
    column means computed for centring detect NaN/inf at no cost (see
    _centre), so here only the structure is checked up front.
    """
    X, Y = _as_tensor(X, names[0]), _as_tensor(Y, names[1])
    for m, nm in zip((X, Y), names):
        if m.ndim != 2:
            raise ValueError(f"{nm}: expected a 2-D matrix (n, d), got shape "
                             f"{tuple(m.shape)}; flatten features with .flatten(1)")
    if X.shape[0] != Y.shape[0]:
        raise ValueError(f"{names[0]} and {names[1]}: expected the same number of rows "
                         f"(examples), got {X.shape[0]} and {Y.shape[0]}")
    if X.device != Y.device:
        raise ValueError(f"{names[0]} and {names[1]}: expected tensors on one device, got "
                         f"{X.device} and {Y.device}; move one with .to(other.device)")
    n = X.shape[0]
    if n < min_rows:
        raise ValueError(f"{names[0]} and {names[1]}: expected at least {min_rows} rows "
                         f"(examples) {why}, got {n}; use more examples")
    return X, Y


def _is_constant(X: torch.Tensor) -> bool:
    """True iff every column of X is constant (exact comparison).

    Rows 0 and 1 almost always differ somewhere, which settles it in O(d); only
    when they are equal is the full O(n d) comparison made.
    """
    if X.shape[1] == 0 or X.shape[0] < 2:
        return True
    if not torch.equal(X[0], X[1]):
        return False
    return bool((X == X[:1]).all())


def _centre(X: torch.Tensor, dtype: torch.dtype, name: str) -> torch.Tensor:
    """Return X with column means removed, in ``dtype``; raise on NaN/inf.

    Two passes: after subtracting the (rounded) mean m, the column means r of
    what is left are tiny, so subtracting them too leaves a residual mean of
    order eps * std instead of eps * |m|. This matters for float32 features
    that carry a large constant offset (PAPER_TARGETS.md section 4).
    """
    X = X.to(dtype)
    m = X.mean(0, keepdim=True)                                  # (1, d)
    if not bool(torch.isfinite(m).all()):
        check_finite(X, name)         # raises with the house message if NaN/inf
        _raise_overflow(name, dtype)  # finite values whose sum overflowed
    Xc = X - m                                                   # (n, d), new memory
    Xc.sub_(Xc.mean(0, keepdim=True))
    return Xc


def _raise_overflow(name: str, dtype: torch.dtype) -> None:
    raise ValueError(f"{name}: expected features whose sums and products fit in {dtype}, got "
                     f"an overflow to inf; CKA is scale invariant, so divide the features by "
                     f"their largest absolute value (or pass float64)")


def _finite_or_raise(values: tuple[float, ...], dtype: torch.dtype) -> tuple[float, ...]:
    if not all(math.isfinite(v) for v in values):
        _raise_overflow("X or Y", dtype)
    return values


def _check_not_constant(X: torch.Tensor, name: str) -> None:
    if _is_constant(X):
        raise ValueError(f"{name}: expected at least one feature with non-zero variance, got "
                         f"all {X.shape[1]} columns constant over the {X.shape[0]} rows; CKA is "
                         f"0/0 for a constant representation, so drop this layer or check the "
                         f"feature extraction")


def _prepare(X, Y, names=("X", "Y"), *, min_rows: int, why: str,
             allow_constant: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate, pick the compute dtype and return the centred pair (Xc, Yc)."""
    X, Y = _check_structure(X, Y, names, min_rows, why)
    if not allow_constant:
        _check_not_constant(X, names[0])
        _check_not_constant(Y, names[1])
    dtype = _compute_dtype(X, Y)
    return _centre(X, dtype, names[0]), _centre(Y, dtype, names[1])


# ----------------------------------------------------------------------------
# float64 reductions and the two ways to get <K, L>
# ----------------------------------------------------------------------------

_BLOCK = 1 << 24     # entries per float64 reduction block (128 MiB of float64 scratch)


def _frob_dot(A: torch.Tensor, B: torch.Tensor) -> float:
    """sum(A * B) accumulated in float64 (row blocks of <= 2^24 entries).

    Summing ~1e8 products in float32 loses digits (PAPER_TARGETS.md section 4).
    Each product A_ij B_ij is rounded once in the input precision, which is
    unbiased and harmless; only the accumulation needs float64.
    """
    if A.numel() <= _BLOCK:
        return float(torch.sum(A * B, dtype=torch.float64))
    rows = max(1, _BLOCK // A.shape[1])
    return math.fsum(float(torch.sum(A[i:i + rows] * B[i:i + rows], dtype=torch.float64))
                     for i in range(0, A.shape[0], rows))


def _sq_frob(A: torch.Tensor) -> float:
    """||A||_F^2 accumulated in float64."""
    if A.numel() <= _BLOCK:
        return float(torch.linalg.vector_norm(A, dtype=torch.float64)) ** 2
    return _frob_dot(A, A)


_MIN_SPLIT = 256     # rows of A below which A A^T is not split into halves


def _halves(m: int) -> list[tuple[slice, slice, float]]:
    """Distinct blocks (i, j, weight) of a symmetric (m, m) product, rows in halves.

    A A^T = [[A1 A1^T, A1 A2^T], [A2 A1^T, A2 A2^T]]: the lower-left block is
    the transpose of the upper-right one, so three block products (3/4 of the
    multiply-adds) give every Frobenius inner product, the off-diagonal block
    counted twice. torch has no symmetric rank-k product (syrk) of its own.
    """
    if m < _MIN_SPLIT:
        return [(slice(None), slice(None), 1.0)]
    h = m // 2
    top, bottom = slice(0, h), slice(h, m)
    return [(top, top, 1.0), (top, bottom, 2.0), (bottom, bottom, 1.0)]


def _sym_sq_frob(A: torch.Tensor) -> float:
    """||A A^T||_F^2 for A (m, k), from the distinct blocks of A A^T."""
    return math.fsum(w * _sq_frob(A[i] @ A[j].T) for i, j, w in _halves(A.shape[0]))


def _sym_frob_dots(A: torch.Tensor, B: torch.Tensor,
                   off_diagonal: bool) -> tuple[float, float, float]:
    """<K, L>, ||K||^2, ||L||^2 for K = A A^T, L = B B^T, A (m, k1), B (m, k2).

    Block by block, so no full (m, m) matrix is held. With ``off_diagonal``
    the diagonals of K and L are zeroed first.
    """
    kl = kk = ll = 0.0
    for i, j, w in _halves(A.shape[0]):
        K = A[i] @ A[j].T                                         # (m/2, m/2) or (m, m)
        L = B[i] @ B[j].T
        if off_diagonal and i == j:
            # zeroing is exact, unlike subtracting sum_i K_ii L_ii afterwards,
            # which cancels most of <K, L> when d >> n
            K.fill_diagonal_(0)
            L.fill_diagonal_(0)
        kl += w * _frob_dot(K, L)
        kk += w * _sq_frob(K)
        ll += w * _sq_frob(L)
    return kl, kk, ll


def _choose_form(n: int, d1: int, d2: int, form: str) -> str:
    """Pick the cheaper of the two forms by multiply-add count.

    feature: Yc^T Xc, and Xc^T Xc, Yc^T Yc at 3/4 (symmetric halves, see _halves)
             -> n (d1 d2 + 3/4 (d1^2 + d2^2)) + (d1^2 + d2^2 + d1 d2)
    gram:    Xc Xc^T, Yc Yc^T at 3/4           -> 3/4 n^2 (d1 + d2)  + 3 n^2
    """
    check_choice(form, "form", FORMS)
    if form != "auto":
        return form
    feature = n * (d1 * d2 + 0.75 * (d1 * d1 + d2 * d2)) + (d1 * d1 + d2 * d2 + d1 * d2)
    gram = 0.75 * n * n * (d1 + d2) + 3 * n * n
    return "feature" if feature <= gram else "gram"


def _inner_products(Xc: torch.Tensor, Yc: torch.Tensor, form: str,
                    diagonals: tuple[torch.Tensor, torch.Tensor] | None = None
                    ) -> tuple[float, float, float]:
    """Return (<K, L>, <K, K>, <L, L>) for K = Xc Xc^T, L = Yc Yc^T (float64 sums).

    Feature form: <K, L> = ||Yc^T Xc||_F^2, <K, K> = ||Xc^T Xc||_F^2, ...
    Gram form: the Grams themselves. Given ``diagonals`` = (diag K, diag L),
    the Grams have their diagonals removed (the K~, L~ of Song et al.): the
    Gram form zeroes them, the feature form subtracts sum_i K_ii L_ii, which
    is accurate when n is large relative to d (when "auto" picks it).
    """
    n, d1 = Xc.shape
    form = _choose_form(n, d1, Yc.shape[1], form)
    if form == "gram":
        return _sym_frob_dots(Xc, Yc, off_diagonal=diagonals is not None)
    kl = _sq_frob(Yc.T @ Xc)                                     # ||(d2, d1)||^2
    kk = _sym_sq_frob(Xc.T)                                      # ||(d1, d1)||^2
    ll = _sym_sq_frob(Yc.T)                                      # ||(d2, d2)||^2
    if diagonals is not None:
        dx, dy = diagonals                                       # (n,) float64 each
        kl -= float(dx @ dy)
        kk -= float(dx @ dx)
        ll -= float(dy @ dy)
    return kl, kk, ll


def _row_sq_norms(Xc: torch.Tensor) -> torch.Tensor:
    """(n,) float64 vector of ||x_i||^2 (the diagonal of K)."""
    return Xc.square().sum(1, dtype=torch.float64) if Xc.dtype == torch.float64 \
        else Xc.square().sum(1).double()


def _unbiased_hsic_terms(Xc: torch.Tensor, Yc: torch.Tensor,
                         form: str) -> tuple[float, float, float]:
    """Unbiased HSIC (Song et al. 2012) of (X,Y), (X,X), (Y,Y), linear kernel.

    For column-centred features K 1 = 0, so with K~ = K - diag(K) the three
    correction terms of HSIC_1 (see hsic_unbiased) reduce to the diagonals dx = diag(K),
    dy = diag(L):  1^T K~ 1 = -sum(dx),  1^T K~ L~ 1 = dx . dy, and

        n (n - 3) HSIC_1 = <K~, L~> + sum(dx) sum(dy) / ((n-1)(n-2)) - 2 dx.dy / (n-2)   (2)

    Unbiased HSIC is unchanged by translating the features, so centring first
    is allowed, and it is what keeps float32 products accurate.
    """
    n = Xc.shape[0]
    dx, dy = _row_sq_norms(Xc), _row_sq_norms(Yc)                # (n,) float64 each
    kl, kk, ll = _finite_or_raise(_inner_products(Xc, Yc, form, diagonals=(dx, dy)), Xc.dtype)
    tx, ty = float(dx.sum()), float(dy.sum())

    def hsic(off: float, a: torch.Tensor, b: torch.Tensor, ta: float, tb: float) -> float:
        return (off + ta * tb / ((n - 1) * (n - 2)) - 2.0 * float(a @ b) / (n - 2)) / (n * (n - 3))

    return hsic(kl, dx, dy, tx, ty), hsic(kk, dx, dx, tx, tx), hsic(ll, dy, dy, ty, ty)


# ----------------------------------------------------------------------------
# public API
# ----------------------------------------------------------------------------

@torch.no_grad()
@threads.parallel
def linear_cka(X: torch.Tensor | np.ndarray, Y: torch.Tensor | np.ndarray, *,
               form: str = "auto") -> float:
    """Linear CKA of Kornblith et al. (2019) between X (n, d1) and Y (n, d2).

    With column-centred Xc, Yc, two equal expressions (Kornblith et al., section 3):

        feature form  ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)     O(n d^2)
        Gram form     <K, L> / (||K||_F ||L||_F),  K = Xc Xc^T, L = Yc Yc^T   O(n^2 d)

    (K = H X X^T H is the centred Gram.) ``form="auto"`` picks the one with
    fewer multiply-adds: the feature form when n is large relative to d.

    Args:
        X: (n, d1) features, torch.Tensor or numpy array; ints are taken as float64.
        Y: (n, d2) features of the same n examples, in the same order.
        form: "auto", "feature" or "gram" (the last two force a form).

    Returns:
        CKA in [0, 1] as a Python float. Invariant to orthogonal transforms and
        isotropic scaling of either input, not to general invertible maps.

    Products run in the input precision (float32 stays float32; float16 and
    bfloat16 are computed in float32); norms are summed in float64.
    """
    Xc, Yc = _prepare(X, Y, min_rows=2, why="for CKA")
    kl, kk, ll = _finite_or_raise(_inner_products(Xc, Yc, form), Xc.dtype)
    return kl / math.sqrt(kk * ll)


def _median_numpy(v: torch.Tensor) -> torch.Tensor:
    """numpy's median of a 1-D tensor: mean of the two middle values when even.

    (torch.median returns the lower middle value, and torch.quantile refuses
    inputs above 2^24 entries, i.e. n x n distance matrices past n = 4096.)
    """
    N = v.numel()
    lo = torch.kthvalue(v, (N + 1) // 2).values
    if N % 2:
        return lo
    return (lo + torch.kthvalue(v, N // 2 + 1).values) / 2


def _rbf_gram(X: torch.Tensor, threshold: float, name: str) -> torch.Tensor:
    """Centred Gaussian Gram H K H, float64, with the median bandwidth rule."""
    Xc = _centre(X, torch.float64, name)           # distances unchanged, less cancellation
    G = Xc @ Xc.T                                  # (n, n)
    sq = G.diagonal().clone()                      # (n,)
    D2 = (sq[:, None] + sq[None, :] - 2 * G).clamp_min_(0)
    D2.fill_diagonal_(0)
    med = float(_median_numpy(D2.flatten()))
    if med <= 0:
        raise ValueError(f"{name}: expected a positive median squared distance between rows, "
                         f"got {med}; more than half of the row pairs coincide, so the RBF "
                         f"bandwidth is zero: remove duplicate rows or use linear_cka")
    K = torch.exp(-D2 / (2 * threshold ** 2 * med))
    # H K H: removing the column means, then the row means of what is left
    K -= K.mean(0, keepdim=True)
    K -= K.mean(1, keepdim=True)
    return K


@torch.no_grad()
@threads.parallel
def rbf_cka(X: torch.Tensor | np.ndarray, Y: torch.Tensor | np.ndarray,
            threshold: float = 1.0) -> float:
    """CKA with Gaussian (RBF) kernels, Kornblith et al. (2019), section 3.

    k(x_i, x_j) = exp(-||x_i - x_j||^2 / (2 sigma^2)), with the bandwidth rule of
    the paper's public notebook:

        sigma^2 = threshold^2 * median_{i, j} ||x_i - x_j||^2

    where the median runs over the *full* n x n matrix of squared distances,
    zero diagonal included (so it is a little below the median over distinct
    pairs), and numpy's median convention (mean of the two middle values).
    Each representation gets its own sigma. Cost O(n^2 (d + log n)) time and
    O(n^2) float64 memory.

    Args:
        X: (n, d1) features, torch.Tensor or numpy array.
        Y: (n, d2) features of the same examples.
        threshold: bandwidth as a fraction of the median distance (unitless, > 0).

    Returns:
        CKA in [0, 1] as a Python float; computed in float64.
    """
    threshold = check_positive(threshold, "threshold")
    X, Y = _as_tensor(X, "X"), _as_tensor(Y, "Y")
    check_matrix_pair(X, Y)
    if X.shape[0] < 2:
        raise ValueError(f"X and Y: expected at least 2 rows (examples) for CKA, got "
                         f"{X.shape[0]}; use more examples")
    _check_not_constant(X, "X")
    _check_not_constant(Y, "Y")
    K, L = _rbf_gram(X, threshold, "X"), _rbf_gram(Y, threshold, "Y")
    return _frob_dot(K, L) / math.sqrt(_sq_frob(K) * _sq_frob(L))


@torch.no_grad()
@threads.parallel
def hsic_unbiased(K: torch.Tensor | np.ndarray, L: torch.Tensor | np.ndarray) -> float:
    """Unbiased HSIC estimator HSIC_1 of Song et al. (2012), from two Gram matrices.

    With K~, L~ the Grams with zeroed diagonals and 1 the ones vector,

        HSIC_1 = [tr(K~ L~) + (1^T K~ 1)(1^T L~ 1) / ((n-1)(n-2))
                  - 2 / (n-2) 1^T K~ L~ 1] / (n (n-3))

    It is unbiased for the population HSIC (for linear kernels,
    ||Cov(x, y)||_F^2) and can be negative. It equals <U(K), U(L)> / (n (n-3))
    with U the U-centring used by debiased CKA (Kornblith et al. 2019).

    Args:
        K: (n, n) symmetric Gram matrix (any kernel), tensor or numpy array.
        L: (n, n) Gram matrix of the same n examples. Needs n > 3.

    Returns:
        The estimate as a Python float, computed in float64.
    """
    K, L = _as_tensor(K, "K"), _as_tensor(L, "L")
    check_matrix_pair(K, L, names=("K", "L"))
    for m, nm in ((K, "K"), (L, "L")):
        if m.shape[0] != m.shape[1]:
            raise ValueError(f"{nm}: expected a square (n, n) Gram matrix, got shape "
                             f"{tuple(m.shape)}; pass X @ X.T, not the features")
    n = K.shape[0]
    if n <= 3:
        raise ValueError(f"K and L: expected n > 3 examples for the unbiased HSIC "
                         f"(it divides by n (n - 3)), got n = {n}; use more examples")
    Kt, Lt = K.double().clone(), L.double().clone()              # (n, n) float64
    Kt.fill_diagonal_(0)
    Lt.fill_diagonal_(0)
    k1, l1 = Kt.sum(1), Lt.sum(1)                                # K~ 1, L~ 1: (n,)
    value = (_frob_dot(Kt, Lt) + float(k1.sum() * l1.sum()) / ((n - 1) * (n - 2))
             - 2.0 * float(k1 @ l1) / (n - 2))
    return value / (n * (n - 3))


def _cka_from_hsic(hxy: float, hxx: float, hyy: float) -> float:
    if hxx <= 0 or hyy <= 0:
        raise ValueError(f"expected positive unbiased HSIC(X, X) and HSIC(Y, Y), got {hxx:.3g} "
                         f"and {hyy:.3g}; the estimator can go negative when a representation "
                         f"barely varies or n is tiny: use more examples (or larger batches)")
    return hxy / math.sqrt(hxx * hyy)


@torch.no_grad()
@threads.parallel
def debiased_cka(X: torch.Tensor | np.ndarray, Y: torch.Tensor | np.ndarray, *,
                 form: str = "auto") -> float:
    """Debiased linear CKA: eq. (1) with the unbiased HSIC of Song et al. (2012).

    Equivalent to Kornblith et al.'s (2019) notebook `cka(..., debiased=True)`,
    which U-centres the Grams; the bias of plain CKA towards 1 when d is large
    relative to n is removed. Needs n > 3. Computed from the centred features
    through eq. (2) of `_unbiased_hsic_terms`, in the feature or the Gram form
    (``form`` as in `linear_cka`).

    Args:
        X: (n, d1) features, tensor or numpy array.
        Y: (n, d2) features of the same examples.

    Returns:
        Debiased CKA as a Python float (can be slightly negative or above 1).
    """
    Xc, Yc = _prepare(X, Y, min_rows=4, why="for the unbiased HSIC (n > 3)")
    return _cka_from_hsic(*_unbiased_hsic_terms(Xc, Yc, form))
