"""Where rebuilds on other machines diverge: training or inversion, MLP or conv net.

    .venv/bin/python benchmarks/rebuild_spread.py            # about 4 minutes, one thread

Two builds of the book on machines of one kind can print different last digits (issue 19:
N3's AT effect 0.014 on one build, 0.012 on another). Every job runs on one thread with
fixed seeds, so the suspects are the processor's kernels: PyTorch, oneDNN and MKL pick
vectorised code by the instruction sets they find (AVX-512 here; AVX2 on older machines),
and each sums in its own order. This script emulates other machines on this one by
capping those instruction sets (``ATEN_CPU_CAPABILITY``, ``ONEDNN_MAX_CPU_ISA``,
``MKL_ENABLE_INSTRUCTIONS``) and, in one process per setting:

1. trains two seeds of the chapter's MLP and strided conv net (MNIST, 10,000 images, two
   epochs of the ci recipe: Adam 2e-3, batches of 256, cosine), and compares the weights;
2. computes STIR between the two seeds (the paper's 1,000-step inversion, 250 images)
   twice: on the models this setting trained (the whole rebuild), and on the models the
   native setting trained (the inversion alone).

It prints how far each setting's weights and STIR move from the native setting's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

SETTINGS = {
    "native": {},
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2",
             "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
    "sse": {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41",
            "MKL_ENABLE_INSTRUCTIONS": "SSE4_2"},
}
ARCHS = ("mlp", "conv")               # the STIR chapters' ci architectures of these names


def worker(out: Path, native: Path | None) -> None:
    import torch

    from stir_lib.chapters import stir as C
    from stir_lib.data.mnist_sets import mnist
    from stir_lib.models import create_model
    from stir_lib.stir import stir
    from stir_lib.training import TrainConfig, train

    torch.set_num_threads(1)          # STIR_THREADS=1 (set by main) keeps the library at one
    x, y = mnist("train")
    xt, yt = x[:10_000], y[:10_000]
    X = x[50_000:50_250]
    res = {"capability": torch.backends.cpu.get_cpu_capability()}
    states = {}
    nat = torch.load(native, weights_only=True) if native is not None else None
    zoo = C.settings("ci")["archs"]
    for arch in ARCHS:
        registry, kw, _ = zoo[arch]
        models = []
        for seed in (0, 1):
            torch.manual_seed(seed)
            m = create_model(registry, **dict(kw))
            train(m, xt, yt, TrainConfig(seed=seed, epochs=2, batch_size=256, optimizer="adam",
                                         lr=2e-3, lr_schedule="cosine"), progress=False)
            models.append(m.eval())
            states[f"{arch}-{seed}"] = {k: v.clone() for k, v in m.state_dict().items()}
        r = stir(models[0], models[1], X, use_cache=False, progress=False)
        res[f"{arch} rebuild"] = [float(r.m2_given_m1.mean), float(r.m1_given_m2.mean)]
        if nat is not None:
            for i, m in enumerate(models):
                m.load_state_dict(nat[f"{arch}-{i}"])
            r = stir(models[0], models[1], X, use_cache=False, progress=False)
            res[f"{arch} inversion"] = [float(r.m2_given_m1.mean), float(r.m1_given_m2.mean)]
            res[f"{arch} weights"] = max(float((states[f"{arch}-{i}"][k] - v).abs().max())
                                         for i in (0, 1) for k, v in nat[f"{arch}-{i}"].items())
    torch.save(states, out.with_suffix(".pt"))
    out.write_text(json.dumps(res))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        worker(Path(sys.argv[2]), Path(sys.argv[3]) if len(sys.argv) > 3 else None)
        return
    tmp = Path(tempfile.mkdtemp(prefix="spread-"))
    results = {}
    for name, env in SETTINGS.items():
        out = tmp / f"{name}.json"
        args = [sys.executable, __file__, "worker", str(out)]
        if name != "native":
            args.append(str(tmp / "native.pt"))
        subprocess.run(args, check=True, env={**os.environ, "OMP_NUM_THREADS": "1",
                                              "STIR_THREADS": "1", **env})
        results[name] = json.loads(out.read_text())
        print(name, results[name], flush=True)
    base = results["native"]
    print("\nsetting  capability  family  max |weight diff|  STIR moved by (rebuild)  "
          "STIR moved by (inversion only)")
    for name, r in results.items():
        if name == "native":
            continue
        for arch in ARCHS:
            reb = max(abs(a - b) for a, b in zip(r[f"{arch} rebuild"], base[f"{arch} rebuild"]))
            inv = max(abs(a - b) for a, b in zip(r[f"{arch} inversion"], base[f"{arch} rebuild"]))
            print(f"{name:7s}  {r['capability']:10s}  {arch:6s}  {r[f'{arch} weights']:.2e}"
                  f"  {reb:.4f}  {inv:.4f}")


if __name__ == "__main__":
    main()
