"""The transfer chapter (Salman et al. 2020): sources, downstream tasks, the plan, the
paper's numbers, the quantities the chapter computes from its transfers and the claim rules
R1-R5.

At ``ci`` scale (all offline):

* **sources**: MLPs trained on Fashion-MNIST {xiao2017fashion} classes 0-4 (30,000
  images), with L2 PGD adversarial training at a grid of radii eps (eps 0: standard), three
  widths (hidden layers of 128, 256 and 512 units: R5) and for R4 a fourth (32 units), so
  that sources of one eps differ in accuracy by capacity; three seeds each. Robust
  training costs them clean accuracy, as it costs the paper's ImageNet models.
* **tasks**: ``fashion-near`` (Fashion-MNIST classes 5-9: the source's domain, classes it
  never saw), ``mnist-far`` (MNIST digits), ``mnist-few`` (MNIST, 10 labels per class);
  each tested on every test image of its classes. Coarse copies (downscaled to ``coarse``
  pixels and back) of every task for R3.
* **heads**: a budget in optimiser steps (``ff`` / ``ft`` ``steps``), the same for every
  task whatever its size (:func:`head_hparams` turns it into epochs of that task).

At ``paper`` scale the sources are the paper's released ImageNet checkpoints and the
tasks its downstream sets (``checkpoints`` and ``data_root`` parameters), transferred with
the paper's own epochs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from types import MappingProxyType

import numpy as np
import pandas as pd

from ..jobs import Checkpoint, Data, TaskSpec, Train, Transfer
from ..scales import choose_scale
from ..training import TrainConfig
from ..verdicts import (Estimate, RuleRecord, Verdict, combine, majority_rule, not_tested,
                        rule_records, sign_rule, spearman)
from ..transfer import PAPER_HPARAMS
from .rounds import PREVIOUS_BUILD as _PREVIOUS_BUILD, ROUND as _ROUND

__all__ = ["RULES", "PRESETS", "settings", "sources", "tasks", "transfer_jobs",
           "labelled_transfer_jobs", "plan", "WIDTHS", "SALMAN_TOP1", "SALMAN_EPS_L2",
           "SALMAN_R1", "SALMAN_BEST", "salman_r1_effect", "SOURCES", "r1_robust_transfer",
           "r2_best_eps_differs", "r3_granularity", "r4_source_accuracy", "r5_width",
           "source_data", "source_test", "source_job", "head_hparams", "n_train_of",
           "curves", "loso_best_eps", "loso_gains", "granularity_contrast",
           "room_above", "accuracy_spread", "spearman_within_eps", "spearman_across_eps",
           "FIXED_EPS_SPREAD", "ACROSS_EPS_SPREAD", "head_curve"]

# hidden layers of each width; tiny, narrow and wide step by a factor of 4
WIDTHS = {"tiny": (32, 32), "narrow": (128, 128), "mid": (256, 256), "wide": (512, 512)}
_MAIN = "mid"   # the width trained at every eps of the grid (R1-R4)
_SOURCE_CLASSES = (0, 1, 2, 3, 4)
_ADAM = dict(optimizer="adam", lr=2e-3, batch_size=256, lr_schedule="cosine")
_NEAR = "near domain: Fashion-MNIST's other five classes (sandal, shirt, sneaker, bag, boot)"
_FAR = "far domain: handwritten digits, never seen by the source"
_FEW = "low data: handwritten digits, 10 labelled images per class"

# the paper's transfer hyper-parameters (stir_lib.transfer.PAPER_HPARAMS) as overrides; the
# seed is each transfer's own
_PAPER_HP = {k: v for k, v in PAPER_HPARAMS.as_dict().items() if k != "seed"}

PRESETS = {
    # eps: the radii of the mid-width sources (0: standard); width_eps: the radii trained at
    # every width; widths: the widths of R5 (narrowest and widest compared); r4_widths:
    # further widths trained at width_eps for R4 only (fixed-feature); seeds: source seeds
    # (each also seeds its transfers); source_epochs: (standard, adversarial); adv_steps:
    # PGD steps in training; eval_*: the robustness test (L2 PGD on n_eval source test
    # images); tasks: name -> TaskSpec arguments; coarse: side (pixels) of the R3 copies;
    # ff / ft: fixed-feature and fine-tuning hyper-parameters (every lr tried, chosen on
    # validation); ``steps``: the head's budget in optimiser steps whatever the task's size,
    # ``decay_at``: the fraction of the budget after which the rate is divided by 10 once
    # (None: constant); see head_hparams.
    "smoke": dict(
        source="trained", eps=(0.0, 1.0, 3.0), width_eps=(0.0, 1.0), widths=("narrow", "mid"),
        r4_widths=(), seeds=(0, 1), n_source=600, source_epochs=(1, 1), adv_steps=1,
        eval_eps=1.0, eval_steps=3, n_eval=200,
        tasks={"fashion-near": dict(dataset="fashion-mnist", classes=(5, 6, 7, 8, 9),
                                    n_train=200, n_val=100),
               "mnist-far": dict(dataset="mnist", n_train=200, n_val=100)},
        coarse=7, coarse_tasks=("fashion-near",),
        ff=dict(lrs=(0.1, 0.01), steps=4, batch_size=128, decay_at=None),
        ft=dict(lrs=(0.01,), steps=2, batch_size=128, decay_at=None)),
    "ci": dict(
        source="trained", eps=(0.0, 0.5, 1.0, 2.0, 3.0), width_eps=(0.0, 2.0),
        widths=("narrow", "mid", "wide"), r4_widths=("tiny",), seeds=(0, 1, 2), n_source=None,
        source_epochs=(20, 10), adv_steps=3, eval_eps=2.0, eval_steps=10, n_eval=2000,
        tasks={"fashion-near": dict(dataset="fashion-mnist", classes=(5, 6, 7, 8, 9),
                                    n_train=6000, n_val=2000, tests=_NEAR),
               "mnist-far": dict(dataset="mnist", n_train=6000, n_val=2000, tests=_FAR),
               "mnist-few": dict(dataset="mnist", per_class=10, n_val=1000, tests=_FEW)},
        # 28 -> 7 pixels: each coarse pixel averages a 4 x 4 block (the paper: sets read at
        # 224 downscaled to 32, a factor of 7)
        coarse=7, coarse_tasks=("fashion-near", "mnist-far", "mnist-few"),
        # 480 / 350 steps: 20 / 8 epochs of the 6,000-image tasks, as many steps for mnist-few
        ff=dict(lrs=(0.1, 0.01), steps=480, batch_size=256, decay_at=0.5),
        ft=dict(lrs=(0.01, 0.001), steps=350, batch_size=128, decay_at=None)),
    # The paper's setting: one released checkpoint per eps (one seed), its hyper-parameters
    # (epochs, not steps) and augmentation (random resized crops and flips) for both modes,
    # at least one high-resolution set (pets) so that R2 and R3 can show;
    # R3 downscales every set to 32x32 (only sets larger than 32x32 are tested).
    "paper": dict(
        source="checkpoints", eps=None, width_eps=None, widths=("resnet50",), r4_widths=(),
        seeds=(0,),
        tasks={"cifar10": dict(dataset="cifar10"), "cifar100": dict(dataset="cifar100"),
               "pets": dict(dataset="pets")},
        image_size=224, coarse=32, coarse_tasks=("pets",),
        ff=dict(_PAPER_HP, augment=True), ft=dict(_PAPER_HP, augment=True)),
}


def settings(scale: str, **overrides) -> dict:
    S = choose_scale(scale, PRESETS, **overrides)
    S["seeds"] = tuple(S["seeds"])
    S["widths"] = tuple(S["widths"])
    S["r4_widths"] = tuple(S.get("r4_widths") or ())
    return S


def source_data(S) -> Data:
    return Data("fashion-mnist", "train", n=S.get("n_source"), seed=0, classes=_SOURCE_CLASSES)


def source_test(S) -> Data:
    return Data("fashion-mnist", "test", classes=_SOURCE_CLASSES)


def source_job(S, width: str, eps: float, seed: int) -> Train:
    """One source: an MLP of ``width`` (a key of :data:`WIDTHS`) trained at L2 radius ``eps``."""
    if width not in WIDTHS:
        raise ValueError(f"width: expected one of {sorted(WIDTHS)}, got {width!r}")
    ce_epochs, at_epochs = S["source_epochs"]
    adv = dict(loss="pgd-at", adv_norm="l2", adv_eps=eps, adv_steps=S["adv_steps"]) if eps else {}
    cfg = TrainConfig(seed=seed, epochs=at_epochs if eps else ce_epochs, **_ADAM, **adv)
    kwargs = (("activation", "relu"), ("hidden", WIDTHS[width]), ("num_classes", 5))
    return Train("mlp", cfg, source_data(S), kwargs, label=f"{width} eps {eps:g} seed {seed}")


def sources(S, checkpoints=None, arch: str = "resnet50") -> dict:
    """(width, eps, seed) -> source job (ci: Train; paper: Checkpoint)."""
    if S["source"] == "checkpoints":
        if not checkpoints:
            raise ValueError("scale 'paper' needs checkpoints={eps: path, ...}: the robustness-"
                             "library ImageNet checkpoints of Salman et al., one file per eps")
        return {(arch, float(e), 0): Checkpoint(str(p), arch, S["image_size"], label=f"eps {e}")
                for e, p in sorted(((float(e), p) for e, p in checkpoints.items()))}
    out = {}
    for width in S["widths"] + tuple(w for w in S["r4_widths"] if w not in S["widths"]):
        grid = S["eps"] if width == _MAIN else S["width_eps"]
        for eps in grid:
            for seed in S["seeds"]:
                out[(width, float(eps), seed)] = source_job(S, width, float(eps), seed)
    return out


def tasks(S, data_root=None, verify: bool = True) -> dict[str, TaskSpec]:
    """name -> TaskSpec (full resolution) and name@coarse -> its coarse copy."""
    out = {}
    unknown = sorted(set(S["coarse_tasks"]) - set(S["tasks"]))
    if unknown:
        raise ValueError(f"coarse_tasks: expected names among the tasks {sorted(S['tasks'])}, "
                         f"got {unknown}")
    for name, kw in S["tasks"].items():
        extra = dict(size=S.get("image_size", 224), root=data_root, verify=verify)
        spec = TaskSpec(name, **kw, **extra) if S["source"] == "checkpoints" else TaskSpec(name, **kw)
        out[name] = spec
        if name in S["coarse_tasks"]:
            out[f"{name}@{S['coarse']}px"] = replace(spec, coarse=S["coarse"])
    return out


def n_train_of(spec: TaskSpec) -> int:
    """Training images of a task: ``n_train``, or ``per_class`` x classes, or built."""
    if spec.n_train is not None:
        return int(spec.n_train)
    if spec.per_class is not None:
        return int(spec.per_class) * len(spec.classes or range(10))
    return len(spec.build().x_train)


def head_hparams(hp: Mapping, n_train: int) -> dict:
    """Transfer hyper-parameters for a training split of ``n_train`` images.

    A budget in optimiser steps (``steps``, with ``batch_size``) becomes the epochs that
    reach it: ``ceil(steps / ceil(n_train / batch_size))`` (a head on 100 images gets as many
    updates as one on 6,000, each a full batch). ``decay_at`` in [0.5, 1) divides the rate
    by 10 once, after that fraction of the epochs (``lr_step = ceil(epochs * decay_at)``);
    None keeps it constant. Without ``steps`` (the paper's epochs) ``hp`` is returned as is.
    """
    hp = dict(hp)
    if "steps" not in hp:
        if "decay_at" in hp:
            raise ValueError(f"decay_at: expected only with a budget in steps, got {hp}")
        return hp
    steps, decay = hp.pop("steps"), hp.pop("decay_at", None)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps: expected a positive int (optimiser steps), got {steps!r}")
    if "epochs" in hp or "lr_step" in hp:
        raise ValueError("a head budget is either steps (with decay_at) or epochs (with "
                         f"lr_step), got both: {sorted(hp)}; drop epochs/lr_step")
    if isinstance(n_train, bool) or not isinstance(n_train, (int, np.integer)) or n_train < 1:
        raise ValueError(f"n_train: expected a positive number of training images, got {n_train!r}")
    if decay is not None and not 0.5 <= decay < 1:
        raise ValueError(f"decay_at: expected a fraction in [0.5, 1) (one division of the rate) "
                         f"or None, got {decay!r}")
    epochs = math.ceil(steps / math.ceil(n_train / hp.get("batch_size", 64)))
    lr_step = None if decay is None else math.ceil(epochs * decay)
    # one epoch (or a decay at the end): nothing after it
    return dict(hp, epochs=epochs, lr_step=None if lr_step is None or lr_step >= epochs else lr_step)


def _hp(d: dict) -> tuple:
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in d.items()))


def _main(S, width) -> bool:
    """The sources every mode and the coarse copies see: mid width (ci), every checkpoint."""
    return S["source"] == "checkpoints" or width == _MAIN


def labelled_transfer_jobs(S, srcs: dict, task_specs: dict) -> list[tuple[tuple, str, Transfer]]:
    """Every transfer the chapter reads, with its source's label ``(width, eps, seed)`` and
    its task's name: mid-width sources (every checkpoint at paper scale) fixed-feature and
    fine-tuning on the full-resolution tasks and fixed-feature on the coarse copies (the
    paper's granularity experiment); the other widths fixed-feature on the full-resolution
    tasks (R4, R5)."""
    jobs = []
    for label, src in srcs.items():
        width, _, seed = label
        for name, spec in task_specs.items():
            coarse = spec.coarse is not None
            if not _main(S, width) and coarse:
                continue
            modes = ("fixed-feature",) if coarse or not _main(S, width) else \
                ("fixed-feature", "fine-tune")
            for mode in modes:
                hp = head_hparams(S["ff"] if mode == "fixed-feature" else S["ft"],
                                  n_train_of(spec))
                jobs.append((label, name, Transfer(src, spec, mode, _hp(hp), seed)))
    return jobs


def transfer_jobs(S, srcs: dict, task_specs: dict) -> list[Transfer]:
    """The jobs of :func:`labelled_transfer_jobs`, without their labels (for the plan)."""
    return [job for _, _, job in labelled_transfer_jobs(S, srcs, task_specs)]


def plan(scale: str = "ci", notebooks=("transfer",), checkpoints=None, arch: str = "resnet50",
         data_root=None, **overrides) -> list:
    """Every cache entry the transfer chapter needs: the sources and every transfer."""
    S = settings(scale, **overrides)
    srcs = sources(S, checkpoints, arch)
    jobs = [s for s in srcs.values() if isinstance(s, Train)]
    return jobs + transfer_jobs(S, srcs, tasks(S, data_root))

# ----------------------------------------------------------------------------- the paper's numbers
# Salman, Ilyas, Engstrom, Kapoor & Madry (2020), NeurIPS. Checked against
# book/paper_targets.md by tests/test_paper_values.py.
#: ResNet-50 ImageNet top-1 % by L2 eps (section 2 / appendix tables).
SALMAN_TOP1 = MappingProxyType({0.0: 75.80, 0.5: 73.16, 1.0: 70.43, 3.0: 62.83, 5.0: 56.13})
SALMAN_EPS_L2 = (0.0, 0.01, 0.03, 0.05, 0.1, 0.25, 0.5, 1.0, 3.0, 5.0)

#: R1's headline: ResNet-50 fixed-feature transfer accuracy %, eps 0 vs eps 3.
SALMAN_R1 = MappingProxyType({
    "cifar10": {"eps0": 76.5, "robust": (93.5, 94.8), "robust_eps": 3.0},
    "cifar100": {"eps0": 54.2, "robust": (77.2,), "robust_eps": 3.0},
})

#: Best transfer accuracy % per set for ResNet-50 and its eps, from the public code's table
#: of best parameters (not the paper's own tables): (full fine-tuning, eps), (fixed, eps).
SALMAN_BEST = pd.DataFrame(
    [["cifar10", 98.27, 3, 94.81, 3], ["cifar100", 87.45, 3, 79.50, 3],
     ["caltech101", 94.61, 0.03, 91.07, 1], ["caltech256", 84.63, 0.05, 82.51, 0.05],
     ["aircraft", 86.14, 0.01, 42.15, 1], ["birdsnap", 73.71, 0.25, 49.25, 0.1],
     ["stanford_cars", 91.49, 0, 47.38, 0.5], ["dtd", 75.53, 0.01, 70.59, 0.01],
     ["flowers", 96.98, 0.01, 91.46, 0.1], ["food", 87.71, 0, 66.03, 0.05],
     ["pets", 93.71, 0.05, 91.32, 0.03], ["sun397", 62.38, 0, 54.88, 0.01]],
    columns=["task", "full acc.", "full eps", "fixed acc.", "fixed eps"]).set_index("task")


def salman_r1_effect() -> float:
    """The paper's R1 effect for fixed-feature transfer, in points: the smaller of the two
    CIFAR gains (eps 3 minus eps 0) of ResNet-50 (CIFAR-10 93.5 - 76.5 = 17.0)."""
    return float(min(min(v["robust"]) - v["eps0"] for v in SALMAN_R1.values()))


#: Where each claim's paper value is.
SOURCES = MappingProxyType({
    "R1": "Salman et al. 2020, section 4 (fixed-feature and fine-tuning results; CIFAR "
          "numbers of ResNet-50)",
    "R2": "Salman et al. 2020, section 4 (best eps per downstream set)",
    "R3": "Salman et al. 2020, granularity experiment (figure only)",
    "R4": "Salman et al. 2020, section 5 (source accuracy vs transfer accuracy)",
    "R5": "Salman et al. 2020, width experiment (figure only)",
})

#: Each claim rule's record: the claim's words it tests, when it last changed.
RULES = rule_records(
    RuleRecord('R1', 'robust source models beat standard ones on most downstream sets, in fixed-feature transfer clearly and in full fine-tuning too',
               _ROUND, previous="partly", previous_build=_PREVIOUS_BUILD,
               why="The claim compares sources through heads trained to the end of a fixed "
                   "schedule, at the eps that suits each set: a budget in epochs gave the "
                   "low-data set's heads a few updates only, and choosing eps on the same "
                   "seeds whose test accuracy is then read inflates the gain (winner's curse); "
                   "the heads now get a budget in optimiser steps and eps is chosen on the "
                   "other seeds."),
    RuleRecord('R2', 'the best eps depends on the downstream set', "2026-12-01"),
    RuleRecord('R3', "downscaling every downstream set to 32x32 makes the best eps larger, like CIFAR's",
               _ROUND, previous="not reproduced", previous_build=_PREVIOUS_BUILD,
               why="The claim is that robustness pays more, up to a larger eps, once the images "
                   "lose their fine detail; a per-seed argmax on a five-point grid cannot show "
                   "a shift smaller than a grid step, and 28 to 12 pixels removes little detail. "
                   "The rule now judges the accuracy gained by a larger eps on the coarse copy "
                   "minus on the full task (paired by seed) after a downscale by 4, on the tasks "
                   "whose best eps leaves room above it."),
    RuleRecord('R4', 'at fixed eps, better source accuracy still means better transfer; across eps the linear relation between source accuracy and transfer accuracy breaks',
               _ROUND, previous="partly", previous_build=_PREVIOUS_BUILD,
               why="The claim's first half is about sources of one eps that differ in quality "
                   "(the paper: architectures), not about sources stopped early; its second "
                   "half says the relation breaks across eps, i.e. is weaker than at fixed eps, "
                   "not that it reverses. The rule now takes sources of four widths, each "
                   "trained to convergence, and judges the break as the within-eps minus the "
                   "across-eps correlation, paired by seed."),
    RuleRecord('R5', 'the gains grow with network width', "2026-12-01"),
)


# ----------------------------------------------------------------------------- the quantities
# the notebook's transfers: one row each (accuracies in %)
_RES_COLUMNS = ("task", "mode", "width", "eps", "seed", "val", "test")

#: R4's premises: the least spread (points, between the seed-mean source accuracies) for
#: sources of one eps to count as differing in accuracy, and across eps.
FIXED_EPS_SPREAD = 1.0
ACROSS_EPS_SPREAD = 2.0


def curves(res: pd.DataFrame, task: str, mode: str, width: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(validation, test) accuracy of one task, mode and source width: two tables with one
    row per eps (ascending) and one column per seed (ascending).

    ``res``: one row per transfer with the columns task, mode, width, eps, seed, val, test.
    Every (eps, seed) of the grid must appear exactly once.
    """
    missing = [c for c in _RES_COLUMNS if c not in res.columns]
    if missing:
        raise ValueError(f"res: expected the columns {list(_RES_COLUMNS)}, missing {missing}")
    d = res[(res["task"] == task) & (res["mode"] == mode) & (res["width"] == width)]
    if d.empty:
        have = sorted(set(zip(res["task"], res["mode"], res["width"])))
        raise ValueError(f"no transfer of task {task!r}, mode {mode!r}, width {width!r}; "
                         f"expected one of {have}")
    if d.duplicated(["eps", "seed"]).any():
        raise ValueError(f"{task} {mode} {width}: expected one transfer per (eps, seed), got duplicates")
    out = tuple(d.pivot(index="eps", columns="seed", values=v).sort_index().sort_index(axis=1)
                for v in ("val", "test"))
    if out[0].isna().any().any():
        raise ValueError(f"{task} {mode} {width}: expected every seed at every eps, got gaps:\n"
                         f"{out[0]}")
    return out


def _check_table(t: pd.DataFrame, name: str, like: pd.DataFrame | None = None) -> None:
    if not isinstance(t, pd.DataFrame) or t.empty:
        raise ValueError(f"{name}: expected a non-empty table (rows eps, columns seed), got "
                         f"{type(t).__name__}")
    if like is not None and (list(t.index) != list(like.index) or list(t.columns) != list(like.columns)):
        raise ValueError(f"{name}: expected the same eps (rows) and seeds (columns) as the other "
                         f"table, {list(like.index)} x {list(like.columns)}; got {list(t.index)} x "
                         f"{list(t.columns)}")


def loso_best_eps(val: pd.DataFrame, robust_only: bool = True) -> dict:
    """Leave-one-seed-out choice of eps: seed -> the eps (> 0 if ``robust_only``) with the
    best mean validation accuracy over the *other* seeds (ties: the smaller eps).

    ``val``: rows eps, columns seed (:func:`curves`). So the seed whose test accuracy is
    read never took part in choosing its eps (no winner's curse). With one seed there are no
    others: its own validation chooses (and the noise between seeds is not measured).
    """
    _check_table(val, "val")
    cand = val[val.index > 0] if robust_only else val
    if cand.empty:
        raise ValueError(f"val: expected some eps > 0 to choose from, got {list(val.index)}")
    cand = cand.sort_index()
    out = {}
    for s in val.columns:
        others = [c for c in val.columns if c != s] or [s]
        out[s] = float(cand[others].mean(axis=1).idxmax())
    return out


def loso_gains(val: pd.DataFrame, test: pd.DataFrame) -> pd.Series:
    """R1's quantity per seed: test accuracy at the leave-one-seed-out best robust eps
    (:func:`loso_best_eps`) minus test accuracy at eps 0, for the same seed (points)."""
    _check_table(test, "test", like=val)
    if 0.0 not in test.index:
        raise ValueError(f"test: expected a row for eps 0 (the standard source), got "
                         f"{list(test.index)}")
    best = loso_best_eps(val)
    return pd.Series({s: float(test.loc[best[s], s] - test.loc[0.0, s]) for s in test.columns},
                     name="gain")


def granularity_contrast(full: pd.DataFrame, coarse: pd.DataFrame) -> pd.Series:
    """R3's quantity per seed (points): the accuracy gained by a larger eps on the coarse
    copy minus the same on the full-resolution task, averaged over every pair of the grid.

    With ``d(eps) = coarse(eps) - full(eps)`` (test accuracy, same seed), the mean over all
    pairs lo < hi of ``(coarse(hi) - coarse(lo)) - (full(hi) - full(lo)) = d(hi) - d(lo)``.
    Positive: moving to a larger eps helps the coarse copy more (or hurts it less) than the
    full task, so its accuracy-vs-eps curve leans to larger eps. Tables: rows eps, columns
    seed, the same grid (:func:`curves`).
    """
    _check_table(full, "full")
    _check_table(coarse, "coarse", like=full)
    if len(full) < 2:
        raise ValueError(f"expected at least two eps to compare, got {list(full.index)}")
    d = (coarse.sort_index() - full.sort_index()).to_numpy()   # (K eps, seeds)
    k = len(d)
    weights = 2 * np.arange(k) - (k - 1)    # sum_{i<j} (d_j - d_i) = sum_k (2k - K + 1) d_k
    return pd.Series(weights @ d / (k * (k - 1) / 2), index=full.columns, name="contrast")


def room_above(val: pd.DataFrame) -> bool:
    """Whether the grid can show a larger best eps: the eps with the best mean validation
    accuracy over seeds (ties: the smaller) is below the grid's largest."""
    _check_table(val, "val")
    m = val.sort_index().mean(axis=1)
    return float(m.idxmax()) < float(m.index.max())


def accuracy_spread(acc: pd.Series, widths: Sequence[str], eps: float) -> float:
    """R4's premise at one eps: the range (points) of the seed-mean source accuracy across
    ``widths``. ``acc``: source accuracy indexed by (width, eps, seed)."""
    means = [acc.xs((w, eps), level=("width", "eps")).mean() for w in widths]
    return float(np.ptp(means))


def _check_r4(acc: pd.Series, transfer: pd.Series) -> None:
    for s, levels, name in ((acc, ("width", "eps", "seed"), "acc"),
                            (transfer, ("task", "width", "eps", "seed"), "transfer")):
        if not isinstance(s, pd.Series) or tuple(s.index.names) != levels:
            raise ValueError(f"{name}: expected a Series indexed by {levels}, got "
                             f"{getattr(s.index, 'names', type(s).__name__)}")


def spearman_within_eps(acc: pd.Series, transfer: pd.Series, widths: Sequence[str],
                        eps: Sequence[float], tasks: Sequence[str], seeds: Sequence) -> np.ndarray:
    """R4 (a) per seed: Spearman's correlation between source accuracy and transfer accuracy
    across the sources of one eps (``widths``), averaged over ``eps`` and ``tasks``.

    ``acc``: source accuracy by (width, eps, seed); ``transfer``: test accuracy by (task,
    width, eps, seed). Returns one value per seed, in the order of ``seeds``.
    """
    _check_r4(acc, transfer)
    if len(widths) < 2 or not eps or not tasks:
        raise ValueError(f"expected at least two widths, one eps and one task, got {widths}, "
                         f"{eps}, {tasks}")
    return np.array([np.mean([spearman([acc[(w, e, s)] for w in widths],
                                       [transfer[(t, w, e, s)] for w in widths])
                              for t in tasks for e in eps]) for s in seeds])


def spearman_across_eps(acc: pd.Series, transfer: pd.Series, width: str, eps: Sequence[float],
                        tasks: Sequence[str], seeds: Sequence) -> np.ndarray:
    """R4 (b) per seed: the same correlation across the sources of one ``width`` at every
    ``eps`` of the grid, averaged over ``tasks``."""
    _check_r4(acc, transfer)
    if len(eps) < 3 or not tasks:
        raise ValueError(f"expected at least three eps and one task, got {eps}, {tasks}")
    return np.array([np.mean([spearman([acc[(width, e, s)] for e in eps],
                                       [transfer[(t, width, e, s)] for e in eps])
                              for t in tasks]) for s in seeds])


def head_curve(model, task, mode: str, hp: Mapping, budgets: Sequence[int], seed: int) -> pd.DataFrame:
    """Whether a head's budget suffices: validation accuracy (%, at the best learning rate of
    ``hp``: the preset's ``ff`` or ``ft``) of a head trained for each number of optimiser
    steps in ``budgets``, one row each. Not cached; the task's test split is replaced by its
    validation split, so the curve never reads test."""
    from ..transfer import fine_tune, fixed_feature

    fn = {"fixed-feature": fixed_feature, "fine-tune": fine_tune}
    if mode not in fn:
        raise ValueError(f"mode: expected one of {sorted(fn)}, got {mode!r}")
    if "steps" not in hp:
        raise ValueError(f"hp: expected a budget in steps (the ci and smoke presets), got {dict(hp)}")
    peek = replace(task, x_test=task.x_val, y_test=task.y_val)   # test never read
    rows = []
    for b in budgets:
        h = head_hparams(dict(hp, steps=int(b)), len(task.x_train))
        r = fn[mode](model, peek, use_cache=False, progress=False, seed=seed, **h)
        rows.append({"steps": int(b), "epochs": h["epochs"], "val": 100 * max(r.val_acc.values())})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- claim rules
def r1_robust_transfer(gains: Mapping[str, Estimate]) -> Verdict:
    """R1 (one mode): robust sources transfer better than standard ones on most downstream
    sets.

    Quantity per task: :func:`loso_gains`, i.e. per seed the test accuracy at the best
    robust eps chosen on the *other* seeds' validation accuracy minus test accuracy at eps 0
    (points), with heads trained for a budget of optimiser steps. Paper: robust better on
    most of 12 sets (ResNet-50 fixed-feature CIFAR-10 +17.0 points); no size is required.
    :func:`majority_rule`: *reproduced* when more than half the tasks gain beyond seed noise
    (95 % interval above 0) and none loses beyond noise; *partly* when some task gains and
    more gain than lose; *not reproduced* otherwise; *not tested* with one seed. The claim
    (both modes) is :func:`stir_lib.verdicts.combine` of the two modes.
    """
    return majority_rule(gains, what="robust (eps chosen on other seeds) - standard test accuracy")


def r2_best_eps_differs(losses: Mapping[str, Estimate], best: Mapping[str, float]) -> Verdict:
    """R2: the best eps depends on the downstream set.

    ``best``: each task's best eps (validation); ``losses``: for each ordered pair of tasks
    (A, B) whose best eps differ, A's test accuracy at its own best eps minus at B's,
    paired by seed. *Reproduced*: some task loses beyond noise at another's best eps;
    *partly*: the best eps differ but no loss is beyond noise; *not reproduced*: one best
    eps for every task.
    """
    if len(set(best.values())) < 2:
        return Verdict("not reproduced", "every task has the same best eps "
                                         f"({next(iter(best.values())):g})")
    beyond = [k for k, v in losses.items() if v.beyond_noise(+1)]
    where = "best eps " + ", ".join(f"{t} {e:g}" for t, e in best.items())
    if beyond:
        return Verdict("reproduced", f"{where}; loss at another task's best eps beyond noise "
                                     f"for {', '.join(beyond)}")
    return Verdict("partly", f"{where}; no loss at another task's best eps is beyond noise")


def r3_granularity(contrasts: Mapping[str, Estimate], untestable: Sequence[str] = ()) -> Verdict:
    """R3: downscaling a downstream set makes its best eps larger.

    Quantity per task: :func:`granularity_contrast`, per seed the accuracy gained by moving
    to a larger eps on the coarse copy minus the same on the full-resolution task, averaged
    over every pair of radii of the grid (test accuracy, points, fixed-feature; no eps is
    chosen). Paper: the best eps grows towards CIFAR's once every set is downscaled to 32x32
    (a figure, no number): positive. Tasks whose images the downscale does not change, or
    whose best eps (validation) is already the grid's largest so that no larger best eps
    could show, are left out (``untestable``). :func:`majority_rule` over the tasks
    (*reproduced*: more than half positive beyond seed noise and none negative beyond noise;
    *partly*: some positive and more positive than negative; *not reproduced* otherwise);
    no testable task: *not tested*.
    """
    if not contrasts:
        return not_tested("no task that the downscale changes and whose best eps leaves room "
                          "above it" + (f" ({', '.join(untestable)} left out)" if untestable else ""))
    return majority_rule(contrasts, what="gain from a larger eps, coarse - full")


def r4_source_accuracy(within: Estimate | None, breaks: Estimate | None) -> Verdict:
    """R4: at fixed eps, better source accuracy means better transfer; across eps the
    linear relation between source and transfer accuracy breaks.

    (a) ``within``: per seed, Spearman's correlation between source accuracy and
    fixed-feature transfer accuracy across the sources of one eps (four widths, each trained
    to convergence), averaged over the tasks and the eps whose sources differ in accuracy by
    at least :data:`FIXED_EPS_SPREAD` points (:func:`spearman_within_eps`); the paper:
    positive (figure, no number). *Reproduced* when positive beyond seed noise.
    (b) ``breaks``: per seed, that within-eps correlation minus the same correlation across
    the eps of the grid at one width (:func:`spearman_across_eps`), paired by seed; the
    paper: the relation breaks across eps, i.e. is weaker than within (it need not reverse).
    *Reproduced* when positive beyond seed noise. Each part by :func:`sign_rule`, the claim
    by :func:`combine` (*reproduced* only when both are; *partly* when one is, or one is and
    the other was not tested). None: the premise is absent (no eps whose sources differ by
    :data:`FIXED_EPS_SPREAD` points for (a) and (b); source accuracy varying by less than
    :data:`ACROSS_EPS_SPREAD` points across eps for (b)): not tested.
    """
    parts = {}
    parts["fixed eps"] = (not_tested(f"sources of one eps do not differ in accuracy by "
                                     f"{FIXED_EPS_SPREAD:g} points")
                          if within is None else
                          sign_rule(within, what="Spearman within eps", sign=+1))
    parts["breaks across eps"] = (
        not_tested("no within-eps correlation, or source accuracy does not change with eps")
        if breaks is None else
        sign_rule(breaks, what="Spearman within eps - across eps", sign=+1))
    out = combine(parts)
    return Verdict(out.verdict, "; ".join(f"{k}: {v.reason}" for k, v in parts.items()))


def r5_width(gain_growth: Mapping[str, Estimate] | None) -> Verdict:
    """R5: the gains from robustness grow with network width.

    Quantity per task: (robust - standard transfer accuracy) of the widest source minus
    that of the narrowest, paired by seed. :func:`majority_rule`; one width: not tested.
    """
    if not gain_growth:
        return not_tested("sources of one width only")
    return majority_rule(gain_growth, what="robust gain, widest - narrowest")
