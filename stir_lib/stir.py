"""STIR: similarity through inverted representations (shared invariance).

Nanda, Speicher, Kolling, Dickerson, Gummadi & Weller (2022), "Measuring
Representational Robustness of Neural Networks Through Shared Invariances"
(ICML). For a reference model m1, a model m2 and images X,

    STIR(m2 | m1, X) = CKA(m2(X), m2(X'))                                    (1)

where X' are identically represented inputs (IRIs) of m1: m1(X') ~= m1(X),
found by representation inversion (Mahendran & Vedaldi 2015; see
:mod:`stir_lib.inversion`). It asks how much of m1's invariance m2 shares: 1
when every change m1 ignores, m2 ignores too. It is not symmetric.

Any ``torch.nn.Module`` works: a library :class:`~stir_lib.models.ImageModel` (layers are
its stages, the penultimate by default, as in the paper) or a torchvision, timm or
hand-made model (layers are ``named_modules()`` paths or :class:`~stir_lib.features.Layer`
objects, the input of its final ``nn.Linear`` by default; see :mod:`stir_lib.features`).
Inputs are in the box the caller states (default [0, 1]); normalisation stays inside the
model. The default inversion is the paper's procedure
(``method="reference"``); inversions are cached (keyed by the model's identity, X,
layer and every option), so re-running a notebook redoes none of them.

Where this differs from the public STIR code (PAPER_TARGETS.md section 3):
CKA is taken over all of X at once, not the last batch; 4-D activations are
flattened (or, with ``spatial="mean"``, averaged over the spatial axes, not over
channels and height); every inversion start is seeded; any device works (the
models' own); models are put in eval mode and restored.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass

import numpy as np
import torch

from . import features
from .attacks import eval_mode
from .inversion import _check_model, invert, representation, resolve_layer
from .models import device_of
from .similarity import linear_cka

__all__ = ["Score", "STIRResult", "stir", "stir_matrix"]


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
class STIRResult:
    """Output of :func:`stir`.

    m2_given_m1: STIR(m2 | m1): IRIs found on m1 (the reference), scored by m2.
    m1_given_m2: STIR(m1 | m2): IRIs found on m2, scored by m1.
    cka: CKA(m1(X), m2(X)), m1 at ``layer1`` against m2 at ``layer2``. It does
        not depend on the seed: one value.
    distance_m1: (S, N) final relative distance ||m1(x') - m1(x)|| / ||m1(x)||
        of every IRI behind ``m2_given_m1``, one row per seed (convergence).
    distance_m2: (S, N) the same on m2, behind ``m1_given_m2``.
    evaluations_m1, evaluations_m2: (S, N) model evaluations per sample.
    seeds, layer1, layer2, method, seed_kind, n: how it was computed (n = |X|; the layers
        resolved: a str or a :class:`~stir_lib.features.Layer`).
    iris_m1, iris_m2: with ``stir(..., return_iris=True)``, the IRIs of m1 and of m2, a
        (S, N, ...) tensor each (one slice per seed, on the CPU); else None.

    :meth:`save` writes it to a file and :meth:`load` reads it back, equal field by field.
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

    def save(self, path) -> None:
        """Write every field to ``path`` (``torch.save`` of plain tensors, numbers and
        strings; written under a temporary name, then renamed)."""
        import os
        from dataclasses import fields

        state = {f.name: getattr(self, f.name) for f in fields(self)}
        for name in ("m2_given_m1", "m1_given_m2", "cka"):
            state[name] = list(state[name].values)
        tmp = f"{path}.tmp"
        torch.save(state, tmp)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path) -> "STIRResult":
        """A result written by :meth:`save` (read with ``weights_only=True``: no code runs)."""
        state = torch.load(path, map_location="cpu", weights_only=True)
        for name in ("m2_given_m1", "m1_given_m2", "cka"):
            state[name] = Score(tuple(float(v) for v in state[name]))
        state["seeds"] = tuple(state["seeds"])
        return cls(**state)

    def summary(self) -> dict:
        """Flat dict of means and stds (and the worst mean distance), for tables."""
        out = {}
        for name in ("m2_given_m1", "m1_given_m2", "cka"):
            s = getattr(self, name)
            out[name], out[name + "_std"] = s.mean, s.std
        out["distance_m1"] = float(self.distance_m1.mean())
        out["distance_m2"] = float(self.distance_m2.mean())
        return out

    def __str__(self) -> str:
        return (f"STIR(m2|m1) = {self.m2_given_m1}, STIR(m1|m2) = {self.m1_given_m2}, "
                f"CKA = {self.cka.mean:.3f}  ({len(self.seeds)} seed(s), n = {self.n}, "
                f"{self.method})")


# --------------------------------------------------------------------------- helpers
def _check_seeds(seeds) -> tuple[int, ...]:
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        seeds = (seeds,)
    if not isinstance(seeds, Iterable):
        raise TypeError(f"seeds: expected an int or a sequence of ints, got "
                        f"{type(seeds).__name__}")
    seeds = tuple(seeds)
    if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise ValueError(f"seeds: expected a non-empty sequence of ints, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds: expected distinct seeds, got {seeds!r}; repeats add no "
                         f"information and shrink the std")
    return seeds


def _score(cka: Callable, reference: torch.Tensor, other: torch.Tensor) -> float:
    """cka over all rows at once, on the reference's device."""
    return float(cka(reference, other.to(reference.device)))


# --------------------------------------------------------------------------- STIR
def stir(m1, m2, X: torch.Tensor, *, layer1: features.LayerSpec | None = None,
         layer2: features.LayerSpec | None = None,
         seeds: int | Iterable[int] = (0,), seed_kind: str = "noise", method: str = "reference",
         steps: int | None = None, step_size: float | None = None,
         pool: torch.Tensor | None = None, cka: Callable = linear_cka,
         spatial: str = "flatten", box=(0.0, 1.0), use_cache: bool = True,
         batch_size: int = 500, progress: bool | None = None,
         return_iris: bool = False) -> STIRResult:
    """STIR in both directions and CKA for a pair of models (Nanda et al. 2022).

    For each seed s: IRIs X'_1 of m1 are found from X (:func:`~stir_lib.inversion.invert`,
    start drawn with seed s), and STIR(m2 | m1) = cka(m2(X), m2(X'_1)) over all
    of X at once; likewise STIR(m1 | m2) with IRIs of m2.

    Args:
        m1, m2: any ``torch.nn.Module`` s taking the same inputs; each runs on its own
            device (that of its parameters), in eval mode, its mode restored.
        X: inputs in ``box`` that both models accept (N >= 2; the paper uses 1,000
            images).
        layer1, layer2: layers of m1 and m2 (an ImageModel's stage names, or any
            model's ``named_modules()`` paths, or "output", or a
            :class:`~stir_lib.features.Layer` for a chosen call, a selected tensor or a
            module's input); None for the default (the penultimate layer: an ImageModel's
            penultimate stage, any other model's final Linear's input).
        seeds: inversion seeds (ints); each gives different IRI starts. Scores
            are averaged over them.
        seed_kind: the IRI start, see :func:`~stir_lib.inversion.seeds`
            ("noise" is the paper's).
        method: "reference" (default: the paper's 1,000 normalised-gradient steps) or
            "fast" (opt-in; check it against the reference on your models, see
            :mod:`stir_lib.inversion`).
        steps, step_size: passed to the inversion (None: the method's default).
        pool: images for ``seed_kind="pool"``.
        cka: similarity ``cka(A, B) -> float`` of two (N, D) matrices;
            :func:`~stir_lib.similarity.linear_cka` as in the paper.
        spatial: "flatten" (default) or "mean" for 4-D layer outputs.
        box: (low, high) of valid inputs; IRIs stay inside it.
        use_cache: keep the inversions in the cache (:mod:`stir_lib.cache`).
        batch_size: inputs per inversion batch (memory only).
        progress: progress bars; None shows them only on a terminal.
        return_iris: keep the IRIs in the result (``iris_m1``, ``iris_m2``).

    Returns:
        :class:`STIRResult`.
    """
    _check_model(m1, "m1")
    _check_model(m2, "m2")
    features.check_input(m1, X, "X", box)
    features.check_input(m2, X, "X", box)
    if len(X) < 2:
        raise ValueError(f"X: expected at least 2 images (CKA compares examples), got "
                         f"{len(X)}; the paper uses 1,000")
    layer1 = resolve_layer(m1, layer1, "layer1")
    layer2 = resolve_layer(m2, layer2, "layer2")
    seeds = _check_seeds(seeds)
    kw = dict(seed_kind=seed_kind, method=method, steps=steps, step_size=step_size, pool=pool,
              spatial=spatial, box=box, use_cache=use_cache, batch_size=batch_size,
              progress=progress)
    rk = dict(spatial=spatial, box=box, batch_size=batch_size)
    s21, s12, d1, d2, e1, e2, i1, i2 = [], [], [], [], [], [], [], []
    with eval_mode(m1), eval_mode(m2):
        r1 = representation(m1, X, layer1, **rk)           # (N, D1)
        r2 = representation(m2, X, layer2, **rk)           # (N, D2)
        cka_value = _score(cka, r1, r2)
        X1, X2 = X.to(device_of(m1)), X.to(device_of(m2))
        for s in seeds:
            inv1 = invert(m1, X1, layer1, seed=s, **kw)     # m1(X'_1) ~ m1(X)
            s21.append(_score(cka, r2, representation(m2, inv1.x_prime, layer2, **rk)))
            inv2 = invert(m2, X2, layer2, seed=s, **kw)     # m2(X'_2) ~ m2(X)
            s12.append(_score(cka, r1, representation(m1, inv2.x_prime, layer1, **rk)))
            d1.append(inv1.distance)
            d2.append(inv2.distance)
            e1.append(inv1.evaluations)
            e2.append(inv2.evaluations)
            if return_iris:
                i1.append(inv1.x_prime.detach().cpu())
                i2.append(inv2.x_prime.detach().cpu())
    return STIRResult(m2_given_m1=Score(tuple(s21)), m1_given_m2=Score(tuple(s12)),
                      cka=Score((cka_value,)), distance_m1=torch.stack(d1),
                      distance_m2=torch.stack(d2), evaluations_m1=torch.stack(e1),
                      evaluations_m2=torch.stack(e2), seeds=seeds, layer1=layer1,
                      layer2=layer2, method=method, seed_kind=seed_kind, n=len(X),
                      iris_m1=torch.stack(i1) if return_iris else None,
                      iris_m2=torch.stack(i2) if return_iris else None)


def stir_matrix(models: Mapping[str, object], X: torch.Tensor, *,
                layers: Mapping[str, features.LayerSpec] | None = None,
                seeds: int | Iterable[int] = (0,),
                seed_kind: str = "noise", method: str = "reference", steps: int | None = None,
                step_size: float | None = None, pool: torch.Tensor | None = None,
                cka: Callable = linear_cka, spatial: str = "flatten", box=(0.0, 1.0),
                use_cache: bool = True, batch_size: int = 500, progress: bool | None = None,
                return_std: bool = False, return_iris: bool = False):
    """STIR and CKA between every pair of models.

    Convention: entry ``[i, j]`` of the STIR matrix is STIR(m_j | m_i): row i
    is the *reference* model whose IRIs are generated, column j the model
    that scores them. Row i of the matrix therefore equals
    ``stir(m_i, m_j, X).m2_given_m1`` for every j (with the same seeds and
    options), and the diagonal is STIR(m_i | m_i), near 1 when the inversion
    converged. The IRIs of each reference model are found once per seed and
    reused across the columns (one inversion per row and seed, not per cell).
    The CKA matrix, CKA(m_i(X), m_j(X)), is symmetric.

    Args:
        models: name -> ``nn.Module``, in the order of the rows and columns.
        X: inputs in ``box`` that every model accepts.
        layers: name -> layer (a str or a :class:`~stir_lib.features.Layer`) for some or
            all models; the others use their default.
        seeds, seed_kind, method, steps, step_size, pool, cka, spatial, box, use_cache,
        batch_size, progress: as in :func:`stir`.
        return_std: also return the std over seeds (ddof=1) of every STIR entry.
        return_iris: also return the IRIs: a dict (reference name, seed) -> tensor.

    Returns:
        ``(stir, cka)``: two pandas DataFrames indexed by the names, rows the
        reference models (index name "reference"), columns the scoring models
        (column name "scored by"); STIR entries are means over the seeds. With
        ``return_std`` the std frame follows, with ``return_iris`` the IRIs.
    """
    import pandas as pd  # here only: the rest of the library runs without pandas
    if not isinstance(models, Mapping) or not models:
        raise TypeError(f"models: expected a non-empty dict name -> nn.Module, got "
                        f"{type(models).__name__}")
    names = list(models)
    for name in names:
        _check_model(models[name], f"models[{name!r}]")
        features.check_input(models[name], X, "X", box)
    if len(X) < 2:
        raise ValueError(f"X: expected at least 2 images (CKA compares examples), got "
                         f"{len(X)}; the paper uses 1,000")
    layers = dict(layers or {})
    unknown = sorted(set(layers) - set(names))
    if unknown:
        raise ValueError(f"layers: expected keys among the model names {names}, got "
                         f"{unknown}")
    lay = {n: resolve_layer(models[n], layers.get(n), f"layers[{n!r}]") for n in names}
    seeds = _check_seeds(seeds)
    rk = dict(spatial=spatial, box=box, batch_size=batch_size)
    k = len(names)
    S = np.zeros((len(seeds), k, k))                       # (seeds, reference, scored)
    C = np.zeros((k, k))
    iris = {}
    with ExitStack() as stack:
        for n in names:
            stack.enter_context(eval_mode(models[n]))
        reps = {n: representation(models[n], X, lay[n], **rk) for n in names}
        for i, a in enumerate(names):
            for j in range(i, k):
                C[i, j] = C[j, i] = _score(cka, reps[a], reps[names[j]])
        for i, a in enumerate(names):
            for si, s in enumerate(seeds):
                inv = invert(models[a], X.to(device_of(models[a])), lay[a], seed=s,
                             seed_kind=seed_kind, method=method, steps=steps,
                             step_size=step_size, pool=pool, spatial=spatial, box=box,
                             use_cache=use_cache, batch_size=batch_size, progress=progress)
                if return_iris:
                    iris[(a, s)] = inv.x_prime
                for j, b in enumerate(names):
                    S[si, i, j] = _score(cka, reps[b], representation(
                        models[b], inv.x_prime, lay[b], **rk))

    def frame(a):
        return pd.DataFrame(a, index=pd.Index(names, name="reference"),
                            columns=pd.Index(names, name="scored by"))

    out = (frame(S.mean(0)), frame(C))
    if return_std:
        out += (frame(S.std(0, ddof=1) if len(seeds) > 1 else np.full((k, k), np.nan)),)
    if return_iris:
        out += (iris,)
    return out
