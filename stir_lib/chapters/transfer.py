"""The transfer chapter (Salman et al. 2020): sources, downstream tasks, the plan, the
paper's numbers and the claim rules R1-R5.

At ``ci`` scale (all offline):

* **sources**: MLPs trained on Fashion-MNIST {xiao2017fashion} classes 0-4 (T-shirt,
  trouser, pullover, dress, coat: 30,000 images), with L2 PGD adversarial training at a
  grid of radii eps (eps 0: standard), three widths (hidden layers of 128, 256 and 512
  units: R5 and the fixed-eps half of R4), three seeds each. Robust training costs these
  sources clean accuracy, as it costs the paper's ImageNet models.
* **tasks**: ``fashion-near`` (Fashion-MNIST classes 5-9: sandal, shirt, sneaker, bag,
  ankle boot: the source's domain, classes it never saw), ``mnist-far`` (MNIST digits: a
  different domain), ``mnist-few`` (MNIST with 10 labels per class: low data); each tested
  on every test image of its classes (5,000 or 10,000). Coarse copies (downscaled to
  ``coarse`` pixels and back) for R3.

At ``paper`` scale the sources are the paper's released ImageNet checkpoints and the
tasks its downstream sets (``checkpoints`` and ``data_root`` parameters).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType

import pandas as pd

from ..jobs import Checkpoint, Data, TaskSpec, Train, Transfer
from ..scales import choose_scale
from ..training import TrainConfig
from ..verdicts import (Estimate, RuleRecord, Verdict, combine, majority_rule, not_tested,
                        rule_records, sign_rule)
from ..transfer import PAPER_HPARAMS

__all__ = ["RULES", "PRESETS", "settings", "sources", "tasks", "transfer_jobs",
           "labelled_transfer_jobs", "plan", "WIDTHS", "SALMAN_TOP1", "SALMAN_EPS_L2",
           "SALMAN_R1", "SALMAN_BEST", "salman_r1_effect", "SOURCES", "r1_robust_transfer",
           "r2_best_eps_differs", "r3_granularity", "r4_source_accuracy", "r5_width",
           "source_data", "source_test", "source_job"]

WIDTHS = {"narrow": (128, 128), "mid": (256, 256), "wide": (512, 512)}
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
    # every width; seeds: source seeds (each also seeds its transfers); source_epochs:
    # (standard, adversarial); short_epochs: the same for mid-width sources trained briefly
    # at the width_eps radii, so that sources of one eps differ in accuracy (R4; None: none); adv_steps: PGD steps in training; eval_*: the robustness
    # test (L2 PGD on n_eval source test images); tasks: name -> TaskSpec arguments;
    # coarse: side of the R3 copies; ff / ft: fixed-feature and fine-tuning
    # hyper-parameters (every lr tried, chosen on validation).
    "smoke": dict(
        source="trained", eps=(0.0, 1.0, 3.0), width_eps=(0.0, 1.0), widths=("narrow", "mid"),
        seeds=(0, 1), n_source=600, source_epochs=(1, 1), short_epochs=None, adv_steps=1,
        eval_eps=1.0,
        eval_steps=3, n_eval=200,
        tasks={"fashion-near": dict(dataset="fashion-mnist", classes=(5, 6, 7, 8, 9),
                                    n_train=200, n_val=100),
               "mnist-far": dict(dataset="mnist", n_train=200, n_val=100)},
        coarse=12, coarse_tasks=("fashion-near",),
        ff=dict(lrs=(0.1, 0.01), epochs=2, batch_size=128, lr_step=None),
        ft=dict(lrs=(0.01,), epochs=1, batch_size=128, lr_step=None)),
    "ci": dict(
        source="trained", eps=(0.0, 0.5, 1.0, 2.0, 3.0), width_eps=(0.0, 2.0),
        widths=("narrow", "mid", "wide"), seeds=(0, 1, 2), n_source=None,
        source_epochs=(20, 10), short_epochs=(2, 1), adv_steps=3, eval_eps=2.0, eval_steps=10, n_eval=2000,
        tasks={"fashion-near": dict(dataset="fashion-mnist", classes=(5, 6, 7, 8, 9),
                                    n_train=6000, n_val=2000, tests=_NEAR),
               "mnist-far": dict(dataset="mnist", n_train=6000, n_val=2000, tests=_FAR),
               "mnist-few": dict(dataset="mnist", per_class=10, n_val=1000, tests=_FEW)},
        coarse=12, coarse_tasks=("fashion-near", "mnist-far"),
        ff=dict(lrs=(0.1, 0.01), epochs=20, batch_size=256, lr_step=10),
        ft=dict(lrs=(0.01, 0.001), epochs=8, batch_size=128, lr_step=None)),
    # The paper's setting: one released checkpoint per eps (one seed), its hyper-parameters
    # and augmentation (random resized crops and flips) for both modes, at least one
    # high-resolution set (pets) so that R2 and R3 can show;
    # R3 downscales every set to 32x32 (only sets larger than 32x32 are tested).
    "paper": dict(
        source="checkpoints", eps=None, width_eps=None, widths=("resnet50",), seeds=(0,),
        short_epochs=None,
        tasks={"cifar10": dict(dataset="cifar10"), "cifar100": dict(dataset="cifar100"),
               "pets": dict(dataset="pets")},
        image_size=224, coarse=32, coarse_tasks=("pets",),
        ff=dict(_PAPER_HP, augment=True), ft=dict(_PAPER_HP, augment=True)),
}


def settings(scale: str, **overrides) -> dict:
    S = choose_scale(scale, PRESETS, **overrides)
    S["seeds"] = tuple(S["seeds"])
    S["widths"] = tuple(S["widths"])
    return S


def source_data(S) -> Data:
    return Data("fashion-mnist", "train", n=S.get("n_source"), seed=0, classes=_SOURCE_CLASSES)


def source_test(S) -> Data:
    return Data("fashion-mnist", "test", classes=_SOURCE_CLASSES)


def source_job(S, width: str, eps: float, seed: int) -> Train:
    """One source: an MLP of ``width`` ("mid-short": mid width, ``short_epochs``)."""
    ce_epochs, at_epochs = S["short_epochs"] if width == "mid-short" else S["source_epochs"]
    adv = dict(loss="pgd-at", adv_norm="l2", adv_eps=eps, adv_steps=S["adv_steps"]) if eps else {}
    cfg = TrainConfig(seed=seed, epochs=at_epochs if eps else ce_epochs, **_ADAM, **adv)
    hidden = WIDTHS["mid" if width == "mid-short" else width]
    kwargs = (("activation", "relu"), ("hidden", hidden), ("num_classes", 5))
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
    for width in S["widths"] + (("mid-short",) if S["short_epochs"] else ()):
        grid = S["eps"] if width == "mid" else S["width_eps"]
        for eps in grid:
            for seed in S["seeds"]:
                out[(width, float(eps), seed)] = source_job(S, width, float(eps), seed)
    return out


def tasks(S, data_root=None, verify: bool = True) -> dict[str, TaskSpec]:
    """name -> TaskSpec (full resolution) and name@coarse -> its coarse copy."""
    out = {}
    for name, kw in S["tasks"].items():
        extra = dict(size=S.get("image_size", 224), root=data_root, verify=verify)
        spec = TaskSpec(name, **kw, **extra) if S["source"] == "checkpoints" else TaskSpec(name, **kw)
        out[name] = spec
        if name in S["coarse_tasks"]:
            from dataclasses import replace
            out[f"{name}@{S['coarse']}px"] = replace(spec, coarse=S["coarse"])
    return out


def _hp(d: dict) -> tuple:
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in d.items()))


def labelled_transfer_jobs(S, srcs: dict, task_specs: dict) -> list[tuple[tuple, str, Transfer]]:
    """Fixed-feature and fine-tuning for every source and full-resolution task; the coarse
    copies fixed-feature only (the paper's granularity experiment), mid width only. Each job
    with its source's label ``(width, eps, seed)`` and its task's name."""
    jobs = []
    for label, src in srcs.items():
        width, _, seed = label
        for name, spec in task_specs.items():
            coarse = spec.coarse is not None
            if coarse and S["source"] == "trained" and width != "mid":
                continue
            modes = ("fixed-feature",) if coarse else ("fixed-feature", "fine-tune")
            for mode in modes:
                hp = S["ff"] if mode == "fixed-feature" else S["ft"]
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
               "2026-12-01"),
    RuleRecord('R2', 'the best eps depends on the downstream set',
               "2026-12-01"),
    RuleRecord('R3', "downscaling every downstream set to 32x32 makes the best eps larger, like CIFAR's",
               "2026-12-01"),
    RuleRecord('R4', 'at fixed eps, better source accuracy still means better transfer; across eps the linear relation between source accuracy and transfer accuracy breaks',
               "2026-12-01"),
    RuleRecord('R5', 'the gains grow with network width',
               "2026-12-01"),
)


# ----------------------------------------------------------------------------- claim rules
def r1_robust_transfer(gains: Mapping[str, Estimate]) -> Verdict:
    """R1: robust sources transfer better than standard ones on most downstream sets.

    Quantity per task (one mode): test accuracy from the source at the best eps > 0
    (chosen on validation) minus from the eps-0 source, paired by seed (points). Paper:
    robust better on most of 12 sets (ResNet-50 fixed-feature CIFAR-10 +17.0 points).
    :func:`majority_rule` over the tasks.
    """
    return majority_rule(gains, what="best robust - standard test accuracy")


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


def r3_granularity(shifts: Mapping[str, Estimate], untestable: Sequence[str] = ()) -> Verdict:
    """R3: downscaling a downstream set makes its best eps larger.

    Quantity per task whose coarse copy differs from it: the best eps (per seed, on
    validation) of the coarse copy minus that of the full-resolution task. Tasks whose
    images the downscale does not change are left out (their copy is the same task).
    :func:`majority_rule`; no testable task: not tested.
    """
    if not shifts:
        return not_tested("no task whose images the downscale changes" +
                          (f" ({', '.join(untestable)} unchanged)" if untestable else ""))
    return majority_rule(shifts, what="best eps coarse - full")


def r4_source_accuracy(fixed_eps: Estimate | None, across_eps: Estimate | None) -> Verdict:
    """R4: at fixed eps, better source accuracy means better transfer; across eps the
    linear relation between source and transfer accuracy breaks.

    (a) ``fixed_eps``: Spearman correlation between source accuracy and transfer accuracy
    across sources of the same eps (widths), per seed, averaged over tasks; positive beyond
    noise. (b) ``across_eps``: the same across eps (one width); the relation breaks when it
    is negative beyond noise (robust sources less accurate but transferring better). Each
    by :func:`sign_rule`; None where the sources' accuracies do not differ (premise
    absent: not tested).
    """
    parts = {}
    parts["fixed eps"] = (not_tested("sources of one eps do not differ in accuracy")
                          if fixed_eps is None else
                          sign_rule(fixed_eps, what="Spearman, fixed eps", sign=+1))
    parts["across eps"] = (not_tested("source accuracy does not change with eps")
                           if across_eps is None else
                           sign_rule(across_eps, what="Spearman, across eps", sign=-1))
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
