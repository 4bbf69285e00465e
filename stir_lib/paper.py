"""The papers' own numbers, in one place, each with the table or figure it comes from.

Every value the book prints as "the paper's" is read from here, and every aggregate of
paper values (a median, a range, an effect size) is computed from these tables, never
typed. ``tests/test_paper_values.py`` checks each table against the project's copy of
PAPER_TARGETS.md (``book/paper_targets.md``), which lists them with their provenance:
(v) for numbers checked against two sources, (?) for single-source numbers.

Papers:
* Szegedy, Zaremba, Sutskever, Bruna, Erhan, Goodfellow & Fergus (2014), "Intriguing
  properties of neural networks", ICLR;
* Salman, Ilyas, Engstrom, Kapoor & Madry (2020), "Do adversarially robust ImageNet
  models transfer better?", NeurIPS;
* Nanda, Speicher, Kolling, Dickerson, Gummadi & Weller (2022), "Measuring
  representational robustness of neural networks through shared invariances", ICML.
"""

from __future__ import annotations

from types import MappingProxyType

import numpy as np
import pandas as pd

__all__ = ["SZEGEDY_T1", "SZEGEDY_T2", "SZEGEDY_T3", "SZEGEDY_T4", "SZEGEDY_T5",
           "SZEGEDY_S6", "SALMAN_TOP1", "SALMAN_R1", "SALMAN_BEST", "SALMAN_EPS_L2",
           "NANDA_N1", "NANDA_STIR", "NANDA_CKA", "SOURCES", "t2_off_diagonal", "t2_noise",
           "t4_disjoint", "nanda_blocks"]

# ----------------------------------------------------------------------------- Szegedy 2014
SZEGEDY_MODELS = ("FC10(1e-4)", "FC10(1e-2)", "FC10(1)", "FC100-100-10", "FC200-200-10",
                  "AE400-10")

#: Table 1 (v): train error %, test error %, average minimum distortion (RMS per pixel).
SZEGEDY_T1 = pd.DataFrame(
    [[6.7, 7.4, 0.062], [10.0, 9.4, 0.1], [21.2, 20.0, 0.14], [0.0, 1.64, 0.058],
     [0.0, 1.54, 0.065], [0.57, 1.9, 0.086]],
    index=pd.Index(SZEGEDY_MODELS, name="model"),
    columns=["train error %", "test error %", "av. min. distortion"])

#: Table 2: % of the row's adversarial examples misclassified by the column's model; last
#: column the rows' average distortion. Cells marked * in PAPER_TARGETS are (v), the rest (?).
SZEGEDY_T2 = pd.DataFrame(
    [[100, 11.7, 22.7, 2, 3.9, 2.7, 0.062], [87.1, 100, 35.2, 35.9, 27.3, 9.8, 0.1],
     [71.9, 76.2, 100, 48.1, 47, 34.4, 0.14], [28.9, 13.7, 21.1, 100, 6.6, 2, 0.058],
     [38.2, 14, 23.8, 20.3, 100, 2.7, 0.065], [23.4, 16, 24.8, 9.4, 6.6, 100, 0.086],
     [5.0, 10.1, 18.3, 0, 0, 0.8, 0.1], [15.6, 11.3, 22.7, 5, 4.3, 3.1, 0.3]],
    index=pd.Index(list(SZEGEDY_MODELS) + ["Gaussian noise, std 0.1", "Gaussian noise, std 0.3"],
                   name="made for"),
    columns=list(SZEGEDY_MODELS) + ["distortion"], dtype=float)

#: Table 3 (?): models on the halves P1/P2; train error %, test error %, distortion.
SZEGEDY_T3 = pd.DataFrame(
    [[0.0, 2.4, 0.062], [0.0, 2.5, 0.059], [0.0, 2.3, 0.058]],
    index=pd.Index(["FC100-100-10 (P1)", "FC123-456-10 (P1)", "FC100-100-10' (P2)"], name="model"),
    columns=["train error %", "test error %", "av. min. distortion"])

_T4_COLS = ["FC100-100-10", "FC123-456-10", "FC100-100-10'"]
#: Table 4: cross-training-set error %; columns the model fed. Row 1 and the magnified
#: FC100-100-10 row and the std-0.1 noise row are (v), the rest (?).
SZEGEDY_T4 = pd.DataFrame(
    [[100, 26.2, 5.9], [6.25, 100, 5.1], [8.2, 8.2, 100], [2.2, 2.6, 2.4],
     [100, 98, 43], [96, 100, 22], [27, 50, 100], [2.6, 2.8, 2.7]],
    index=pd.Index(["made for FC100-100-10", "made for FC123-456-10", "made for FC100-100-10'",
                    "Gaussian noise, std 0.06", "FC100-100-10 set magnified",
                    "FC123-456-10 set magnified", "FC100-100-10' set magnified",
                    "Gaussian noise, std 0.1"], name="row"),
    columns=_T4_COLS, dtype=float)

#: Table 5 (v): AlexNet's per-layer upper bounds; layer shapes (?).
SZEGEDY_T5 = pd.DataFrame({
    "layer": ["Conv. 1", "Conv. 2", "Conv. 3", "Conv. 4", "Conv. 5", "FC1", "FC2", "FC3"],
    "shape": ["3x11x11x96 /4", "96x5x5x256", "256x3x3x384", "384x3x3x384", "384x3x3x256",
              "9216x4096", "4096x4096", "4096x1000"],
    "upper bound": [2.75, 10, 7, 7.5, 11, 3.12, 4, 4]})

#: Section 4.2 (text): test error % of a 100-100-10 net.
SZEGEDY_S6 = MappingProxyType({"weight decay": 1.6, "dropout": 1.3, "adversarial (below)": 1.2})


def t2_off_diagonal() -> np.ndarray:
    """The 30 off-diagonal cells of Table 2's model block (%), row-major."""
    block = SZEGEDY_T2.loc[list(SZEGEDY_MODELS), list(SZEGEDY_MODELS)].to_numpy()
    return block[~np.eye(len(SZEGEDY_MODELS), dtype=bool)]


def t2_noise(std: float = 0.1) -> pd.Series:
    """Table 2's Gaussian-noise row (error % of each model fed), std 0.1 or 0.3."""
    return SZEGEDY_T2.loc[f"Gaussian noise, std {std:g}", list(SZEGEDY_MODELS)]


def t2_transfer_effect() -> float:
    """The paper's S3 effect: median over Table 2's off-diagonal cells of (cell - the fed
    model's error under Gaussian noise of std 0.1), in points."""
    block = SZEGEDY_T2.loc[list(SZEGEDY_MODELS), list(SZEGEDY_MODELS)].to_numpy()
    noise = t2_noise(0.1).to_numpy()
    excess = block - noise[None, :]
    return float(np.median(excess[~np.eye(len(SZEGEDY_MODELS), dtype=bool)]))


# (row, column) pairs of Table 4 between models trained on *disjoint* halves (P1 <-> P2)
_DISJOINT = [(0, 2), (1, 2), (2, 0), (2, 1)]


def t4_disjoint(magnified: bool = True) -> np.ndarray:
    """Table 4's four P1 <-> P2 cells (%), of the native rows or of the magnified rows."""
    rows = SZEGEDY_T4.to_numpy()[4:7] if magnified else SZEGEDY_T4.to_numpy()[0:3]
    return np.array([rows[r, c] for r, c in _DISJOINT])


def t4_transfer_effect(magnified: bool = True) -> float:
    """The paper's S4 effect: median over the P1 <-> P2 cells of (cell - the fed model's
    error under noise of std 0.1 (magnified rows) or 0.06 (native rows)), in points."""
    noise = SZEGEDY_T4.loc["Gaussian noise, std 0.1" if magnified else
                           "Gaussian noise, std 0.06"].to_numpy()
    cells = t4_disjoint(magnified)
    return float(np.median(cells - np.array([noise[c] for _, c in _DISJOINT])))


def noise_error_increase() -> float:
    """The paper's S5 quantity: the largest increase of a model's error under Gaussian noise
    of std 0.1 over its test error (Table 2's noise row minus Table 1), in points."""
    return float((t2_noise(0.1) - SZEGEDY_T1["test error %"]).max())


# ----------------------------------------------------------------------------- Salman 2020
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


# ----------------------------------------------------------------------------- Nanda 2022
#: The table of two CIFAR-10 ResNet18s differing only in initial weights: (mean, std).
NANDA_N1 = MappingProxyType({
    "vanilla": {"STIR(m1|m2)": (0.605, 0.013), "STIR(m2|m1)": (0.562, 0.023),
                "CKA": (0.967, 0.000)},
    "adversarial": {"STIR(m1|m2)": (0.934, 0.003), "STIR(m2|m1)": (0.939, 0.002),
                    "CKA": (0.937, 0.000)},
})

NANDA_NAMES = ["AT-r18", "AT-r34", "AT-v16", "AT-v19", "V-r18", "V-r34", "V-v16", "V-v19"]
#: STIR matrix from the poster (CIFAR-10), rows reordered to match the columns; the poster
#: does not say which of row and column is the reference (the book reads rows).
NANDA_STIR = pd.DataFrame([
    [1.00, 0.94, 0.93, 0.92, 0.51, 0.52, 0.52, 0.56],
    [0.94, 1.00, 0.93, 0.92, 0.56, 0.58, 0.55, 0.56],
    [0.85, 0.82, 1.00, 0.82, 0.39, 0.41, 0.36, 0.35],
    [0.78, 0.78, 0.84, 1.00, 0.41, 0.39, 0.35, 0.39],
    [0.38, 0.41, 0.29, 0.29, 1.00, 0.68, 0.43, 0.42],
    [0.44, 0.36, 0.28, 0.28, 0.60, 1.00, 0.43, 0.34],
    [0.38, 0.26, 0.30, 0.28, 0.41, 0.34, 1.00, 0.38],
    [0.32, 0.26, 0.21, 0.14, 0.43, 0.35, 0.41, 1.00]],
    index=pd.Index(NANDA_NAMES, name="reference (row)"),
    columns=pd.Index(NANDA_NAMES, name="scored by"))
#: CKA matrix from the poster (CIFAR-10).
NANDA_CKA = pd.DataFrame([
    [1.00, 0.94, 0.92, 0.84, 0.55, 0.56, 0.54, 0.55],
    [0.94, 1.00, 0.90, 0.84, 0.56, 0.57, 0.55, 0.55],
    [0.92, 0.90, 1.00, 0.86, 0.54, 0.55, 0.54, 0.54],
    [0.84, 0.84, 0.86, 1.00, 0.58, 0.58, 0.58, 0.61],
    [0.55, 0.56, 0.54, 0.58, 1.00, 0.95, 0.94, 0.88],
    [0.56, 0.57, 0.55, 0.58, 0.95, 1.00, 0.94, 0.89],
    [0.54, 0.55, 0.54, 0.58, 0.94, 0.94, 1.00, 0.90],
    [0.55, 0.55, 0.54, 0.61, 0.88, 0.89, 0.90, 1.00]],
    index=pd.Index(NANDA_NAMES, name="row"), columns=pd.Index(NANDA_NAMES, name="column"))


def nanda_n1_effects() -> dict:
    """The paper's N1 effects from its pair table: vanilla CKA minus vanilla STIR (mean of
    both directions) and AT STIR minus vanilla STIR (means of both directions)."""
    v, a = NANDA_N1["vanilla"], NANDA_N1["adversarial"]
    v_stir = (v["STIR(m1|m2)"][0] + v["STIR(m2|m1)"][0]) / 2
    a_stir = (a["STIR(m1|m2)"][0] + a["STIR(m2|m1)"][0]) / 2
    return {"cka_minus_stir": v["CKA"][0] - v_stir, "at_minus_vanilla": a_stir - v_stir}


def nanda_blocks(frame: pd.DataFrame | None = None) -> dict:
    """Cross-architecture entries of the poster's STIR matrix by block, and row groups.

    Returns the AT and V blocks' entries between *different* architectures, and for N3
    the mean cross-architecture entry of each block's residual rows (r18, r34) and of its
    other rows.
    """
    frame = NANDA_STIR if frame is None else frame
    out = {}
    for kind in ("AT", "V"):
        names = [n for n in frame.index if n.startswith(kind + "-")]
        cells = [(a, b, float(frame.loc[a, b])) for a in names for b in names
                 if a.split("-")[1] != b.split("-")[1]]
        out[kind] = np.array([v for _, _, v in cells])
        res = [v for a, _, v in cells if a.split("-")[1].startswith("r")]
        other = [v for a, _, v in cells if not a.split("-")[1].startswith("r")]
        out[f"{kind} residual rows"] = float(np.mean(res))
        out[f"{kind} other rows"] = float(np.mean(other))
    return out


SOURCES = MappingProxyType({
    "S1": "Szegedy et al. 2014, section 3, Figures 1-2 (no number)",
    "S2": "Szegedy et al. 2014, Table 1",
    "S3": "Szegedy et al. 2014, Table 2",
    "S4": "Szegedy et al. 2014, Table 4",
    "S5": "Szegedy et al. 2014, Tables 2 and 4 (noise rows)",
    "S6": "Szegedy et al. 2014, section 4.2 (text)",
    "S7": "Szegedy et al. 2014, section 4.3 and Table 5",
    "R1": "Salman et al. 2020, section 4 (fixed-feature and fine-tuning results; CIFAR "
          "numbers of ResNet-50)",
    "R2": "Salman et al. 2020, section 4 (best eps per downstream set)",
    "R3": "Salman et al. 2020, granularity experiment (figure only)",
    "R4": "Salman et al. 2020, section 5 (source accuracy vs transfer accuracy)",
    "R5": "Salman et al. 2020, width experiment (figure only)",
    "N1": "Nanda et al. 2022, table of two ResNet18s differing only in initial weights",
    "N2": "Nanda et al. 2022, STIR matrix across architectures (poster)",
    "N3": "Nanda et al. 2022, STIR matrix across architectures (poster), rows as references",
    "N4": "Nanda et al. 2022, layer-wise STIR figure (no numbers)",
    "N5": "Nanda et al. 2022, layer-wise STIR figure (no numbers)",
    "N6": "Nanda et al. 2022, STIR across training losses (no numbers)",
    "N7": "Nanda et al. 2022, STIR under model updates with more data (no numbers)",
})
