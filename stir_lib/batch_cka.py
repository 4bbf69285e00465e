"""CKA over batches of examples, for more examples than fit at once.

* :class:`LinearCKASums`: linear CKA exactly, from the feature form's sums accumulated over
  batches (memory (d1 + d2)^2, whatever the number of examples);
* :class:`MinibatchCKA` and :func:`minibatch_cka`: the minibatch estimator of Nguyen, Raghu
  & Kornblith (2021), unbiased HSIC summed over batches (an estimate, not linear CKA).

The all-at-once measures are in :mod:`stir_lib.similarity`.
"""

from __future__ import annotations

import math

import torch

from . import threads
from .similarity import _as_tensor, _check_structure, _cka_from_hsic, _prepare, _unbiased_hsic_terms
from .validation import check_finite

__all__ = ["LinearCKASums", "MinibatchCKA", "minibatch_cka"]


class LinearCKASums:
    """Linear CKA over batches, exactly: the feature form's sums, accumulated.

    ``update`` adds one batch's sum of rows and its cross-products X^T X, Y^T Y and Y^T X
    (in float64); ``compute`` centres them (X_c^T X_c = X^T X - s_x s_x^T / n) and returns

        ||Y_c^T X_c||_F^2 / (||X_c^T X_c||_F ||Y_c^T Y_c||_F)

    which is :func:`linear_cka` of all the rows at once (to float64 rounding), whatever the
    batches. Memory is (d1 + d2)^2 numbers, not n^2 nor n d: for many examples of layers of
    moderate width (a penultimate layer, a pooled feature map), where the all-at-once call
    would hold every row. Unlike :class:`MinibatchCKA`, nothing is estimated.

    Example:
        >>> sums = LinearCKASums()
        >>> for xb, yb in batches:            # xb: (b, d1), yb: (b, d2), the same examples
        ...     sums.update(xb, yb)
        >>> sums.compute()
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> "LinearCKASums":
        """Forget all batches."""
        self.n = 0
        self._sums: tuple[torch.Tensor, ...] | None = None   # s_x, s_y, XtX, YtY, YtX
        return self

    @torch.no_grad()
    @threads.parallel
    def update(self, X_batch, Y_batch) -> "LinearCKASums":
        """Add one batch: X_batch (b, d1), Y_batch (b, d2), the same b examples in order."""
        X = _as_tensor(X_batch, "X_batch")
        Y = _as_tensor(Y_batch, "Y_batch")
        if X.ndim != 2 or Y.ndim != 2 or len(X) != len(Y) or len(X) == 0:
            raise ValueError(f"X_batch and Y_batch: expected (b, d1) and (b, d2) with the same "
                             f"b >= 1 examples, got shapes {tuple(X.shape)} and {tuple(Y.shape)}")
        check_finite(X, "X_batch")
        check_finite(Y, "Y_batch")
        X, Y = X.double(), Y.double().to(X.device)
        terms = (X.sum(0), Y.sum(0), X.T @ X, Y.T @ Y, Y.T @ X)
        if self._sums is None:
            self._sums = terms
        else:
            if terms[2].shape != self._sums[2].shape or terms[3].shape != self._sums[3].shape:
                raise ValueError(f"X_batch and Y_batch: expected feature sizes "
                                 f"{(self._sums[2].shape[0], self._sums[3].shape[0])} as in "
                                 f"earlier batches, got {(X.shape[1], Y.shape[1])}; call "
                                 f"reset() to start a new comparison")
            self._sums = tuple(a + b.to(a.device) for a, b in zip(self._sums, terms))
        self.n += len(X)
        return self

    def compute(self) -> float:
        """Linear CKA of every row added so far, as a Python float."""
        if self._sums is None or self.n < 2:
            raise ValueError(f"LinearCKASums: expected at least 2 examples before compute(), "
                             f"got {self.n}; call update(X_batch, Y_batch) first")
        sx, sy, xtx, yty, ytx = self._sums
        n = self.n
        cxx = xtx - torch.outer(sx, sx) / n
        cyy = yty - torch.outer(sy, sy) / n
        cyx = ytx - torch.outer(sy, sx) / n
        kk, ll = float(cxx.pow(2).sum()), float(cyy.pow(2).sum())
        if kk <= 0 or ll <= 0:
            raise ValueError("LinearCKASums: a constant representation (all rows equal) has "
                             "no CKA; check the layer and the inputs")
        return float(cyx.pow(2).sum()) / math.sqrt(kk * ll)


class MinibatchCKA:
    """Minibatch linear CKA of Nguyen, Raghu & Kornblith (2021).

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
    @threads.parallel
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


@threads.parallel
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
