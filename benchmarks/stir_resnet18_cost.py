"""What a user's first STIR call costs on the CPU: torchvision's ResNet-18 at 32x32.

Two untrained ``resnet18(weights=None, num_classes=10)`` (seeds 0 and 1), N images of
3x32x32, the library's defaults (the paper's reference inversion, the default layer: the
input of ``fc``), a few inversion steps instead of the paper's 1,000 (the cost is linear in
the steps: each step is one forward and one backward pass per image). Prints the wall time
of the whole call and the time per image per inversion step (two inversion directions per
call, so 2 * N * steps image-steps). Run it alone: another busy process on the cores
slows it several times.

    python benchmarks/stir_resnet18_cost.py              # N = 64, 20 steps
    python benchmarks/stir_resnet18_cost.py --n 256 --steps 50
"""

from __future__ import annotations

import argparse
import time

import torch
from torchvision.models import resnet18

from stir_lib.stir import stir


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--steps", type=int, default=20)
    args = p.parse_args()
    models = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        models.append(resnet18(weights=None, num_classes=10).eval())
    x = torch.rand(args.n, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    stir(models[0], models[1], x[:4], steps=1, seeds=0, progress=False)       # warm-up
    t0 = time.perf_counter()
    r = stir(models[0], models[1], x, steps=args.steps, seeds=0, progress=False)
    wall = time.perf_counter() - t0
    per = wall / (2 * args.n * args.steps)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; N={args.n}, "
          f"steps={args.steps}: {wall:.1f} s, {per * 1e3:.2f} ms per image per inversion step "
          f"(STIR m2|m1 {r.m2_given_m1.mean:.3f}, CKA {r.cka.mean:.3f}); at the paper's 1,000 "
          f"steps: {per * 1000 * 2 * args.n:.0f} s for these {args.n} images")


if __name__ == "__main__":
    main()
