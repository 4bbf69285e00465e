"""The iterative core of the operator norms: power and Lanczos iteration on ``A^T A`` for any
linear map given as a function, in float64, with a float32 warm start for large maps.

Iterative estimates are Rayleigh quotients, so they never exceed the true norm; they stop
when the estimate's relative change over a few iterations falls below ``tol``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from .. import threads
from ..validation import check_positive

__all__ = ["NormEstimate", "top_singular_value"]

_DTYPE = torch.float64
_WINDOW = 3  # the stop rule compares the estimate with the one _WINDOW iterations back
_WARM_MAX_ITER = 500  # cap on the float32 warm-start iterations
_WARM_MIN_SIZE = 4096  # below this many unknowns a step costs the same in either dtype


# --------------------------------------------------------------------------- iterative core
@dataclass(frozen=True)
class NormEstimate:
    """Result of :func:`top_singular_value`."""

    norm: float         # sqrt of the final float64 Rayleigh quotient: <= ||A||_2
    iterations: int     # float64 applications of A^T A (one forward and one adjoint each)
    warm_iterations: int  # float32 applications in the warm start (0 without one)
    rel_change: float   # relative change of ``norm`` over the last few iterations
    converged: bool     # rel_change < tol


def _start_vector(n: int, seed: int, device) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(n, generator=g, dtype=_DTYPE).to(device)
    return v / v.norm()


def _rel_change(history: list[float]) -> float:
    if len(history) <= _WINDOW:
        return math.inf
    new, old = history[-1], history[-1 - _WINDOW]
    return abs(new - old) / new if new > 0 else 0.0


def _power(op, v, *, tol, max_iter):
    """Power iteration on the PSD operator ``op`` from ``v``.

    Returns (theta, vector, iterations, rel_change, converged), theta the Rayleigh
    quotient ``v^T op(v)`` of the last unit vector (non-decreasing for a PSD operator).
    """
    v = v / v.norm()
    hist: list[float] = []
    for it in range(1, max_iter + 1):
        w = op(v)
        theta = float(torch.dot(v, w))
        hist.append(math.sqrt(max(theta, 0.0)))
        wn = float(w.norm())
        change = _rel_change(hist)
        if wn == 0.0 or change < tol:
            return theta, v, it, (0.0 if wn == 0.0 else change), True
        v = w / wn
    return hist[-1] ** 2, v, max_iter, _rel_change(hist), False


def _lanczos(op, v, *, tol, max_iter, max_basis):
    """Lanczos iteration on the PSD operator ``op`` from ``v``, in ``v``'s dtype.

    After m steps the largest eigenvalue theta of the tridiagonal T_m is the largest
    Rayleigh quotient over the Krylov space span(v, op v, ..., op^{m-1} v) (Lanczos 1950;
    Golub & Van Loan, "Matrix Computations", 4th ed., section 10.1): never below what power
    iteration reaches in m steps, never above lambda_max. Plain three-term recurrence
    without reorthogonalisation, in the ordering Paige (1972, "Computational variants of
    the Lanczos method for the eigenproblem", IMA J. Appl. Math. 10) found stable: rounding
    then only adds copies of already converged Ritz values (Paige 1980, "Accuracy and
    effectiveness of the Lanczos algorithm for the symmetric eigenproblem", Linear
    Algebra Appl. 34), which leaves the largest one intact, and
    T_m is a leading block of T_{m+1}, so theta never decreases (Cauchy interlacing). The
    basis is kept only to form the Ritz vector; when ``max_basis`` vectors are stored the
    iteration restarts from the current Ritz vector.

    Returns (theta, ritz_vector, iterations, rel_change, converged).
    """
    n = v.numel()
    basis = max(2, min(max_basis, max_iter))
    Q = torch.empty(basis, n, dtype=v.dtype, device=v.device)  # (m, n) Lanczos vectors
    q = v / v.norm()
    hist: list[float] = []
    it = 0
    while True:
        Q[0] = q
        alphas: list[float] = []
        betas: list[float] = []
        for j in range(basis):
            w = op(Q[j])
            it += 1
            # Paige's ordering (subtract the old direction before taking alpha) keeps
            # the recurrence stable; in-place updates keep the step to a few passes.
            if j > 0:
                w.sub_(Q[j - 1], alpha=betas[-1])
            alpha = float(torch.dot(w, Q[j]))
            w.sub_(Q[j], alpha=alpha)
            alphas.append(alpha)
            beta = float(w.norm())
            T = torch.diag(torch.tensor(alphas, dtype=_DTYPE))
            if betas:
                off = torch.tensor(betas, dtype=_DTYPE)
                T = T + torch.diag(off, 1) + torch.diag(off, -1)
            evals, evecs = torch.linalg.eigh(T)
            theta = float(evals[-1])
            hist.append(math.sqrt(max(theta, 0.0)))
            change = _rel_change(hist)
            # beta == 0: the Krylov space is invariant and theta an exact eigenvalue.
            done = beta <= 1e-14 * max(theta, 1e-300) or change < tol
            if done or it >= max_iter or j + 1 == basis:
                s = evecs[:, -1].to(dtype=v.dtype, device=v.device)
                q = Q[: j + 1].T @ s               # Ritz vector (n,)
                q = q / q.norm()
                if done or it >= max_iter:
                    return theta, q, it, (0.0 if change == math.inf else change), done
                break                               # basis full: restart from q
            torch.div(w, beta, out=Q[j + 1])
            betas.append(beta)


@threads.parallel
def top_singular_value(forward: Callable[[torch.Tensor], torch.Tensor],
                       adjoint: Callable[[torch.Tensor], torch.Tensor] | None,
                       input_shape: Sequence[int], *, method: str = "lanczos",
                       tol: float = 1e-7, max_iter: int = 3000, seed: int = 0,
                       warm_start: bool = False, device=None,
                       max_basis: int | None = None) -> NormEstimate:
    """Largest singular value of a linear map given as a function, by Krylov iteration.

    Args:
        forward: ``x -> A x`` on tensors of shape ``input_shape`` (include any batch axis
            the function needs). Must be linear (no bias) and accept float64 input (and
            float32 with ``warm_start``), returning the input's dtype.
        adjoint: ``y -> A^T y``; ``None`` builds it with autograd (the gradient of
            ``<A x, y>`` with respect to ``x``), which costs about one more forward.
        input_shape: shape of ``x``.
        method: ``"lanczos"`` (default; far fewer steps) or ``"power"`` (plain power
            iteration on ``A^T A``; an independent check).
        tol: stop when the estimate's relative change over the last 3 iterations is
            below this (dimensionless).
        max_iter: cap on float64 applications of ``A^T A``; a RuntimeWarning is raised
            if it is reached before ``tol``.
        seed: seed of the Gaussian start vector.
        warm_start: first run Lanczos in float32 (2-4x cheaper a step on CPU) to
            relative change 1e-6 (at most 500 steps), then run float64 Lanczos from its
            Ritz vector; only the float64 phase decides the result. Skipped when the
            iteration space has fewer than 4096 unknowns.
        device: where to run; default CPU.
        max_basis: stored Lanczos vectors before a restart; default keeps the basis under
            about 160 MB (20 to 200 vectors).

    The iteration runs on ``A^T A`` or ``A A^T``, whichever acts on the smaller space
    (same nonzero spectrum). The result is the square root of the final float64 Ritz
    value, a Rayleigh quotient of ``A^T A``, hence a lower bound on ``||A||_2``. When the
    top two singular values are nearly equal it can stop on the lower one; the error is
    then below their relative gap.
    """
    if method not in ("lanczos", "power"):
        raise ValueError(f"method: expected 'lanczos' or 'power', got {method!r}")
    tol = check_positive(tol, "tol")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"max_iter: expected a positive int, got {max_iter!r}")
    in_shape = tuple(int(s) for s in input_shape)
    device = torch.device("cpu") if device is None else torch.device(device)
    if adjoint is None:
        adjoint = _autograd_adjoint(forward, in_shape, device)
    with torch.no_grad():
        out_shape = tuple(forward(torch.zeros(in_shape, dtype=_DTYPE, device=device)).shape)
    n_in, n_out = math.prod(in_shape), math.prod(out_shape)
    if n_in == 0 or n_out == 0:
        return NormEstimate(0.0, 0, 0, 0.0, True)
    if n_out < n_in:    # iterate on A A^T in the (smaller) output space
        f, g, shape, n = adjoint, forward, out_shape, n_out
    else:
        f, g, shape, n = forward, adjoint, in_shape, n_in

    def op(v):  # (n,) -> (n,): g(f(v)), in v's dtype, never sharing v's memory
        with torch.no_grad():
            out = g(f(v.view(shape))).reshape(-1)
        if out.untyped_storage().data_ptr() == v.untyped_storage().data_ptr():
            out = out.clone()   # Lanczos updates the result in place
        return out

    if max_basis is None:
        max_basis = int(min(200, max(20, 1.6e8 // (8 * n))))
    v = _start_vector(n, seed, device)
    warm = 0
    if warm_start and method == "lanczos" and n >= _WARM_MIN_SIZE:
        # The float32 phase only supplies a start vector: cap it, never warn about it.
        _, v32, warm, _, _ = _lanczos(op, v.float(), tol=max(tol, 1e-6),
                                      max_iter=min(max_iter, _WARM_MAX_ITER),
                                      max_basis=max_basis)
        v = v32.to(_DTYPE)
    run = _lanczos if method == "lanczos" else _power
    kw = {"max_basis": max_basis} if method == "lanczos" else {}
    theta, _, it, change, done = run(op, v, tol=tol, max_iter=max_iter, **kw)
    if not done:
        warnings.warn(f"top_singular_value: {method} did not reach tol={tol:g} in "
                      f"{max_iter} iterations (last relative change {change:.2e}); the "
                      f"estimate is a lower bound. Raise max_iter or tol.",
                      RuntimeWarning, stacklevel=2)
    return NormEstimate(math.sqrt(max(theta, 0.0)), it, warm, change, done)


def _autograd_adjoint(forward, in_shape, device):
    """``y -> A^T y`` for a linear ``forward``: the gradient of <A x, y> at x = 0."""
    def adjoint(y):
        x = torch.zeros(in_shape, dtype=y.dtype, device=device, requires_grad=True)
        with torch.enable_grad():
            (gx,) = torch.autograd.grad(forward(x), x, grad_outputs=y)
        return gx
    return adjoint


