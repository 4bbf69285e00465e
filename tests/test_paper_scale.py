"""The `paper` scale of the STIR and transfer chapters, run end to end on tiny fakes.

The paper's data (CIFAR-10) and checkpoints (Salman et al.'s robustness-library ResNets)
are not on this machine. These tests make files of the same formats (a CIFAR-10 folder of
Python-2 pickles; robustness-layout checkpoints of a torchvision-layout ResNet-18), run
each chapter at `scale=paper` on them with the sizes overridden to seconds, and check
what the chapters saved. They test the paper-scale code path, not the paper's numbers.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from test_data_paper import CIFAR10_NAMES, py2_pickle
from test_transfer import robustness_checkpoint

import torchvision.models as tv_models
from test_notebooks import CLAIMS

ROOT = Path(__file__).resolve().parents[1]
PER_BATCH = 30  # images in each of the five training batches and in the test batch


def write_tiny_cifar10(root: Path) -> Path:
    """cifar-10-batches-py with PER_BATCH images a batch, every class in every batch."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for b, name in enumerate(names, 1):
        labels = [i % 10 for i in range(PER_BATCH)]
        rows = rng.integers(0, 256, size=(PER_BATCH, 3072), dtype=np.uint8)
        rows[:, :1024] //= 2                          # a class-dependent red level, so the
        rows[:, :1024] += np.array(labels, dtype=np.uint8)[:, None] * 12  # task is learnable
        entry = {b"batch_label": f"batch {b}".encode(), b"labels": labels, b"data": rows,
                 b"filenames": [f"img_{b}_{i}.png".encode() for i in range(PER_BATCH)]}
        (folder / name).write_bytes(py2_pickle(entry))
    meta = {b"label_names": [n.encode() for n in CIFAR10_NAMES],
            b"num_cases_per_batch": PER_BATCH, b"num_vis": 3072}
    (folder / "batches.meta").write_bytes(py2_pickle(meta))
    return root


def execute(name: str | list[str], tmp_path: Path, **params) -> subprocess.CompletedProcess:
    """``python -m stir_lib.book.run execute --scale paper --no-summary name... -p key=value ...``
    in tmp_path (the summary pages have their own smoke test)."""
    env = {**os.environ, "STIR_ROOT": str(ROOT), "STIR_BUILD": str(tmp_path / "build"),
           "STIR_RESULTS": str(tmp_path / "results"), "STIR_PROGRESS": "0"}
    names = [name] if isinstance(name, str) else name
    cmd = [sys.executable, "-m", "stir_lib.book.run", "execute", "--scale", "paper",
           "--no-summary", *names]
    for key, value in params.items():
        cmd += ["-p", f"{key}={value!r}"]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


def run_chapters(names: list[str], tmp_path: Path, **params) -> list[dict]:
    """Execute the chapters in one run (one runner start-up, no summary pages) and return
    their results, each checked for the chapter's claims at scale paper."""
    proc = execute(names, tmp_path, **params)
    assert proc.returncode == 0, f"{names} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    executed = tmp_path / "build" / "executed" / "notebooks"
    assert {p.stem for p in executed.glob("*.ipynb")} == set(names)
    out = []
    for name in names:
        data = json.loads((tmp_path / "results" / f"{name}.json").read_text())
        assert data["scale"] == "paper" and data["claims"]
        assert {c["claim"] for c in data["claims"]} == CLAIMS[name]
        for claim in data["claims"]:
            assert claim["paper"] and claim["ours"] and claim["reason"], claim
        out.append(data)
    return out


@pytest.mark.smoke
def test_stir_chapters_run_at_paper_scale_on_tiny_cifar10(tmp_path):
    """The three STIR notebooks at scale=paper (CIFAR-10 ResNet18 and VGG16 at an eighth of
    their width, the paper's SGD recipe with crops and flips, shortened) on a tiny CIFAR-10
    folder."""
    root = write_tiny_cifar10(tmp_path / "data")
    sgd = dict(optimizer="sgd", lr=0.01, momentum=0.9, batch_size=32, epochs=1,
               augment="crop-flip")
    narrow = {"r18": ["resnet18_cifar", [["width", 8]], ["layer1", "layer4", "pool"]],
              "v16": ["vgg16_cifar", [["width_mult", 0.125]], ["block1", "block5", "pool"]]}
    tiny = dict(archs=narrow, seeds=[0, 1], n_stir=8, n_layers=8, inv_steps=3,
                snapshots=[1], recipes={"V": sgd, "AT": dict(sgd, loss="pgd-at", adv_norm="l2",
                                                              adv_eps=1.0, adv_steps=1)},
                loss_recipe=dict(sgd, adv_norm="linf", adv_eps=8 / 255, adv_steps=1, beta=6.0),
                chain=dict(sizes=[32, 64, 96, 128], steps=4, n_stir=8), eval_steps=1,
                n_eval=10)
    runs = run_chapters(["stir_pairs", "stir_layers", "stir_losses"], tmp_path,
                        data_root=str(root), verify_data=False, overrides=tiny)
    assert {c["claim"] for data in runs for c in data["claims"]} == {f"N{i}" for i in range(1, 8)}


@pytest.mark.smoke
def test_transfer_chapter_runs_at_paper_scale_from_robustness_checkpoints(tmp_path):
    root = write_tiny_cifar10(tmp_path / "data")
    paths = {}
    for i, eps in enumerate((0.0, 3.0)):
        torch.manual_seed(i)
        model = tv_models.resnet18()
        path = tmp_path / f"resnet18_l2_eps{eps}.ckpt"
        torch.save(robustness_checkpoint(model.state_dict()), path)
        paths[eps] = str(path)
    hp = dict(lrs=[0.01], epochs=1, lr_step=None)  # lists: papermill passes tuples as strings
    (data,) = run_chapters(["transfer"], tmp_path, checkpoints=paths, arch="resnet18",
                           data_root=str(root), verify_data=False,
                           overrides=dict(image_size=32, coarse=16, ff=hp, ft=hp,
                                          tasks={"cifar10": {"dataset": "cifar10"}},
                                          coarse_tasks=["cifar10"]))
    verdicts = {c["claim"]: c["verdict"] for c in data["claims"]}
    assert set(verdicts) == {"R1", "R2", "R3", "R4", "R5"}
    assert verdicts["R5"] == "not tested"            # one architecture: no widths


def test_transfer_chapter_names_missing_checkpoints(tmp_path):
    missing = tmp_path / "nowhere" / "resnet50_l2_eps3.ckpt"
    proc = execute("transfer", tmp_path, checkpoints={3.0: str(missing)})
    assert proc.returncode != 0
    assert "transfer" in proc.stdout + proc.stderr
    assert str(missing) in proc.stdout + proc.stderr
