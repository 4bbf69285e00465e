"""Representation similarity: linear, RBF, debiased and minibatch CKA.

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
  Dependence Maximization", JMLR 13: the unbiased HSIC estimator, eq. (5).
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

from .validation import check_choice, check_finite, check_matrix_pair, check_positive, check_tensor

__all__ = [
    "MinibatchCKA",
    "debiased_cka",
    "hsic_unbiased",
    "linear_cka",
    "minibatch_cka",
    "rbf_cka",
]

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

    validation.check_matrix_pair would also scan every entry for NaN/inf; on
    a 10,000 x 512 matrix that scan costs a third of the time of the products
    themselves, and the column means computed for centring detect NaN/inf at
    no cost (see _centre), so here only the structure is checked up front.
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
        # finite but the sum overflowed float32: values ~ 1e34; redo in float64
        X = X.double()
        m = X.mean(0, keepdim=True)
    Xc = X - m                                                   # (n, d), new memory
    Xc.sub_(Xc.mean(0, keepdim=True))
    return Xc


def _prepare(X, Y, names=("X", "Y"), min_rows: int = 2, why: str = "",
             allow_constant: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate, pick the compute dtype and return the centred pair (Xc, Yc)."""
    X, Y = _check_structure(X, Y, names, min_rows, why)
    if not allow_constant:
        for m, nm in zip((X, Y), names):
            if _is_constant(m):
                raise ValueError(
                    f"{nm}: expected at least one feature with non-zero variance, got all "
                    f"{m.shape[1]} columns constant over the {m.shape[0]} rows; CKA is 0/0 "
                    f"for a constant representation, so drop this layer or check the "
                    f"feature extraction")
    dtype = _compute_dtype(X, Y)
    return _centre(X, dtype, names[0]), _centre(Y, dtype, names[1])


# ----------------------------------------------------------------------------
# float64 reductions and the two ways to get <K, L>
# ----------------------------------------------------------------------------

def _frob_dot(A: torch.Tensor, B: torch.Tensor) -> float:
    """sum(A * B) accumulated in float64, in row blocks of ~4M entries.

    Summing ~1e8 products in float32 loses digits; converting whole n x n
    matrices to float64 at once costs memory, hence the blocks.
    """
    rows = max(1, (1 << 22) // max(1, A.shape[1]))
    total = torch.zeros((), dtype=torch.float64, device=A.device)
    for i in range(0, A.shape[0], rows):
        total += (A[i:i + rows].double() * B[i:i + rows].double()).sum()
    return float(total)


def _sq_frob(A: torch.Tensor) -> float:
    """||A||_F^2 summed in float64."""
    return _frob_dot(A, A)


def _choose_form(n: int, d1: int, d2: int, form: str) -> str:
    """Pick the cheaper of the two forms by multiply-add count.

    feature: Xc^T Xc, Yc^T Yc, Yc^T Xc   -> n (d1^2 + d2^2 + d1 d2) + (d1^2 + d2^2 + d1 d2)
    gram:    Xc Xc^T, Yc Yc^T            -> n^2 (d1 + d2)             + 3 n^2
    """
    check_choice(form, "form", FORMS)
    if form != "auto":
        return form
    feature = (n + 1) * (d1 * d1 + d2 * d2 + d1 * d2)
    gram = n * n * (d1 + d2 + 3)
    return "feature" if feature <= gram else "gram"


def _inner_products(Xc: torch.Tensor, Yc: torch.Tensor, form: str,
                    off_diagonal: bool = False) -> tuple[float, float, float]:
    """Return (<K, L>, <K, K>, <L, L>) for K = Xc Xc^T, L = Yc Yc^T (float64 sums).

    With ``off_diagonal`` the Grams have their diagonals set to zero first (the
    K~, L~ of Song et al.); in the feature form that is the full value minus
    sum_i K_ii L_ii, exact enough there because n is large relative to d.
    """
    n, d1 = Xc.shape
    form = _choose_form(n, d1, Yc.shape[1], form)
    if form == "feature":
        kl = _sq_frob(Yc.T @ Xc)                                 # ||(d2, d1)||^2
        kk = _sq_frob(Xc.T @ Xc)                                 # ||(d1, d1)||^2
        ll = _sq_frob(Yc.T @ Yc)                                 # ||(d2, d2)||^2
        if off_diagonal:
            dx, dy = _row_sq_norms(Xc), _row_sq_norms(Yc)        # (n,) float64
            kl -= float(dx @ dy)
            kk -= float(dx @ dx)
            ll -= float(dy @ dy)
        return kl, kk, ll
    K = Xc @ Xc.T                                                # (n, n)
    L = Yc @ Yc.T                                                # (n, n)
    if off_diagonal:
        # zeroing is exact, unlike subtracting sum_i K_ii L_ii afterwards, which
        # cancels most of <K, L> when d >> n
        K.fill_diagonal_(0)
        L.fill_diagonal_(0)
    return _frob_dot(K, L), _frob_dot(K, K), _frob_dot(L, L)


def _row_sq_norms(Xc: torch.Tensor) -> torch.Tensor:
    """(n,) float64 vector of ||x_i||^2 (the diagonal of K)."""
    return Xc.square().sum(1, dtype=torch.float64) if Xc.dtype == torch.float64 \
        else Xc.square().sum(1).double()


def _unbiased_hsic_terms(Xc: torch.Tensor, Yc: torch.Tensor, form: str) -> tuple[float, float, float]:
    """Unbiased HSIC (Song et al. 2012, eq. 5) of (X,Y), (X,X), (Y,Y), linear kernel.

    For column-centred features K 1 = 0, so with K~ = K - diag(K) the three
    correction terms of eq. (5) reduce to the diagonals dx = diag(K),
    dy = diag(L):  1^T K~ 1 = -sum(dx),  1^T K~ L~ 1 = dx . dy, and

        n (n - 3) HSIC_1 = <K~, L~> + sum(dx) sum(dy) / ((n-1)(n-2)) - 2 dx.dy / (n-2)   (2)

    Unbiased HSIC is unchanged by translating the features, so centring first
    is allowed, and it is what keeps float32 products accurate.
    """
    n = Xc.shape[0]
    kl, kk, ll = _inner_products(Xc, Yc, form, off_diagonal=True)
    dx, dy = _row_sq_norms(Xc), _row_sq_norms(Yc)
    tx, ty = float(dx.sum()), float(dy.sum())

    def hsic(off: float, a: torch.Tensor, b: torch.Tensor, ta: float, tb: float) -> float:
        return (off + ta * tb / ((n - 1) * (n - 2)) - 2.0 * float(a @ b) / (n - 2)) / (n * (n - 3))

    return hsic(kl, dx, dy, tx, ty), hsic(kk, dx, dx, tx, tx), hsic(ll, dy, dy, ty, ty)


# ----------------------------------------------------------------------------
# public API
# ----------------------------------------------------------------------------

@torch.no_grad()
def linear_cka(X, Y, *, form: str = "auto") -> float:
    """Linear CKA of Kornblith et al. (2019) between X (n, d1) and Y (n, d2).

    With column-centred Xc, Yc, two equal expressions (Kornblith et al., eq. 5):

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
    kl, kk, ll = _inner_products(Xc, Yc, form)
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
    # H K H: subtract row and column means, add back the grand mean
    K -= K.mean(0, keepdim=True)
    K -= K.mean(1, keepdim=True)
    return K


@torch.no_grad()
def rbf_cka(X, Y, threshold: float = 1.0) -> float:
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
    for m, nm in ((X, "X"), (Y, "Y")):
        if _is_constant(m):
            raise ValueError(f"{nm}: expected at least one feature with non-zero variance, got "
                             f"all {m.shape[1]} columns constant; CKA is 0/0 here, so drop "
                             f"this layer or check the feature extraction")
    K, L = _rbf_gram(X, threshold, "X"), _rbf_gram(Y, threshold, "Y")
    return _frob_dot(K, L) / math.sqrt(_frob_dot(K, K) * _frob_dot(L, L))


@torch.no_grad()
def hsic_unbiased(K, L) -> float:
    """Unbiased HSIC estimator of Song et al. (2012), eq. (5), from two Grams.

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
def debiased_cka(X, Y, *, form: str = "auto") -> float:
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


class MinibatchCKA:
    """Minibatch linear CKA of Nguyen, Raghu & Kornblith (2021), eq. (3).

    Each ``update`` adds the unbiased HSIC (Song et al. 2012) of one batch to
    running sums; ``compute`` returns

        CKA = sum_b HSIC_1(K_b, L_b) / sqrt(sum_b HSIC_1(K_b, K_b) * sum_b HSIC_1(L_b, L_b))

    Because each HSIC_1 is unbiased, the sums are consistent for the
    population HSIC however small the batches, which is why batches are
    summed and not averaged as per-batch CKAs. With one batch it equals
    `debiased_cka`. Feed the same examples to X and Y in the same order;
    shuffle the data if it is sorted (e.g. by class).

    Example:
        >>> acc = MinibatchCKA()
        >>> for xb, yb in batches:            # xb: (b, d1), yb: (b, d2), b > 3
        ...     acc.update(xb, yb)
        >>> acc.compute()
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> "MinibatchCKA":
        """Forget all batches."""
        self.hsic_xy = 0.0   # sum over batches of unbiased HSIC(X, Y)
        self.hsic_xx = 0.0   # ... HSIC(X, X)
        self.hsic_yy = 0.0   # ... HSIC(Y, Y)
        self.n_batches = 0
        self.n_examples = 0
        self._dims: tuple[int, int] | None = None
        return self

    @torch.no_grad()
    def update(self, X_batch, Y_batch) -> "MinibatchCKA":
        """Add one batch: X_batch (b, d1), Y_batch (b, d2), b > 3 examples."""
        Xc, Yc = _prepare(X_batch, Y_batch, names=("X_batch", "Y_batch"), min_rows=4,
                          why="per batch for the unbiased HSIC (n > 3)", allow_constant=True)
        dims = (Xc.shape[1], Yc.shape[1])
        if self._dims is not None and dims != self._dims:
            raise ValueError(f"X_batch and Y_batch: expected feature sizes {self._dims} as in "
                             f"earlier batches, got {dims}; call reset() to start a new "
                             f"comparison")
        hxy, hxx, hyy = _unbiased_hsic_terms(Xc, Yc, "auto")
        self.hsic_xy += hxy
        self.hsic_xx += hxx
        self.hsic_yy += hyy
        self.n_batches += 1
        self.n_examples += Xc.shape[0]
        self._dims = dims
        return self

    def compute(self) -> float:
        """Minibatch CKA over all batches so far, as a Python float."""
        if self.n_batches == 0:
            raise ValueError("MinibatchCKA: expected at least one update() before compute(), "
                             "got none; call update(X_batch, Y_batch) first")
        return _cka_from_hsic(self.hsic_xy, self.hsic_xx, self.hsic_yy)


def minibatch_cka(X, Y, batch_size: int) -> float:
    """Minibatch CKA (Nguyen et al. 2021) of X (n, d1) and Y (n, d2).

    Rows are taken in order in consecutive batches of ``batch_size`` (examples,
    an int > 3); a last batch with fewer than 4 rows is merged into the one
    before it. With batch_size >= n this is `debiased_cka(X, Y)`.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int):
        raise TypeError(f"batch_size: expected an int, got {type(batch_size).__name__}")
    if batch_size < 4:
        raise ValueError(f"batch_size: expected at least 4 examples per batch (the unbiased "
                         f"HSIC needs n > 3), got {batch_size}")
    X, Y = _check_structure(X, Y, ("X", "Y"), 4, "for the unbiased HSIC (n > 3)")
    n = X.shape[0]
    starts = list(range(0, n, batch_size))
    if n - starts[-1] < 4 and len(starts) > 1:
        starts.pop()                                   # merge the short tail
    ends = starts[1:] + [n]
    acc = MinibatchCKA()
    for a, b in zip(starts, ends):
        acc.update(X[a:b], Y[a:b])
    return acc.compute()
