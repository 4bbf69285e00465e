"""The transfer chapter (Salman et al. 2020): sources, downstream tasks, and the plan.

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

from ..jobs import Data, Train
from ..results import choose_scale
from ..training import TrainConfig
from ..transfer import PAPER_HPARAMS, Checkpoint, TaskSpec, Transfer

__all__ = ["PRESETS", "settings", "sources", "tasks", "transfer_jobs", "plan", "WIDTHS"]

WIDTHS = {"narrow": (128, 128), "mid": (256, 256), "wide": (512, 512)}
_SOURCE_CLASSES = (0, 1, 2, 3, 4)
_ADAM = dict(optimizer="adam", lr=2e-3, batch_size=256, lr_schedule="cosine")
_NEAR = "near domain: Fashion-MNIST's other five classes (sandal, shirt, sneaker, bag, boot)"
_FAR = "far domain: handwritten digits, never seen by the source"
_FEW = "low data: handwritten digits, 10 labelled images per class"

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
        ff=dict(PAPER_HPARAMS, augment=True), ft=dict(PAPER_HPARAMS, augment=True)),
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


def transfer_jobs(S, srcs: dict, task_specs: dict) -> list[Transfer]:
    """Fixed-feature and fine-tuning for every source and full-resolution task; the coarse
    copies fixed-feature only (the paper's granularity experiment), mid width only."""
    jobs = []
    for (width, eps, seed), src in srcs.items():
        for name, spec in task_specs.items():
            coarse = spec.coarse is not None
            if coarse and S["source"] == "trained" and width != "mid":
                continue
            modes = ("fixed-feature",) if coarse else ("fixed-feature", "fine-tune")
            for mode in modes:
                hp = S["ff"] if mode == "fixed-feature" else S["ft"]
                jobs.append(Transfer(src, spec, mode, _hp(hp), seed))
    return jobs


def plan(scale: str = "ci", notebooks=("transfer",), checkpoints=None, arch: str = "resnet50",
         data_root=None, **overrides) -> list:
    """Every cache entry the transfer chapter needs: the sources and every transfer."""
    S = settings(scale, **overrides)
    srcs = sources(S, checkpoints, arch)
    jobs = [s for s in srcs.values() if isinstance(s, Train)]
    return jobs + transfer_jobs(S, srcs, tasks(S, data_root))
