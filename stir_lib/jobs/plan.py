"""Plans of jobs: dependency waves, what is missing from the cache, running one job, and a
plan's cost table."""

from __future__ import annotations

from ..models import resolve_device

__all__ = ["levels", "missing", "run_job", "describe_plan"]


def _unique(jobs) -> list:
    seen, out = set(), []
    for j in jobs:
        k = (j.kind, j.key())
        if k not in seen:
            seen.add(k)
            out.append(j)
    return out


def levels(jobs) -> list[list]:
    """The jobs and everything they depend on, in waves: every job's dependencies are in
    earlier waves. Duplicates (the same cache entry) appear once."""
    everything, stack = {}, list(jobs)
    while stack:
        j = stack.pop()
        k = (j.kind, j.key())
        if k in everything:
            continue
        everything[k] = j
        stack.extend(j.deps())
    depth: dict = {}

    def level(j) -> int:
        k = (j.kind, j.key())
        if k not in depth:
            depth[k] = 1 + max((level(d) for d in j.deps()), default=-1)
        return depth[k]

    waves: list[list] = []
    for k, j in everything.items():
        lv = level(j)
        while len(waves) <= lv:
            waves.append([])
        waves[lv].append(j)
    order = {k: i for i, k in enumerate(everything)}
    return [sorted(w, key=lambda j: order[(j.kind, j.key())]) for w in waves]


def missing(jobs) -> list:
    """The jobs (and dependencies) whose cache entries are absent, in dependency order."""
    return [j for wave in levels(jobs) for j in wave if not j.cached()]


def run_job(job, device="auto", progress=False) -> str:
    """Compute one job's cache entry (the function a cluster job runs); returns its key.

    ``device`` is resolved here, once, for the whole job and its dependencies
    (``"auto"``: CUDA when the worker has a GPU, else the CPU).
    """
    job.run(resolve_device(device), progress)
    return job.key()


def describe_plan(jobs, flops_per_second: float, seconds_of=None) -> list[dict]:
    """One row per job: wave, kind, description, cached (None: unknown, the data are not on
    this machine), estimated FLOPs and seconds: ``seconds_of(job)`` when given (the
    calibrated model, :func:`stir_lib.jobs.cost.predict_seconds`), else the FLOPs at
    ``flops_per_second``.

    Without the data the waves cannot be computed (keys need the data's fingerprints);
    the jobs are then listed in plan order, dependencies first, as wave None.
    """
    try:
        waves = list(enumerate(levels(jobs)))
    except Exception:  # noqa: BLE001 - no data: list without keys
        seen, flat = set(), []
        def add(j):
            for d in j.deps():
                add(d)
            if j not in seen:
                seen.add(j)
                flat.append(j)
        for j in jobs:
            add(j)
        waves = [(None, flat)]
    rows = []
    for wave, js in waves:
        for j in js:
            try:
                done, key = j.cached(), j.key()
            except Exception:  # noqa: BLE001
                done, key = None, None
            f = j.flops()
            rows.append({"wave": wave, "kind": j.kind, "job": j.describe(), "cached": done,
                         "key": key, "flops": f,
                         "seconds": 0.0 if done else (seconds_of(j) if seconds_of is not None
                                                      else f / flops_per_second)})
    return rows

