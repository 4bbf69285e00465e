"""Each layer's operator norm (linear layers, convolutions with their real padding and
stride, circular convolutions in closed form, the reshaped-kernel norm) and the Lipschitz
constants of nonlinear layers, through one registry of handlers by module type
(:func:`register_lipschitz`, :func:`operator_norm`).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .. import threads
from ..validation import check_tensor
from .krylov import _DTYPE, top_singular_value

__all__ = ["KINDS", "conv_circular_norm", "conv_circular_singular_values", "conv_norm",
           "linear_norm", "operator_norm", "register_lipschitz", "reshaped_kernel_norm",
           "supported_modules"]

KINDS = ("exact", "lipschitz", "product")
"""What a row's number is.

* ``"exact"``: the exact operator norm of a linear (or affine) layer's linear part.
* ``"lipschitz"``: the smallest global L2 Lipschitz constant of a nonlinear layer
  (closed form, attained or approached by some pair of inputs): 1 for ReLU and Tanh,
  1/4 for Sigmoid, 1/2 for Softmax, sqrt(max window overlap) for max-pooling.
* ``"product"``: a grouped row (:func:`group_rows`); the product of its members' numbers,
  an upper bound on the group's Lipschitz constant.
"""


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
        from ..models import Normalize  # on first use: torchvision loads only when needed
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


