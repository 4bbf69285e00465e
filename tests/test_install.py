"""The library as people install it beside their own models: the wheel built from the
repository holds the whole package and nothing else, and installed into a new virtual
environment that already has a torch of its own (2.13.0, older than the book's), it keeps
that torch, brings only numpy and scipy, and runs STIR, CKA and PGD."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
USER_TORCH = "2.13.0"
# Packages of the extras (and the book's tooling) that a plain install must not bring.
NOT_INSTALLED = {"jupyter-book", "playwright", "submitit", "seaborn", "scikit-image",
                 "torchvision", "pandas", "matplotlib", "scikit-learn", "tqdm", "papermill"}


def run(cmd, timeout=600, **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True,
                          timeout=timeout, **kwargs)
    assert proc.returncode == 0, (f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n"
                                  f"{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return proc


def find_links() -> list[Path]:
    """The local folders pip looks for wheels in: find-links of its configuration files and
    of PIP_FIND_LINKS (URLs are left out)."""
    proc = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True,
                          text=True, timeout=120)
    values = []
    for line in proc.stdout.splitlines():
        key, _, value = line.partition("=")
        if key.strip().endswith("find-links"):
            values += value.strip().strip("'\"").split()
    values += os.environ.get("PIP_FIND_LINKS", "").split()
    return [Path(v.removeprefix("file://")) for v in values if "://" not in v.removeprefix("file://")]


# Not part of the source: what a checkout gathers (environments, builds, caches).
NOT_SOURCE = (".git", ".venv", "_build", "build", "dist", "*.egg-info", "__pycache__",
              ".pytest_cache", ".ruff_cache", ".ipynb_checkpoints", ".stir-cache", "mutants",
              "node_modules", ".whl")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel, built from a copy of the repository's source: an in-tree build would leave
    build/ and an egg-info in the checkout, and setuptools packs whatever a stale build/lib
    holds (a module deleted since would ship)."""
    src = tmp_path_factory.mktemp("src") / "stir_lib"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(*NOT_SOURCE))
    out = tmp_path_factory.mktemp("wheel")
    run([sys.executable, "-m", "pip", "wheel", src, "--no-deps", "--no-build-isolation",
         "--disable-pip-version-check", "-q", "-w", out])
    (found,) = out.glob("stir_lib-*.whl")
    return found


def test_the_wheel_holds_the_package_and_nothing_else(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    packages = sorted(p.parent.relative_to(ROOT).as_posix()
                      for p in (ROOT / "stir_lib").rglob("__init__.py"))
    assert len(packages) >= 7    # stir_lib, book, chapters, data, jobs, spectral, transfer
    missing = [p for p in packages if f"{p}/__init__.py" not in names]
    assert not missing, f"sub-packages missing from the wheel: {missing}"
    modules = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "stir_lib").rglob("*.py"))
    assert [m for m in modules if m not in names] == []
    assert "stir_lib/py.typed" in names
    stray = sorted(n for n in names if not n.startswith(("stir_lib/", "stir_lib-"))
                   or n.endswith((".ipynb", ".md")) and n.startswith("stir_lib/"))
    assert not stray, f"the wheel holds what is not the library (tests, notebooks?): {stray}"


def test_the_wheels_metadata_states_ranges_and_extras(wheel):
    with zipfile.ZipFile(wheel) as z:
        (meta,) = [n for n in z.namelist() if n.endswith(".dist-info/METADATA")]
        msg = Parser().parsestr(z.read(meta).decode())
    assert msg["Requires-Python"] == ">=3.10"
    reqs = msg.get_all("Requires-Dist")
    core = sorted(r for r in reqs if "extra ==" not in r)
    assert [r.split(">")[0].split("<")[0] for r in core] == ["numpy", "scipy", "torch"], core
    assert all(">=" in r for r in core), core
    assert {"vision", "plot", "data", "cluster", "book", "test"} <= set(msg.get_all("Provides-Extra"))


def test_a_clean_install_beside_the_users_torch(wheel, tmp_path):
    """A new venv with torch 2.13.0 (the user's), then pip install <wheel>: torch stays, no
    optional package arrives, and STIR, linear CKA and PGD run (no disk writes)."""
    local = [w for d in find_links() if d.is_dir() for w in d.glob(f"torch-{USER_TORCH}*.whl")]
    if not local:
        pytest.skip(f"no torch-{USER_TORCH}*.whl in pip's find-links folders "
                    f"{[str(d) for d in find_links()]}: without the local CPU wheel pip would "
                    f"download torch {USER_TORCH}'s multi-GB CUDA build")
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", venv])   # the outer pip installs into it
    py = venv / "bin" / "python"
    pip = [sys.executable, "-m", "pip", "--python", py, "--disable-pip-version-check"]
    # nothing of this checkout on the path (PYTHONPATH=. would show pip an installed stir_lib)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    # --no-compile: compiling torch's files to bytecode took 4/5 of this test's time; the
    # pip cache is kept (numpy and scipy are not downloaded again on the next run)
    run([*pip, "install", "-q", "--no-compile", f"torch=={USER_TORCH}"], env=env)
    run([*pip, "install", "-q", "--no-compile", wheel], env=env)
    listed = {re.sub(r"[-_.]+", "-", p["name"]).lower(): p["version"]
              for p in json.loads(run([*pip, "list", "--format=json"], env=env).stdout)}
    assert listed.get("torch", "").split("+")[0] == USER_TORCH, listed.get("torch")
    assert {"stir-lib", "numpy", "scipy"} <= set(listed), sorted(listed)
    brought = sorted(NOT_INSTALLED & set(listed))
    assert not brought, f"pip install stir_lib brought optional packages {brought}"

    cache = tmp_path / "cache"
    env = {**env, "STIR_CACHE": str(cache), "STIR_PROGRESS": "0"}
    proc = run([py, "-c", SCRIPT], cwd=tmp_path, env=env)
    out = json.loads(proc.stdout.splitlines()[-1])
    assert out["torch"].split("+")[0] == USER_TORCH
    assert out["stir_lib"].startswith(str(venv)), out["stir_lib"]   # the installed copy
    assert out["absent"] == sorted(OPTIONAL_MODULES), out["absent"]
    for key in ("m2_given_m1", "m1_given_m2", "cka", "cka_random"):
        assert 0.0 <= out[key] <= 1.0 + 1e-6, (key, out[key])
    assert abs(out["cka_self"] - 1.0) < 1e-6
    assert out["pgd_max_l2"] <= 0.5 + 1e-5 and 0.0 <= out["pgd_min"] and out["pgd_max"] <= 1.0
    assert out["pgd_loss_after"] >= out["pgd_loss_before"], out
    assert not cache.exists(), "the install check wrote to the cache"


OPTIONAL_MODULES = ("torchvision", "pandas", "tqdm", "matplotlib", "seaborn", "submitit",
                    "skimage", "sklearn")

SCRIPT = f"""
import importlib.util, json, math, sys
import torch
from torch import nn
import torch.nn.functional as F
import stir_lib
from stir_lib.stir import stir
from stir_lib.attacks import pgd

torch.manual_seed(0)
def mlp():
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 3))
m1, m2 = mlp(), mlp()
X = torch.rand(8, 1, 4, 4)
r = stir(m1, m2, X, steps=25, use_cache=False, progress=False)
feats = torch.randn(16, 5)
with torch.no_grad():
    y = m1(X).argmax(1)
    before = F.cross_entropy(m1(X), y).item()
x_adv = pgd(m1, X, y, norm="l2", eps=0.5, steps=5)
with torch.no_grad():
    after = F.cross_entropy(m1(x_adv), y).item()
out = {{
    "torch": torch.__version__, "stir_lib": stir_lib.__file__,
    "absent": sorted(m for m in {OPTIONAL_MODULES!r}
                     if m not in sys.modules and importlib.util.find_spec(m) is None),
    "m2_given_m1": float(r.m2_given_m1), "m1_given_m2": float(r.m1_given_m2),
    "cka": float(r.cka),
    "cka_self": stir_lib.linear_cka(feats, feats),
    "cka_random": stir_lib.linear_cka(feats, torch.randn(16, 7)),
    "pgd_max_l2": (x_adv - X).flatten(1).norm(dim=1).max().item(),
    "pgd_min": x_adv.min().item(), "pgd_max": x_adv.max().item(),
    "pgd_loss_before": before, "pgd_loss_after": after,
}}
assert all(math.isfinite(v) for v in out.values() if isinstance(v, float)), out
print(json.dumps(out))
"""
