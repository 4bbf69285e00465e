"""Operator norms of layers and the product bound on a network's Lipschitz constant.

Szegedy et al. (2014, "Intriguing properties of neural networks", ICLR, arXiv:1312.6199,
section 4.3 and Table 5) bound how far a network's output can move under an input
perturbation ``r`` by the product of its layers' operator norms::

    ||f(x + r) - f(x)||_2 <= (prod_k L_k) ||r||_2

where ``L_k`` is the operator norm (largest singular value) of a linear layer's linear part
(the bias cancels in the difference) and the L2 Lipschitz constant of a nonlinear one. This
module computes each ``L_k`` for one input shape:

* ``nn.Linear``: the exact largest singular value of the weight (dense eigensolver on the
  smaller Gram matrix, or Lanczos for large weights).
* ``nn.Conv2d`` with its real padding, stride, dilation and groups: the exact norm of the
  linear map ``x -> conv2d(x, W)`` on inputs of the given size, by Lanczos iteration on
  ``A^T A`` (``A`` = ``F.conv2d``, ``A^T`` = ``F.conv_transpose2d``), in float64.
* Circular convolutions: the closed form of Sedghi, Gupta & Long (2019, "The singular values
  of convolutional layers", ICLR, arXiv:1805.10408): the singular values of the n^2
  per-frequency ``c_out x c_in`` matrices of the kernel's 2-D FFT.
* ``reshaped_kernel_norm``: the largest singular value of the weight reshaped to
  ``(c_out, c_in k k)``, which is what ``torch.nn.utils.spectral_norm`` (Miyato et al. 2018,
  "Spectral normalization for generative adversarial networks", ICLR) normalises. It is *not*
  the operator norm of the convolution; the book shows the gap.
* BatchNorm (eval), pooling, activations, Softmax, Dropout (eval), Flatten, Identity: the
  closed forms documented in :func:`operator_norm`. Note that overlapping max-pooling
  (AlexNet's 3x3 windows at stride 2) is not a contraction: its Lipschitz constant is 2.

:func:`layer_table` walks a feed-forward network's leaf modules in execution order and
returns one :class:`LayerRow` per call; :func:`group_rows` folds each Conv/Linear with the
layers that follow it (the grouping of Szegedy et al.'s Table 5); :func:`product_bound`
multiplies the norms.

Everything runs in float64 on the weights' device (a float32 Lanczos warm start only
supplies the start vector). Iterative estimates are Rayleigh quotients, so they never
exceed the true norm; they stop when the estimate's relative change over a few iterations
falls below ``tol``, and are then accurate to about ``tol`` (relative).
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from . import threads
from .validation import check_positive, check_tensor

__all__ = [
    "KINDS",
    "LayerRow",
    "NormEstimate",
    "conv_circular_norm",
    "conv_circular_singular_values",
    "conv_norm",
    "group_rows",
    "layer_table",
    "linear_norm",
    "lipschitz_table",
    "operator_norm",
    "product_bound",
    "register_lipschitz",
    "reshaped_kernel_norm",
    "supported_modules",
    "top_singular_value",
]

KINDS = ("exact", "lipschitz", "product")
"""What a row's number is.

* ``"exact"``: the exact operator norm of a linear (or affine) layer's linear part.
* ``"lipschitz"``: the smallest global L2 Lipschitz constant of a nonlinear layer
  (closed form, attained or approached by some pair of inputs): 1 for ReLU and Tanh,
  1/4 for Sigmoid, 1/2 for Softmax, sqrt(max window overlap) for max-pooling.
* ``"product"``: a grouped row (:func:`group_rows`); the product of its members' numbers,
  an upper bound on the group's Lipschitz constant.
"""

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


# --------------------------------------------------------------------------- shapes
def _as_shape(input_shape, name: str = "input_shape") -> tuple[int, ...]:
    if isinstance(input_shape, int) or not isinstance(input_shape, (Sequence, torch.Size)):
        raise TypeError(f"{name}: expected a tuple of ints such as (3, 224, 224) (no batch "
                        f"axis), got {type(input_shape).__name__}")
    shape = tuple(input_shape)
    if shape and all(isinstance(s, numbers.Integral) for s in shape):
        shape = tuple(int(s) for s in shape)
    if not shape or not all(isinstance(s, numbers.Integral) and not isinstance(s, bool)
                            and s > 0 for s in shape):
        raise ValueError(f"{name}: expected a non-empty tuple of positive ints (no batch "
                         f"axis), got {input_shape!r}")
    return shape


def _hw(input_hw, name: str = "input_hw") -> tuple[int, int]:
    if isinstance(input_hw, int) and not isinstance(input_hw, bool):
        input_hw = (input_hw, input_hw)
    shape = _as_shape(input_hw, name)
    if len(shape) != 2:
        raise ValueError(f"{name}: expected n or (h, w), got {input_hw!r}; pass the spatial "
                         f"size only, not (C, H, W)")
    return shape


def _check_conv_input(layer: nn.Conv2d, shape: tuple[int, ...]) -> None:
    c = layer.in_channels
    if len(shape) != 3:
        hint = "; drop the batch axis" if len(shape) == 4 else ""
        raise ValueError(f"{type(layer).__name__}: expected an input shape (C, H, W) = "
                         f"({c}, H, W), got {shape}{hint}")
    if shape[0] != c:
        raise ValueError(f"{type(layer).__name__}: expected {c} input channels, got input "
                         f"shape {shape}")


def _conv_out_hw(layer: nn.Conv2d, hw: tuple[int, int]) -> tuple[int, int]:
    """Output spatial size of a zero- or mode-padded Conv2d with tuple padding."""
    out = []
    for n, k, s, p, d in zip(hw, layer.kernel_size, layer.stride, layer.padding,
                             layer.dilation):
        out.append((n + 2 * p - d * (k - 1) - 1) // s + 1)
    return out[0], out[1]


def _by_dtype(W: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """``x -> W`` in ``x``'s dtype (float64 master copy, float32 copy made once)."""
    copies = {W.dtype: W}

    def get(x):
        if x.dtype not in copies:
            copies[x.dtype] = W.to(x.dtype)
        return copies[x.dtype]
    return get


# --------------------------------------------------------------------------- linear layers
def linear_norm(layer: nn.Linear, *, method: str = "auto", tol: float = 1e-7,
                max_iter: int = 3000) -> float:
    """Exact largest singular value of ``layer.weight`` (the bias does not count).

    Args:
        method: ``"dense"``: largest eigenvalue of the smaller Gram matrix ``W W^T`` or
            ``W^T W`` in float64 (machine precision for the top singular value);
            ``"lanczos"``: :func:`top_singular_value` on ``x -> W x`` (matrix-vector
            products only; fast for large weights); ``"auto"``: dense when the smaller
            side is at most 512, else Lanczos.
        tol, max_iter: for Lanczos; see :func:`top_singular_value`.
    """
    if not isinstance(layer, nn.Linear):
        raise TypeError(f"linear_norm: expected an nn.Linear, got {type(layer).__name__}; "
                        f"use operator_norm for other layers")
    if method not in ("auto", "dense", "lanczos"):
        raise ValueError(f"method: expected 'auto', 'dense' or 'lanczos', got {method!r}")
    W = layer.weight.detach().to(_DTYPE)  # (out, in)
    if method == "auto":
        method = "dense" if min(W.shape) <= 512 else "lanczos"
    if method == "dense":
        G = W @ W.T if W.shape[0] <= W.shape[1] else W.T @ W
        return math.sqrt(max(float(torch.linalg.eigvalsh(G)[-1]), 0.0))
    Ws = _by_dtype(W)
    return top_singular_value(lambda x: Ws(x) @ x, lambda y: Ws(y).T @ y, (W.shape[1],),
                              tol=tol, max_iter=max_iter, warm_start=True,
                              device=W.device).norm


# --------------------------------------------------------------------------- convolutions
def _dense_kernel(weight: torch.Tensor, groups: int) -> torch.Tensor:
    """(c_out, c_in/groups, kh, kw) -> the equivalent dense (c_out, c_in, kh, kw) kernel."""
    if groups == 1:
        return weight
    c_out, cig, kh, kw = weight.shape
    if c_out % groups:
        raise ValueError(f"groups: expected a divisor of c_out={c_out}, got {groups}")
    cog = c_out // groups
    dense = weight.new_zeros(c_out, cig * groups, kh, kw)
    for g in range(groups):
        dense[g * cog:(g + 1) * cog, g * cig:(g + 1) * cig] = weight[g * cog:(g + 1) * cog]
    return dense


def conv_circular_singular_values(weight: torch.Tensor, n, *, dilation=1,
                                  groups: int = 1) -> torch.Tensor:
    """All singular values of a stride-1 circular convolution on an ``h x w`` torus.

    Sedghi, Gupta & Long (2019, ICLR, Theorem 6): the convolution with circular padding is
    block-diagonalised by the 2-D DFT, so its singular values are the union over the
    ``h w`` frequencies of the singular values of the ``c_out x c_in`` matrices
    ``K_hat[:, :, u, v]``, where ``K_hat`` is the 2-D FFT of the kernel zero-padded to
    ``h x w``. Cross-correlation instead of convolution and the centring offset of the
    padding only conjugate or multiply each matrix by a unit phase, which leaves its
    singular values unchanged. Kernel taps that fall outside the torus (kernel larger
    than the input, or dilation) wrap around modulo ``(h, w)``.

    Args:
        weight: (c_out, c_in / groups, kh, kw) kernel.
        n: spatial size, ``n`` or ``(h, w)``.
        dilation: int or (dh, dw), as in ``nn.Conv2d``.
        groups: as in ``nn.Conv2d``.

    Returns:
        float64 tensor of shape (h, w, min(c_out, c_in)), each frequency's singular values
        in descending order; ``.flatten()`` gives the operator's spectrum.
    """
    check_tensor(weight, "weight")
    if weight.ndim != 4:
        raise ValueError(f"weight: expected a 4-D conv kernel (c_out, c_in/groups, kh, kw), "
                         f"got shape {tuple(weight.shape)}")
    h, w = _hw(n, "n")
    dh, dw = (dilation, dilation) if isinstance(dilation, int) else tuple(dilation)
    K = _dense_kernel(weight.detach().to(_DTYPE), int(groups))  # (c_out, c_in, kh, kw)
    c_out, c_in, kh, kw = K.shape
    padded = K.new_zeros(c_out, c_in, h, w)
    for i in range(kh):          # fold each tap onto the torus
        for j in range(kw):
            padded[:, :, (i * dh) % h, (j * dw) % w] += K[:, :, i, j]
    spectrum = torch.fft.fft2(padded)                       # (c_out, c_in, h, w) complex
    per_freq = spectrum.permute(2, 3, 0, 1)                 # (h, w, c_out, c_in)
    return torch.linalg.svdvals(per_freq)                   # (h, w, min(c_out, c_in))


def conv_circular_norm(layer_or_weight, input_hw) -> float:
    """Operator norm of the stride-1 *circular* convolution with this kernel on an h x w input.

    This is the exact norm of ``layer`` only when it has ``padding_mode="circular"``, stride
    1 and ``2 * padding == dilation * (kernel_size - 1)``; for a zero-padded layer it is the
    norm of the infinite-size limit's periodic version (an approximation; use
    :func:`conv_norm` for the exact value). See :func:`conv_circular_singular_values`.

    Args:
        layer_or_weight: an ``nn.Conv2d`` (its dilation and groups are used) or a kernel
            tensor (c_out, c_in, kh, kw) with dilation 1 and groups 1.
        input_hw: ``n`` or ``(h, w)``.
    """
    if isinstance(layer_or_weight, nn.Conv2d):
        layer = layer_or_weight
        if tuple(layer.stride) != (1, 1):
            raise ValueError(f"conv_circular_norm: expected a stride-1 conv, got stride "
                             f"{tuple(layer.stride)}; use conv_norm for strided convs")
        sv = conv_circular_singular_values(layer.weight, input_hw, dilation=layer.dilation,
                                           groups=layer.groups)
    elif isinstance(layer_or_weight, torch.Tensor):
        sv = conv_circular_singular_values(layer_or_weight, input_hw)
    else:
        raise TypeError(f"conv_circular_norm: expected an nn.Conv2d or a kernel tensor, got "
                        f"{type(layer_or_weight).__name__}")
    return float(sv.max()) if sv.numel() else 0.0


def _conv_operators(layer, in_shape):
    """(forward, adjoint or None, batched input shape) of the layer's linear part."""
    Ws = _by_dtype(layer.weight.detach().to(_DTYPE))
    x_shape = (1, *in_shape)
    zero_pad = (layer.padding_mode == "zeros" and not isinstance(layer.padding, str)
                and isinstance(layer, nn.Conv2d))
    if not zero_pad:
        # Any other padding mode or a string padding: the layer's own conv code path
        # (bias None) and an autograd adjoint.
        return (lambda x: layer._conv_forward(x, Ws(x), None)), None, x_shape
    stride, pad, dil, groups = layer.stride, layer.padding, layer.dilation, layer.groups
    out_hw = _conv_out_hw(layer, in_shape[1:])
    # conv_transpose2d maps the output back to (o-1)s - 2p + d(k-1) + 1 pixels; the rows
    # and columns the strided conv never reached are added back by output_padding.
    out_pad = tuple(n - ((o - 1) * s - 2 * p + d * (k - 1) + 1) for n, o, s, p, d, k in
                    zip(in_shape[1:], out_hw, stride, pad, dil, layer.kernel_size))

    def forward(x):   # (1, c_in, H, W) -> (1, c_out, H', W')
        return F.conv2d(x, Ws(x), None, stride, pad, dil, groups)

    def adjoint(y):   # (1, c_out, H', W') -> (1, c_in, H, W)
        return F.conv_transpose2d(y, Ws(y), None, stride, pad, out_pad, groups, dil)

    return forward, adjoint, x_shape


def conv_norm(layer: nn.Conv2d, input_shape, *, method: str = "lanczos", tol: float = 1e-7,
              max_iter: int = 3000, seed: int = 0) -> float:
    """Exact operator norm of a Conv2d's linear part on inputs of shape (C, H, W).

    The layer is applied with its own zero padding, stride, dilation and groups, the bias
    excluded (it cancels in ``f(x + r) - f(x)``). The norm is the square root of the
    largest eigenvalue of ``A^T A``, found by Lanczos iteration (``method="lanczos"``) or
    power iteration (``method="power"``) in float64, with ``A = F.conv2d`` and ``A^T =
    F.conv_transpose2d`` (same stride, padding, dilation; ``output_padding`` restores the
    input size). Power iteration with the transposed convolution is the method of Gouk et
    al. (2021, "Regularisation of neural networks by enforcing Lipschitz continuity",
    Machine Learning 110); Lanczos reaches the same Rayleigh quotient in far fewer
    steps. Other padding modes (circular, reflect, replicate) and string paddings use the
    layer's own convolution and an autograd adjoint.

    Args:
        input_shape: (C, H, W) without the batch axis.
        method, tol, max_iter, seed: see :func:`top_singular_value`.
    """
    if not isinstance(layer, (nn.Conv2d, nn.Conv1d)):
        raise TypeError(f"conv_norm: expected an nn.Conv2d or nn.Conv1d, got "
                        f"{type(layer).__name__}")
    shape = _as_shape(input_shape)
    if isinstance(layer, nn.Conv2d):
        _check_conv_input(layer, shape)
        if not isinstance(layer.padding, str):
            out_hw = _conv_out_hw(layer, shape[1:])
            if min(out_hw) < 1:
                raise ValueError(f"Conv2d(kernel_size={layer.kernel_size}, padding="
                                 f"{layer.padding}): expected an input large enough for "
                                 f"the kernel, got input shape {shape}")
    elif len(shape) != 2 or shape[0] != layer.in_channels:
        raise ValueError(f"Conv1d: expected an input shape ({layer.in_channels}, L), got "
                         f"{shape}")
    forward, adjoint, x_shape = _conv_operators(layer, shape)
    return top_singular_value(forward, adjoint, x_shape, method=method, tol=tol,
                              max_iter=max_iter, seed=seed, warm_start=True,
                              device=layer.weight.device).norm


def reshaped_kernel_norm(layer: nn.Conv2d) -> float:
    """Largest singular value of the kernel reshaped to a (c_out, c_in k_h k_w) matrix.

    This is the quantity ``torch.nn.utils.spectral_norm`` divides by (Miyato et al. 2018).
    It is NOT the operator norm of the convolution: the convolution's matrix repeats each
    kernel entry across positions, and its norm depends on the input size, stride and
    padding. For random kernels with stride 1 it is usually below the true norm (see the
    book's spectral notebook); use :func:`conv_norm` for the real value.
    """
    if not isinstance(layer, nn.modules.conv._ConvNd):
        raise TypeError(f"reshaped_kernel_norm: expected a conv layer, got "
                        f"{type(layer).__name__}")
    W = layer.weight.detach().to(_DTYPE)
    return float(torch.linalg.matrix_norm(W.reshape(W.shape[0], -1), ord=2))


# --------------------------------------------------------------------------- other layers
def _bn_norm(m, shape, **_):
    if m.training:
        raise ValueError(f"{type(m).__name__}: expected a module in eval mode, got training "
                         f"mode (batch statistics make it a different map per batch); call "
                         f".eval() first")
    if m.running_var is None:
        raise ValueError(f"{type(m).__name__}: expected running statistics, got "
                         f"track_running_stats=False (the layer then normalises with batch "
                         f"statistics even in eval mode); no fixed operator norm exists")
    want = {nn.BatchNorm1d: ((m.num_features,), (m.num_features, "L")),
            nn.BatchNorm2d: ((m.num_features, "H", "W"),)}
    for base, forms in want.items():
        if isinstance(m, base):
            ok = any(len(shape) == len(f) and shape[0] == m.num_features for f in forms)
            if not ok:
                raise ValueError(f"{type(m).__name__}({m.num_features}): expected an input "
                                 f"shape like {' or '.join(str(f) for f in forms)}, got {shape}")
    scale = torch.ones_like(m.running_var, dtype=_DTYPE)
    if m.weight is not None:
        scale = m.weight.detach().to(_DTYPE)
    # Eval-mode BN is y = gamma (x - mu) / sqrt(var + eps) + beta: a diagonal linear part.
    return float((scale.abs() / (m.running_var.to(_DTYPE) + m.eps).sqrt()).max()), "exact"


def _check_spatial(m, shape, ndim: int = 3):
    if len(shape) != ndim:
        dims = "(C, H, W)" if ndim == 3 else "(C, L)"
        raise ValueError(f"{type(m).__name__}: expected an input shape {dims}, got {shape}")


def _pool_out_hw(m, hw):
    with torch.no_grad():
        out = m(torch.zeros(1, 1, *hw))
    out = out[0] if isinstance(out, tuple) else out   # return_indices=True
    return tuple(out.shape[-2:])


def _avgpool_norm(m, shape, tol=1e-10, max_iter=3000, **_):
    """Average pooling is linear and acts on each channel alike: one channel's norm."""
    _check_spatial(m, shape)
    est = top_singular_value(lambda x: m(x), None, (1, 1, *shape[1:]), tol=tol,
                             max_iter=max_iter)
    return est.norm, "exact"


def _max_cover(n: int, windows) -> int:
    """Largest number of windows (index ranges) that contain one position of 0..n-1."""
    counts = [0] * n
    for idx in windows:
        for i in idx:
            if 0 <= i < n:
                counts[i] += 1
    return max(counts)


def _maxpool_norm(m, shape, **_):
    """Max-pooling's L2 Lipschitz constant is sqrt(largest number of windows sharing a pixel).

    Its Jacobian (where defined) copies one input per window, so J^T J is diagonal with
    the number of windows that select each pixel, and ||J||_2^2 is the largest such count;
    a single bright pixel is selected by every window that covers it, so the bound is
    attained. Szegedy et al. (2014, section 4.3) call max-pooling contractive, which holds
    only without overlap (constant 1): AlexNet's 3x3 stride-2 pooling lets 2 x 2 windows
    share an interior pixel, giving 2.
    """
    _check_spatial(m, shape)
    out = _pool_out_hw(m, shape[1:])

    def pair(v):
        return (v, v) if isinstance(v, int) else tuple(v)

    cover = 1
    if isinstance(m, nn.MaxPool2d):
        k, s = pair(m.kernel_size), pair(m.stride if m.stride is not None else m.kernel_size)
        p, d = pair(m.padding), pair(m.dilation)
        for a in range(2):
            wins = (range(o * s[a] - p[a], o * s[a] - p[a] + k[a] * d[a], d[a])
                    for o in range(out[a]))
            cover *= _max_cover(shape[1 + a], wins)
    else:  # adaptive: window o covers [floor(o n / out), ceil((o + 1) n / out))
        for a in range(2):
            n = shape[1 + a]
            wins = (range((o * n) // out[a], -((-(o + 1) * n) // out[a]))
                    for o in range(out[a]))
            cover *= _max_cover(n, wins)
    return math.sqrt(cover), "lipschitz"


def _eval_only(m, shape, **_):
    if m.training and getattr(m, "p", 0) > 0:
        raise ValueError(f"{type(m).__name__}: expected a module in eval mode, got training "
                         f"mode (random masks); call .eval() first")
    return 1.0, "exact"


def _const(value: float, kind: str):
    def handler(m, shape, **_):
        return value, kind
    return handler


def _leaky_norm(m, shape, **_):
    return max(1.0, abs(float(m.negative_slope))), "lipschitz"


def _prelu_norm(m, shape, **_):
    return max(1.0, float(m.weight.detach().abs().max())), "lipschitz"


def _elu_norm(m, shape, **_):
    return max(1.0, abs(float(m.alpha))), "lipschitz"


def _linear_handler(m, shape, tol=None, max_iter=3000, **_):
    if shape[-1] != m.in_features:
        raise ValueError(f"Linear(in_features={m.in_features}): expected an input shape "
                         f"ending in {m.in_features}, got {shape}; flatten first")
    kw = {} if tol is None else {"tol": tol}
    return linear_norm(m, max_iter=max_iter, **kw), "exact"


def _conv_handler(m, shape, tol=None, max_iter=3000, **_):
    kw = {} if tol is None else {"tol": tol}
    return conv_norm(m, shape, max_iter=max_iter, **kw), "exact"


def _normalize_norm(m, shape, **_):
    """stir_lib.models.Normalize: (x - mean) / std per channel; linear part diag(1/std)."""
    return float((1.0 / m.std.detach().to(_DTYPE).abs()).max()), "exact"


_HANDLERS: dict[type, Callable] = {
    nn.Linear: _linear_handler,
    nn.Conv2d: _conv_handler,
    nn.Conv1d: _conv_handler,
    nn.BatchNorm1d: _bn_norm,
    nn.BatchNorm2d: _bn_norm,
    nn.AvgPool2d: _avgpool_norm,
    nn.AdaptiveAvgPool2d: _avgpool_norm,
    nn.MaxPool2d: _maxpool_norm,
    nn.AdaptiveMaxPool2d: _maxpool_norm,
    nn.Identity: _const(1.0, "exact"),
    nn.Flatten: _const(1.0, "exact"),
    nn.Unflatten: _const(1.0, "exact"),
    nn.Dropout: _eval_only,
    nn.Dropout2d: _eval_only,
    nn.ReLU: _const(1.0, "lipschitz"),
    nn.ReLU6: _const(1.0, "lipschitz"),
    nn.Hardtanh: _const(1.0, "lipschitz"),
    nn.Tanh: _const(1.0, "lipschitz"),
    nn.LeakyReLU: _leaky_norm,
    nn.PReLU: _prelu_norm,
    nn.ELU: _elu_norm,
    # sigma'(x) = sigma(x)(1 - sigma(x)) <= 1/4, attained at x = 0.
    nn.Sigmoid: _const(0.25, "lipschitz"),
    # Softmax Jacobian diag(p) - p p^T is PSD; Gershgorin puts every eigenvalue in
    # [0, 2 p_i (1 - p_i)] <= 1/2, approached when two logits tie and dominate. (Gao &
    # Pavel 2017, arXiv:1704.00805, give the looser constant 1.)
    nn.Softmax: _const(0.5, "lipschitz"),
}
_HOUSE_REGISTERED = False


def _register_house_modules() -> None:
    """Register stir_lib.models.Normalize lazily (models may import this module)."""
    global _HOUSE_REGISTERED
    if _HOUSE_REGISTERED:
        return
    _HOUSE_REGISTERED = True
    try:
        from .models import Normalize
    except ImportError:  # models not present: nothing to register
        return
    _HANDLERS.setdefault(Normalize, _normalize_norm)


def register_lipschitz(module_type: type, fn: Callable) -> None:
    """Teach :func:`operator_norm` a new module type.

    Args:
        module_type: an ``nn.Module`` subclass; subclasses of it are handled too.
        fn: ``fn(module, input_shape, **opts) -> (number, kind)`` with ``kind`` in
            :data:`KINDS` (``"exact"`` for an operator norm, ``"lipschitz"`` for a
            Lipschitz constant); ``opts`` may carry ``tol`` and ``max_iter``.
    """
    if not (isinstance(module_type, type) and issubclass(module_type, nn.Module)):
        raise TypeError(f"module_type: expected an nn.Module subclass, got {module_type!r}")
    if not callable(fn):
        raise TypeError(f"fn: expected a callable, got {type(fn).__name__}")
    _HANDLERS[module_type] = fn


def supported_modules() -> list[str]:
    """Names of the module types :func:`operator_norm` knows."""
    _register_house_modules()
    return sorted(t.__name__ for t in _HANDLERS)


def _handler(module):
    _register_house_modules()
    for cls in type(module).__mro__:  # exact type first, then base classes
        if cls in _HANDLERS:
            return _HANDLERS[cls]
    raise TypeError(f"operator_norm: expected a supported module type, got "
                    f"{type(module).__name__}; supported: {', '.join(supported_modules())}. "
                    f"Add one with register_lipschitz(type, fn)")


def _norm_and_kind(module, input_shape, **opts) -> tuple[float, str]:
    if not isinstance(module, nn.Module):
        raise TypeError(f"module: expected an nn.Module, got {type(module).__name__}")
    shape = _as_shape(input_shape)
    value, kind = _handler(module)(module, shape, **opts)
    if kind not in KINDS:
        raise ValueError(f"handler for {type(module).__name__}: expected a kind in {KINDS}, "
                         f"got {kind!r}")
    return float(value), kind


@threads.parallel
def operator_norm(module: nn.Module, input_shape, *, tol: float | None = None,
                  max_iter: int = 3000) -> float:
    """Exact operator norm (linear layers) or Lipschitz constant (others) of one layer.

    Args:
        module: the layer; BatchNorm and Dropout must be in eval mode.
        input_shape: the layer's input shape without the batch axis, e.g. (3, 224, 224)
            for a conv, (9216,) for a linear.
        tol, max_iter: for the iterative norms (Conv, Linear, pooling); default the
            functions' own defaults.

    Per type (L2 norms; the bias never counts):

    * Linear: :func:`linear_norm`. Conv2d/Conv1d: :func:`conv_norm`.
    * BatchNorm1d/2d (eval): ``max_c |gamma_c| / sqrt(running_var_c + eps)``.
    * AvgPool2d, AdaptiveAvgPool2d: exact norm of the averaging map (Lanczos on one
      channel; ``1/k`` for non-overlapping k x k pooling).
    * MaxPool2d, AdaptiveMaxPool2d: ``sqrt(max number of windows sharing a pixel)``,
      1 without overlap.
    * ReLU, ReLU6, Hardtanh, Tanh: 1; LeakyReLU, PReLU, ELU: ``max(1, |slope|)``;
      Sigmoid: 1/4; Softmax: 1/2.
    * Identity, Flatten, Unflatten, Dropout (eval): 1.

    Raises:
        TypeError: unsupported module type (the message lists the supported ones).
        ValueError: input shape that does not fit the layer; BatchNorm/Dropout in
            training mode.
    """
    opts = {"max_iter": max_iter} if tol is None else {"tol": tol, "max_iter": max_iter}
    return _norm_and_kind(module, input_shape, **opts)[0]


# --------------------------------------------------------------------------- network tables
@dataclass(frozen=True)
class LayerRow:
    """One layer (or, after :func:`group_rows`, one group of layers) of a network."""

    name: str                        # dotted module name, e.g. "body.features.0"
    type: str                        # class name; "Conv2d+ReLU+MaxPool2d" for a group
    input_shape: tuple[int, ...]     # without the batch axis
    output_shape: tuple[int, ...]
    norm: float                      # operator norm / Lipschitz constant (see KINDS)
    kind: str                        # one of KINDS
    reshaped_norm: float | None = None  # convs: reshaped_kernel_norm, NOT the operator norm
    weight_layer: bool = False       # Conv/Linear: starts a group in group_rows


def _storage(t: torch.Tensor) -> int:
    return t.untyped_storage().data_ptr()


@threads.parallel
def layer_table(model: nn.Module, input_shape, *, strict: bool = True,
                tol: float | None = None, max_iter: int = 3000) -> list[LayerRow]:
    """One row per leaf-module call, in execution order, with each layer's norm.

    Runs one forward pass of a zero input of shape ``(1, *input_shape)`` with forward hooks
    on the leaf modules (modules without children) to record each call's input and output
    shapes, then computes :func:`operator_norm` for that input shape. The model is put in
    eval mode for the walk (the bound is about the eval-mode network) and every
    submodule's mode is restored afterwards.

    The product of the rows bounds the network's Lipschitz constant only for a
    feed-forward chain: each leaf's input must be the previous leaf's output (up to
    views such as ``flatten``). Skip connections, functional ops between leaves
    (``torch.relu``, ``x + y``, ``x * 2``) and modules called with several inputs break
    that; with ``strict=True`` (default) the walk checks the chain by tensor storage and
    raises ValueError at the first break. ``strict=False`` skips the check; the caller
    then vouches that whatever happens between leaves is 1-Lipschitz.

    Args:
        model: an ``nn.Module`` taking a batch ``(N, *input_shape)``.
        input_shape: one input's shape without the batch axis, e.g. (3, 224, 224).
        strict: check that the leaves form a chain.
        tol, max_iter: passed to :func:`operator_norm`.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected an nn.Module, got {type(model).__name__}")
    shape = _as_shape(input_shape)
    param = next((p for p in model.parameters() if p.is_floating_point()), None)
    dtype = param.dtype if param is not None else torch.float32
    device = param.device if param is not None else torch.device("cpu")
    leaves = [(n, m) for n, m in model.named_modules() if not list(m.children())]
    records: list[dict] = []
    keep: list[torch.Tensor] = []  # hold every output so storages are never reused

    def hook(name):
        def fn(module, inputs, output):
            tensors = [t for t in inputs if isinstance(t, torch.Tensor)]
            out = output[0] if isinstance(output, (tuple, list)) else output
            keep.extend(tensors)
            if isinstance(out, torch.Tensor):
                keep.append(out)
            records.append({"name": name, "module": module, "inputs": tensors, "out": out})
        return fn

    modes = {m: m.training for m in model.modules()}
    handles = [m.register_forward_hook(hook(n)) for n, m in leaves]
    try:
        model.eval()
        x = torch.zeros((1, *shape), dtype=dtype, device=device)
        with torch.no_grad():
            try:
                y = model(x)
            except RuntimeError as err:
                raise ValueError(f"layer_table: expected an input shape the model accepts, "
                                 f"got {shape} (without the batch axis); the forward pass "
                                 f"failed with: {err}") from err
        for h in handles:   # before computing norms: the pooling norms call the modules
            h.remove()
        handles = []
        if strict:
            _check_chain(records, x, y)
        cache: dict[tuple, tuple[float, str]] = {}
        rows = []
        opts = {"max_iter": max_iter} if tol is None else {"tol": tol, "max_iter": max_iter}
        for r in records:
            m = r["module"]
            in_shape = tuple(r["inputs"][0].shape[1:]) if r["inputs"] else ()
            out_shape = tuple(r["out"].shape[1:]) if isinstance(r["out"], torch.Tensor) else ()
            key = (id(m), in_shape)
            if key not in cache:
                cache[key] = _norm_and_kind(m, in_shape, **opts)
            value, kind = cache[key]
            is_conv = isinstance(m, nn.modules.conv._ConvNd)
            rows.append(LayerRow(
                name=r["name"], type=type(m).__name__, input_shape=in_shape,
                output_shape=out_shape, norm=value, kind=kind,
                reshaped_norm=reshaped_kernel_norm(m) if is_conv else None,
                weight_layer=is_conv or isinstance(m, nn.Linear)))
        return rows
    finally:
        for h in handles:
            h.remove()
        for m, mode in modes.items():
            m.training = mode


def _check_chain(records, x, y) -> None:
    prev, prev_name = x, "the model input"
    for r in records:
        if len(r["inputs"]) != 1:
            raise ValueError(f"layer_table: expected each leaf to take one tensor, got "
                             f"{len(r['inputs'])} for '{r['name']}'; the product of leaf "
                             f"norms is not a bound for this model (strict=False skips "
                             f"the check)")
        if _storage(r["inputs"][0]) != _storage(prev):
            raise ValueError(
                f"layer_table: expected a feed-forward chain of leaf modules, got an input "
                f"of '{r['name']}' that is not the output of {prev_name}: a skip connection "
                f"or a functional op sits between them, and the product of leaf norms is "
                f"then no bound. Wrap the op in a module, or pass strict=False if it is "
                f"1-Lipschitz")
        prev, prev_name = r["out"], f"'{r['name']}'"
    if not isinstance(y, torch.Tensor) or _storage(y) != _storage(prev):
        raise ValueError(f"layer_table: expected the model output to be the output of "
                         f"{'the last leaf ' if records else ''}{prev_name}, got a tensor made "
                         f"after it by a functional op; pass strict=False if that op is "
                         f"1-Lipschitz")


def group_rows(rows: Sequence[LayerRow]) -> list[LayerRow]:
    """Fold each Conv/Linear row with the rows after it up to the next Conv/Linear.

    This is the grouping of Szegedy et al.'s Table 5 (one row per conv or FC layer, its
    activation, pooling and normalisation included). A group's number is the product of
    its members' (an upper bound on the group's Lipschitz constant; kind ``"product"``
    unless the group is a single exact layer). Rows before the first Conv/Linear form a
    group of their own.
    """
    groups: list[list[LayerRow]] = []
    for row in rows:
        if not isinstance(row, LayerRow):
            raise TypeError(f"rows: expected LayerRow items, got {type(row).__name__}")
        if row.weight_layer or not groups:
            groups.append([row])
        else:
            groups[-1].append(row)
    out = []
    for g in groups:
        head = g[0]
        kind = head.kind if len(g) == 1 else "product"
        out.append(LayerRow(name=head.name, type="+".join(r.type for r in g),
                            input_shape=head.input_shape, output_shape=g[-1].output_shape,
                            norm=math.prod(r.norm for r in g), kind=kind,
                            reshaped_norm=head.reshaped_norm, weight_layer=head.weight_layer))
    return out


def lipschitz_table(model: nn.Module, input_shape, **kwargs) -> list[LayerRow]:
    """:func:`layer_table` grouped as in Szegedy et al.'s Table 5 (:func:`group_rows`)."""
    return group_rows(layer_table(model, input_shape, **kwargs))


def product_bound(rows: Sequence[LayerRow]) -> float:
    """Product of the rows' numbers: an upper bound on the chain's L2 Lipschitz constant."""
    rows = list(rows)
    for row in rows:
        if not isinstance(row, LayerRow):
            raise TypeError(f"rows: expected LayerRow items, got {type(row).__name__}")
    return math.prod(r.norm for r in rows)
