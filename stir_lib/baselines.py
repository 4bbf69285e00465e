"""Baselines beside a STIR score: what the score would be without the partner's learned
invariances, and what class structure alone gives.

A STIR near 1 could mean that m2 shares m1's invariances, or only that the IRIs stay close
to their originals, or only that both models see the same classes. :func:`stir_baselines`
scores, on the very IRIs behind the score (no further inversion):

* **a re-initialised partner** (:func:`reinitialised`): m2 with fresh, seeded initial
  weights scores m1's IRIs, STIR(m2~ | m1) (and m1~ scores m2's IRIs): it shares no
  learned invariance, so the score it gets is what closeness of the IRIs alone earns.
  (The ``stir_pairs`` chapter's "untrained partner" is the same idea for its registry
  models, built by ``create_model``; this one works for any ``nn.Module``.)
* **a within-class permutation** (:func:`within_class_permutation`, the ``stir_pairs``
  chapter's control): m2 compares its representation of each image with its representation
  of the IRI of *another* image of the same class: the part of STIR that class structure
  alone explains. It needs labels.

The interval over images is ``stir(..., bootstrap=B)`` (:func:`stir_lib.stir.stir`).
"""

from __future__ import annotations

import copy
import inspect
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .inversion import _check_model
from .stir import _score, _stir, stir
from .stir_result import Score, STIRResult
from .validation import check_int

__all__ = ["BASELINES", "Baselines", "stir_baselines", "within_class_permutation",
           "reinitialised"]

BASELINES = ("random", "permutation")


def within_class_permutation(y: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """A random permutation of the indices 0..N-1 inside each class of the labels ``y`` (N,).

    Index i maps to a random index of the same class (possibly i itself, as any random
    permutation may). Classes are taken in sorted order, each permuted by one
    ``torch.randperm`` of a generator seeded with ``seed``: the ``stir_pairs`` chapter's
    definition. Returns an int64 tensor on the CPU.
    """
    if not isinstance(y, torch.Tensor) or y.ndim != 1 or y.is_floating_point() or y.is_complex():
        raise ValueError(f"y: expected a 1-D tensor of integer class labels, got "
                         f"{type(y).__name__}{' ' + str(tuple(y.shape)) + ' ' + str(y.dtype) if isinstance(y, torch.Tensor) else ''}; "
                         f"pass torch.as_tensor(labels)")
    y = y.cpu()
    g = torch.Generator().manual_seed(seed)
    perm = torch.arange(len(y))
    for c in torch.unique(y):                       # a random permutation inside each class
        idx = torch.nonzero(y == c).flatten()
        perm[idx] = idx[torch.randperm(len(idx), generator=g)]
    return perm


def reinitialised(model: nn.Module, seed: int = 0) -> nn.Module:
    """A copy of ``model`` with fresh initial weights: ``copy.deepcopy``, then
    ``reset_parameters()`` on every module that has one (in ``modules()`` order).

    The draws use torch's global generator seeded with ``seed`` inside
    ``torch.random.fork_rng``, so the caller's random state is left as it was; they are made
    on the CPU, so a seed gives the same weights on every device, and the copy keeps each
    tensor's device. Parameters of modules without ``reset_parameters`` would keep their
    trained values: a warning names them (a ValueError if that is all of them). ``model``
    itself is not changed.
    """
    _check_model(model)
    check_int(seed, "seed", minimum=0)
    work = copy.deepcopy(model).cpu()
    covered: set[int] = set()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for m in work.modules():
            reset = getattr(m, "reset_parameters", None)
            if callable(reset):
                reset()
                covered.update(id(p) for p in m.parameters(recurse=False))
    names = [n for n, p in work.named_parameters()]
    kept = [n for n, p in work.named_parameters() if id(p) not in covered]
    if names and len(kept) == len(names):
        raise ValueError(f"model: expected modules with reset_parameters() (nn.Linear, "
                         f"nn.Conv2d, ...), got none among {type(model).__name__}'s; "
                         f"re-initialise it yourself and pass the copy as the partner")
    if kept:
        warnings.warn(f"reinitialised: {len(kept)} parameter(s) belong to modules without "
                      f"reset_parameters() and keep their trained values: {kept[:10]}",
                      stacklevel=2)
    on_cpu = all(t.device.type == "cpu" for t in (*model.parameters(), *model.buffers()))
    if on_cpu:
        return work
    out = copy.deepcopy(model)                      # the model's devices, the new values
    out.load_state_dict(work.state_dict())
    return out


@dataclass(frozen=True, eq=False)
class Baselines:
    """Output of :func:`stir_baselines`: the scores and, from the same IRIs, their baselines.

    Attributes:
        result: the :class:`~stir_lib.stir.STIRResult` itself (as :func:`~stir_lib.stir.stir`
            returns it for the same arguments).
        random_m2_given_m1: STIR(m2~ | m1): m2 re-initialised (seed ``init_seed``) scores
            m1's IRIs. None unless "random" was asked for.
        random_m1_given_m2: STIR(m1~ | m2), likewise.
        permuted_m2_given_m1: m2 scores m1's IRIs paired with other images of the same
            class (``permutation``). None unless "permutation" was asked for.
        permuted_m1_given_m2: likewise, m1 scoring m2's IRIs.
        init_seed: the seed of the re-initialisation.
        permutation_seed: the seed of the within-class permutation.
        permutation: the within-class permutation used (N,), or None.
    """
    result: STIRResult
    random_m2_given_m1: Score | None
    random_m1_given_m2: Score | None
    permuted_m2_given_m1: Score | None
    permuted_m1_given_m2: Score | None
    init_seed: int
    permutation_seed: int
    permutation: torch.Tensor | None = None

    def summary(self) -> dict:
        """Means per direction: the score, and each baseline asked for (NaN if not)."""
        out = {}
        for d in ("m2_given_m1", "m1_given_m2"):
            out[d] = getattr(self.result, d).mean
            for kind in ("random", "permuted"):
                s = getattr(self, f"{kind}_{d}")
                out[f"{kind}_{d}"] = s.mean if s is not None else float("nan")
        return out

    def __str__(self) -> str:
        lines = [str(self.result)]
        for d, label in (("m2_given_m1", "STIR(m2|m1)"), ("m1_given_m2", "STIR(m1|m2)")):
            parts = [f"{label} = {getattr(self.result, d)}"]
            for kind, what in (("random", "re-initialised partner"),
                               ("permuted", "within-class permutation")):
                s = getattr(self, f"{kind}_{d}")
                if s is not None:
                    parts.append(f"{what} {s}")
            lines.append("; ".join(parts))
        return "\n".join(lines)


def _labelled(X: Iterable):
    """X's batches, refused at the first one without labels (before any inversion)."""
    for k, item in enumerate(X):
        if not (isinstance(item, (tuple, list)) and len(item) > 1
                and isinstance(item[1], torch.Tensor)):
            raise ValueError(f"y: the permutation baseline needs class labels, got batch {k} "
                             f"without them ({type(item).__name__}); pass y=labels, let X "
                             f"yield (x, y) batches, or baselines=('random',)")
        yield item


def stir_baselines(m1: nn.Module, m2: nn.Module, X: torch.Tensor | Iterable[Any],
                   y: torch.Tensor | None = None, *, baselines: Sequence[str] = BASELINES,
                   init_seed: int = 0, permutation_seed: int = 0, **options: Any) -> Baselines:
    """STIR of m1 and m2 with baselines beside it (see the module docstring).

    Args:
        m1, m2, X: as in :func:`~stir_lib.stir.stir` (X a tensor or batches).
        y: class labels of X (N,), for "permutation"; None takes them from X's batches
            when they are ``(x, y, ...)``.
        baselines: which: "random" (a re-initialised partner, :func:`reinitialised`) and/or
            "permutation" (:func:`within_class_permutation`). Both cost no inversion:
            "random" two more models' representations, "permutation" keeps the
            representations ((N, D) per model and seed).
        init_seed: seeds the re-initialisation (both partners).
        permutation_seed: seeds the within-class permutation.
        **options: any keyword option of :func:`~stir_lib.stir.stir` (``layer1``,
            ``seeds``, ``steps``, ``use_cache``, ``bootstrap``, ...), with its default.

    Returns:
        :class:`Baselines`.
    """
    sig = inspect.signature(stir).parameters
    allowed = [n for n, p in sig.items() if p.kind is p.KEYWORD_ONLY]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise TypeError(f"stir_baselines: expected options of stir() among {allowed}, got "
                        f"{unknown}")
    opts = {n: sig[n].default for n in allowed} | options
    if isinstance(baselines, str) or not set(baselines) <= set(BASELINES) or not baselines:
        raise ValueError(f"baselines: expected a non-empty sequence of {list(BASELINES)}, got "
                         f"{baselines!r}")
    check_int(init_seed, "init_seed", minimum=0)
    check_int(permutation_seed, "permutation_seed", minimum=0)
    permute = "permutation" in baselines
    if permute and y is None:
        if isinstance(X, torch.Tensor):
            raise ValueError("y: the permutation baseline needs class labels of X, got None; "
                             "pass y=labels or baselines=('random',)")
        X = _labelled(X)
    if permute and y is not None:
        within_class_permutation(y, permutation_seed)          # checks y before any work
        if isinstance(X, torch.Tensor) and len(y) != len(X):
            raise ValueError(f"y: expected one label per image of X ({len(X)}), got {len(y)}")

    def extra(layer1, layer2):
        if "random" not in baselines:
            return {}
        return {"random_m2_given_m1": (reinitialised(m2, init_seed), layer2, 1),
                "random_m1_given_m2": (reinitialised(m1, init_seed), layer1, 2)}

    result, run = _stir(m1, m2, X, keep_rows=permute, extra=extra, **opts)
    rand = {d: Score(tuple(run.values[f"random_{d}"])) if "random" in baselines else None
            for d in ("m2_given_m1", "m1_given_m2")}
    perm = None
    permuted: dict[str, Score | None] = {"m2_given_m1": None, "m1_given_m2": None}
    if permute:
        labels = y if y is not None else run.labels
        if not isinstance(labels, torch.Tensor) or len(labels) != run.n:
            raise ValueError(f"y: expected one label per image of X ({run.n}), got "
                             f"{len(labels) if isinstance(labels, torch.Tensor) else labels!r}")
        perm = within_class_permutation(labels, permutation_seed)
        if run.rows is None:
            raise RuntimeError("stir_baselines: the pass over X kept no rows to permute")
        for d in permuted:
            rx, ris = run.rows[d]
            permuted[d] = Score(tuple(_score(opts["cka"], rx, ri[perm]) for ri in ris))
    return Baselines(result=result, random_m2_given_m1=rand["m2_given_m1"],
                     random_m1_given_m2=rand["m1_given_m2"],
                     permuted_m2_given_m1=permuted["m2_given_m1"],
                     permuted_m1_given_m2=permuted["m1_given_m2"], init_seed=init_seed,
                     permutation_seed=permutation_seed, permutation=perm)
