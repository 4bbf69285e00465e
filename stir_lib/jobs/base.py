"""What every job is: the :class:`Job` protocol, its cache key, and cost helpers."""

from __future__ import annotations

import math
from functools import lru_cache
from dataclasses import asdict

import torch
from torch import nn

from .. import cache
from ..models import create_model
from typing import Any, Protocol, runtime_checkable

__all__ = ["Job", "macs_per_example", "fmt_flops", "config_dict"]


@runtime_checkable
class Job(Protocol):
    """A cache entry described by its inputs: what :mod:`stir_lib.cluster` and the plans run.

    ``kind`` is the cache kind of the entry ("model", "inversion", "transfer", "data").
    ``key()`` is computable before anything is trained (a dependent job is keyed by its
    dependency's key, not its weights); ``run(device)`` computes the entry through the same
    library call a notebook makes and returns the library's result; ``device`` is a
    ``torch.device`` or anything :func:`stir_lib.models.resolve_device` accepts (None: the
    CPU).
    """

    kind: str

    def key(self) -> str: ...

    def cached(self) -> bool: ...

    def deps(self) -> tuple: ...

    def flops(self) -> float: ...

    def run(self, device: Any = None, progress: bool | None = None) -> Any: ...

    def describe(self) -> str: ...


@lru_cache(maxsize=4096)
def _key(job) -> str:
    return cache.config_key(job.kind, job.key_config())


@lru_cache(maxsize=256)
def macs_per_example(arch: str, kwargs: tuple = (), layer: str | None = None) -> int:
    """Multiply-accumulates of one forward pass of a registry model (convolutions and
    linear layers), counted by forward hooks on one dummy input; with ``layer`` (a stage
    name), of the pass up to that stage only (how inversions and features run)."""
    model = create_model(arch, **dict(kwargs))
    total = [0]

    def hook(module, inputs, output):
        if isinstance(module, nn.Conv2d):
            k = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
            total[0] += output.numel() * k
        elif isinstance(module, nn.Linear):
            total[0] += output.numel() * module.in_features

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        x = torch.zeros(1, *model.input_shape)
        model.eval()(x) if layer is None else model.eval().features(x, layer)
    for h in handles:
        h.remove()
    return total[0]


def fmt_flops(f: float) -> str:
    """``1.3e14`` -> ``"130T"``."""
    if f <= 0:
        return "0"
    e = int(math.floor(math.log10(f) / 3))
    return f"{f / 10 ** (3 * e):.3g}{['', 'K', 'M', 'G', 'T', 'P', 'E'][max(0, min(e, 6))]}"


def config_dict(job) -> dict:
    """The job's fields as plain data (for logs)."""
    return asdict(job)
