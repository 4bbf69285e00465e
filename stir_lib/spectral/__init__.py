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

from .krylov import NormEstimate, top_singular_value
from .layers import (KINDS, conv_circular_norm, conv_circular_singular_values, conv_norm,
                     linear_norm, operator_norm, register_lipschitz, reshaped_kernel_norm,
                     supported_modules)
from .tables import LayerRow, group_rows, layer_table, lipschitz_table, product_bound

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

