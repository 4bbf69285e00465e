"""What making the STIR conv nets reproducible across processors would cost.

    .venv/bin/python benchmarks/conv_kernels.py            # about a minute, one thread

The conv nets' results move with the processor's vector kernels (benchmarks/rebuild_spread.py).
Two ways to fix the kernels: cap PyTorch, oneDNN and MKL at AVX2 (what most x86 processors
have, so every such machine would run the same code; MKL_CBWR pins MKL's path), or turn
oneDNN off (PyTorch's own convolutions). This times a training step and an attack step
(input gradient only, as in PGD and the inversion) of the STIR chapters' strided conv net
(batch 256, one thread) natively and under each setting, each in its own process (the
instruction-set caps are read when the libraries load).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {
    "native": {},
    "AVX2 caps": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2",
                  "MKL_ENABLE_INSTRUCTIONS": "AVX2", "MKL_CBWR": "AVX2"},
    "oneDNN off": {"STIR_BENCH_NO_MKLDNN": "1"},
}


def _child() -> None:
    import time

    import torch
    import torch.nn.functional as F

    from stir_lib.models import create_model

    torch.set_num_threads(1)
    if os.environ.get("STIR_BENCH_NO_MKLDNN"):
        torch.backends.mkldnn.enabled = False
    torch.manual_seed(0)
    m = create_model("mnist_conv", channels=(8, 16), hidden=128)
    x, y = torch.rand(256, 1, 28, 28), torch.randint(0, 10, (256,))
    opt = torch.optim.Adam(m.parameters(), 1e-3)

    def attack_step():
        d = torch.zeros_like(x, requires_grad=True)
        return torch.autograd.grad(F.cross_entropy(m(x + d), y), d)[0]

    def train_step():
        opt.zero_grad()
        F.cross_entropy(m(x), y).backward()
        opt.step()

    out = {}
    for f in (train_step, attack_step):
        for _ in range(5):
            f()
        best = float("inf")
        for _ in range(3):               # the best of three rounds of 30 steps
            t = time.perf_counter()
            for _ in range(30):
                f()
            best = min(best, (time.perf_counter() - t) / 30)
        out[f.__name__] = best * 1e3
    print(json.dumps(out))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _child()
        return
    res = {}
    for name, env in SETTINGS.items():
        p = subprocess.run([sys.executable, __file__, "--child"], capture_output=True, text=True,
                           env={**os.environ, "PYTHONPATH": str(ROOT), **env}, check=True)
        res[name] = json.loads(p.stdout.strip().splitlines()[-1])
    base = res["native"]
    print(f"{'setting':12s} {'train step ms':>14s} {'x native':>9s} {'attack step ms':>15s} {'x native':>9s}")
    for name, r in res.items():
        print(f"{name:12s} {r['train_step']:14.2f} {r['train_step'] / base['train_step']:9.2f} "
              f"{r['attack_step']:15.2f} {r['attack_step'] / base['attack_step']:9.2f}")


if __name__ == "__main__":
    main()
