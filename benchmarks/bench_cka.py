"""Benchmark linear_cka against its unavoidable matrix products and torch-cka 0.21.

Run:  python benchmarks/bench_cka.py [--repeats 5] [--threads 1] [--no-torch-cka]

Requirements checked on two float32 cases, 10,000 x 512 and 1,000 x 4,096:
  1. time(linear_cka) <= 1.5 x time(the products its form cannot avoid):
       feature form (n large vs d): Xc^T Xc, Yc^T Yc, Yc^T Xc -- the numerator
         needs Y^T X, and ||X^T X||_F has no cheaper exact route (it is the sum
         of the 4th powers of the singular values);
       Gram form (d large vs n):    Xc Xc^T, Yc Yc^T -- <K, L> is then an
         elementwise O(n^2) reduction.
     Centring does not change the cost of a product, so the baseline multiplies
     the raw float32 inputs. X^T X and X X^T are symmetric, and linear_cka
     computes only their three distinct half blocks (3/4 of the multiply-adds,
     see similarity._halves); the column "own products" times exactly the
     block products it does, to show its overhead over its own arithmetic.
  2. faster than torch-cka 0.21 (`CKA.compare`) on the same data;
  3. |linear_cka - float64 numpy reference| <= 1e-5.
Timings are medians over --repeats runs after one warm-up, with linear_cka and
the products interleaved so that load from other processes hits both alike.
All three contenders run with the same number of torch threads, 1 by default:
on a small shared machine a multi-threaded kernel waits for whichever of its
threads a neighbouring process has descheduled, a delay per kernel call that
measures the neighbours more than the code (--threads 0 keeps torch's default).
Exits 1 if a requirement fails.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import pathlib
import statistics
import sys
import time
import warnings

import numpy as np
import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from stir_lib.similarity import _choose_form, _halves, debiased_cka, linear_cka  # noqa: E402

CASES = [(10_000, 512), (1_000, 4_096)]      # (n examples, d features), d1 = d2 = d
MAX_RATIO = 1.5
MAX_ERR = 1e-5


def make_pair(n: int, d: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Two related float32 feature matrices with non-zero means (post-ReLU-like)."""
    g = torch.Generator().manual_seed(seed)
    Z = torch.randn(n, d, generator=g)
    X = torch.relu(Z + 0.5)                                          # (n, d), mean ~0.9
    W = torch.randn(d, d, generator=g) / d ** 0.5
    Y = torch.relu(Z @ W + 0.3 * torch.randn(n, d, generator=g))     # (n, d)
    return X.contiguous(), Y.contiguous()


def reference_cka(X: torch.Tensor, Y: torch.Tensor) -> float:
    """Linear CKA in float64 numpy, written independently of stir_lib."""
    X = X.numpy().astype(np.float64)
    Y = Y.numpy().astype(np.float64)
    X = X - X.mean(0)
    Y = Y - Y.mean(0)
    n, d = X.shape
    if n >= d:                                               # feature form
        num = np.sum((Y.T @ X) ** 2)
        return float(num / np.sqrt(np.sum((X.T @ X) ** 2) * np.sum((Y.T @ Y) ** 2)))
    K, L = X @ X.T, Y @ Y.T                                  # Gram form
    return float(np.sum(K * L) / np.sqrt(np.sum(K * K) * np.sum(L * L)))


def reference_debiased(X: torch.Tensor, Y: torch.Tensor) -> float:
    """Debiased linear CKA in float64 numpy (unbiased HSIC of Song et al. 2012).

    Feature form for n >= d (from the centred features, K 1 = 0), U-centred
    Grams otherwise; used only to judge torch-cka's and stir_lib's values.
    """
    X = X.numpy().astype(np.float64)
    Y = Y.numpy().astype(np.float64)
    n, d = X.shape
    if n >= d:
        X, Y = X - X.mean(0), Y - Y.mean(0)
        dx, dy = (X * X).sum(1), (Y * Y).sum(1)

        def h(A, B, da, db):
            return (np.sum((B.T @ A) ** 2) - n / (n - 2) * da @ db
                    + da.sum() * db.sum() / ((n - 1) * (n - 2)))
        return float(h(X, Y, dx, dy) / np.sqrt(h(X, X, dx, dx) * h(Y, Y, dy, dy)))

    def u(K):
        K = K.copy()
        np.fill_diagonal(K, 0)
        means = K.sum(0) / (n - 2)
        means -= means.sum() / (2 * (n - 1))
        K -= means[:, None] + means[None, :]
        np.fill_diagonal(K, 0)
        return K
    K, L = u(X @ X.T), u(Y @ Y.T)
    return float(np.sum(K * L) / np.sqrt(np.sum(K * K) * np.sum(L * L)))


def unavoidable_products(form: str):
    if form == "feature":
        return "X^T X, Y^T Y, Y^T X", lambda X, Y: (X.T @ X, Y.T @ Y, Y.T @ X)
    return "X X^T, Y Y^T", lambda X, Y: (X @ X.T, Y @ Y.T)


def own_products(form: str):
    """The block products linear_cka itself performs (symmetric ones by halves)."""
    def sym(A):
        return [A[i] @ A[j].T for i, j, _ in _halves(A.shape[0])]
    if form == "feature":
        return lambda X, Y: (Y.T @ X, sym(X.T), sym(Y.T))
    return lambda X, Y: (sym(X), sym(Y))


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def load_torch_cka():
    try:
        from torch_cka import CKA
        return CKA, None
    except Exception as exc:                    # not installed, or a missing dependency
        return None, f"{type(exc).__name__}: {exc}"


def run_torch_cka(CKA, X: torch.Tensor, Y: torch.Tensor) -> float:
    """torch-cka 0.21 on precomputed features.

    Each matrix is the output of an nn.Identity model (torch-cka hooks its root
    module, named ''); each DataLoader holds a one-item dataset [(X,)] with
    batch_size=None, so `compare` sees one batch of all n rows, with no
    per-row collation.
    """
    from torch import nn
    from torch.utils.data import DataLoader
    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        cka = CKA(nn.Identity(), nn.Identity(), model1_name="X", model2_name="Y", device="cpu")
        cka.compare(DataLoader([(X,)], batch_size=None), DataLoader([(Y,)], batch_size=None))
    return float(cka.export()["CKA"][0, 0])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=5, help="timed runs per measurement")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads for every contender (0: torch's default)")
    ap.add_argument("--no-torch-cka", action="store_true", help="skip the torch-cka comparison")
    args = ap.parse_args(argv)

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    CKA, why = (None, "skipped by --no-torch-cka") if args.no_torch_cka else load_torch_cka()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} torch thread(s), float32 inputs, "
          f"load average at start {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    if CKA is None:
        print(f"NOTE: torch-cka comparison skipped ({why}); "
              f"install with: pip install --no-deps torch-cka==0.21")
    else:
        print("torch-cka 0.21 fed as: model = nn.Identity (hook on its root), "
              "DataLoader([(X,)], batch_size=None) -> one batch of all n rows")
        print("  (torch-cka reports debiased CKA; its value is checked against "
              "stir_lib.debiased_cka, its time against linear_cka)")

    rows, failures = [], []
    for n, d in CASES:
        X, Y = make_pair(n, d)
        form = _choose_form(n, d, d, "auto")
        label, products = unavoidable_products(form)
        own = own_products(form)
        linear_cka(X, Y)                                      # warm-up
        products(X, Y)
        own(X, Y)
        t_cka, t_prod, t_own = [], [], []
        for _ in range(args.repeats):
            t_cka.append(timed(lambda: linear_cka(X, Y)))
            t_prod.append(timed(lambda: products(X, Y)))
            t_own.append(timed(lambda: own(X, Y)))
        t_cka, t_prod, t_own = (statistics.median(t) for t in (t_cka, t_prod, t_own))
        value = linear_cka(X, Y)
        err = abs(value - reference_cka(X, Y))
        row = dict(case=f"{n}x{d}", form=form, products=label, t_cka=t_cka, t_prod=t_prod,
                   ratio=t_cka / t_prod, t_own=t_own, value=value, err=err, t_tc=None, tc_runs=0)

        if CKA is not None:
            run_torch_cka(CKA, X[:64], Y[:64])                # warm-up on a small slice
            # one batch of n rows costs three n^3 products (trace(K @ L) etc.):
            # ~6 TFLOP at n = 10,000, so one run there, the median elsewhere
            runs = 1 if n >= 5_000 else args.repeats
            times = []
            for _ in range(runs):
                t0 = time.perf_counter()
                row["tc_value"] = run_torch_cka(CKA, X, Y)
                times.append(time.perf_counter() - t0)
            row["t_tc"], row["tc_runs"] = statistics.median(times), runs
            row["deb"] = debiased_cka(X, Y)
            row["deb_ref"] = reference_debiased(X, Y)
        rows.append(row)

        if row["ratio"] > MAX_RATIO:
            failures.append(f"{row['case']}: linear_cka takes {row['ratio']:.2f}x the "
                            f"products (> {MAX_RATIO})")
        if err > MAX_ERR:
            failures.append(f"{row['case']}: |CKA - float64 reference| = {err:.2e} > {MAX_ERR}")
        if row["t_tc"] is not None and t_cka >= row["t_tc"]:
            failures.append(f"{row['case']}: not faster than torch-cka "
                            f"({t_cka:.3f} s vs {row['t_tc']:.3f} s)")

    print()
    head = (f"{'case':>10} {'form':>7} {'unavoidable products':>22} {'products s':>10} "
            f"{'linear_cka s':>12} {'ratio':>6} {'own products s':>14} {'ratio':>6} "
            f"{'torch-cka s':>12} {'speed-up':>8} "
            f"{'CKA':>9} {'|err| f64':>9}")
    print(head)
    print("-" * len(head))
    for r in rows:
        tc = (f"{r['t_tc']:>9.3f}({r['tc_runs']})" if r["t_tc"] is not None else f"{'skipped':>12}")
        sp = f"{r['t_tc'] / r['t_cka']:>7.1f}x" if r["t_tc"] is not None else f"{'-':>8}"
        print(f"{r['case']:>10} {r['form']:>7} {r['products']:>22} {r['t_prod']:>10.4f} "
              f"{r['t_cka']:>12.4f} {r['ratio']:>6.2f} {r['t_own']:>14.4f} "
              f"{r['t_cka'] / r['t_own']:>6.2f} {tc} {sp} {r['value']:>9.6f} "
              f"{r['err']:>9.1e}")
    print(f"\nload average at end {os.getloadavg()[0]:.2f} (other processes on the same "
          f"cores inflate short kernels more than the big products)")
    print(f"median of {args.repeats} runs after a warm-up; torch-cka column: median "
          f"(number of runs). Requirements: ratio <= {MAX_RATIO}, faster than torch-cka, "
          f"|err| <= {MAX_ERR}.")
    for r in rows:
        if r["t_tc"] is not None:
            print(f"  {r['case']}: debiased CKA, float64 reference {r['deb_ref']:.7f}: "
                  f"torch-cka {r['tc_value']:.7f} (|err| {abs(r['tc_value'] - r['deb_ref']):.1e}), "
                  f"stir_lib.debiased_cka {r['deb']:.7f} "
                  f"(|err| {abs(r['deb'] - r['deb_ref']):.1e})")
    if failures:
        print("\nFAILED:\n  " + "\n  ".join(failures))
        return 1
    print("\nall requirements met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
