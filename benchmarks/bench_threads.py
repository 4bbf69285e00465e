"""Benchmark: the thread policy (stir_lib.threads) on a quiet machine and beside a busy process.

One representative slice of each chapter: the L-BFGS attack (blind spots), an inversion
(STIR), a training epoch of an MLP and of a conv net, and a CKA. Each slice is timed
(median of ``--repeats`` runs after a warm-up) in five settings:

* quiet, 1 thread (STIR_THREADS=1); quiet, torch's default (all cores); quiet, the policy;
* beside one busy process (a Python loop this script starts and stops itself), with
  torch's default and with the policy.

Requirements (issue "Speed on a shared CPU"): beside the busy process, the policy is within
1.25x of a single thread on a quiet machine; on a quiet machine, the policy is no more
than 5 % slower than the faster of torch's default and a single thread.

    python benchmarks/bench_threads.py [--repeats 3]

Exits non-zero if a requirement fails. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

import torch

from stir_lib import threads
from stir_lib.attacks import lbfgs_min_distortion, predict
from stir_lib.data import mnist
from stir_lib.inversion import invert
from stir_lib.models import create_model
from stir_lib.similarity import linear_cka
from stir_lib.training import TrainConfig, train

DEFAULT = threads._DEFAULT_THREADS


def slices():
    x, y = mnist("train")
    torch.manual_seed(0)
    fc = create_model("fc100-100-10")
    train(fc, x[:10000], y[:10000], TrainConfig(epochs=2))
    tgt = (predict(fc, x[:200]) + 1) % 10
    mlp = create_model("mlp", hidden=(256, 128), activation="relu")
    train(mlp, x[:10000], y[:10000], TrainConfig(epochs=1))
    conv = create_model("mnist_conv")
    a = torch.randn(10000, 512, generator=torch.Generator().manual_seed(0))
    b = a @ torch.randn(512, 512, generator=torch.Generator().manual_seed(1)) + a
    return {
        "attack: L-BFGS, FC100-100-10, 200 images": lambda: lbfgs_min_distortion(
            fc, x[:200], tgt, search_steps=4, progress=False),
        "inversion: MLP, 500 images x 200 steps": lambda: invert(
            mlp, x[:500], steps=200, progress=False),
        "training epoch: MLP 784-256-128, 20k images": lambda: train(
            create_model("mlp", hidden=(256, 128), activation="relu"), x[:20000], y[:20000],
            TrainConfig(epochs=1, batch_size=256), progress=False),
        "training epoch: strided conv net, 10k images": lambda: train(
            conv, x[:10000], y[:10000], TrainConfig(epochs=1, batch_size=256), progress=False),
        "CKA: 10,000 x 512": lambda: linear_cka(a, b),
    }


def time_it(fn, setting: str, repeats: int) -> float:
    os.environ["STIR_THREADS"] = setting
    fn()                                           # warm-up (and thread-pool resize)
    out = []
    for _ in range(repeats):
        threads.remeasure()
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    work = slices()
    rows = {}
    for name, fn in work.items():
        rows[name] = {"quiet 1": time_it(fn, "1", args.repeats),
                      f"quiet {DEFAULT}": time_it(fn, str(DEFAULT), args.repeats),
                      "quiet auto": time_it(fn, "auto", args.repeats)}
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(1.0)
        for name, fn in work.items():
            rows[name][f"busy {DEFAULT}"] = time_it(fn, str(DEFAULT), args.repeats)
            rows[name]["busy auto"] = time_it(fn, "auto", args.repeats)
    finally:
        busy.kill()
        busy.wait()
    os.environ.pop("STIR_THREADS", None)
    ok = True
    print(f"{'slice':48s} {'q 1':>7s} {f'q {DEFAULT}':>7s} {'q auto':>7s} {f'b {DEFAULT}':>7s} "
          f"{'b auto':>7s}  busy auto / quiet 1   quiet auto / best quiet")
    for name, r in rows.items():
        busy_ratio = r["busy auto"] / r["quiet 1"]
        quiet_ratio = r["quiet auto"] / min(r["quiet 1"], r[f"quiet {DEFAULT}"])
        good = busy_ratio <= 1.25 and quiet_ratio <= 1.05
        ok &= good
        print(f"{name:48s} {r['quiet 1']:7.3f} {r[f'quiet {DEFAULT}']:7.3f} {r['quiet auto']:7.3f} "
              f"{r[f'busy {DEFAULT}']:7.3f} {r['busy auto']:7.3f}  {busy_ratio:9.2f}x"
              f"{'':12s}{quiet_ratio:6.2f}x  {'ok' if good else 'FAIL'}")
    print("requirements " + ("met" if ok else "NOT met") + " (busy auto <= 1.25x quiet 1; quiet "
          "auto <= 1.05x the faster of quiet 1 and quiet default); times in seconds")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
