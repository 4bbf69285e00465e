"""N1-N3 of the STIR chapter at the paper's inversion step and at the step scaled to the images.

    .venv/bin/python benchmarks/step_sensitivity.py [--scale ci]

The chapter (``stir_pairs``, "How far the IRIs get, and the inversion's step") inverts the
MLPs again with :func:`stir_lib.chapters.stir.scaled_step` and judges N1 on them; the conv
nets' inversions cost about four times more, so the chapter leaves them out. This script
inverts the whole zoo at the scaled step and judges N1 (every architecture), N2 and N3 with
the chapter's own functions at both steps, beside each step's mean final IRI distance. It
reads the zoo and the 0.5-step matrix from the cache (run after ``make book``, with the
same ``STIR_CACHE``; what is missing is computed: at ci scale from a warm cache about 4
minutes on two cores, the 12 conv-net inversions).
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd

from stir_lib import verdicts as V
from stir_lib.chapters import stir as C
from stir_lib.inversion import relative_distance
from stir_lib.stir import stir_matrix


def judge(S, zoo, X, step: float | None) -> dict:
    """The chapter's N1 (per architecture), N2 and N3 on the matrix inverted at ``step``
    (None: the paper's 0.5), and the inversions' mean final relative distance per family."""
    S_mat, C_mat, iris = stir_matrix(zoo, X, steps=S["inv_steps"], step_size=step,
                                     return_iris=True, use_cache=True,
                                     **C.stir_options(S, *zoo))
    dist = {n: float(relative_distance(zoo[n], iris[(n, 0)], X).mean()) for n in zoo}
    effects = C.nanda_n1_effects()
    out = {}
    for arch in S["archs"]:
        p = {k: pd.DataFrame(C.pair_rows(S_mat, C_mat, C.seed_pairs(S, k, arch)))
             for k in ("V", "AT")}
        v = C.n1_seed_pairs(p["V"]["STIR"], p["V"]["CKA"], p["AT"]["STIR"], effects)
        out[f"N1 {arch}"] = (f"V STIR {p['V']['STIR'].mean():.3f}, AT STIR "
                             f"{p['AT']['STIR'].mean():.3f}: {v.verdict}")
        for k in ("V", "AT"):
            names = [n for n in zoo if C.parse(n)[:2] == (k, arch)]
            out[f"IRI distance {k}-{arch}"] = f"{np.mean([dist[n] for n in names]):.3f}"
    blocks = pd.DataFrame([{"seed": s, **C.block_means(S_mat, S, s)} for s in S["seeds"]])
    pb = C.nanda_blocks()
    n2_est = V.paired(blocks["AT"], blocks["V"])
    n2 = C.n2_adversarial_blocks(n2_est, float(pb["AT"].mean() - pb["V"].mean()))
    out["N2"] = f"{n2_est.format(3)}: {n2.verdict}"
    asym = {s: C.residual_asymmetry(S_mat, S, s) for s in S["seeds"]}
    if all(a is not None for a in asym.values()):
        est = {k: V.over_seeds([asym[s][k] for s in S["seeds"]]) for k in ("AT", "V")}
        n3 = C.n3_residual_reference(est, C.nanda_asymmetry())
        out["N3"] = f"AT {est['AT'].format(3)}, V {est['V'].format(3)}: {n3.verdict}"
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", default="ci", choices=["smoke", "ci"])
    args = ap.parse_args()
    S = C.settings(args.scale)
    zoo = C.build(C.zoo(S))
    X = C.stir_images(S).images
    step = C.scaled_step(S)
    table = pd.DataFrame({"0.5 (the paper's)": judge(S, zoo, X, None),
                          f"{step} (scaled)": judge(S, zoo, X, step)})
    with pd.option_context("display.max_colwidth", 80, "display.width", 200):
        print(table.to_string())


if __name__ == "__main__":
    main()
