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
model. The default inversion is the paper's procedure (``method="reference"``). X is one
tensor, or any iterable of batches (a DataLoader), for more images than fit in memory
(see :func:`stir`).

No surprises: :func:`stir` writes nothing to disk unless asked (``use_cache=True`` keeps
the inversions in :mod:`stir_lib.cache`, keyed by the model's identity and code, X, the
layer and every option, so re-running a notebook redoes none of them); it puts the models
in eval mode and restores them, and leaves torch's thread count as it found it (or alone
altogether: :func:`stir_lib.threads.manage`). Baselines beside a score (a re-initialised
partner, a within-class permutation) are in :mod:`stir_lib.baselines`.

Where this differs from the public STIR code (PAPER_TARGETS.md section 3):
CKA is taken over all of X at once, not the last batch; 4-D activations are
flattened (or, with ``spatial="mean"``, averaged over the spatial axes, not over
channels and height); every inversion start is seeded; any device works (the
models' own); models are put in eval mode and restored.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from . import features, stir_batches, threads
from .batch_cka import LinearCKASums
from .inversion import _check_model, invert, representation, resolve_layer
from .models import device_of
from .similarity import linear_cka
from .stir_result import SCORES, Interval, Score, STIRResult
from .validation import check_int

__all__ = ["Score", "Interval", "STIRResult", "stir", "stir_matrix"]


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


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode inside; afterwards every submodule's own mode back (a model in training
    with a frozen, eval-mode part gets both back, not one flag for all)."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, training in modes:
            m.training = training


def _check_batches(X, cka, seed_kind: str, use_cache: bool) -> None:
    """X given as batches: what that allows (see :mod:`stir_lib.stir_batches`)."""
    if isinstance(X, (str, bytes, Mapping, np.ndarray)) or not isinstance(X, Iterable):
        raise TypeError(f"X: expected a torch.Tensor (N, ...) or an iterable of batches (a "
                        f"DataLoader yielding x or (x, y, ...)), got {type(X).__name__}"
                        + ("; pass torch.from_numpy(X)" if isinstance(X, np.ndarray) else ""))
    if cka is not linear_cka:
        raise ValueError(f"cka: with X given as batches, STIR accumulates linear CKA exactly "
                         f"over the batches, so cka must be linear_cka, got "
                         f"{getattr(cka, '__name__', cka)!r}; pass X as one tensor for another cka")
    if use_cache:
        raise ValueError("use_cache: expected False with X given as batches (inversions of a "
                         "batch are not cached), got True; pass X as one tensor to cache them")
    if seed_kind not in stir_batches.BATCH_SEED_KINDS:
        raise ValueError(f"seed_kind: expected one of {list(stir_batches.BATCH_SEED_KINDS)} "
                         f"with X given as batches, got {seed_kind!r} (it draws from all of X "
                         f"at once); pass X as one tensor or choose another start")
    stir_batches.check_draws(seed_kind)


@dataclass
class _Run:
    """What one pass over X computed (see :func:`_run`). Lists run over the seeds."""
    n: int
    values: dict[str, list[float]]            # scorer -> its score per seed
    cka: float
    distance: tuple[torch.Tensor, torch.Tensor]     # (S, N) each, of m1's and m2's IRIs
    evaluations: tuple[torch.Tensor, torch.Tensor]
    iris: tuple[torch.Tensor, torch.Tensor] | None  # (S, N, ...) each, on the CPU
    rows: dict[str, tuple[torch.Tensor, list[torch.Tensor]]] | None   # scorer -> (X, IRIs)
    labels: torch.Tensor | None


@threads.parallel
def _run(m1: nn.Module, m2: nn.Module, X, *, layer1: features.LayerSpec, layer2: features.LayerSpec,
         seeds: tuple[int, ...], seed_kind: str, method: str, steps: int | None,
         step_size: float | None, pool: torch.Tensor | None, cka: Callable, spatial: str,
         box, use_cache: bool, batch_size: int, progress: bool | None,
         return_iris: bool = False, keep_rows: bool = False,
         extra: Mapping[str, tuple[nn.Module, features.LayerSpec, int]] | None = None,
         fake_relu: bool | tuple[bool, bool] = False, clamp_start: bool = True) -> _Run:
    """One pass over X: for each batch and seed, the IRIs of m1 and of m2, scored by every
    scorer ``name -> (model, layer, 1 or 2: whose IRIs it scores)``; "m2_given_m1" and
    "m1_given_m2" always, ``extra`` besides; "cka" (the reference pair m1(X), m2(X)) too.

    X as one tensor: one batch, inverted by ``invert(seed=s)`` (cached with ``use_cache``)
    and scored by ``cka`` over all rows, as always. X as batches: each batch inverted from
    its rows of the all-at-once starts (:class:`~stir_lib.stir_batches.Starts`) and linear
    CKA accumulated exactly (:class:`~stir_lib.batch_cka.LinearCKASums`); nothing grows
    with N but the distances (and the IRIs with ``return_iris``, the representations with
    ``keep_rows``: (N, D) on the CPU per scorer, of X and of each seed's IRIs).
    """
    whole = isinstance(X, torch.Tensor)
    if whole:
        features.check_input(m1, X, "X", box)
        features.check_input(m2, X, "X", box)
        if len(X) < 2:
            raise ValueError(f"X: expected at least 2 images (CKA compares examples), got "
                             f"{len(X)}; the paper uses 1,000")
        items: Iterable = [(X, None, None)]
    else:
        _check_batches(X, cka, seed_kind, use_cache)
        starts = [stir_batches.Starts(seed_kind, s, pool, box, clamp_start) for s in seeds]
        items = stir_batches.with_rest(stir_batches.batches(X))
    scorers = {"m2_given_m1": (m2, layer2, 1), "m1_given_m2": (m1, layer1, 2), **(extra or {})}
    rk: dict[str, Any] = dict(spatial=spatial, box=box, batch_size=batch_size)
    kw: dict[str, Any] = dict(method=method, steps=steps, step_size=step_size, spatial=spatial, box=box,
              batch_size=batch_size, progress=progress, clamp_start=clamp_start)
    fake = fake_relu if isinstance(fake_relu, tuple) else (fake_relu, fake_relu)
    if len(fake) != 2 or not all(isinstance(f, bool) for f in fake):
        raise TypeError(f"fake_relu: expected a bool or a pair (m1's, m2's) of bools, got "
                        f"{fake_relu!r}")
    sums = {name: [LinearCKASums() for _ in seeds] for name in scorers}
    cka_sums = LinearCKASums()
    values: dict[str, list[float]] = {name: [] for name in scorers}
    per_seed: dict[str, list[list[torch.Tensor]]] = {
        key: [[] for _ in seeds] for key in ("d1", "d2", "e1", "e2", "i1", "i2")}
    rows: dict[str, tuple[list[torch.Tensor], list[list[torch.Tensor]]]] = {
        name: ([], [[] for _ in seeds]) for name in scorers}
    n, labels, cka_value = 0, [], float("nan")
    with ExitStack() as stack:
        for m in {id(m): m for m, _, _ in scorers.values()}.values():
            stack.enter_context(_eval_mode(m))
        for k, (xb, yb, rest) in enumerate(items):
            if not whole:
                features.check_input(m1, xb, f"X (batch {k})", box)
                features.check_input(m2, xb, f"X (batch {k})", box)
            n += len(xb)
            labels.append(yb)
            reps: dict = {}

            def rep_x(model, layer):            # each model's representation of the batch, once
                key = (id(model), layer)
                if key not in reps:
                    reps[key] = representation(model, xb, layer, **rk)      # (B, D)
                return reps[key]

            r1, r2 = rep_x(m1, layer1), rep_x(m2, layer2)
            if whole:
                cka_value = _score(cka, r1, r2)
            else:
                cka_sums.update(r1, r2.to(r1.device))
            if keep_rows:
                for name, (model, layer, _) in scorers.items():
                    rows[name][0].append(rep_x(model, layer).detach().cpu())
            for si, s in enumerate(seeds):
                how = (dict(seed=s, seed_kind=seed_kind, pool=pool, use_cache=use_cache) if whole
                       else dict(start=starts[si].take(xb, rest)))
                for j, (m, layer) in enumerate(((m1, layer1), (m2, layer2)), 1):
                    # m_j(X'_j) ~ m_j(X); one direction at a time, so one set of IRIs is alive
                    inv = invert(m, xb.to(device_of(m)), layer, **how, **kw,
                                 fake_relu=fake[j - 1])
                    for name, (model, lay, d) in scorers.items():
                        if d != j:
                            continue
                        ri = representation(model, inv.x_prime, lay, **rk)
                        rx = rep_x(model, lay)
                        if whole:
                            values[name].append(_score(cka, rx, ri))
                        else:
                            sums[name][si].update(rx, ri.to(rx.device))
                        if keep_rows:
                            rows[name][1][si].append(ri.detach().cpu())
                    per_seed[f"d{j}"][si].append(inv.distance)
                    per_seed[f"e{j}"][si].append(inv.evaluations)
                    if return_iris:
                        per_seed[f"i{j}"][si].append(inv.x_prime.detach().cpu())
                    del inv, ri, rx
                    if not whole:
                        stir_batches.release_free_memory()
            reps.clear()
    if n < 2:
        raise ValueError(f"X: expected at least 2 images (CKA compares examples), got {n}; "
                         f"the paper uses 1,000")
    if not whole:
        cka_value = cka_sums.compute()
        values = {name: [acc.compute() for acc in sums[name]] for name in scorers}

    def stack_(key):
        return torch.stack([torch.cat(parts) for parts in per_seed[key]])

    kept = None
    if keep_rows:
        kept = {name: (torch.cat(rx), [torch.cat(r) for r in ri]) for name, (rx, ri) in rows.items()}
        kept["cka"] = (kept["m1_given_m2"][0], [kept["m2_given_m1"][0]])    # m1(X), m2(X)
    return _Run(n=n, values=values, cka=cka_value, distance=(stack_("d1"), stack_("d2")),
                evaluations=(stack_("e1"), stack_("e2")),
                iris=(stack_("i1"), stack_("i2")) if return_iris else None, rows=kept,
                labels=torch.cat(labels) if labels and all(y is not None for y in labels)
                else None)


# --------------------------------------------------------------------------- intervals
def _weighted_linear_cka(A: torch.Tensor, B: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """Linear CKA of the rows of A (n, d1) and B (n, d2) taken ``W[r, i]`` times, for each
    row r of the counts W (R, n) (rows summing to n): a bootstrap resample's CKA, without
    forming the resample. With K = A A^T, L = B B^T and w a row of W, the resample's HSIC
    is, up to a factor that cancels,

        w^T (K o L) w - (2 / n) sum_i w_i (K w)_i (L w)_i + (w^T K w)(w^T L w) / n^2

    (K o L: the elementwise product; the weighted mean is removed exactly). The Gram
    matrices are formed a block of about 2^20 entries at a time, so memory is O(R n), not
    O(n^2); time O(R n^2 + n^2 d). Returns (R,) float64, NaN where a resample is constant.
    """
    A = A.double() - A.double().mean(0)
    B = B.double() - B.double().mean(0)
    W = W.to(A.device, torch.float64)
    n = len(A)
    KW, LW = torch.zeros_like(W), torch.zeros_like(W)     # (R, n): K w, L w per resample
    t = torch.zeros(3, len(W), dtype=torch.float64, device=A.device)
    step = max(1, 2 ** 20 // n)
    for j in range(0, n, step):
        K, L = A @ A[j:j + step].T, B @ B[j:j + step].T   # (n, b): columns of the Grams
        Wj = W[:, j:j + step]
        KW[:, j:j + step], LW[:, j:j + step] = W @ K, W @ L
        for i, P in enumerate((K * L, K * K, L * L)):
            t[i] += ((W @ P) * Wj).sum(1)
    wk, wl = (W * KW).sum(1), (W * LW).sum(1)
    hkl = t[0] - 2 / n * (W * KW * LW).sum(1) + wk * wl / n ** 2
    hkk = t[1] - 2 / n * (W * KW * KW).sum(1) + wk * wk / n ** 2
    hll = t[2] - 2 / n * (W * LW * LW).sum(1) + wl * wl / n ** 2
    den = (hkk * hll).clamp_min(0).sqrt()
    return torch.where(den > 0, hkl / den, torch.full_like(hkl, float("nan")))


def _image_intervals(rows: Mapping[str, tuple[torch.Tensor, list[torch.Tensor]]],
                     replicates: int, level: float, seed: int) -> dict[str, Interval]:
    """Percentile bootstrap over the images: every name's (X rows, [IRI rows per seed])
    pairs scored by linear CKA on the same resamples of the image indices; the seeds'
    mean per resample."""
    n = len(next(iter(rows.values()))[0])
    g = torch.Generator().manual_seed(seed)
    out: dict[str, list[torch.Tensor]] = {name: [] for name in rows}
    chunk = max(1, min(replicates, 2 ** 21 // n))    # resamples at a time: R n <= 2^21
    for start in range(0, replicates, chunk):
        r = min(chunk, replicates - start)
        idx = torch.randint(n, (r, n), generator=g)                 # resampled image indices
        W = torch.zeros(r, n, dtype=torch.float64).scatter_add_(
            1, idx, torch.ones(r, n, dtype=torch.float64))          # how often each image
        for name, (rx, ris) in rows.items():
            out[name].append(torch.stack([_weighted_linear_cka(rx, ri, W) for ri in ris]).mean(0))
    q = ((1 - level) / 2, (1 + level) / 2)
    result = {}
    for name, parts in out.items():
        lo, hi = np.nanquantile(torch.cat(parts).cpu().numpy(), q)
        result[name] = Interval(float(lo), float(hi), float(level), int(replicates))
    return result


def _check_bootstrap(bootstrap: int, level: float, cka) -> None:
    if isinstance(bootstrap, bool) or not isinstance(bootstrap, int) or bootstrap == 1 or bootstrap < 0:
        raise ValueError(f"bootstrap: expected 0 (no interval) or a number of resamples >= 2 "
                         f"(1,000 for a 95 % interval), got {bootstrap!r}")
    if not (isinstance(level, float) and 0 < level < 1):
        raise ValueError(f"level: expected a float in (0, 1), e.g. 0.95, got {level!r}")
    if bootstrap and cka is not linear_cka:
        raise ValueError(f"bootstrap: the interval over images is for linear CKA, got cka="
                         f"{getattr(cka, '__name__', cka)!r}; pass cka=linear_cka or bootstrap=0")


def _result(run: _Run, *, seeds, layer1, layer2, method, seed_kind, bootstrap: int,
            level: float, bootstrap_seed: int) -> STIRResult:
    interval = None
    if bootstrap:
        if run.rows is None:
            raise RuntimeError("stir: the pass over X kept no rows for the bootstrap")
        interval = _image_intervals({k: run.rows[k] for k in SCORES}, bootstrap, level,
                                    bootstrap_seed)
    return STIRResult(m2_given_m1=Score(tuple(run.values["m2_given_m1"])),
                      m1_given_m2=Score(tuple(run.values["m1_given_m2"])),
                      cka=Score((run.cka,)), distance_m1=run.distance[0],
                      distance_m2=run.distance[1], evaluations_m1=run.evaluations[0],
                      evaluations_m2=run.evaluations[1], seeds=seeds, layer1=layer1,
                      layer2=layer2, method=method, seed_kind=seed_kind, n=run.n,
                      iris_m1=run.iris[0] if run.iris else None,
                      iris_m2=run.iris[1] if run.iris else None, image_interval=interval)


# --------------------------------------------------------------------------- STIR
def stir(m1: nn.Module, m2: nn.Module, X: torch.Tensor | Iterable[Any], *,
         layer1: features.LayerSpec | None = None, layer2: features.LayerSpec | None = None,
         seeds: int | Iterable[int] = (0,), seed_kind: str = "noise", method: str = "reference",
         steps: int | None = None, step_size: float | None = None,
         pool: torch.Tensor | None = None,
         cka: Callable[[torch.Tensor, torch.Tensor], float] = linear_cka,
         spatial: str = "flatten", box: tuple[float, float] = (0.0, 1.0),
         use_cache: bool = False, batch_size: int = 500, progress: bool | None = None,
         return_iris: bool = False, bootstrap: int = 0, level: float = 0.95,
         bootstrap_seed: int = 0, fake_relu: bool | tuple[bool, bool] = False,
         clamp_start: bool = True) -> STIRResult:
    """STIR in both directions and CKA for a pair of models (Nanda et al. 2022).

    For each seed s: IRIs X'_1 of m1 are found from X (:func:`~stir_lib.inversion.invert`,
    start drawn with seed s), and STIR(m2 | m1) = cka(m2(X), m2(X'_1)) over all
    of X at once; likewise STIR(m1 | m2) with IRIs of m2.

    Args:
        m1, m2: any ``torch.nn.Module`` s taking the same inputs; each runs on its own
            device (that of its parameters), in eval mode, its mode restored.
        X: inputs in ``box`` that both models accept (N >= 2; the paper uses 1,000
            images): one tensor (N, ...), or any iterable of batches for more images
            than fit in memory: a ``DataLoader`` (or list, or generator) yielding tensors
            or ``(x, y, ...)`` tuples or lists, of which the first element is taken. Batches
            are inverted one after another, each image from the same start as in the
            one-tensor call, and linear CKA is accumulated exactly over them
            (:class:`~stir_lib.batch_cka.LinearCKASums`): the result equals the one-tensor
            result (to float rounding; ``tests/test_stir_surface.py``), while memory holds
            a batch and (d1 + d2)^2 sums, not N images. With batches: ``cka`` must be
            linear CKA, ``use_cache`` False and ``seed_kind`` not "shuffle"; X is read once.
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
        use_cache: keep the inversions in the cache (:mod:`stir_lib.cache`, on disk);
            default False: nothing is written.
        batch_size: inputs per inversion batch (memory only).
        progress: progress bars; None shows them only on a terminal.
        return_iris: keep the IRIs in the result (``iris_m1``, ``iris_m2``: (S, N, ...)).
        bootstrap: resamples of the images for an interval over images (0: none, the
            default; 1,000 for a 95 % interval): resample the image indices with
            replacement, recompute linear CKA on the resampled pairs of representations
            (the inversions are not redone), and take the percentile interval at ``level``;
            ``result.image_interval`` then holds it for both directions and CKA. It keeps
            the representations ((N, D) per model and seed) and costs O(B N^2). A resample
            repeats images, which raises linear CKA where the features are many for N
            (plain CKA's bias towards 1): with few images the interval can lie above the
            score itself. Read it as the spread over images, not as a corrected estimate.
        level: the interval's coverage (0.95).
        bootstrap_seed: seeds the resampling.
        fake_relu, clamp_start: the public STIR code's two departures from the paper's
            procedure, for both directions (see :func:`~stir_lib.inversion.invert`; default
            off: the paper's): a straight-through final ReLU during the inversion's steps
            (which the public code uses for every model not named VGG, Inception or
            "sparse"), and the first step from the unclamped Gaussian start. ``fake_relu``
            may be a pair: (for m1's IRIs, for m2's).

    Returns:
        :class:`STIRResult`.

    Global state: the models' modes and torch's thread count are restored afterwards
    (:func:`stir_lib.threads.manage(False) <stir_lib.threads.manage>` or
    ``STIR_THREADS=off`` leaves the thread count alone); the starts use their own
    generators, not torch's global one.
    """
    return _stir(m1, m2, X, layer1=layer1, layer2=layer2, seeds=seeds, seed_kind=seed_kind,
                 method=method, steps=steps, step_size=step_size, pool=pool, cka=cka,
                 spatial=spatial, box=box, use_cache=use_cache, batch_size=batch_size,
                 progress=progress, return_iris=return_iris, bootstrap=bootstrap, level=level,
                 bootstrap_seed=bootstrap_seed, fake_relu=fake_relu,
                 clamp_start=clamp_start)[0]


def _stir(m1: nn.Module, m2: nn.Module, X, *, layer1, layer2, seeds, bootstrap: int,
          level: float, bootstrap_seed: int, keep_rows: bool = False,
          extra: Callable[[str, str], Mapping[str, tuple[nn.Module, str, int]]] | None = None,
          **options) -> tuple[STIRResult, _Run]:
    """:func:`stir`'s work, with the pass over X (:func:`_run`) returned too. ``extra(layer1,
    layer2)`` gives more scorers (:mod:`stir_lib.baselines`)."""
    _check_model(m1, "m1")
    _check_model(m2, "m2")
    layer1 = resolve_layer(m1, layer1, "layer1")
    layer2 = resolve_layer(m2, layer2, "layer2")
    seeds = _check_seeds(seeds)
    _check_bootstrap(bootstrap, level, options["cka"])
    check_int(bootstrap_seed, "bootstrap_seed", minimum=0)
    run = _run(m1, m2, X, layer1=layer1, layer2=layer2, seeds=seeds,
               keep_rows=keep_rows or bool(bootstrap),
               extra=extra(layer1, layer2) if extra else None, **options)
    result = _result(run, seeds=seeds, layer1=layer1, layer2=layer2, method=options["method"],
                     seed_kind=options["seed_kind"], bootstrap=bootstrap, level=level,
                     bootstrap_seed=bootstrap_seed)
    return result, run


def stir_matrix(models: Mapping[str, nn.Module], X: torch.Tensor, *,
                layers: Mapping[str, features.LayerSpec] | None = None,
                seeds: int | Iterable[int] = (0,),
                seed_kind: str = "noise", method: str = "reference", steps: int | None = None,
                step_size: float | None = None, pool: torch.Tensor | None = None,
                cka: Callable[[torch.Tensor, torch.Tensor], float] = linear_cka,
                spatial: str = "flatten", box: tuple[float, float] = (0.0, 1.0),
                use_cache: bool = False, batch_size: int = 500, progress: bool | None = None,
                return_std: bool = False, return_iris: bool = False,
                fake_relu: bool | Mapping[str, bool] = False,
                clamp_start: bool = True) -> tuple:
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
        seeds: as in :func:`stir`; so are seed_kind, method, steps, step_size, pool, cka,
            spatial, box, use_cache, batch_size, progress, fake_relu and clamp_start;
            ``fake_relu`` may be a dict name -> bool per reference model (absent: False).
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
    if isinstance(fake_relu, Mapping) and set(fake_relu) - set(names):
        raise ValueError(f"fake_relu: expected keys among the model names {names}, got "
                         f"{sorted(set(fake_relu) - set(names))}")
    seeds = _check_seeds(seeds)
    rk: dict[str, Any] = dict(spatial=spatial, box=box, batch_size=batch_size)
    k = len(names)
    S = np.zeros((len(seeds), k, k))                       # (seeds, reference, scored)
    C = np.zeros((k, k))
    iris = {}
    with ExitStack() as stack:
        for n in names:
            stack.enter_context(_eval_mode(models[n]))
        reps = {n: representation(models[n], X, lay[n], **rk) for n in names}
        for i, a in enumerate(names):
            for j in range(i, k):
                C[i, j] = C[j, i] = _score(cka, reps[a], reps[names[j]])
        for i, a in enumerate(names):
            for si, s in enumerate(seeds):
                inv = invert(models[a], X.to(device_of(models[a])), lay[a], seed=s,
                             seed_kind=seed_kind, method=method, steps=steps,
                             step_size=step_size, pool=pool, spatial=spatial, box=box,
                             use_cache=use_cache, batch_size=batch_size, progress=progress,
                             clamp_start=clamp_start, fake_relu=fake_relu.get(a, False)
                             if isinstance(fake_relu, Mapping) else fake_relu)
                if return_iris:
                    iris[(a, s)] = inv.x_prime
                for j, b in enumerate(names):
                    S[si, i, j] = _score(cka, reps[b], representation(
                        models[b], inv.x_prime, lay[b], **rk))

    def frame(a):
        return pd.DataFrame(a, index=pd.Index(names, name="reference"),
                            columns=pd.Index(names, name="scored by"))

    out: tuple[Any, ...] = (frame(S.mean(0)), frame(C))
    if return_std:
        out += (frame(S.std(0, ddof=1) if len(seeds) > 1 else np.full((k, k), np.nan)),)
    if return_iris:
        out += (iris,)
    return out
