"""The blind-spots chapter (Szegedy et al. 2014, Tables 1-4 and section 4.2): models and attacks.

Every table is computed once per *seed*: a seed trains a fresh set of the paper's models
(other initial weights, other batch order, other attack targets where random), so the
spread of a table's summary over seeds is the noise between independently trained
models that the verdicts compare effects against.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from ..attacks import accuracy, gaussian_noise, lbfgs_min_distortion, predict, rms_distortion
from ..data import mnist, mnist_halves, subset
from ..results import choose_scale
from ..training import TrainConfig, trained_model

__all__ = ["PRESETS", "settings", "load_data", "table1_models", "half_models", "s6_models",
           "targets", "attack", "attack_pool", "cross_table", "table4", "WD_MLP"]

PRESETS = {
    # epochs of the MLPs and of the autoencoder's pre-training, training images (None: all),
    # attacked images per model, the c search's L-BFGS solves and iterations, adversarial
    # training epochs (S6), model seeds
    "smoke": dict(epochs=1, ae_epochs=1, n_train=2000, n_attack=20, search_steps=3,
                  max_iter=30, adv_epochs=1, seeds=(0, 1)),
    "ci": dict(epochs=20, ae_epochs=10, n_train=None, n_attack=200, search_steps=8,
               max_iter=100, adv_epochs=15, seeds=(0, 1, 2)),
    "paper": dict(epochs=60, ae_epochs=30, n_train=None, n_attack=10000, search_steps=10,
                  max_iter=200, adv_epochs=60, seeds=(0, 1, 2)),
}
WD_MLP = (1e-5, 1e-5, 1e-6)   # the paper's per-layer weight decay of the 100-100-10 nets


def settings(scale: str, **overrides) -> dict:
    S = choose_scale(scale, PRESETS, **overrides)
    S["seeds"] = tuple(S["seeds"])
    return S


def load_data(S) -> dict:
    """The training set, the test set and the halves P1, P2 (subsets at smoke scale)."""
    x_train, y_train = mnist("train")
    x_test, y_test = mnist("test")
    (x_p1, y_p1), (x_p2, y_p2) = mnist_halves()
    if S["n_train"]:
        x_train, y_train = subset(x_train, y_train, S["n_train"], 0)
        x_p1, y_p1 = subset(x_p1, y_p1, S["n_train"] // 2, 0)
        x_p2, y_p2 = subset(x_p2, y_p2, S["n_train"] // 2, 0)
    return dict(train=(x_train, y_train), test=(x_test, y_test), p1=(x_p1, y_p1),
                p2=(x_p2, y_p2))


def table1_models(S, D, seed: int, device=None) -> dict:
    """The six models of Table 1, trained with ``seed``."""
    base = dict(epochs=S["epochs"], seed=seed)
    specs = {
        "FC10(1e-4)": ("fc10", TrainConfig(weight_decay=1e-4, **base)),
        "FC10(1e-2)": ("fc10", TrainConfig(weight_decay=1e-2, **base)),
        "FC10(1)": ("fc10", TrainConfig(weight_decay=1.0, **base)),
        "FC100-100-10": ("fc100-100-10", TrainConfig(weight_decay=WD_MLP, **base)),
        "FC200-200-10": ("fc200-200-10", TrainConfig(weight_decay=WD_MLP, **base)),
        "AE400-10": ("ae400-10", TrainConfig(weight_decay=1e-5, autoencoder_epochs=S["ae_epochs"],
                                             **base)),
    }
    x, y = D["train"]
    return {label: trained_model(name, x, y, cfg, device=device).model
            for label, (name, cfg) in specs.items()}


def half_models(S, D, seed: int, device=None) -> dict:
    """Table 3's models: FC100-100-10 and FC123-456-10 on P1, FC100-100-10' on P2."""
    cfg = TrainConfig(weight_decay=WD_MLP, epochs=S["epochs"], seed=seed)
    return {"FC100-100-10 (P1)": trained_model("fc100-100-10", *D["p1"], cfg, device=device).model,
            "FC123-456-10 (P1)": trained_model("fc123-456-10", *D["p1"], cfg, device=device).model,
            "FC100-100-10' (P2)": trained_model("fc100-100-10", *D["p2"], cfg, device=device).model}


def s6_models(S, D, seed: int, device=None) -> dict:
    """S6: FC100-100-10 with weight decay only, and with half of each batch L2-PGD
    adversarial (radius 1.5, 5 steps, regenerated at every step), same epochs."""
    adv = TrainConfig(weight_decay=WD_MLP, epochs=S["adv_epochs"], seed=seed, loss="pgd-mix",
                      adv_norm="l2", adv_eps=1.5, adv_steps=5)
    std = TrainConfig(weight_decay=WD_MLP, epochs=S["adv_epochs"], seed=seed)
    x, y = D["train"]
    return {"weight decay only": trained_model("fc100-100-10", x, y, std, device=device).model,
            "half adversarial batches": trained_model("fc100-100-10", x, y, adv,
                                                      device=device).model}


def targets(model, x, rule: str = "runner-up", seed: int = 0) -> torch.Tensor:
    """Runner-up class (largest wrong logit), or a uniformly random wrong label."""
    with torch.no_grad():
        logits = model(x)
    if rule == "runner-up":
        logits[torch.arange(len(x)), logits.argmax(1)] = -torch.inf
        return logits.argmax(1)
    g = torch.Generator().manual_seed(seed)
    shift = torch.randint(1, logits.shape[1], (len(x),), generator=g)
    return (logits.argmax(1) + shift) % logits.shape[1]


def attack(S, model, x, loss: str = "margin", rule: str = "runner-up", seed: int = 0):
    """Minimum-distortion L-BFGS adversarial examples; (images, success)."""
    result = lbfgs_min_distortion(model, x, targets(model, x, rule, seed), loss=loss,
                                  search_steps=S["search_steps"], max_iter=S["max_iter"])
    return result.images, result.success


def attack_pool(S, models: dict, x_pool, y_pool, rule: str = "runner-up", seed: int = 0) -> dict:
    """For each model: its first ``n_attack`` correctly classified images of the pool and
    their adversarial examples (so the distortion measures what it takes to change a
    correct answer)."""
    out = {}
    for label, model in models.items():
        ok = predict(model, x_pool) == y_pool
        xa, ya = x_pool[ok][: S["n_attack"]], y_pool[ok][: S["n_attack"]]
        x_adv, success = attack(S, model, xa, rule=rule, seed=seed)
        out[label] = dict(x=xa, y=ya, x_adv=x_adv, success=success,
                          dist=rms_distortion(xa, x_adv))
    return out


def error(model, x, y) -> float:
    return 100.0 * (1.0 - accuracy(model, x, y))


def cross_table(models: dict, adversarial: dict, noise_base: str, seed: int) -> pd.DataFrame:
    """Table 2: % of the row's adversarial examples misclassified by the column's model,
    the rows' mean distortion, and Gaussian-noise rows (std 0.1, 0.3) on the clean images
    of ``noise_base``'s attack set, plus a row of the columns' error on those clean images."""
    labels = list(models)
    cross = pd.DataFrame(index=labels, columns=labels + ["distortion"], dtype=float)
    for made_for in labels:
        a = adversarial[made_for]
        for fed in labels:
            cross.loc[made_for, fed] = error(models[fed], a["x_adv"], a["y"])
        cross.loc[made_for, "distortion"] = float(a["dist"].mean())
    base = adversarial[noise_base]
    for std in (0.1, 0.3):
        noisy = gaussian_noise(base["x"], std, seed=seed)
        cross.loc[f"Gaussian noise, std {std}"] = [error(models[f], noisy, base["y"]) for f in labels] \
            + [float(rms_distortion(base["x"], noisy).mean())]
    cross.loc["clean (same images)"] = [error(models[f], base["x"], base["y"]) for f in labels] + [0.0]
    return cross


def table4(halves: dict, adv: dict, seed: int) -> tuple[pd.DataFrame, dict]:
    """Table 4: native-distortion rows, noise rows (std 0.06, 0.1), the clean images, the
    sets magnified to RMS 0.1, and scaled by the paper's factor 0.1/0.06; the realised RMS
    distortion of each row in column "RMS". Returns (table, row groups)."""
    hl = list(halves)
    t = pd.DataFrame(columns=hl + ["RMS"], dtype=float)
    groups = {"native": [], "noise": [], "magnified": [], "scaled": [], "clean": []}

    def put(group, label, x_new, y, x_ref):
        t.loc[label] = [error(halves[f], x_new, y) for f in hl] + \
            [float(rms_distortion(x_ref, x_new).mean())]
        groups[group].append(label)

    for made_for in hl:
        a = adv[made_for]
        put("native", f"made for {made_for}", a["x_adv"], a["y"], a["x"])
    base_x, base_y = adv[hl[0]]["x"], adv[hl[0]]["y"]
    for std in (0.06, 0.1):
        put("noise", f"Gaussian noise, std {std}", gaussian_noise(base_x, std, seed=seed), base_y,
            base_x)
    put("clean", "clean (same images)", base_x, base_y, base_x)
    for kind, factor in (("magnified", None), ("scaled", 0.1 / 0.06)):
        for made_for in hl:
            a = adv[made_for]
            delta = a["x_adv"] - a["x"]
            rms = rms_distortion(a["x"], a["x_adv"]).clamp_min(1e-12).view(-1, 1, 1, 1)
            x_new = (a["x"] + delta * ((0.1 / rms) if factor is None else factor)).clamp(0, 1)
            put(kind, f"{made_for} set " + ("magnified to RMS 0.1" if factor is None else
                                            "x 0.1/0.06"), x_new, a["y"], a["x"])
    return t, groups


DISJOINT = [(0, 2), (1, 2), (2, 0), (2, 1)]   # (made for, fed) pairs on disjoint halves


def disjoint_excess(t: pd.DataFrame, groups: dict, kind: str = "magnified") -> float:
    """Median over the P1 <-> P2 cells of ``kind`` rows minus the fed model's error under
    noise of std 0.1: the S4 quantity (points)."""
    hl = [c for c in t.columns if c != "RMS"]
    rows = t.loc[groups[kind], hl].to_numpy()
    noise = t.loc[groups["noise"][1], hl].to_numpy()    # std 0.1
    return float(np.median([rows[r, c] - noise[c] for r, c in DISJOINT]))
