"""Seconds from a plan: each job's work counted as it runs, at rates measured on a build.

A job's time is modelled as ``flops / rate + calls * per_call``: its floating-point work
(:meth:`flops`: FLOPs as the computation really runs, e.g. an inversion's backward pass
computes no weight gradients and stops at its layer) at a sustained rate, plus a fixed cost
for every forward/backward pass over a batch (:meth:`calls`: Python, the optimiser, kernel
launches), which dominates for the small models of the ci scale. The two numbers are fitted
per *family* of job (:func:`family`: the cache kind, and for models whether they convolve)
by non-negative least squares on the seconds a cold build's cache entries recorded
(``benchmarks/cost_model.py calibrate``); :mod:`.calibration` keeps the fitted values with
the build and machine they come from.

They hold for the machine and thread setting of that build (a CPU, one thread per lane):
on another machine, or for a GPU, re-calibrate, or read :func:`predict_seconds` as the
time on the calibration machine.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from torch import nn

from ..models import create_model

__all__ = ["family", "work", "fit", "seconds", "predict_seconds", "total_seconds", "FAMILIES",
           "model_signature", "Attack"]

FAMILIES = ("model/dense", "model/conv", "inversion/dense", "inversion/conv",
            "transfer/fine-tune", "transfer/fixed-feature", "attack/lbfgs")


@dataclass(frozen=True)
class Attack:
    """The work of one minimum-distortion L-BFGS attack
    (:func:`stir_lib.attacks.lbfgs_min_distortion`) of ``model`` (a
    :class:`~stir_lib.jobs.Train`) on ``n`` images, for the cost model to count: the Szegedy
    chapters attack inside their notebooks and cache no attack, so this is a description,
    not a job a plan runs. Counted as if every solve of the ``search_steps`` of the c search
    made ``max_iter`` evaluations, each a float64 forward pass and a backward pass for the
    input (4 FLOPs per MAC) over a batch of up to ``batch_size`` images; the fitted rate
    absorbs how many the solves really make (line searches add some, early stops remove
    some)."""

    model: object
    n: int
    search_steps: int
    max_iter: int
    batch_size: int = 1000
    loss: str = "margin"
    label: str = field(default="", compare=False)

    kind = "attack"

    def calls(self) -> int:
        return -(-self.n // self.batch_size) * self.search_steps * self.max_iter

    def flops(self) -> float:
        from .base import macs_per_example

        return (4.0 * macs_per_example(self.model.arch, tuple(self.model.kwargs)) * self.n
                * self.search_steps * self.max_iter)

    def describe(self) -> str:
        return (f"attack {self.label or self.model.arch}: L-BFGS ({self.loss}), {self.n} images, "
                f"{self.search_steps} solves of <= {self.max_iter} iterations")


@lru_cache(maxsize=256)
def _convolves(arch: str, kwargs: tuple) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in create_model(arch, **dict(kwargs)).modules())


def family(job) -> str | None:
    """The job's cost family (one of :data:`FAMILIES`), or None for a job that computes
    nothing of its own (a snapshot is read from its run's entry)."""
    if job.kind == "transfer":
        return f"transfer/{job.mode}"
    if job.kind == "attack":
        return "attack/lbfgs"
    model = job if job.kind == "model" else getattr(job, "model", None)
    if model is None or not hasattr(model, "arch") or job.calls() == 0:
        return None
    conv = _convolves(model.arch, tuple(model.kwargs))
    return f"{job.kind}/{'conv' if conv else 'dense'}"


def model_signature(arch: str, kwargs, config) -> str:
    """A trained model's identity without its data: registry name, keyword arguments and
    training configuration, as JSON. A model entry's ``meta.json`` records all three, so a
    counted :class:`~stir_lib.jobs.Train` whose data are described by size only (the Szegedy
    chapters' ``model_jobs``) finds the entry its notebook computed by this."""
    import json

    from ..cache import _canonical

    return json.dumps(_canonical({"name": arch, "model_kwargs": dict(kwargs), "config": config}),
                      sort_keys=True)


def work(job) -> tuple[float, int]:
    """(FLOPs, forward/backward passes over batches) of the job's own computation."""
    return float(job.flops()), int(job.calls())


def fit(rows: Iterable[tuple[str, float, int, float]]) -> dict[str, dict[str, float]]:
    """Per family, the rate (FLOP/s) and the fixed seconds per pass that best predict the
    measured seconds: non-negative least squares of ``seconds ~ flops * a + calls * b``.

    Args:
        rows: (family, flops, calls, measured seconds), one per computed cache entry.

    Returns:
        ``{family: {"flops_per_second": 1 / a, "seconds_per_call": b, "jobs": n}}``; a rate
        is ``inf`` where the fit puts all of a family's time on its passes.
    """
    from scipy.optimize import nnls

    by: dict[str, list] = {}
    for fam, flops, calls, seconds in rows:
        if not (seconds >= 0 and flops >= 0 and calls >= 0):
            raise ValueError(f"fit: expected non-negative flops, calls and seconds, got "
                             f"{(fam, flops, calls, seconds)}")
        by.setdefault(fam, []).append((flops, calls, seconds))
    out = {}
    for fam, r in sorted(by.items()):
        a = np.asarray(r, float)
        scale = a[:, :2].max(axis=0)
        scale[scale == 0] = 1.0
        coef, _ = nnls(a[:, :2] / scale, a[:, 2])
        per_flop, per_call = coef / scale
        out[fam] = {"flops_per_second": float(1.0 / per_flop) if per_flop > 0 else float("inf"),
                    "seconds_per_call": float(per_call), "jobs": len(r)}
    return out


def seconds(fam: str, flops: float, calls: int,
            rates: Mapping[str, Mapping[str, float]] | None = None) -> float:
    """``flops / rate + calls * per_call`` at the family's calibrated ``rates`` (default: the
    ones in :mod:`.calibration`). Raises ``KeyError`` naming the family when it was not
    calibrated."""
    if rates is None:
        from .calibration import RATES as rates
    if fam not in rates:
        raise KeyError(f"no calibrated rate for {fam!r} (calibrated: {sorted(rates)}); "
                       f"run benchmarks/cost_model.py calibrate on a build that computes one")
    r = rates[fam]
    return flops / r["flops_per_second"] + calls * r["seconds_per_call"]


def predict_seconds(job, rates: Mapping[str, Mapping[str, float]] | None = None) -> float:
    """The job's own computing time: :func:`seconds` of its family and :func:`work`."""
    fam = family(job)
    return 0.0 if fam is None else seconds(fam, *work(job), rates)


def total_seconds(jobs: Sequence, rates=None) -> float:
    """Sum of :func:`predict_seconds` over jobs (each cache entry once)."""
    from .plan import _unique

    return sum(predict_seconds(j, rates) for j in _unique(jobs))
