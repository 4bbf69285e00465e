"""All input checks in one place.

Every error says what was expected, what arrived and, where it helps, how to
fix it: ``expected X, got Y; do Z``.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Sequence

import torch

__all__ = ["check_choice", "check_finite", "check_image_batch", "check_labels",
           "check_matrix_pair", "check_positive", "check_tensor", "check_unit_interval",
           "check_int", "require"]


def check_tensor(x, name: str) -> torch.Tensor:
    """Return ``x`` if it is a torch.Tensor, else raise TypeError."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}; "
                        f"convert with torch.as_tensor(...)")
    return x


def check_finite(x: torch.Tensor, name: str) -> torch.Tensor:
    """Raise ValueError if ``x`` holds NaN or infinite values."""
    if x.is_floating_point() and not torch.isfinite(x).all():
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"{name}: expected finite values, got {bad} NaN/inf entries; "
                         f"clean or drop them first")
    return x


def check_unit_interval(x: torch.Tensor, name: str, tol: float = 1e-6) -> torch.Tensor:
    """Raise ValueError unless every entry of ``x`` lies in [0, 1] (up to ``tol``)."""
    lo, hi = float(x.min()), float(x.max())
    if lo < -tol or hi > 1 + tol:
        raise ValueError(f"{name}: expected pixel values in [0, 1], got range "
                         f"[{lo:.4g}, {hi:.4g}]; divide bytes by 255 and do not "
                         f"normalise (models normalise inside)")
    return x


def check_image_batch(x, name: str = "x", channels: int | None = None,
                      size: Sequence[int] | None = None) -> torch.Tensor:
    """Check a float image batch of shape (N, C, H, W) with values in [0, 1]."""
    check_tensor(x, name)
    if x.ndim != 4:
        raise ValueError(f"{name}: expected an image batch of shape (N, C, H, W), got shape "
                         f"{tuple(x.shape)}; add a batch axis with x.unsqueeze(0) or a "
                         f"channel axis with x.unsqueeze(1)")
    if not x.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point tensor, got {x.dtype}; "
                        f"use x.float() / 255 for byte images")
    if channels is not None and x.shape[1] != channels:
        raise ValueError(f"{name}: expected {channels} channel(s), got shape {tuple(x.shape)}")
    if size is not None and tuple(x.shape[2:]) != tuple(size):
        raise ValueError(f"{name}: expected images of size {tuple(size)}, got "
                         f"{tuple(x.shape[2:])}")
    check_finite(x, name)
    check_unit_interval(x, name)
    return x


def check_labels(y, n: int, num_classes: int, name: str = "labels") -> torch.Tensor:
    """Check an int64 label vector of length ``n`` with values in [0, num_classes)."""
    check_tensor(y, name)
    if y.ndim != 1 or y.shape[0] != n:
        raise ValueError(f"{name}: expected shape ({n},), got {tuple(y.shape)}")
    if y.is_floating_point() or y.dtype == torch.bool:
        raise TypeError(f"{name}: expected an integer tensor, got {y.dtype}; use .long()")
    if n and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ValueError(f"{name}: expected class indices in [0, {num_classes}), got range "
                         f"[{int(y.min())}, {int(y.max())}]")
    return y


def check_matrix_pair(X, Y, names: tuple[str, str] = ("X", "Y")) -> None:
    """Check two 2-D feature matrices with the same number of rows."""
    for m, nm in zip((X, Y), names):
        check_tensor(m, nm)
        if m.ndim != 2:
            raise ValueError(f"{nm}: expected a 2-D matrix (n, d), got shape "
                             f"{tuple(m.shape)}; flatten features with .flatten(1)")
        check_finite(m, nm)
    if X.shape[0] != Y.shape[0]:
        raise ValueError(f"{names[0]} and {names[1]}: expected the same number of rows "
                         f"(examples), got {X.shape[0]} and {Y.shape[0]}")


def check_int(value, name: str, minimum: int = 1) -> int:
    """Return ``value`` if it is an int (not a bool) >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {value}")
    return value


def check_positive(value, name: str, allow_zero: bool = False) -> float:
    """Return ``value`` as a float if it is > 0 (or >= 0 with ``allow_zero``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name}: expected a number, got {type(value).__name__}")
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name}: expected a value {bound}, got {value}")
    return float(value)


def check_choice(value, name: str, choices: Iterable) -> object:
    """Raise ValueError unless ``value`` is one of ``choices``, listing them."""
    choices = list(choices)
    if value not in choices:
        raise ValueError(f"{name}: expected one of {choices}, got {value!r}")
    return value


def require(module: str, *, extra: str, what: str):
    """Import an optional package where it is used (``import stir_lib`` needs only torch,
    numpy and scipy); if it is missing, an ImportError that names the extra installing it."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        package = module.split(".")[0]
        raise ImportError(f"{what}: expected the optional package {package!r}, got {err}; "
                          f"install it with: pip install 'stir_lib[{extra}]'") from err
