"""Every notebook of the book runs at smoke scale, end to end, through the real runner.

One subprocess per notebook (``python -m stir_lib.book.run execute --scale smoke <name>``), with
the build and results folders in a temporary directory and the session's temporary model
cache. Chapters must also leave a results file with at least one well-formed claim.

The chapters with a plan of jobs (STIR and transfer) run on entries computed beforehand by
``cluster.warm``: their notebooks must find every entry they need and create none, so a plan
that misses what a notebook computes fails here. The warm runs in this process (the "debug"
executor, 13 s); two local workers spend 40 s of the same two cores on starting a process per
wave, and tests/test_cluster.py tests those. Deselect with ``-m "not smoke"``.
"""

from __future__ import annotations

import json
import os
from collections import Counter
import subprocess
import sys
from pathlib import Path

import pytest

from stir_lib import cache, cluster, jobs as J
from stir_lib.book.run import SUMMARY_PAGES
from stir_lib.chapters import MODEL_JOBS, NOTEBOOKS as PLAN_NOTEBOOKS, PLANS
from stir_lib.jobs.cost import model_signature
from stir_lib.paths import toc_notebooks

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = toc_notebooks(ROOT)
GUIDES = {"stir_your_models"}   # pages that show how to use the library and check no claim
# the claims each chapter judges (PAPER_TARGETS.md): a chapter that lost or mislabelled a
# claim's row fails here
CLAIMS = {"blind_spots": {"S2", "S3", "S4", "S5", "S6"}, "units_vs_random": {"S1"},
          "lipschitz": {"S7"}, "stir_pairs": {"N1", "N2", "N3"}, "stir_layers": {"N4", "N5"},
          "stir_losses": {"N6", "N7"}, "transfer": {"R1", "R2", "R3", "R4", "R5"}}


PLANNED = {n for names in PLAN_NOTEBOOKS.values() for n in names}   # chapters with a job plan


def entries() -> set[str]:
    """The session cache's complete entries, as "kind/key"."""
    return {f"{e['kind']}/{e['key']}" for e in cache.entries()}


def model_signatures(keys) -> Counter:
    """The signatures of the model entries among ``keys`` ("kind/key"), with multiplicity."""
    out = Counter()
    for k in keys:
        kind, key = k.split("/", 1)
        if kind == "model":
            c = json.loads((cache.cache_root() / kind / key / "meta.json").read_text())["config"]
            out[model_signature(c["name"], c["model_kwargs"], c["config"])] += 1
    return out


@pytest.fixture(scope="module")
def warmed_plans(tmp_path_factory):
    """The STIR and transfer smoke plans, computed into the session's cache in this process."""
    plan = [job for make_plan in PLANS.values() for job in make_plan("smoke")]
    report = cluster.warm(plan, executor="debug", folder=tmp_path_factory.mktemp("jobs"),
                          progress=False)
    assert report.ok, report.failed
    assert not J.missing(plan)
    have = entries()
    assert {f"{j.kind}/{j.key()}" for w in J.levels(plan) for j in w} <= have
    return plan


@pytest.fixture(scope="module")
def book_out(tmp_path_factory):
    """Build and results folders shared by the module, so the summary pages see chapters."""
    out = tmp_path_factory.mktemp("book")
    return out / "build", out / "results"


@pytest.mark.smoke
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_at_smoke_scale(name, book_out, request):
    build, results = book_out
    if name in PLANNED:
        request.getfixturevalue("warmed_plans")
    before = entries()
    env = {**os.environ, "STIR_ROOT": str(ROOT), "STIR_BUILD": str(build),
           "STIR_RESULTS": str(results), "STIR_PROGRESS": "0"}
    assert env.get("STIR_CACHE"), "conftest should point STIR_CACHE at a temporary folder"
    # --no-summary: each page runs once (the summary pages are parameters of this test too)
    proc = subprocess.run([sys.executable, "-m", "stir_lib.book.run", "execute", "--scale", "smoke",
                           "--no-summary", name], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=1500)
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert (build / "executed" / "notebooks" / f"{name}.ipynb").exists()
    assert f"[run] {name}: done" in proc.stdout
    assert sum(f"[run] {page}: done" in proc.stdout for page in NOTEBOOKS) == 1, proc.stdout
    if name in PLANNED:
        made = entries() - before
        assert not made, f"{name} computed entries its plan does not list: {sorted(made)}"
    if name in MODEL_JOBS:
        # the models the cost model counts for this notebook are the ones it trains: every
        # model it made is counted, and every counted one is in the cache (made here or by
        # an earlier chapter that shares it)
        counted = Counter(model_signature(j.arch, j.kwargs, j.config)
                          for j in set(MODEL_JOBS[name]("smoke")))
        made = model_signatures(entries() - before)
        assert not made - counted, f"{name} trained models model_jobs does not list: {made - counted}"
        missing = counted - model_signatures(entries())
        assert not missing, f"{name}: model_jobs lists models nobody trained: {missing}"
    timings = json.loads((build / "executed" / "timings.json").read_text())
    assert timings[name]["scale"] == "smoke"
    if name in SUMMARY_PAGES or name in GUIDES:
        return
    saved = results / f"{name}.json"
    assert saved.exists(), f"{name} saved no results in {results}"
    data = json.loads(saved.read_text())
    assert data["chapter"] == name and data["scale"] == "smoke"
    assert data["claims"], f"{name} saved no claims"
    assert {c["claim"] for c in data["claims"]} == CLAIMS[name]
    for claim in data["claims"]:
        assert claim["paper"] and claim["ours"] and claim["reason"], claim
