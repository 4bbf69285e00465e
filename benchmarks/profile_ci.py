"""Where the cold CI build's time goes: by stage, and inside the chapters by activity.

    .venv/bin/python benchmarks/profile_ci.py run              # every stage of .ci/run, cold cache
    .venv/bin/python benchmarks/profile_ci.py run --stages chapters,render
    .venv/bin/python benchmarks/profile_ci.py report           # _build/profile/profile.md

``run`` does what ``.ci/run`` does, one stage at a time, and times each stage (set-up, the
tests with each test's time, the notebooks at ci scale, rendering, the site check, the PDF).
The notebooks run as ``make book`` runs them (two lanes; ``--lanes 1``: one at a time, each
timed alone) under the sampling profiler py-spy (20 samples a second, from outside the
processes, without stopping them: ``--nonblocking``), which follows the lanes and their
papermill kernels. The stage times go to ``_build/profile/stages.json`` after every stage, so a run
that is stopped keeps what it measured.

``report`` turns the samples into seconds per activity (each sample is given to the outermost
library activity on its stack: training, inversion, attacks, transfer heads, CKA, spectral
norms; else plotting, imports, data loading, cache I/O, notebook code), the time a kernel is
not running Python (start-up, papermill's messages) as the rest of the notebook's wall time,
training seconds per model family from the cache's own records (each entry's ``meta.json``
keeps the seconds its computation took), and achieved FLOP/s of the planned jobs (STIR and
transfer chapters: :func:`stir_lib.jobs.Job.flops`) against a large matrix product on this
machine's torch.

Run it on a quiet machine: the numbers are wall-clock times (see the README, "Where the build's
time goes").
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RATE = 20                                   # py-spy samples per second
STAGES = ("setup", "tests", "chapters", "render", "site", "pdf")

# (file suffix, function, activity): the outermost match on a stack names its activity
ACTIVITIES = (
    ("stir_lib/training.py", "train", "training"),
    ("stir_lib/inversion.py", "invert", "inversion"),
    ("stir_lib/transfer/heads.py", "fixed_feature", "transfer heads"),
    ("stir_lib/transfer/heads.py", "fine_tune", "transfer heads"),
    ("stir_lib/attacks.py", "lbfgs_min_distortion", "attack: L-BFGS"),
    ("stir_lib/attacks.py", "pgd", "attack: PGD"),
    ("stir_lib/similarity.py", "", "CKA"),
    ("stir_lib/batch_cka.py", "", "CKA"),
    ("stir_lib/stir_batches.py", "", "CKA"),
    ("stir_lib/spectral/", "", "spectral norms"),
    ("stir_lib/attacks.py", "predict", "evaluation"),
    ("stir_lib/attacks.py", "accuracy", "evaluation"),
    ("stir_lib/data/", "", "data loading"),
    ("stir_lib/cache.py", "_load", "cache I/O"),
    ("matplotlib/", "", "plotting"),
    ("seaborn/", "", "plotting"),
)
_FRAME = re.compile(r"^(?P<fn>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")


def _run(cmd, log: Path, env=None) -> tuple[float, int]:
    t0 = time.perf_counter()
    with open(log, "w") as f:
        rc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT).returncode
    return time.perf_counter() - t0, rc


def _py_spy() -> str:
    exe = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if exe is None:
        raise SystemExit("profile_ci: expected the sampling profiler py-spy, got none on PATH or "
                         "beside this Python; it is in the test extra: make setup, or "
                         "pip install -c requirements/lock.txt py-spy")
    return exe


def run(args) -> None:
    out = ROOT / args.out
    out.mkdir(parents=True, exist_ok=True)
    stages_file = out / "stages.json"
    record = {"started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
              "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                                       capture_output=True, text=True).stdout.strip(),
              "host_cpus": os.cpu_count(), "stages": {}, "notebooks": {}}
    if stages_file.exists() and args.keep:
        record = json.loads(stages_file.read_text())
    env = {**os.environ, "STIR_CACHE": str(ROOT / "_build/ci-cache"),
           "STIR_DATA": str(ROOT / "_build/ci-data"), "STIR_PROGRESS": "0"}
    py = str(ROOT / ".venv/bin/python")
    wanted = [s.strip() for s in args.stages.split(",")]
    unknown = set(wanted) - set(STAGES)
    if unknown:
        raise SystemExit(f"profile_ci: expected stages among {STAGES}, got {sorted(unknown)}")

    def save():
        stages_file.write_text(json.dumps(record, indent=1))

    if "chapters" in wanted:
        for stale in out.glob("*.raw"):                  # samples of an earlier run
            stale.unlink()
    if "chapters" in wanted and not args.keep_cache:     # cold, as .ci/run
        for d in ("_build/ci-cache", "_build/ci-data", "_build/executed", "_build/results"):
            shutil.rmtree(ROOT / d, ignore_errors=True)
    for stage in STAGES:
        if stage not in wanted:
            continue
        log = out / f"{stage}.log"
        print(f"[profile] {stage} ...", flush=True)
        if stage == "setup":
            seconds, rc = _run(["make", "setup"], log)
        elif stage == "tests":       # make test's command; each test's time in the log
            seconds, rc = _run([py, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "2",
                                "--dist", "loadfile", "--durations=0"], log)
        elif stage == "chapters" and args.lanes > 1:     # as make book: one run, in lanes
            names = args.notebooks.split(",") if args.notebooks else []
            seconds, rc = _run([_py_spy(), "record", "-r", str(RATE), "--subprocesses",
                                "--nonblocking", "-f", "raw", "-o", str(out / "chapters.raw"),
                                "--", py, "-m", "stir_lib.book.run", "execute", "--scale",
                                args.scale, "--lanes", str(args.lanes), *names], log, env)
            timings = ROOT / "_build/executed/timings.json"
            if timings.exists():
                for nb, t in json.loads(timings.read_text()).items():
                    record["notebooks"][nb] = {"seconds": t["seconds"], "rc": 0,
                                               "lanes": t.get("lanes", 1)}
            record["lanes"] = args.lanes
        elif stage == "chapters":
            sys.path.insert(0, str(ROOT))
            from stir_lib.paths import toc_notebooks
            spy, seconds, rc = _py_spy(), 0.0, 0
            for nb in args.notebooks.split(",") if args.notebooks else toc_notebooks(ROOT):
                s, rc = _run([spy, "record", "-r", str(RATE), "--subprocesses", "--nonblocking",
                              "-f", "raw", "-o", str(out / f"{nb}.raw"), "--", py, "-m",
                              "stir_lib.book.run", "execute", "--scale", args.scale, nb],
                             out / f"{nb}.log", env)
                record["notebooks"][nb] = {"seconds": round(s, 1), "rc": rc}
                seconds += s
                save()
                print(f"[profile]   {nb}: {s:.0f} s", flush=True)
                if rc:
                    break
        elif stage == "render":
            seconds, rc = _run([py, "-m", "stir_lib.book.run", "render"], log, env)
        elif stage == "site":
            seconds, rc = _run([py, "-m", "stir_lib.book.site", "check"], log, env)
        else:
            seconds, rc = _run([py, "-m", "stir_lib.book.site", "pdf"], log, env)
        record["stages"][stage] = {"seconds": round(seconds, 1), "rc": rc}
        save()
        print(f"[profile] {stage}: {seconds:.0f} s (exit {rc})", flush=True)
        if rc:
            raise SystemExit(f"profile_ci: stage {stage} failed (exit {rc}); see {log}")


# ------------------------------------------------------------------------------- report
def classify(stack: list[str]) -> str:
    """The activity of one sampled stack (root first): the outermost library activity."""
    frames = []
    for fr in stack:
        m = _FRAME.match(fr)
        if m:
            frames.append((m["fn"], m["file"]))
    for fn, file in frames:
        for suffix, func, name in ACTIVITIES:
            if suffix in file and (not func or fn == func):
                return name
    if any(fn in ("_find_and_load", "_gcd_import") for fn, _ in frames):
        return "imports"
    return "notebook code (tables, glue)"


def read_samples(path: Path) -> dict[str, Counter]:
    """{"kernel" | "runner": Counter(activity -> samples)} of one notebook's raw file."""
    out: dict[str, Counter] = {"kernel": Counter(), "runner": Counter()}
    for group, where, activity, n in _samples(path):
        out[where][activity] += n
    return out


def read_lane_samples(path: Path) -> dict[str, Counter]:
    """{group of notebooks: Counter(activity -> samples)} of a run in lanes (its kernels'
    samples; the runners' own under "runner: ...")."""
    out: dict[str, Counter] = defaultdict(Counter)
    for group, where, activity, n in _samples(path):
        out[group][activity if where == "kernel" else f"runner: {activity}"] += n
    return out


def _samples(path: Path):
    """(group, "kernel" | "runner", activity, samples) of each stack of a raw file; the group
    is the notebooks named on the command line of the runner above the stack."""
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        parts = stack.split(";")
        procs = [p for p in parts if p.startswith("process ")]
        frames = [p for p in parts if not p.startswith("process ")]
        where = "kernel" if procs and "ipykernel" in procs[-1] else "runner"
        group = "runner"
        for p in procs:
            if "--no-summary" in p:
                group = " ".join(p.split("--no-summary", 1)[1].strip(' "').split())
            elif "stir_lib.book.run execute" in p and group == "runner":
                group = "summary pages"
        yield group, where, classify(frames), int(count)


def matmul_rate(n: int = 2048, repeat: int = 5) -> float:
    """FLOP/s of a float32 n x n matrix product with torch's default threads."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best


def cache_entries(cache: Path) -> list[dict]:
    rows = []
    for meta in sorted(cache.glob("*/*/meta.json")):
        m = json.loads(meta.read_text())
        cfg = m.get("config", {})
        if m["kind"] == "model":
            tc = cfg.get("config", {})
            label = cfg.get("name", "?") + (" adversarial" if tc.get("adv_eps") else "") + \
                (" + autoencoder" if tc.get("autoencoder_epochs") else "")
        elif m["kind"] == "inversion":
            label = f"{cfg.get('method')} {cfg.get('steps')} steps"
        else:
            label = str(cfg.get("mode", cfg.get("hparams", {}).get("mode", "")))
        rows.append({"kind": m["kind"], "key": meta.parent.name, "label": label,
                     "seconds": m["computed"]["seconds"], "when": m["computed"]["when"]})
    return rows


def planned_flops() -> dict[str, float]:
    """{cache key: FLOPs} of every job in the STIR and transfer plans at ci scale."""
    sys.path.insert(0, str(ROOT))
    from stir_lib.chapters import stir as CS, transfer as CT
    out = {}
    for job in CS.plan("ci") + CT.plan("ci"):
        stack = [job]
        while stack:
            j = stack.pop()
            stack.extend(j.deps())
            try:
                out[j.key()] = j.flops()
            except Exception:  # noqa: BLE001 - a job without data: no key
                pass
    return out


def report(args) -> None:
    out = ROOT / args.out
    rec = json.loads((out / "stages.json").read_text())
    lines = [f"# Profile of the cold CI build (commit {rec['commit']}, started {rec['started']})",
             "", "## Stages", "", "| stage | seconds | minutes |", "|---|---:|---:|"]
    for st, v in rec["stages"].items():
        lines.append(f"| {st} | {v['seconds']:.0f} | {v['seconds'] / 60:.1f} |")
    total = sum(v["seconds"] for v in rec["stages"].values())
    lines += [f"| **all** | **{total:.0f}** | **{total / 60:.1f}** |", ""]

    tests_log = out / "tests.log"
    if tests_log.exists():   # the smoke notebooks' share of the test stage (worker seconds)
        per = defaultdict(float)
        for m in re.finditer(r"^([0-9.]+)s (?:call|setup|teardown)\s+tests/(\w+)\.py::(\S+)",
                             tests_log.read_text(), re.M):
            kind = ("smoke notebooks" if m[2] in ("test_notebooks", "test_paper_scale")
                    else "the other tests")
            per[kind] += float(m[1])
        lines += ["## The tests (seconds of test time, summed over the two workers)", "",
                  "| part | seconds |", "|---|---:|"]
        lines += [f"| {k} | {v:.0f} |" for k, v in sorted(per.items())] + [""]
    acts: dict[str, Counter] = {}
    if (out / "chapters.raw").exists() and rec.get("lanes", 1) > 1:
        lines += [f"## Notebooks at ci scale, in {rec['lanes']} lanes", "",
                  "| notebook | wall (beside the other lane) |", "|---|---:|"]
        lines += [f"| {nb} | {v['seconds']:.0f} |" for nb, v in rec["notebooks"].items()]
        lines += ["", "## Seconds by activity, per lane's group of notebooks", ""]
        groups = read_lane_samples(out / "chapters.raw")
        names = sorted({a for c in groups.values() for a in c},
                       key=lambda a: -sum(c[a] for c in groups.values()))
        lines += ["| group | sampled | " + " | ".join(names) + " |",
                  "|---|---:|" + "---:|" * len(names)]
        for g, c in groups.items():
            lines.append(f"| {g} | {sum(c.values()) / RATE:.0f} | " +
                         " | ".join(f"{c[a] / RATE:.0f}" for a in names) + " |")
        lines.append("")
    for nb in rec["notebooks"]:
        raw = out / f"{nb}.raw"
        if raw.exists():
            s = read_samples(raw)
            acts[nb] = s["kernel"] + Counter({f"runner: {k}": v for k, v in s["runner"].items()})
    names = sorted({a for c in acts.values() for a in c},
                   key=lambda a: -sum(c[a] for c in acts.values()))
    if acts:
        lines += ["## Notebooks at ci scale, seconds by activity", "",
                  "Seconds are py-spy samples / 20 Hz; *not running Python* is the notebook's "
                  "wall time minus its sampled time (kernel start-up, papermill's messages, "
                  "waiting).", "",
                  "| notebook | wall | " + " | ".join(names) + " | not running Python |",
                  "|---|---:|" + "---:|" * (len(names) + 1)]
        sums = Counter()
        for nb, c in acts.items():
            wall = rec["notebooks"][nb]["seconds"]
            sampled = sum(c.values()) / RATE
            sums.update(c)
            lines.append(f"| {nb} | {wall:.0f} | " + " | ".join(
                f"{c[a] / RATE:.0f}" for a in names) + f" | {wall - sampled:.0f} |")
        wall_all = sum(v["seconds"] for v in rec["notebooks"].values())
        lines.append(f"| **all** | **{wall_all:.0f}** | " + " | ".join(
            f"**{sums[a] / RATE:.0f}**" for a in names) +
            f" | **{wall_all - sum(sums.values()) / RATE:.0f}** |")
        lines.append("")

    cache = ROOT / args.cache
    rows = cache_entries(cache) if cache.exists() else []
    if rows:
        by = defaultdict(lambda: [0, 0.0])
        for r in rows:
            by[(r["kind"], r["label"])][0] += 1
            by[(r["kind"], r["label"])][1] += r["seconds"]
        lines += ["## Cache entries computed (the cache's own records)", "",
                  "| kind | family | entries | seconds |", "|---|---|---:|---:|"]
        for (kind, label), (n, s) in sorted(by.items(), key=lambda kv: -kv[1][1]):
            lines.append(f"| {kind} | {label} | {n} | {s:.0f} |")
        lines.append("")
        if not args.no_flops:
            flops = planned_flops()
            peak = matmul_rate()
            fk = defaultdict(lambda: [0.0, 0.0])
            for r in rows:
                if r["key"] in flops and r["seconds"] > 0:
                    fk[(r["kind"], r["label"])][0] += flops[r["key"]]
                    fk[(r["kind"], r["label"])][1] += r["seconds"]
            lines += [f"## Achieved FLOP/s of the planned jobs (a 2048 x 2048 float32 matrix "
                      f"product: {peak / 1e9:.1f} GFLOP/s)", "",
                      "| kind | family | planned FLOP | seconds | GFLOP/s | of the product |",
                      "|---|---|---:|---:|---:|---:|"]
            for (kind, label), (f, s) in sorted(fk.items(), key=lambda kv: -kv[1][1]):
                lines.append(f"| {kind} | {label} | {f:.3g} | {s:.0f} | {f / s / 1e9:.2f} | "
                             f"{f / s / peak:.1%} |")
            lines.append("")
    text = "\n".join(lines)
    (out / "profile.md").write_text(text)
    print(text)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run and time the stages of .ci/run")
    r.add_argument("--stages", default=",".join(STAGES))
    r.add_argument("--keep", action="store_true", help="add to an earlier stages.json")
    r.add_argument("--keep-cache", action="store_true", help="do not empty the ci cache first")
    r.add_argument("--out", default="_build/profile")
    r.add_argument("--scale", default="ci", help="the notebooks' scale (ci, as .ci/run)")
    r.add_argument("--lanes", type=int, default=2,
                   help="chapters at once, as make book (1: each notebook alone, by activity)")
    r.add_argument("--notebooks", default="", help="comma-separated; default every one of _toc.yml")
    q = sub.add_parser("report", help="write _build/profile/profile.md from a run")
    q.add_argument("--out", default="_build/profile")
    q.add_argument("--no-flops", action="store_true", help="skip the planned FLOPs")
    q.add_argument("--cache", default="_build/ci-cache", help="the run's cache (its entries' "
                   "own seconds)")
    args = p.parse_args(argv)
    (run if args.cmd == "run" else report)(args)


if __name__ == "__main__":
    main()
