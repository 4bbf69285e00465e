"""The units-vs-random-directions chapter (Szegedy et al. 2014, section 3, claim S1): its
presets, data, networks, the paper's source and the claim rule.

The conv net trained here (:func:`convnet_config`) is also the Lipschitz chapter's, so the
two chapters share its cache entries by construction, not by equal settings.
"""

from __future__ import annotations

from types import MappingProxyType

import torch

from ..data import mnist, subset
from ..models import resolve_device
from ..scales import choose_scale
from ..training import TrainConfig, trained_model
from .rounds import PREVIOUS_BUILD, ROUND
from ..verdicts import Estimate, RuleRecord, Verdict, equivalence_rule, not_tested, rule_records

__all__ = ["RULES", "PRESETS", "settings", "convnet_config", "load_data", "networks", "model_jobs",
           "SOURCES",
           "s1_units_vs_random", "JUDGE_SEED_OFFSET", "top_images", "label_purity"]

PRESETS = {
    # training images (None: all) and epochs of the conv nets, held-out images (None: the
    # test set), random directions, bootstrap resamples, independently trained networks
    # whose units are scored
    "smoke": dict(n_train=2000, epochs=1, n_held_out=1000, n_random=40, n_boot=200, n_nets=2),
    "ci": dict(n_train=None, epochs=2, n_held_out=None, n_random=128, n_boot=2000, n_nets=3),
    "paper": dict(n_train=None, epochs=10, n_held_out=None, n_random=1000, n_boot=10000,
                  n_nets=5),
}
JUDGE_SEED_OFFSET = 100   # the independent judge network's seed: seed + 100


def settings(scale: str, **overrides) -> dict:
    """The scale's settings with the notebook's ``overrides`` applied."""
    return choose_scale(scale, PRESETS, **overrides)


def convnet_config(epochs: int, seed: int) -> TrainConfig:
    """The conv net's recipe (Adam, lr 1e-3, batches of 128: the library's defaults)."""
    return TrainConfig(epochs=epochs, seed=seed)


def load_data(S, seed: int) -> dict:
    """MNIST's training set and the held-out set (subsets where the scale asks for them)."""
    x_train, y_train = mnist("train")
    x_test, y_test = mnist("test")
    if S["n_train"]:
        x_train, y_train = subset(x_train, y_train, S["n_train"], seed)
    if S["n_held_out"]:
        x_test, y_test = subset(x_test, y_test, S["n_held_out"], seed)
    return dict(train=(x_train, y_train), test=(x_test, y_test))


def networks(S, D, seed: int, device=None) -> tuple[list, object]:
    """The ``n_nets`` scored conv nets (seeds ``seed``, ``seed + 1``, ...) and the judge
    (seed ``seed + 100``), trained or loaded, on ``device``."""
    dev = resolve_device(device)
    x, y = D["train"]
    nets = [trained_model("convnet", x, y, convnet_config(S["epochs"], seed + i), device=dev).model
            for i in range(S["n_nets"])]
    judge = trained_model("convnet", x, y, convnet_config(S["epochs"], seed + JUDGE_SEED_OFFSET),
                          device=dev).model
    return nets, judge


def model_jobs(scale: str, seed: int = 0, **overrides) -> list:
    """The conv nets the notebook trains at ``scale`` from its ``seed`` (:func:`networks`:
    the scored nets and the judge), as :class:`~stir_lib.jobs.Train` jobs for the cost
    model to count; the training set is described by its size (see
    :func:`stir_lib.chapters.blind_spots.model_jobs`)."""
    from ..jobs import Data, Train

    S = settings(scale, **overrides)
    data = Data("mnist", "train", n=S["n_train"], seed=seed)
    return [Train("convnet", convnet_config(S["epochs"], s), data, label=f"convnet seed {s}")
            for s in (*(seed + i for i in range(S["n_nets"])), seed + JUDGE_SEED_OFFSET)]


def top_images(phi, directions, k: int):
    """(directions, k) indices of the held-out images with the largest <phi(x), v> for each
    direction v (a row of ``directions``), best first; ``phi`` is (N, D)."""
    if phi.ndim != 2 or directions.ndim != 2 or directions.shape[1] != phi.shape[1]:
        raise ValueError(f"expected phi (N, D) and directions (M, D), got {tuple(phi.shape)} "
                         f"and {tuple(directions.shape)}")
    return (phi @ directions.T).topk(k, dim=0).indices.T


def label_purity(labels, idx):
    """Per row of ``idx`` (image indices), the fraction of its images that carry the most
    common label among them (1: all share a label)."""
    return torch.stack([torch.bincount(labels[row]).max() for row in idx]).float() / idx.shape[1]


# ----------------------------------------------------------------------------- the paper
#: Where each claim's paper value is.
SOURCES = MappingProxyType({
    "S1": "Szegedy et al. 2014, section 3, Figures 1-2 (no number)",
})

#: Each claim rule's record: the claim's words it tests, when it last changed.
RULES = rule_records(
    RuleRecord('S1', 'the held-out images that maximise … (a single unit) and <phi(x), v> (a random direction) look equally semantically coherent: the natural basis is no better than a random basis',
               ROUND, previous='reproduced', previous_build=PREVIOUS_BUILD,
               why="An equivalence is evidence only if the test could have seen a difference: the paper's claim is that units are no more coherent than random directions, which says something only where the measure can tell coherent directions from less coherent ones. The rule now requires a positive control (the output layer, whose units are classes) detected beyond the margin, else 'not tested'."),
)


# ----------------------------------------------------------------------------- claim rule
def s1_units_vs_random(purity_difference: Estimate, control: Estimate,
                       margin: float = 0.1) -> Verdict:
    """S1: units are no more semantically coherent than random directions.

    Quantity: mean label purity of the top-k held-out images along each unit minus along
    each random direction of the searched layer, one value per independently trained
    network (seed). The paper reports no number ("equally coherent", Figures 1-2), i.e. a
    difference of 0. Equivalence margin ±0.1 of purity (a tenth of its scale, visible by
    eye): reproduced when the 95 % interval over seeds lies inside it (see
    :func:`equivalence_rule`).

    Positive control (rule of 2026-12-06): an equivalence is evidence only where the test
    could have seen a difference. ``control`` is the same difference on the same networks
    at their output layer, whose units are the classes by construction while its random
    directions mix classes. Only when the control's interval lies wholly above the margin
    (the measure detects a real difference of the margin's size) is the equivalence
    judged; otherwise the verdict is "not tested" (the measure cannot tell).
    """
    if margin <= 0:
        raise ValueError(f"margin: expected > 0, got {margin}")
    what = "purity difference, units - random directions"
    ctrl = (f"control (output layer) {control.mean:+.3f}, 95% CI [{control.low:+.3f}, "
            f"{control.high:+.3f}] (n={control.n})")
    if not (control.measured and control.low > margin):
        return not_tested(f"{ctrl}: not wholly above the margin ±{margin:g}, so the measure "
                          f"is not shown to detect a difference of that size")
    out = equivalence_rule(purity_difference, margin, what=what)
    return Verdict(out.verdict, f"{out.reason}; {ctrl}: detected beyond the margin")
