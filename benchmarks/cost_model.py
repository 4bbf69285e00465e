"""Calibrate the plan's cost model on a cold build, and compare its predictions with the clock.

    .venv/bin/python benchmarks/cost_model.py calibrate --build /path/to/clone/_build [--write]
    .venv/bin/python benchmarks/cost_model.py compare --build /path/to/clone/_build

``--build`` is the ``_build`` folder of a cold ci build (``make book`` from a fresh clone):
its ``ci-cache`` holds one entry per computed job with the seconds the computation took
(``meta.json``), ``ci-data`` the data, ``executed/timings.json`` each notebook's wall time.

``calibrate`` lists the ci plans of the STIR and transfer chapters (the same functions the
notebooks build their zoos from) and the models the Szegedy chapters train
(``chapters.MODEL_JOBS``: their notebooks train them, so their entries are found by
architecture and training configuration), reads each job's measured seconds, and fits per family
the rate and the fixed seconds per pass of :mod:`stir_lib.jobs.cost`; it prints the fit, the
jobs' measured and predicted seconds per notebook, and the same prediction with the
notebook's own jobs left out of the fit (leave one notebook out: an out-of-sample check).
``--write`` stores the rates in ``stir_lib/jobs/calibration.py``.

``compare`` prints, per notebook, the predicted time (its jobs, those computed by the
notebook that runs first in its lane for a job two notebooks share, plus the fixed
seconds of a notebook's own code) beside the measured wall time and their ratio.

For the Szegedy chapters the model counts their training and their L-BFGS attacks
(``chapters.ATTACK_JOBS``). The notebooks cache no attack, so ``time-attacks`` times each
listed attack on one thread on its model from the build's cache (MNIST test images it
classifies correctly, towards their runner-up classes) and writes ``attack-times.json``
beside the cache, which ``calibrate`` fits; their other computations (spectral norms, noise
tests) are the rest of the notebook's own time.

    STIR_THREADS=1 .venv/bin/python benchmarks/cost_model.py time-attacks --build CLONE/_build
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# the notebooks whose jobs are counted, in lane order (a job two notebooks share is counted
# for the first); the STIR lane, then the other lane's notebooks with models to count
ORDER = ("stir_pairs", "stir_layers", "stir_losses", "blind_spots", "units_vs_random",
         "lipschitz", "transfer")


def _model_entries(build: Path) -> dict[str, list[tuple[str, float]]]:
    """signature -> (key, seconds) of every model entry of the build's cache with it."""
    from stir_lib.jobs.cost import model_signature

    out: dict[str, list[tuple[str, float]]] = {}
    for meta in sorted((build / "ci-cache" / "model").glob("*/meta.json")):
        m = json.loads(meta.read_text())
        c = m["config"]
        out.setdefault(model_signature(c["name"], c["model_kwargs"], c["config"]), []).append(
            (meta.parent.name, m["computed"]["seconds"]))
    return out


def _setup(build: Path) -> None:
    os.environ["STIR_CACHE"] = str(build / "ci-cache")
    os.environ["STIR_DATA"] = str(build / "ci-data")
    sys.path.insert(0, str(ROOT))


def notebook_jobs(build: Path) -> dict[str, list[dict]]:
    """notebook -> its jobs not computed by an earlier notebook of ORDER, each with its
    family, counted work and measured seconds (from the entry's meta.json)."""
    from stir_lib import jobs as J
    from stir_lib.cache import memoized_fingerprints
    from stir_lib.chapters import ATTACK_JOBS, MODEL_JOBS, NOTEBOOKS, PLANS
    from stir_lib.jobs import cost

    chapter_of = {nb: c for c, nbs in NOTEBOOKS.items() for nb in nbs}
    entries = _model_entries(build)
    seen, out = set(), {}
    with memoized_fingerprints():
        for nb in ORDER:
            rows = []
            if nb in MODEL_JOBS:         # trained inside the notebook: found by configuration
                for j in MODEL_JOBS[nb]("ci"):
                    if j in seen:
                        continue
                    seen.add(j)
                    found = entries.get(cost.model_signature(j.arch, j.kwargs, j.config), [])
                    if not found:
                        raise SystemExit(f"cost_model: expected a cold build's entry for "
                                         f"{nb}'s {j.describe()} with {j.config}, found none")
                    flops, calls = cost.work(j)
                    rows.append({"family": cost.family(j), "flops": flops, "calls": calls,
                                 "seconds": found.pop(0)[1], "job": j.describe()})
                timed = build / "attack-times.json"
                if nb in ATTACK_JOBS:    # predicted always; measured where time-attacks ran
                    attacks = ATTACK_JOBS[nb]("ci")
                    seconds = [None] * len(attacks)
                    if timed.exists():
                        times = [t for t in json.loads(timed.read_text()) if t["notebook"] == nb]
                        if [t["label"] for t in times] != [a.label for a in attacks]:
                            raise SystemExit(f"cost_model: {timed} does not list {nb}'s attacks "
                                             f"as the chapter does now; run time-attacks again")
                        seconds = [t["seconds"] for t in times]
                    rows += [{"family": cost.family(a), "flops": a.flops(), "calls": a.calls(),
                              "seconds": s, "job": a.describe()}
                             for a, s in zip(attacks, seconds)]
                out[nb] = rows
                continue
            for wave in J.levels(PLANS[chapter_of[nb]]("ci", notebooks=(nb,))):
                for j in wave:
                    k = (j.kind, j.key())
                    if k in seen:
                        continue
                    seen.add(k)
                    fam = cost.family(j)
                    if fam is None:
                        continue
                    meta = build / "ci-cache" / j.kind / j.key() / "meta.json"
                    if not meta.exists():
                        raise SystemExit(f"cost_model: expected a cold build's entry for "
                                         f"{j.describe()} at {meta}, found none; build the "
                                         f"book at ci scale from a fresh clone first")
                    flops, calls = cost.work(j)
                    rows.append({"family": fam, "flops": flops, "calls": calls,
                                 "seconds": json.loads(meta.read_text())["computed"]["seconds"],
                                 "job": j.describe()})
            out[nb] = rows
    return out


def time_attacks(build: Path) -> None:
    """Time every attack of ``chapters.ATTACK_JOBS`` at ci scale, on one thread (as the
    build's lanes run; ``STIR_THREADS=1``), on its model from the
    build's cache (the entry of the same configuration) and the first ``n`` correctly
    classified MNIST test images, towards their runner-up classes (the chapters' rule);
    write ``attack-times.json`` into the build folder for ``calibrate``."""
    import time

    import torch

    from stir_lib import cache, data
    from stir_lib.attacks import lbfgs_min_distortion, predict
    from stir_lib.chapters import ATTACK_JOBS
    from stir_lib.chapters.blind_spots import targets
    from stir_lib.jobs.cost import model_signature
    from stir_lib.models import create_model

    if os.environ.get("STIR_THREADS") != "1":    # the library's loops follow STIR_THREADS
        raise SystemExit("time-attacks: expected STIR_THREADS=1 (one thread, as in the build's "
                         f"lanes), got {os.environ.get('STIR_THREADS')!r}; run it as "
                         "STIR_THREADS=1 .venv/bin/python benchmarks/cost_model.py time-attacks ...")
    torch.set_num_threads(1)
    entries = _model_entries(build)
    x_test, y_test = data.mnist("test")
    out = []
    for nb, attacks in ATTACK_JOBS.items():
        for a in attacks("ci"):
            sig = model_signature(a.model.arch, a.model.kwargs, a.model.config)
            if sig not in entries:
                raise SystemExit(f"time-attacks: expected the build's entry for {a.describe()}, "
                                 f"found none; build the book at ci scale first")
            model = create_model(a.model.arch, **dict(a.model.kwargs))
            model.load_state_dict(cache.load_entry("model", entries[sig][0][0])["state"])
            model.eval()
            ok = predict(model, x_test) == y_test
            x = x_test[ok][:a.n]
            t0 = time.perf_counter()
            r = lbfgs_min_distortion(model, x, targets(model, x), search_steps=a.search_steps,
                                     max_iter=a.max_iter, loss=a.loss, progress=False)
            seconds = time.perf_counter() - t0
            out.append({"notebook": nb, "label": a.label, "seconds": round(seconds, 2),
                        "evaluations": r.evaluations})
            print(f"{nb:12s} {a.describe():70s} {seconds:7.1f} s {r.evaluations:6d} evaluations",
                  flush=True)
    (build / "attack-times.json").write_text(json.dumps(out, indent=1))
    print(f"wrote {build / 'attack-times.json'}")


def _predict(rows, rates) -> float:
    from stir_lib.jobs import cost
    return sum(cost.seconds(r["family"], r["flops"], r["calls"], rates) for r in rows)


def _fit(rows):
    from stir_lib.jobs import cost
    return cost.fit((r["family"], r["flops"], r["calls"], r["seconds"]) for r in rows)


def calibrate(build: Path, write: bool) -> dict:
    by_nb = notebook_jobs(build)
    if any(r["seconds"] is None for rows in by_nb.values() for r in rows):
        raise SystemExit(f"calibrate: expected the attacks' measured seconds in "
                         f"{build / 'attack-times.json'}, found none; run first: "
                         f"STIR_THREADS=1 .venv/bin/python benchmarks/cost_model.py "
                         f"time-attacks --build {build}")
    every = [r for rows in by_nb.values() for r in rows]
    rates = _fit(every)
    timings = json.loads((build / "executed" / "timings.json").read_text())
    print(f"{'family':24s} {'jobs':>5s} {'GFLOP/s':>9s} {'ms/pass':>8s}")
    for fam, r in rates.items():
        print(f"{fam:24s} {r['jobs']:5d} {r['flops_per_second'] / 1e9:9.1f} "
              f"{r['seconds_per_call'] * 1e3:8.2f}")
    print(f"\n{'notebook':12s} {'jobs':>5s} {'measured':>9s} {'fitted':>8s} {'held out':>9s}")
    own = {}
    for nb, rows in by_nb.items():
        rest = [r for n, rs in by_nb.items() if n != nb for r in rs]
        held = _fit(rest)
        held_out = (_predict(rows, held) if all(r["family"] in held for r in rows)
                    else float("nan"))
        measured = sum(r["seconds"] for r in rows)
        own[nb] = timings[nb]["seconds"] - measured
        print(f"{nb:12s} {len(rows):5d} {measured:9.0f} {_predict(rows, rates):8.0f} "
              f"{held_out:9.0f}")
    from stir_lib.chapters import MODEL_JOBS
    # a planned notebook's own code; the Szegedy notebooks' remainder also holds their
    # attacks and tests, which the model does not count, so it is shown but not used
    overhead = statistics.median(v for k, v in own.items() if k not in MODEL_JOBS)
    print("\na notebook's own code (wall time minus its jobs' seconds): "
          + ", ".join(f"{k} {v:.0f} s" for k, v in own.items())
          + f"; median of the planned notebooks {overhead:.0f} s")
    if write:
        _write(rates, overhead, build)
    return rates


def _write(rates: dict, overhead: float, build: Path) -> None:
    import datetime
    import platform
    import subprocess

    commit = subprocess.run(["git", "-C", str(build.parent), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip() or "unknown"
    lines = [
        '"""The cost model\'s rates (:mod:`stir_lib.jobs.cost`), fitted by',
        "``benchmarks/cost_model.py calibrate --write`` on the cache entries of a cold ci build",
        "(written by that script; do not edit by hand).",
        '"""',
        "",
        '__all__ = ["BUILD", "DATE", "MACHINE", "RATES", "NOTEBOOK_SECONDS"]',
        "",
        f"BUILD = {commit!r}          # the commit whose cold ci build was measured",
        f"DATE = {datetime.date.today().isoformat()!r}",
        f"MACHINE = {(platform.processor() or platform.machine()) + f', {os.cpu_count()} cores'!r}",
        "# family -> FLOP/s sustained, fixed seconds per forward/backward pass over a batch,",
        "# and the number of jobs the fit saw (an infinite rate: the fit puts the family's",
        "# time on its passes alone)",
        "RATES = {",
    ]
    for fam, r in rates.items():
        rate = r["flops_per_second"]
        rate = 'float("inf")' if rate == float("inf") else f"{rate:.4g}"
        lines.append(f"    {fam!r}: {{\"flops_per_second\": {rate}, "
                     f"\"seconds_per_call\": {r['seconds_per_call']:.4g}, \"jobs\": {r['jobs']}}},")
    lines += ["}",
              "# a notebook's own code besides its jobs (imports, evaluation, plots): the median",
              "# over the planned notebooks of wall time minus the seconds of the jobs it computed",
              f"NOTEBOOK_SECONDS = {overhead:.0f}.0", ""]
    path = ROOT / "stir_lib" / "jobs" / "calibration.py"
    path.write_text("\n".join(lines))
    print(f"wrote {path}")


def compare(build: Path) -> None:
    from stir_lib.jobs import calibration

    by_nb = notebook_jobs(build)
    timings = json.loads((build / "executed" / "timings.json").read_text())
    from stir_lib.chapters import ATTACK_JOBS, MODEL_JOBS

    print(f"calibration: build {calibration.BUILD} of {calibration.DATE}")
    print(f"{'notebook':18s} {'predicted s':>11s} {'measured s':>10s} {'ratio':>6s} "
          f"{'jobs pred.':>10s} {'jobs meas.':>10s}")
    for nb, t in timings.items():
        if nb in by_nb:
            jobs_p = _predict(by_nb[nb], calibration.RATES)
            timed = [r["seconds"] for r in by_nb[nb] if r["seconds"] is not None]
            jobs_m = sum(timed)
            p = jobs_p + calibration.NOTEBOOK_SECONDS
            note = ("" if nb not in MODEL_JOBS else
                    "  (models and L-BFGS attacks; its other tests are not counted)"
                    if nb in ATTACK_JOBS else "  (models; its other computations are not counted)")
            if len(timed) < len(by_nb[nb]):
                note += "; measured: models only (no attack-times.json: run time-attacks)"
            print(f"{nb:18s} {p:11.0f} {t['seconds']:10.0f} {p / t['seconds']:6.2f} "
                  f"{jobs_p:10.0f} {jobs_m:10.0f}{note}")
        else:
            print(f"{nb:18s} {'(no jobs)':>11s} {t['seconds']:10.0f}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("command", choices=("calibrate", "compare", "time-attacks"))
    ap.add_argument("--build", type=Path, required=True,
                    help="the _build folder of a cold ci build (ci-cache, ci-data, executed/)")
    ap.add_argument("--write", action="store_true", help="calibrate: store the fitted rates")
    a = ap.parse_args(argv)
    if not (a.build / "ci-cache").is_dir():
        raise SystemExit(f"cost_model: expected a build folder with ci-cache/, got {a.build}")
    _setup(a.build.resolve())
    if a.command == "time-attacks":
        time_attacks(a.build)
    elif a.command == "calibrate":
        calibrate(a.build, a.write)
    else:
        compare(a.build)


if __name__ == "__main__":
    main()
