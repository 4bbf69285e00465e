"""The result of :func:`stir_lib.stir.stir`: scores over seeds, intervals over images, and
the file format of a saved result (:meth:`STIRResult.save`, :meth:`STIRResult.load`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import features    # also lets weights_only loading read a saved Layer

__all__ = ["Score", "Interval", "STIRResult", "SCORES"]

_FORMAT = "stir_lib.STIRResult/1"          # the marker STIRResult.save writes
SCORES = ("m2_given_m1", "m1_given_m2", "cka")   # the result's scores, by field name


@dataclass(frozen=True)
class Score:
    """A score over inversion seeds: the per-seed ``values``, their mean and std.

    ``std`` is the sample standard deviation over the seeds (ddof=1), NaN for a single
    seed. It measures the spread of the *inversion* for fixed models only; the spread
    that matters for comparing kinds of models is that between independently trained
    models (see :mod:`stir_lib.verdicts`). ``float(score)`` is the mean; it prints as
    ``mean ± std``.
    """
    values: tuple[float, ...]

    @property
    def mean(self) -> float:
        return float(np.mean(self.values))

    @property
    def std(self) -> float:
        return float(np.std(self.values, ddof=1)) if len(self.values) > 1 else float("nan")

    def __float__(self) -> float:
        return self.mean

    def __str__(self) -> str:
        if len(self.values) < 2:
            return f"{self.mean:.3f} (1 seed)"
        return f"{self.mean:.3f} ± {self.std:.3f}"


@dataclass(frozen=True)
class Interval:
    """A percentile bootstrap interval over the images of X (``stir(..., bootstrap=B)``).

    low, high: the (1 - level) / 2 and (1 + level) / 2 quantiles of the score over
    ``replicates`` resamples of the images (with replacement; the seeds' mean when there
    are several seeds, each seed scored on the same resample).
    """
    low: float
    high: float
    level: float
    replicates: int

    def __str__(self) -> str:
        return f"[{self.low:.3f}, {self.high:.3f}]"


@dataclass(frozen=True, eq=False)
class STIRResult:
    """Output of :func:`~stir_lib.stir.stir`.

    Attributes:
        m2_given_m1: STIR(m2 | m1): IRIs found on m1 (the reference), scored by m2.
        m1_given_m2: STIR(m1 | m2): IRIs found on m2, scored by m1.
        cka: CKA(m1(X), m2(X)), m1 at ``layer1`` against m2 at ``layer2``. It does
            not depend on the seed: one value.
        distance_m1: (S, N) final relative distance ||m1(x') - m1(x)|| / ||m1(x)||
            of every IRI behind ``m2_given_m1``, one row per seed (convergence).
        distance_m2: (S, N) the same on m2, behind ``m1_given_m2``.
        evaluations_m1: (S, N) model evaluations per sample, on m1.
        evaluations_m2: (S, N) the same on m2.
        seeds: the inversion seeds, one per row of the (S, N) fields.
        layer1: m1's layer, resolved (a str or a :class:`~stir_lib.features.Layer`).
        layer2: m2's layer, resolved.
        method: the inversion's method ("reference" or "fast").
        seed_kind: the kind of start of the inversions.
        n: the number of inputs, N = len(X).
        iris_m1: with ``stir(..., return_iris=True)``, the IRIs found on m1, an (S, N, ...)
            tensor (one slice per seed, on the CPU); else None.
        iris_m2: the same for m2.
        image_interval: with ``stir(..., bootstrap=B)``, an :class:`Interval` over images
            for each of "m2_given_m1", "m1_given_m2" and "cka"; else None. (The spread
            over inversion seeds is each Score's std.)

    Results compare equal field by field (tensors by value). :meth:`save` writes one to a
    file and :meth:`load` reads it back, equal.
    """
    m2_given_m1: Score
    m1_given_m2: Score
    cka: Score
    distance_m1: torch.Tensor
    distance_m2: torch.Tensor
    evaluations_m1: torch.Tensor
    evaluations_m2: torch.Tensor
    seeds: tuple[int, ...]
    layer1: features.LayerSpec
    layer2: features.LayerSpec
    method: str
    seed_kind: str
    n: int
    iris_m1: torch.Tensor | None = None
    iris_m2: torch.Tensor | None = None
    image_interval: Mapping[str, Interval] | None = None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, STIRResult):
            return NotImplemented
        for f in fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
                if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)
                        and a.dtype == b.dtype and a.shape == b.shape
                        and torch.equal(a.cpu(), b.cpu())):
                    return False
            elif a != b:
                return False
        return True

    __hash__ = None  # type: ignore[assignment]   # mutable tensors inside: not hashable

    def save(self, path: str | Path) -> None:
        """Write every field to ``path``: one ``torch.save`` file of tensors, numbers and
        strings (readable with ``weights_only=True``), written under a temporary name,
        then renamed."""
        import os

        state: dict[str, Any] = {"format": _FORMAT}
        for f in fields(self):
            state[f.name] = getattr(self, f.name)
        for name in SCORES:
            state[name] = list(state[name].values)
        state["seeds"] = list(self.seeds)
        if self.image_interval is not None:
            state["image_interval"] = {k: [v.low, v.high, v.level, v.replicates]
                                       for k, v in self.image_interval.items()}
        tmp = f"{path}.tmp"
        torch.save(state, tmp)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | Path) -> "STIRResult":
        """A result written by :meth:`save` (read with ``weights_only=True``: no code runs).

        Raises ValueError, saying so, for a file that is not one (corrupt, foreign)."""
        how = "pass a file written by STIRResult.save"
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise
        except Exception as err:  # noqa: BLE001 - any failure: not a readable result
            raise ValueError(f"STIRResult.load: expected a file written by STIRResult.save, "
                             f"got {str(path)!r}, which torch.load cannot read "
                             f"({type(err).__name__}: {str(err)[:200]}); {how}") from err
        names = {f.name for f in fields(cls)}
        required = {f.name for f in fields(cls) if f.default is not None}
        got = sorted(state) if isinstance(state, dict) else type(state).__name__
        if (not isinstance(state, dict) or state.get("format", _FORMAT) != _FORMAT
                or not required <= set(state) or set(state) - names - {"format"}):
            raise ValueError(f"STIRResult.load: expected a saved STIRResult (format {_FORMAT!r} "
                             f"with the fields {sorted(required)}), got {got} in "
                             f"{str(path)!r}; {how}")
        state = {k: v for k, v in state.items() if k != "format"}
        for name in SCORES:
            state[name] = Score(tuple(float(v) for v in state[name]))
        state["seeds"] = tuple(int(s) for s in state["seeds"])
        if state.get("image_interval") is not None:
            state["image_interval"] = {k: Interval(float(v[0]), float(v[1]), float(v[2]), int(v[3]))
                                       for k, v in state["image_interval"].items()}
        return cls(**state)

    def summary(self) -> dict:
        """Flat dict of means and stds (and the worst mean distance; with a bootstrap, the
        interval's ends as ``<name>_low`` and ``<name>_high``), for tables."""
        out = {}
        for name in SCORES:
            s = getattr(self, name)
            out[name], out[name + "_std"] = s.mean, s.std
            if self.image_interval is not None:
                out[name + "_low"] = self.image_interval[name].low
                out[name + "_high"] = self.image_interval[name].high
        out["distance_m1"] = float(self.distance_m1.mean())
        out["distance_m2"] = float(self.distance_m2.mean())
        return out

    def __str__(self) -> str:
        iv = self.image_interval or {}
        parts = [f"{label} = {getattr(self, name)}" + (f" {iv[name]}" if name in iv else "")
                 for name, label in (("m2_given_m1", "STIR(m2|m1)"),
                                     ("m1_given_m2", "STIR(m1|m2)"))]
        cka = f"CKA = {self.cka.mean:.3f}" + (f" {iv['cka']}" if "cka" in iv else "")
        extra = (f", {next(iter(iv.values())).level:.0%} intervals over images" if iv else "")
        return (f"{parts[0]}, {parts[1]}, {cka}  ({len(self.seeds)} seed(s), n = {self.n}, "
                f"{self.method}{extra})")
