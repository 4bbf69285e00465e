"""GPU check: every chapter's paper-scale code path for a few steps on CUDA, without Jupyter.

    PYTHONPATH=. python benchmarks/gpu_check.py            # on a CUDA machine
    PYTHONPATH=. python benchmarks/gpu_check.py --device cpu --small   # a dry run here

Needs only torch (2.11 or newer), torchvision, numpy, scipy and pandas (no Jupyter, no
network, no data: every input is synthetic). It

1. runs, on the device, a few steps of each chapter's paper-scale path: CIFAR ResNet18 /
   VGG16 training with the paper's recipe (SGD, crop-flip augmentation on the device,
   L2 PGD adversarial training with 7 steps, in fp32 and with bf16 autocast), TRADES and
   MART steps, the box-constrained L-BFGS attack (float64), exact spectral norms, the
   paper's inversion and STIR between two ResNet18s, CKA, a robustness-library checkpoint
   loaded into torchvision's ResNet-50 and transferred (fixed-feature and fine-tuning);
2. checks that CPU and the device agree on small cases (forward pass, a full inversion
   from the same start, STIR, CKA, spectral norm, a deterministic PGD);
3. prints throughput: training images/s (fp32 and bf16), inversion steps/s, CKA of
   10,000 x 512 in ms, transfer images/s.

Exits non-zero if a check fails. On one GPU it runs in well under five minutes.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

from stir_lib.attacks import lbfgs_min_distortion, pgd
from stir_lib.inversion import invert, representation
from stir_lib.models import create_model, resolve_device
from stir_lib.similarity import linear_cka
from stir_lib.spectral import conv_norm
from stir_lib.stir import stir
from stir_lib.training import TrainConfig, train
from stir_lib.checkpoints import load_robustness_checkpoint
from stir_lib.transfer import Task, fine_tune, fixed_feature

RESULTS: list[tuple[str, str, bool]] = []


def check(name: str, ok: bool, detail: str) -> None:
    RESULTS.append((name, detail, bool(ok)))
    print(f"[{'ok' if ok else 'FAIL'}] {name}: {detail}", flush=True)


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def timed(dev, fn):
    sync(dev)
    t0 = time.perf_counter()
    out = fn()
    sync(dev)
    return out, time.perf_counter() - t0


def synthetic(n, shape, classes, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand((n, *shape), generator=g), torch.randint(classes, (n,), generator=g)


def training_paths(dev, small):
    n = 256 if small else 2048
    x, y = synthetic(n, (3, 32, 32), 10)
    x, y = x.to(dev), y.to(dev)
    recipe = dict(optimizer="sgd", lr=0.1, momentum=0.9, optim_weight_decay=5e-4, batch_size=128,
                  lr_schedule="step", lr_step=50, augment="crop-flip", epochs=1)
    archs = ("resnet18_cifar",) if small else ("resnet18_cifar", "vgg16_cifar")
    for arch in archs:
        for label, extra in (("ce", {}), ("pgd-at (L2, 7 steps)",
                                          dict(loss="pgd-at", adv_eps=1.0, adv_steps=7,
                                               adv_step_size=0.5))):
            for amp in (False, True):
                torch.manual_seed(0)
                model = create_model(arch).to(dev)
                cfg = TrainConfig(**recipe, **extra, amp=amp)
                hist, sec = timed(dev, lambda: train(model, x, y, cfg, progress=False))
                check(f"train {arch} {label}{' bf16' if amp else ''}",
                      torch.isfinite(torch.tensor(hist["loss"])).all(),
                      f"{n / sec:.0f} images/s, loss {hist['loss'][0]:.3f}")
    for loss, extra in (("trades", dict(adv_norm="linf", adv_eps=8 / 255, adv_steps=10,
                                        adv_step_size=2 / 255)),
                        ("mart", dict(adv_norm="linf", adv_eps=8 / 255, adv_steps=10,
                                      adv_step_size=2 / 255))):
        torch.manual_seed(0)
        model = create_model("resnet18_cifar").to(dev)
        cfg = TrainConfig(**{**recipe, "epochs": 1}, loss=loss, **extra)
        hist, sec = timed(dev, lambda: train(model, x[:256], y[:256], cfg, progress=False))
        check(f"train resnet18_cifar {loss}", torch.isfinite(torch.tensor(hist["loss"])).all(),
              f"{256 / sec:.0f} images/s")


def attack_and_spectral_paths(dev):
    x, _ = synthetic(64, (1, 28, 28), 10)
    torch.manual_seed(0)
    model = create_model("fc100-100-10").to(dev).eval()
    target = (model(x.to(dev)).argmax(1) + 1) % 10
    res, sec = timed(dev, lambda: lbfgs_min_distortion(model, x.to(dev), target, search_steps=3,
                                                       max_iter=30))
    check("L-BFGS attack (float64)", res.images.device.type == dev.type,
          f"{int(res.success.sum())}/64 reached the target in {sec:.1f} s")
    conv = torch.nn.Conv2d(3, 16, 3, padding=1)
    cpu_norm = conv_norm(conv, (3, 32, 32))
    dev_norm = conv_norm(conv.to(dev), (3, 32, 32))
    check("spectral norm CPU vs device", abs(cpu_norm - dev_norm) < 1e-4 * cpu_norm,
          f"{cpu_norm:.6f} vs {dev_norm:.6f}")


def agreement(dev):
    """Small cases computed on the CPU and on the device."""
    torch.manual_seed(0)
    a_cpu = create_model("mlp", hidden=(64,), activation="relu").eval()
    b_cpu = create_model("mnist_conv").eval()
    a_dev = create_model("mlp", hidden=(64,), activation="relu").eval()
    a_dev.load_state_dict(a_cpu.state_dict())
    b_dev = create_model("mnist_conv").eval()
    b_dev.load_state_dict(b_cpu.state_dict())
    a_dev, b_dev = a_dev.to(dev), b_dev.to(dev)
    x, y = synthetic(64, (1, 28, 28), 10, seed=1)
    with torch.no_grad():
        d = (a_cpu(x) - a_dev(x.to(dev)).cpu()).abs().max().item()
    check("forward CPU vs device", d < 1e-4, f"max |diff| {d:.2e}")
    i_cpu = invert(b_cpu, x, steps=100)
    i_dev = invert(b_dev, x.to(dev), steps=100)
    d = (i_cpu.distance - i_dev.distance).abs().max().item()
    check("inversion CPU vs device (same start)", d < 5e-3, f"max |distance diff| {d:.2e}")
    s_cpu = stir(a_cpu, b_cpu, x, steps=100, use_cache=False)
    s_dev = stir(a_dev, b_dev, x.to(dev), steps=100, use_cache=False)
    d = max(abs(s_cpu.m2_given_m1.mean - s_dev.m2_given_m1.mean),
            abs(s_cpu.m1_given_m2.mean - s_dev.m1_given_m2.mean))
    check("STIR CPU vs device", d < 5e-3, f"max |diff| {d:.2e}")
    r1, r2 = representation(b_cpu, x), representation(b_dev, x.to(dev))
    c_cpu, c_dev = linear_cka(r1, representation(a_cpu, x)), linear_cka(r2, representation(a_dev, x.to(dev)))
    check("CKA CPU vs device", abs(c_cpu - c_dev) < 1e-5, f"{c_cpu:.6f} vs {c_dev:.6f}")
    p_cpu = pgd(a_cpu, x, y, eps=1.0, steps=5, random_start=False)
    p_dev = pgd(a_dev, x.to(dev), y.to(dev), eps=1.0, steps=5, random_start=False)
    d = (p_cpu - p_dev.cpu()).abs().max().item()
    check("PGD (no random start) CPU vs device", d < 1e-3, f"max |diff| {d:.2e}")


def stir_paths(dev, small):
    n = 64 if small else 256
    x, _ = synthetic(n, (3, 32, 32), 10, seed=2)
    torch.manual_seed(0)
    m1, m2 = create_model("resnet18_cifar").to(dev), create_model("resnet18_cifar").to(dev)
    steps = 20 if small else 100
    inv, sec = timed(dev, lambda: invert(m1, x.to(dev), steps=steps))
    check("inversion resnet18_cifar (paper's procedure)", inv.distance.isfinite().all(),
          f"{n} images x {steps} steps: {steps / sec:.1f} steps/s ({n * steps / sec:.0f} image-steps/s)")
    r, sec = timed(dev, lambda: stir(m1, m2, x.to(dev), steps=steps, use_cache=False))
    check("STIR resnet18 pair", 0 <= r.m2_given_m1.mean <= 1, f"{r} in {sec:.1f} s")
    a = torch.randn(10000, 512, device=dev)
    b = a @ torch.randn(512, 512, device=dev) + torch.randn(10000, 512, device=dev)
    linear_cka(a, b)
    _, sec = timed(dev, lambda: linear_cka(a, b))
    check("CKA 10,000 x 512", True, f"{1000 * sec:.1f} ms")


def transfer_paths(dev, small):
    import torchvision.models as tv

    side = 64 if small else 224
    tv_model = tv.resnet50()
    state = {f"module.model.{k}": v for k, v in tv_model.state_dict().items()}
    state.update({f"module.attacker.model.{k}": v for k, v in tv_model.state_dict().items()})
    state["module.normalizer.new_mean"] = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    state["module.normalizer.new_std"] = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "resnet50_l2_eps3.ckpt"
        torch.save({"model": state, "epoch": 1}, path)
        model = load_robustness_checkpoint(path, input_shape=(3, side, side)).to(dev)
    x, y = synthetic(96, (3, side, side), 5, seed=3)
    task = Task("synthetic", x[:64], y[:64], x[64:80], y[64:80], x[80:], y[80:], 5)
    for run in (fixed_feature, fine_tune):
        r, sec = timed(dev, lambda: run(model, task, lrs=(0.01,), epochs=1, batch_size=32,
                                         lr_step=None, use_cache=False, progress=False))
        check(f"transfer resnet50 {run.__name__} at {side}px", 0 <= r.test_acc <= 1,
              f"{96 / sec:.0f} images/s")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu for a dry run")
    parser.add_argument("--small", action="store_true", help="smaller sizes (a CPU dry run)")
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device: run with --device cpu --small for a dry run on the CPU")
        return 2
    dev = resolve_device(args.device)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "CPU"
    print(f"gpu_check: torch {torch.__version__}, device {dev} ({name}), python "
          f"{sys.version.split()[0]}", flush=True)
    t0 = time.perf_counter()
    for section in (lambda: agreement(dev), lambda: training_paths(dev, args.small),
                    lambda: attack_and_spectral_paths(dev), lambda: stir_paths(dev, args.small),
                    lambda: transfer_paths(dev, args.small)):
        try:
            section()
        except Exception as err:  # noqa: BLE001 - report and go on with the other paths
            check("section", False, f"{type(err).__name__}: {err}")
    failed = [r for r in RESULTS if not r[2]]
    print(f"gpu_check: {len(RESULTS) - len(failed)}/{len(RESULTS)} checks passed in "
          f"{time.perf_counter() - t0:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
