"""Peak memory of STIR over a DataLoader against N, and its equality with the one-tensor call.

Each configuration runs in a fresh subprocess (``--child``), which reports its peak resident
memory (``VmHWM`` of /proc/self/status, else ``getrusage(RUSAGE_SELF).ru_maxrss``: torch's
CPU allocations included, which ``tracemalloc`` does not see) before and after STIR, and
the STIR values. The images
come from a map-style dataset that makes image i from a generator seeded with i, so a
DataLoader over it never holds more than a batch, and the one-tensor call gets exactly the
same images (stacked). The models: two seeded MLPs (D -> 32 -> 10, ReLU, float64), a few
reference inversion steps.

    python benchmarks/stir_memory.py                    # N = 1,000 and 5,000 of 1x8x8
    python benchmarks/stir_memory.py --shape 3 32 32    # images big enough to see X's size

The claim checked: the loader's peak increment at the large N is at most that at the small
N plus ``--slack`` MB (IRIs are not kept), and its STIR equals the one-tensor STIR within
1e-5. The one-tensor rows are printed for comparison (they hold all of X, its starts and
its IRIs).

What the loader holds between batches does not grow (tests/test_stir_surface.py counts the
live tensors: 24 bytes an image, its distances and evaluations). Its peak can still creep up
by allocator placement: glibc's dynamic mmap threshold puts a batch's large temporaries on
the heap, where a later batch sometimes cannot reuse the freed space and touches new pages
(the library returns free pages after each batch, which stops steady growth but not these
occasional new highs). With 1x8x8 images the creep is under 1 MB; with 3x32x32 images in
batches of 250 it was +14, +26 and +35 MB from N = 1,000 to 5,000 in three runs (a batch's
temporaries are about 100 MB; the one-tensor call grows by +94 to +129 MB), and +3 MB with
``--fixed-mmap``, which runs the children with the threshold fixed.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _peak_mb() -> float:
    """This process's peak resident memory (MB): /proc's VmHWM, the high-water mark of its
    own address space. ``getrusage(RUSAGE_SELF).ru_maxrss`` is not used where /proc exists:
    Linux carries the parent's RSS into it across fork and exec, so a child of a large
    process (a test session) reports the parent's size."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024                 # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024   # Linux: KiB


def child(mode: str, n: int, shape: tuple[int, ...], batch: int, steps: int) -> dict:
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, Dataset

    from stir_lib.stir import stir

    class Images(Dataset):
        """Image i in [0, 1] from a generator seeded with i: nothing held in memory."""

        def __len__(self):
            return n

        def __getitem__(self, i):
            return torch.rand(shape, generator=torch.Generator().manual_seed(i),
                              dtype=torch.float64)

    def mlp(seed):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(shape), 32), nn.ReLU(),
                             nn.Linear(32, 10)).double().eval()

    m1, m2 = mlp(0), mlp(1)
    data = Images()
    if mode == "tensor":
        X = torch.stack([data[i] for i in range(n)])
    else:
        X = DataLoader(data, batch_size=batch)
    before = _peak_mb()
    r = stir(m1, m2, X, seeds=(0,), steps=steps, batch_size=batch, progress=False)
    return {"mode": mode, "n": n, "before_mb": before, "peak_mb": _peak_mb(),
            "values": [r.m2_given_m1.mean, r.m1_given_m2.mean, r.cka.mean]}


def run(mode: str, n: int, shape, batch: int, steps: int, fixed_mmap: bool = False) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, "--n", str(n), "--batch", str(batch),
           "--steps", str(steps), "--shape", *map(str, shape)]
    env = {"PYTHONPATH": str(ROOT), "STIR_PROGRESS": "0", "STIR_THREADS": "1",
           "PATH": "/usr/bin:/bin"}
    if fixed_mmap:                  # glibc: blocks over 1 MiB mmapped, unmapped when freed
        env["MALLOC_MMAP_THRESHOLD_"] = str(2 ** 20)
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(small: int, large: int, shape, batch: int, steps: int, tensor: bool = True,
            fixed_mmap: bool = False) -> dict:
    kw = dict(shape=shape, batch=batch, steps=steps, fixed_mmap=fixed_mmap)
    rows = {("loader", small): run("loader", small, **kw),
            ("loader", large): run("loader", large, **kw)}
    if tensor:
        rows[("tensor", small)] = run("tensor", small, **kw)
    rows[("tensor", large)] = run("tensor", large, **kw)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--child", choices=("loader", "tensor"))
    ap.add_argument("--n", type=int, default=0)
    ap.add_argument("--small", type=int, default=1000)
    ap.add_argument("--large", type=int, default=5000)
    ap.add_argument("--shape", type=int, nargs="+", default=[1, 8, 8])
    ap.add_argument("--batch", type=int, default=250)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--slack", type=float, default=8.0, help="MB allowed for allocator noise")
    ap.add_argument("--fixed-mmap", action="store_true",
                    help="run the children with glibc's mmap threshold fixed at 1 MiB")
    args = ap.parse_args()
    shape = tuple(args.shape)
    if args.child:
        print(json.dumps(child(args.child, args.n, shape, args.batch, args.steps)))
        return 0
    rows = measure(args.small, args.large, shape, args.batch, args.steps,
                   fixed_mmap=args.fixed_mmap)
    print(f"images {'x'.join(map(str, shape))}, batches of {args.batch}, {args.steps} "
          f"reference steps, one seed; peak RSS of a fresh process (MB)"
          + ("; glibc mmap threshold fixed at 1 MiB" if args.fixed_mmap else ""))
    print(f"{'X':<8}{'N':>7}{'before':>10}{'peak':>10}{'increment':>11}   "
          f"STIR(m2|m1)  STIR(m1|m2)  CKA")
    for (mode, n), r in sorted(rows.items()):
        inc = r["peak_mb"] - r["before_mb"]
        print(f"{mode:<8}{n:>7}{r['before_mb']:>10.1f}{r['peak_mb']:>10.1f}{inc:>11.1f}   "
              + "  ".join(f"{v:.9f}" for v in r["values"]))
    lo, hi = rows[("loader", args.small)], rows[("loader", args.large)]
    diff = max(abs(a - b) for a, b in zip(hi["values"], rows[("tensor", args.large)]["values"]))
    grow = (hi["peak_mb"] - hi["before_mb"]) - (lo["peak_mb"] - lo["before_mb"])
    print(f"loader N={args.large} vs one tensor: max |difference| {diff:.2e} (limit 1e-5)")
    print(f"loader increment N={args.large} minus N={args.small}: {grow:+.1f} MB "
          f"(limit +{args.slack} MB)")
    ok = diff <= 1e-5 and grow <= args.slack
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
