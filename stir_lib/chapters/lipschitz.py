"""The Lipschitz chapter (Szegedy et al. 2014, section 4.3 and Table 5, claim S7): its
presets, networks, the runner-up attack it probes with, the paper's Table 5 and the claim
rules.

Its networks are the other chapters' own: the conv net of the units chapter
(:func:`stir_lib.chapters.units.convnet_config`) and the sigmoid MLPs of the blind-spots
chapter (:func:`stir_lib.chapters.blind_spots.mlp_config`), so they share cache entries by
construction.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import MappingProxyType

import numpy as np
import pandas as pd
import torch

from ..data import mnist, subset
from ..models import resolve_device
from ..scales import choose_scale
from ..training import TrainConfig, trained_model
from .rounds import PREVIOUS_BUILD, ROUND
from ..verdicts import Estimate, RuleRecord, Verdict, not_tested, rule_records, sign_rule
from .blind_spots import mlp_config, targeted_attack
from .units import convnet_config

__all__ = ["RULES", "PRESETS", "settings", "load_data", "networks", "convnet", "runner_up_attack",
           "model_jobs", "attack_jobs",
           "SZEGEDY_T5", "SOURCES", "s7_first_layer", "s7_alexnet", "stages", "gain_ratios"]

PRESETS = {
    # training images (None: all), conv-net epochs, MLP epochs, adversarial-training images
    # and epochs, probed test images, power iterations, the attack's c search and L-BFGS
    # iterations
    "smoke": dict(n_train=2000, epochs=1, mlp_epochs=1, n_adv_train=1000, adv_epochs=1,
                  n_probe=16, power_iters=10, search_steps=3, max_iter=30),
    "ci": dict(n_train=None, epochs=2, mlp_epochs=20, n_adv_train=10000, adv_epochs=2,
               n_probe=100, power_iters=30, search_steps=6, max_iter=100),
    "paper": dict(n_train=None, epochs=10, mlp_epochs=60, n_adv_train=None, adv_epochs=10,
                  n_probe=1000, power_iters=50, search_steps=10, max_iter=200),
}


def settings(scale: str, **overrides) -> dict:
    """The scale's settings with the notebook's ``overrides`` applied."""
    return choose_scale(scale, PRESETS, **overrides)


def load_data(S, seed: int) -> dict:
    """MNIST's training set (a subset where the scale asks), the adversarial-training
    share of it, and the test set."""
    x_train, y_train = mnist("train")
    x_test, y_test = mnist("test")
    if S["n_train"]:
        x_train, y_train = subset(x_train, y_train, S["n_train"], seed)
    x_adv, y_adv = subset(x_train, y_train, S["n_adv_train"], seed)
    return dict(train=(x_train, y_train), adv_train=(x_adv, y_adv), test=(x_test, y_test))


def convnet(S, D, seed: int, device=None):
    """The units chapter's conv net with ``seed``, trained or loaded."""
    return trained_model("convnet", *D["train"], convnet_config(S["epochs"], seed),
                         device=resolve_device(device)).model


def _adversarial_config(S, seed: int) -> TrainConfig:
    """The adversarially trained conv net's recipe: L2 PGD, radius 1.5, 3 steps."""
    return TrainConfig(epochs=S["adv_epochs"], seed=seed, loss="pgd-at", adv_norm="l2",
                       adv_eps=1.5, adv_steps=3)


def networks(S, D, seed: int, device=None) -> dict:
    """The four networks of the chapter: the conv net, the same adversarially trained (L2
    PGD, radius 1.5, 3 steps), and the blind-spots chapter's FC100-100-10 and FC200-200-10."""
    dev = resolve_device(device)
    adv = _adversarial_config(S, seed)
    return {
        "convnet": convnet(S, D, seed, dev),
        "convnet, adversarially trained": trained_model("convnet", *D["adv_train"], adv,
                                                        device=dev).model,
        "FC100-100-10": trained_model("fc100-100-10", *D["train"],
                                      mlp_config(S["mlp_epochs"], seed), device=dev).model,
        "FC200-200-10": trained_model("fc200-200-10", *D["train"],
                                      mlp_config(S["mlp_epochs"], seed), device=dev).model,
    }


def model_jobs(scale: str, seed: int = 0, **overrides) -> list:
    """The models the notebook uses at ``scale`` from its ``seed``, as
    :class:`~stir_lib.jobs.Train` jobs for the cost model to count: :func:`networks` and the
    conv nets of seeds ``seed + 1`` and ``seed + 2`` (S7's first-layer test). Several are
    the units and blind-spots chapters' models (the same configuration and data: one cache
    entry); the training sets are described by their sizes (see
    :func:`stir_lib.chapters.blind_spots.model_jobs`)."""
    from ..jobs import Data, Train

    S = settings(scale, **overrides)
    train = Data("mnist", "train", n=S["n_train"], seed=seed)
    adv_train = Data("mnist", "train", n=S["n_adv_train"], seed=seed)
    adv = _adversarial_config(S, seed)
    return [*(Train("convnet", convnet_config(S["epochs"], s), train, label=f"convnet seed {s}")
              for s in (seed, seed + 1, seed + 2)),
            Train("convnet", adv, adv_train, label="convnet, adversarially trained"),
            Train("fc100-100-10", mlp_config(S["mlp_epochs"], seed), train),
            Train("fc200-200-10", mlp_config(S["mlp_epochs"], seed), train)]


def attack_jobs(scale: str, seed: int = 0, **overrides) -> list:
    """The notebook's L-BFGS attacks at ``scale`` (:func:`runner_up_attack` on ``n_probe``
    test images): on the four :func:`networks` and on the conv nets of seeds ``seed + 1``
    and ``seed + 2``, as :class:`~stir_lib.jobs.cost.Attack` descriptions to count."""
    from ..jobs.cost import Attack

    S = settings(scale, **overrides)
    return [Attack(j, S["n_probe"], S["search_steps"], S["max_iter"], label=j.label or j.arch)
            for j in model_jobs(scale, seed, **overrides)]     # each model is attacked once


def stages(model) -> list[tuple[str, object]]:
    """The model's stages in order (its body's children, then the head, which receives the
    last stage's output flattened)."""
    return list(model.body.named_children()) + [("head", model.head)]


def gain_ratios(model, x, x_adv, draws: int = 8, seed: int = 0) -> pd.DataFrame:
    """How much more each stage amplifies the adversarial perturbation than random ones.

    For stage k with input h (from the clean image) and h + delta (from the adversarial
    one), the adversarial gain is ||phi_k(h + delta) - phi_k(h)|| / ||delta||; the random
    gain the same along ``draws`` random directions u of the same norm (uniform on the
    sphere, seeded), averaged. Returns one row per (stage, image) with both gains and
    ``log ratio`` = log(adversarial / random gain). The ratio does not depend on how the
    network scales its layers (scaling phi_k by a scales both gains by a), unlike the gain
    itself. Images whose perturbation does not reach a stage (||delta|| <= 1e-9) are left
    out of that stage.
    """
    if draws < 1:
        raise ValueError(f"draws: expected >= 1, got {draws}")
    if x.shape != x_adv.shape:
        raise ValueError(f"x and x_adv: expected the same shape, got {tuple(x.shape)} and "
                         f"{tuple(x_adv.shape)}")
    g = torch.Generator().manual_seed(seed)
    rows = []
    h_clean, h_adv = x, x_adv
    with torch.no_grad():
        for name, stage in stages(model):
            if name == "head":
                h_clean, h_adv = h_clean.flatten(1), h_adv.flatten(1)
            o_clean, o_adv = stage(h_clean), stage(h_adv)
            delta = h_adv - h_clean
            norm = delta.flatten(1).norm(dim=1)
            keep = norm > 1e-9
            adv_gain = (o_adv - o_clean).flatten(1).norm(dim=1) / norm.clamp_min(1e-30)
            rand_gain = torch.zeros_like(norm)
            for _ in range(draws):
                u = torch.randn(delta.shape, generator=g)
                u = u * (norm / u.flatten(1).norm(dim=1)).view(-1, *[1] * (u.ndim - 1))
                rand_gain += (stage(h_clean + u) - o_clean).flatten(1).norm(dim=1) / norm.clamp_min(1e-30)
            rand_gain /= draws
            for i in torch.nonzero(keep).flatten().tolist():
                a, r = float(adv_gain[i]), float(rand_gain[i])
                rows.append({"stage": name, "image": i, "adversarial gain": a, "random gain": r,
                             "log ratio": float(np.log(a / r)) if a > 0 and r > 0 else float("nan")})
            h_clean, h_adv = o_clean, o_adv
    return pd.DataFrame(rows)


def runner_up_attack(S, model, x):
    """Minimum-distortion L-BFGS examples towards each image's runner-up class, at the
    scale's settings (the blind-spots chapter's attack)."""
    return targeted_attack(model, x, search_steps=S["search_steps"], max_iter=S["max_iter"],
                           progress=False)


# ----------------------------------------------------------------------------- the paper
#: Table 5 (v): AlexNet's per-layer upper bounds; layer shapes (?).
SZEGEDY_T5 = pd.DataFrame({
    "layer": ["Conv. 1", "Conv. 2", "Conv. 3", "Conv. 4", "Conv. 5", "FC1", "FC2", "FC3"],
    "shape": ["3x11x11x96 /4", "96x5x5x256", "256x3x3x384", "384x3x3x384", "384x3x3x256",
              "9216x4096", "4096x4096", "4096x1000"],
    "upper bound": [2.75, 10, 7, 7.5, 11, 3.12, 4, 4]})

#: Where each claim's paper value is.
SOURCES = MappingProxyType({
    "S7": "Szegedy et al. 2014, section 4.3 and Table 5",
})

#: Each claim rule's record: the claim's words it tests, when it last changed.
RULES = rule_records(
    RuleRecord('S7', "Instability can already start in the first layers … AlexNet's bounds",
               ROUND, previous='reproduced', previous_build=PREVIOUS_BUILD,
               why="A gain above 1 depends on how a network scales its layers (scale one up and the next down: the same function), so it could not fail for a reason the claim is about. The paper's point, that instability can start in the first layers, is now measured scale-free: the first stage's gain along the adversarial perturbation relative to random ones of its norm. And a claim whose Table 5 part was not tested is no longer 'reproduced' (combine)."),
)


# ----------------------------------------------------------------------------- claim rules
def s7_first_layer(log_ratio: Estimate) -> Verdict:
    """S7 (first layers): instability can already start in the first layer.

    Quantity (rule of 2026-12-06): the first stage's gain along the attack's adversarial
    perturbations relative to its gain along random perturbations of the same norm, as
    the mean over probed images of log(adversarial gain / random gain) (:func:`gain_ratios`),
    one value per trained conv net (seed). Above 0, the first stage already amplifies the
    directions that fool the network more than others: the instability starts there. The
    ratio is scale-free (the gain alone depends on how a network scales its layers, which
    changes nothing it computes). The paper gives no number (Conv. 1's bound 2.75 is an
    upper bound, not a measured gain): :func:`sign_rule`.
    """
    return sign_rule(log_ratio, what="first stage: log(adversarial gain / random gain)")


def s7_alexnet(ratios: Sequence[float] | None) -> Verdict:
    """S7 (Table 5): AlexNet's per-layer upper bounds.

    Quantity: our bound of each of the 8 conv/FC layers divided by the paper's (Table 5),
    for torchvision's pretrained AlexNet. *Reproduced*: every ratio in [2/3, 1.5];
    *partly*: in [1/3, 3]; else not. No weights: not tested.
    """
    if ratios is None:
        return not_tested("no AlexNet ImageNet weights in this build (nothing is downloaded)")
    r = np.asarray(list(ratios), float)
    where = f"ratios ours / paper's {', '.join(f'{v:.2f}' for v in r)}"
    if ((r >= 2 / 3) & (r <= 1.5)).all():
        return Verdict("reproduced", f"{where}: all within [2/3, 1.5]")
    if ((r >= 1 / 3) & (r <= 3)).all():
        return Verdict("partly", f"{where}: all within [1/3, 3]")
    return Verdict("not reproduced", f"{where}: some outside [1/3, 3]")
