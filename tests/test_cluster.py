"""Plans of jobs and their execution through submitit (local executor; SLURM without a cluster).

* (that the STIR and transfer plans, warmed by two local workers, hold every entry their
  notebooks need is tested where the notebooks run: tests/test_notebooks.py);
* two processes racing for one entry leave one good entry and no temporary folder;
* a worker killed mid-job leaves no loadable entry, and a second warm completes the plan;
* ``plan`` lists exactly what is missing;
* a SLURM submission builds the job array with the given parameters (``sbatch`` replaced
  by ``echo``), and submitit's debug executor runs the job functions.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stir_lib import cache, cluster, jobs as J
from stir_lib.training import TrainConfig

ROOT = Path(__file__).resolve().parents[1]


_RACE = r"""
import sys
from stir_lib.jobs import Data, Train, run_job
from stir_lib.training import TrainConfig
job = Train("fc100-100-10", TrainConfig(epochs=int(sys.argv[1]), batch_size=50, seed=7),
            Data("mnist", "train", n=int(sys.argv[2])))
print(run_job(job, "cpu"))
"""


def race_job(epochs: int, n: int) -> J.Train:
    return J.Train("fc100-100-10", TrainConfig(epochs=epochs, batch_size=50, seed=7),
                   J.Data("mnist", "train", n=n))


def test_two_workers_racing_for_one_entry_leave_one_good_entry(tmp_path, monkeypatch):
    env = {**os.environ, "STIR_CACHE": str(tmp_path), "STIR_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", _RACE, "3", "2000"], env=env,
                              stdout=subprocess.PIPE, text=True) for _ in range(2)]
    keys = [p.communicate(timeout=300)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs) and keys[0] == keys[1]
    found = [p for p in (tmp_path / "model").iterdir()]
    assert [p.name for p in found] == [keys[0]], found        # one entry, no temporaries
    monkeypatch.setenv("STIR_CACHE", str(tmp_path))
    trained = race_job(3, 2000).run("cpu")                    # loads it: a good entry
    assert trained.key == keys[0]


def test_killed_worker_leaves_nothing_loadable_and_warm_completes(tmp_path, monkeypatch):
    monkeypatch.setenv("STIR_CACHE", str(tmp_path / "cache"))
    job = race_job(60, 6000)
    env = {**os.environ, "STIR_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", _RACE, "60", "6000"], env=env)
    ckpt = cache.checkpoint_path("model", job.key_config())
    deadline = time.time() + 120
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    assert ckpt.exists(), "the worker was killed before its first checkpoint"
    assert not job.cached()                                    # nothing published
    assert [j.describe() for j in J.missing([job])] == [job.describe()]
    report = cluster.warm([job], executor="local", workers=1, folder=tmp_path / "jobs",
                          progress=False, poll=0.5)
    assert report.ok and job.cached() and not ckpt.exists()
    history = cache.load_entry("model", job.key())["history"]
    assert history["resumed_at_epoch"] >= 1                    # it resumed, not restarted


def test_plan_lists_exactly_what_is_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("STIR_CACHE", str(tmp_path))
    a, b = race_job(1, 500), race_job(2, 500)
    inv = J.Invert(a, J.Data("mnist", "test", n=8), steps=5)
    assert {j.describe() for j in J.missing([inv, b])} == {a.describe(), b.describe(), inv.describe()}
    a.run("cpu")
    assert {j.describe() for j in J.missing([inv, b])} == {b.describe(), inv.describe()}
    rows = J.describe_plan([inv, b], 1e9)
    assert [r["cached"] for r in rows] == [True, False, False] or \
        sorted(r["cached"] for r in rows) == [False, False, True]
    assert all(r["flops"] > 0 for r in rows)


def test_slurm_array_is_built_with_the_given_parameters(tmp_path, monkeypatch):
    import submitit

    monkeypatch.setenv("STIR_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(submitit.SlurmExecutor, "_make_submission_command",
                        lambda self, path: ["echo", "Submitted batch job 4242"])
    monkeypatch.setattr(submitit.SlurmExecutor, "affinity", staticmethod(lambda: 1))  # no srun here
    plan = [race_job(1, 300 + i) for i in range(5)]
    report = cluster.warm(plan, executor="slurm", partition="gpu", gpus_per_job=1,
                          max_parallel=3, time_hours=2.0, wait=False,
                          folder=tmp_path / "jobs", progress=False)
    assert report.submitted == 5 and report.job_ids == [f"4242_{i}" for i in range(5)]
    scripts = list((tmp_path / "jobs").rglob("*.sh"))
    text = scripts[0].read_text()
    assert "#SBATCH --array=0-4%3" in text and "#SBATCH --partition=gpu" in text
    assert "#SBATCH --gpus-per-node=1" in text and "#SBATCH --time=120" in text
    with pytest.raises(ValueError, match="--partition"):
        cluster.make_executor("slurm", tmp_path)


def test_debug_executor_runs_the_job_functions(tmp_path, monkeypatch):
    monkeypatch.setenv("STIR_CACHE", str(tmp_path / "cache"))
    job = race_job(1, 300)
    report = cluster.warm([job], executor="debug", folder=tmp_path / "jobs", progress=False)
    assert report.ok and report.completed == 1 and job.cached()


def test_plan_command_prints_the_plan(tmp_path):
    env = {**os.environ, "STIR_CACHE": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "stir_lib.book.run", "plan", "--scale", "smoke",
                           "stir"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    last = proc.stdout.strip().splitlines()[-1]
    assert "[plan]" in last and "0 cached" in last and "models" in last
    proc = subprocess.run([sys.executable, "-m", "stir_lib.book.run", "plan", "--scale", "smoke",
                           "nothing"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode != 0 and "no plan for 'nothing'" in proc.stderr
