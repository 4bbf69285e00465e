"""Benchmark: STIR with the fast inversion against the paper's reference procedure.

Requirement: on a ci-scale pair, STIR computed with ``method="fast"`` is within
0.01 of STIR computed with the reference procedure (Nanda et al. 2022: 1,000
normalised-gradient steps of length 0.5 from Gaussian noise, best iterate kept),
with at most a fifth of its model evaluations per sample.

The pairs: two MNIST MLPs 784-256-128-10 (ReLU) of the same architecture that
differ only in their seed, trained 2 epochs with Adam ("vanilla"), and the
same trained with L2 PGD adversarial training, eps = 1.0, 5 steps ("l2-at",
Madry et al. 2018). Both are cached by ``stir_lib.training.trained_model``.
X is the first ``--n`` MNIST test images. Both STIR directions are checked,
from the same seed (the same noise starts) for both methods.

    python benchmarks/bench_stir.py [--n 1000] [--pairs vanilla,l2-at] [--threads 1]

Exits non-zero if a requirement fails.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from stir_lib.data import mnist
from stir_lib.stir import stir
from stir_lib.training import TrainConfig, trained_model

ARCH = dict(hidden=(256, 128), activation="relu")
CONFIGS = {
    "vanilla": dict(epochs=2, batch_size=128, lr=1e-3),
    "l2-at": dict(epochs=2, batch_size=128, lr=1e-3, loss="pgd-at", adv_norm="l2",
                  adv_eps=1.0, adv_steps=5),
}
TOLERANCE = 0.01        # |STIR_fast - STIR_reference|
EVAL_RATIO = 1 / 5      # fast evaluations per sample / reference's


def pair(kind: str, x, y):
    return [trained_model("mlp", x, y, TrainConfig(seed=seed, **CONFIGS[kind]),
                          model_kwargs=ARCH).model for seed in (0, 1)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="MNIST test images in X")
    parser.add_argument("--pairs", default="vanilla,l2-at",
                        help=f"comma-separated, from {list(CONFIGS)}")
    parser.add_argument("--seed", type=int, default=0, help="inversion seed")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    kinds = [k for k in args.pairs.split(",") if k]
    unknown = sorted(set(kinds) - set(CONFIGS))
    if unknown:
        parser.error(f"--pairs: expected names from {list(CONFIGS)}, got {unknown}")
    x_train, y_train = mnist("train")
    X = mnist("test")[0][: args.n]
    print(f"X: {len(X)} MNIST test images; models: MLP 784-256-128-10 (ReLU), pairs differing "
          f"only in seed; inversion seed {args.seed}; torch threads: {torch.get_num_threads()}")
    header = (f"{'pair':<9}{'method':<11}{'STIR(m2|m1)':>12}{'STIR(m1|m2)':>12}{'CKA':>7}"
              f"{'distance':>10}{'evals/sample':>14}{'time (s)':>10}")
    failures, rows = [], []
    for kind in kinds:
        t0 = time.perf_counter()
        m1, m2 = pair(kind, x_train, y_train)
        t_train = time.perf_counter() - t0
        res = {}
        for method in ("reference", "fast"):
            t0 = time.perf_counter()
            res[method] = stir(m1, m2, X, seeds=(args.seed,), method=method, progress=False,
                               use_cache=True)
            res[method] = (res[method], time.perf_counter() - t0)
        rows.append((kind, res, t_train))
        (ref, t_ref), (fast, t_fast) = res["reference"], res["fast"]
        for direction in ("m2_given_m1", "m1_given_m2"):
            diff = getattr(fast, direction).mean - getattr(ref, direction).mean
            if abs(diff) > TOLERANCE:
                failures.append(f"{kind}: {direction} differs by {diff:+.4f} (limit {TOLERANCE})")
        for side in ("m1", "m2"):
            e_ref = getattr(ref, f"evaluations_{side}").float().mean()
            e_fast = getattr(fast, f"evaluations_{side}").float().mean()
            if e_fast > EVAL_RATIO * e_ref:
                failures.append(f"{kind}: fast inversion on {side} used {e_fast:.0f} evaluations "
                                f"per sample, over {EVAL_RATIO:.2f} x {e_ref:.0f}")
    print(header)
    for kind, res, t_train in rows:
        for method, (r, t) in res.items():
            evals = float(torch.cat([r.evaluations_m1, r.evaluations_m2]).float().mean())
            dist = float(torch.cat([r.distance_m1, r.distance_m2]).mean())
            print(f"{kind:<9}{method:<11}{r.m2_given_m1.mean:>12.4f}{r.m1_given_m2.mean:>12.4f}"
                  f"{r.cka.mean:>7.3f}{dist:>10.4f}{evals:>14.1f}{t:>10.1f}")
        (ref, t_ref), (fast, t_fast) = res["reference"], res["fast"]
        e_ratio = float(torch.cat([fast.evaluations_m1, fast.evaluations_m2]).float().mean()
                        / torch.cat([ref.evaluations_m1, ref.evaluations_m2]).float().mean())
        print(f"{kind:<9}fast - reference: STIR(m2|m1) "
              f"{fast.m2_given_m1.mean - ref.m2_given_m1.mean:+.4f}, STIR(m1|m2) "
              f"{fast.m1_given_m2.mean - ref.m1_given_m2.mean:+.4f}; evaluations x{e_ratio:.3f}, "
              f"time x{t_fast / t_ref:.3f}  (models: {t_train:.0f} s, cached after the first run)")
    print("distance: mean final ||m(x') - m(x)|| / ||m(x)|| over both directions' IRIs")
    for f in failures:
        print("FAIL:", f)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
