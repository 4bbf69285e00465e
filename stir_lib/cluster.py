"""Run a chapter's plan of jobs on a SLURM cluster or as local processes, through submitit.

A plan (:mod:`stir_lib.jobs`) lists the cache entries a chapter needs. :func:`warm`
computes the missing ones with submitit (Facebook Research's ``submitit``, pinned in the
project): each wave of jobs (:func:`stir_lib.jobs.levels`: a job runs after the jobs it
needs) becomes

* on SLURM (``executor="slurm"``): one job array, ``--partition``, ``--gpus-per-job``,
  ``--time`` and ``--max-parallel`` (the array's ``%K``) as given; with ``wait=False``
  every wave is submitted at once, each depending (``afterok``) on the previous one;
* locally (``executor="local"``): ``workers`` processes, each running a share of the
  wave one job after another (submitit's ``LocalExecutor``), for tests and for a
  workstation with several GPUs (each worker sees one GPU when ``gpus_per_job=1``).

Every job writes its entry through the cache, which is safe for concurrent writers on a
shared filesystem (see :mod:`stir_lib.cache`): two jobs racing for one entry leave one
good entry, a killed job leaves nothing that loads and its training resumes from its
last checkpoint when resubmitted. Failed jobs are reported with the paths of their logs;
running :func:`warm` again submits only what is still missing. Afterwards,
``python -m stir_lib.book.run execute`` builds the book from the cache without training.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import cache, jobs as J
from .progress import bar
from .validation import check_choice, check_int

__all__ = ["WarmReport", "warm", "make_executor", "run_jobs", "GPU_FLOPS"]

# The effective throughput that turns a paper-scale plan's FLOP count into GPU time (an
# assumption, not a measurement; CPU plans use the calibrated rates of stir_lib.jobs.cost).
GPU_FLOPS = 25e12   # one modern data-centre GPU (fp32/TF32, small models)


def run_jobs(chunk: list, device: str = "auto") -> list[str]:
    """A worker's share of a wave: each job in turn (the function submitit pickles)."""
    os.environ.setdefault("STIR_PROGRESS", "0")
    keys = []
    for j in chunk:                      # one line per job in the job's log, with its time
        t = time.perf_counter()
        keys.append(J.run_job(j, device))
        print(f"[job] {j.describe()}: {time.perf_counter() - t:.1f} s", flush=True)
    return keys


@dataclass
class WarmReport:
    """What :func:`warm` did: jobs run, failures with their logs, seconds."""

    submitted: int = 0
    completed: int = 0
    failed: list = field(default_factory=list)      # (job description, error, log paths)
    job_ids: list = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed


def make_executor(executor: str, folder, *, workers: int = 1, partition: str | None = None,
                  gpus_per_job: int = 0, max_parallel: int | None = None,
                  time_hours: float = 4.0, cpus_per_job: int | None = None):
    """A configured submitit executor ("slurm", "local", or "debug": in this process)."""
    import submitit

    check_choice(executor, "executor", ("slurm", "local", "debug"))
    folder = Path(folder)
    timeout = int(60 * time_hours)
    if executor == "slurm":
        if not partition:
            raise ValueError("executor 'slurm': expected --partition P (the SLURM partition)")
        ex = submitit.SlurmExecutor(folder=folder)
        params = dict(partition=partition, time=timeout, array_parallelism=max_parallel or 256,
                      gpus_per_node=gpus_per_job or None, ntasks_per_node=1)
        if cpus_per_job:
            params["cpus_per_task"] = cpus_per_job
        ex.update_parameters(**{k: v for k, v in params.items() if v is not None})
        return ex
    if executor == "local":
        ex = submitit.LocalExecutor(folder=folder)
        ex.update_parameters(timeout_min=timeout, gpus_per_node=gpus_per_job)
        return ex
    return submitit.DebugExecutor(folder=folder)


def _shares(items: list, n: int) -> list[list]:
    n = max(1, min(n, len(items)))
    return [items[i::n] for i in range(n)]


@cache.memoized_fingerprints()   # the jobs' keys hash their data once per tensor
def warm(plan: list, *, executor: str = "local", workers: int = 1, folder=None,
         partition: str | None = None, gpus_per_job: int = 0, max_parallel: int | None = None,
         time_hours: float = 4.0, wait: bool = True, device: str = "auto",
         progress: bool | None = None, poll: float = 2.0) -> WarmReport:
    """Compute every missing entry of ``plan``, wave by wave (see the module docstring)."""
    check_int(workers, "workers")
    folder = Path(folder or Path.cwd() / "_build" / "submitit")
    waves = [[j for j in w if not j.cached()] for w in J.levels(plan)]
    waves = [w for w in waves if w]
    report, t0 = WarmReport(), time.perf_counter()
    if not waves:
        return report
    if not wait and executor == "local" and len(waves) > 1:
        raise ValueError("--no-wait with the local executor needs a plan of one wave (local "
                         "jobs cannot wait for each other); drop --no-wait or use slurm")
    ex = make_executor(executor, folder, workers=workers, partition=partition,
                       gpus_per_job=gpus_per_job, max_parallel=max_parallel,
                       time_hours=time_hours)
    total = sum(len(w) for w in waves)
    pbar = bar(total=total, desc=f"warm ({executor})", progress=progress)
    previous = None
    for wave in waves:
        if executor == "slurm":
            if previous is not None and not wait:   # the whole previous array must succeed
                ex.update_parameters(dependency="afterok:" + str(previous[0].job_id).split("_")[0])
            chunks = [[j] for j in wave]                 # one array task per job
        else:
            chunks = _shares(wave, workers)
        submitted = ex.map_array(run_jobs, chunks, [device] * len(chunks))
        report.submitted += len(wave)
        report.job_ids += [str(s.job_id) for s in submitted]
        previous = submitted
        if not wait:
            continue
        pending = list(zip(submitted, chunks))
        while pending:
            still = []
            for job, chunk in pending:
                if executor != "debug" and not job.done():   # debug jobs run in result()
                    still.append((job, chunk))
                    continue
                try:
                    job.result()
                    report.completed += len(chunk)
                except Exception as err:  # noqa: BLE001 - a failed job is reported, not raised
                    logs = [str(p) for p in (job.paths.stdout, job.paths.stderr)]
                    done = [j for j in chunk if j.cached()]
                    report.completed += len(done)
                    report.failed += [(j.describe(), f"{type(err).__name__}: "
                                       f"{str(err).strip().splitlines()[-1][:300] if str(err).strip() else ''}",
                                       logs) for j in chunk if not j.cached()]
                pbar.update(len(chunk))
            pending = still
            if pending:
                time.sleep(poll)
        if report.failed:      # later waves need these entries
            break
    pbar.close()
    report.seconds = time.perf_counter() - t0
    return report
