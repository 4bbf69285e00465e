"""Time the exact operator norms of AlexNet-shaped layers (random weights).

Szegedy et al. (2014, Table 5) list the operator norms of AlexNet's five conv and three
FC layers. This script builds layers of those shapes with PyTorch's default
initialisation (seed fixed), computes each exact norm with :mod:`stir_lib.spectral` at the
layer's input size for a 224 x 224 image, and prints one row per layer: shape, norm,
seconds, the reshaped-kernel number (what ``spectral_norm`` uses; not the operator norm)
and, for stride-1 convs, the circular-padding norm (Sedghi et al. 2019), untimed.

Usage::

    python benchmarks/bench_spectral.py            # torchvision widths (64/192/384/256/256)
    python benchmarks/bench_spectral.py --paper    # the paper's widths (96/256/384/384/256)

Exits with status 1 if the eight timed norms take more than ``--budget`` seconds (20).
Torch's default thread count is used unless ``--threads`` is given: on a shared 2-core
machine another busy process makes OpenMP barriers stall, and ``--threads 1`` is then
several times faster than the default.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from stir_lib import spectral  # noqa: E402

# (name, c_in, c_out, kernel, stride, padding, input H = W) at a 224 x 224 input, as in
# torchvision's AlexNet (after 3x3 stride-2 max-pools: 55 -> 27, 27 -> 13).
TORCHVISION = [("conv1", 3, 64, 11, 4, 2, 224), ("conv2", 64, 192, 5, 1, 2, 27),
               ("conv3", 192, 384, 3, 1, 1, 13), ("conv4", 384, 256, 3, 1, 1, 13),
               ("conv5", 256, 256, 3, 1, 1, 13)]
# The widths Szegedy et al. list (Krizhevsky et al. 2012, both GPU halves together).
PAPER = [("conv1", 3, 96, 11, 4, 2, 224), ("conv2", 96, 256, 5, 1, 2, 27),
         ("conv3", 256, 384, 3, 1, 1, 13), ("conv4", 384, 384, 3, 1, 1, 13),
         ("conv5", 384, 256, 3, 1, 1, 13)]
FC = [("fc1", 9216, 4096), ("fc2", 4096, 4096), ("fc3", 4096, 1000)]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--paper", action="store_true", help="use the paper's channel widths")
    parser.add_argument("--budget", type=float, default=20.0, help="seconds allowed in total")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch intra-op threads; 0 keeps torch's default")
    args = parser.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    torch.manual_seed(args.seed)
    convs = PAPER if args.paper else TORCHVISION
    header = (f"{'layer':6s} {'shape (in -> out)':34s} {'norm':>10s} {'seconds':>8s} "
              f"{'reshaped':>9s} {'circular':>9s}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{'paper' if args.paper else 'torchvision'} widths, seed {args.seed}")
    print(header)
    print("-" * len(header))
    total = 0.0
    for name, c_in, c_out, k, s, p, n in convs:
        layer = nn.Conv2d(c_in, c_out, k, s, p)
        shape = (c_in, n, n)
        t0 = time.perf_counter()
        value = spectral.conv_norm(layer, shape)
        dt = time.perf_counter() - t0
        total += dt
        out = (n + 2 * p - k) // s + 1
        circ = spectral.conv_circular_norm(layer, n) if s == 1 else float("nan")
        desc = f"{c_in}x{n}x{n} -> {c_out}x{out}x{out} (k{k} s{s} p{p})"
        print(f"{name:6s} {desc:34s} {value:10.5f} {dt:8.2f} "
              f"{spectral.reshaped_kernel_norm(layer):9.5f} {circ:9.5f}")
    for name, d_in, d_out in FC:
        layer = nn.Linear(d_in, d_out)
        t0 = time.perf_counter()
        value = spectral.linear_norm(layer)
        dt = time.perf_counter() - t0
        total += dt
        print(f"{name:6s} {f'{d_in} -> {d_out}':34s} {value:10.5f} {dt:8.2f}")
    print("-" * len(header))
    ok = total <= args.budget
    print(f"total {total:.2f} s (budget {args.budget:.0f} s): {'OK' if ok else 'OVER BUDGET'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
