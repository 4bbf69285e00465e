"""Execute the book's notebooks with papermill, then render the static site.

    python -m stir_lib.book.run execute --scale ci            # every notebook of _toc.yml
    python -m stir_lib.book.run execute --scale ci blind_spots -p n_attack=200
    python -m stir_lib.book.run render                          # Jupyter Book, -W -n --keep-going
    python -m stir_lib.book.run all --scale ci                  # both
    python -m stir_lib.book.run plan --scale paper stir         # a chapter's jobs, cached or not, cost
    python -m stir_lib.book.run warm --scale paper stir --executor slurm --partition gpu \
        --gpus-per-job 1 [--max-parallel K] [--time H] [--no-wait]
    python -m stir_lib.book.run warm --scale smoke transfer --executor local --workers 2

The MyST markdown notebooks under ``notebooks/`` are the sources. Executed
copies go to ``_build/executed/notebooks/*.ipynb``; their wall times, scale and
parameters to ``_build/executed/timings.json``; headline numbers (written by
the notebooks through :mod:`stir_lib.results`) to ``_build/results``. The
summary pages (scorecard, reproducibility) are executed after any other
notebook, so they are never stale. Rendering stages the book's pages and the
executed notebooks in ``_build/stage`` and builds the HTML in ``_build/html``
with execution off.

A failing notebook stops the run (exit status 1) with the notebook's name, the
failing cell's number and the error; its partial output is kept next to the
executed copies as ``*.failed.ipynb`` for inspection.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

from .. import cluster, jobs as J
from ..cache import memoized_fingerprints
from ..chapters import NOTEBOOK_MODULE, NOTEBOOKS, PLANS
from ..paths import build_dir, repo_root, toc_notebooks
from ..scales import SCALES
from .mathjax import install_mathjax

__all__ = ["main", "execute", "render", "parse_overrides", "notebook_parameters",
           "check_parameters", "repository", "commit_of", "device_name", "stamp_html",
           "plan_command", "warm_command", "SUMMARY_PAGES", "GROUP_SECONDS", "lane_groups",
           "execute_in_lanes"]

SUMMARY_PAGES = ("scorecard", "reproducibility")  # run last, whatever was selected
# seconds of each notebook family in a cold ci build in two lanes on a quiet 2-core machine
# (13b1819, 2026-12-06, the notebooks' timings.json): the longest starts first
GROUP_SECONDS = {"szegedy": 1460.0, "stir": 2881.0, "transfer": 984.0, "stir_your_models": 71.0}


def parse_overrides(pairs: list[str]) -> dict:
    """``["n=10", "name=fc10"]`` -> ``{"n": 10, "name": "fc10"}`` (Python literals, else strings)."""
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise SystemExit(f"-p expects key=value, got {pair!r}")
        key, value = pair.split("=", 1)
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value
    return out


def notebook_parameters(nb) -> dict[str, str]:
    """The parameters a notebook declares: name -> the line of its ``parameters`` cell that
    sets it (with its comment), in order; empty when it has no such cell."""
    for cell in nb.cells:
        if cell.cell_type == "code" and "parameters" in cell.metadata.get("tags", []):
            lines = cell.source.splitlines()
            out = {}
            for node in ast.parse(cell.source).body:
                targets = (node.targets if isinstance(node, ast.Assign) else
                           [node.target] if isinstance(node, ast.AnnAssign) else [])
                for t in targets:
                    if isinstance(t, ast.Name):
                        out[t.id] = lines[node.lineno - 1].strip()
            return out
    return {}


def _declared_value(line: str | None):
    """The default a parameters-cell line such as ``device = "auto"  # ...`` sets (None if
    it is absent or not a literal)."""
    if not line:
        return None
    try:
        return ast.literal_eval(ast.parse(line).body[0].value)
    except (ValueError, SyntaxError, AttributeError, IndexError):
        return None


def check_parameters(name: str, declared: dict[str, str], params: dict, scale: str) -> None:
    """A parameter the notebook does not declare, or an ``overrides`` key its chapter's preset
    does not have, is an error that lists what the notebook takes."""
    unknown = sorted(set(params) - set(declared))
    if unknown:
        takes = "\n".join(f"          {line}" for line in declared.values()) or "          (none)"
        raise SystemExit(f"[run] {name}: unknown parameter(s) {unknown}; {name} takes these "
                         f"(its parameters cell, notebooks/{name}.md):\n{takes}\n"
                         f"        fix or drop the -p name(s)")
    if "overrides" in params and name in NOTEBOOK_MODULE:
        overrides = params["overrides"]
        if not isinstance(overrides, dict):
            raise SystemExit(f"[run] {name}: overrides: expected a dict such as "
                             f"-p \"overrides={{'epochs': 2}}\", got {overrides!r}")
        chapter = importlib.import_module(f"stir_lib.chapters.{NOTEBOOK_MODULE[name]}")
        preset = chapter.PRESETS[scale]
        bad = sorted(set(overrides) - set(preset))
        if bad:
            raise SystemExit(f"[run] {name}: overrides {bad} are not settings of the {scale!r} "
                             f"preset (stir_lib.chapters.{NOTEBOOK_MODULE[name]}.PRESETS); "
                             f"expected some of {sorted(preset)}")


def repository(root: Path) -> tuple[str, str]:
    """The repository the pages link to, (url, branch): ``$STIR_REPOSITORY_URL`` if set (the
    publishing workflow sets it), else ``_config.yml``'s ``repository``; ("", "main") when
    neither names one."""
    import yaml

    path = root / "_config.yml"
    config = (yaml.safe_load(path.read_text()) if path.is_file() else None) or {}
    repo = config.get("repository") or {}
    url = os.environ.get("STIR_REPOSITORY_URL") or str(repo.get("url") or "")
    return url.rstrip("/"), str(repo.get("branch") or "main")


def commit_of(root: Path) -> tuple[str, bool]:
    """The checkout's commit (full hash, "" outside git) and whether files differ from it."""
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=30)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain",
                                "--untracked-files=no"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "", False
    if head.returncode:
        return "", False
    return head.stdout.strip(), bool(dirty.stdout.strip())


def device_name(requested) -> str:
    """The device a notebook's ``device`` parameter resolves to on this machine, in words."""
    import torch

    from ..models import resolve_device

    try:
        dev = resolve_device(requested)
    except ValueError:
        return f"{requested} (not available here)"
    if dev.type == "cuda":
        return f"{dev} ({torch.cuda.get_device_name(dev)})"
    return f"CPU ({platform.machine()}, {os.cpu_count()} cores)"


def stamp_html(name: str, scale: str, device: str, commit: str, dirty: bool, url: str,
               branch: str, when: str) -> str:
    """The line under a chapter's title: what built it, and where its source and executed
    notebook are."""
    import html

    built = (f"commit <code>{commit[:10]}</code>" + (" with uncommitted changes" if dirty else "")
             if commit else "an unknown commit (no git checkout)")
    links = [f'<a href="{name}.ipynb" download>executed notebook (.ipynb)</a>']
    if url:
        ref = commit if commit and not dirty else branch
        links.insert(0, f'<a href="{html.escape(url)}/blob/{html.escape(ref)}/notebooks/{name}.md">'
                        f"source</a>")
    return (f'<div class="build-stamp">Built from {built} on {html.escape(when)}, scale '
            f"<b>{html.escape(scale)}</b>, on {html.escape(device)}. "
            + " &middot; ".join(links) + "</div>")


def _stamp(nb, text: str) -> None:
    """Put ``text`` (one line of HTML) right under the notebook's title (its first ``# ``
    line), replacing an earlier stamp; a notebook with no title gets it first."""
    import nbformat

    for cell in nb.cells:   # an earlier stamp goes, with the blank line put before it
        if cell.cell_type == "markdown" and 'class="build-stamp"' in cell.source:
            lines = cell.source.split("\n")
            k = next(i for i, ln in enumerate(lines) if 'class="build-stamp"' in ln)
            cell.source = "\n".join(lines[:k - 1 if k and not lines[k - 1] else k] + lines[k + 1:])
    for cell in nb.cells:
        lines = cell.source.split("\n") if cell.cell_type == "markdown" else []
        title = next((k for k, ln in enumerate(lines) if ln.startswith("# ")), None)
        if title is not None:   # an HTML block ends at a blank line: keep one after it
            after = lines[title + 1:]
            cell.source = "\n".join(lines[:title + 1] + ["", text] + ([] if after and not after[0]
                                                                      else [""]) + after)
            break
    else:
        nb.cells.insert(0, nbformat.v4.new_markdown_cell(text))


def _tag_injected_cell(nb) -> None:
    """Hide papermill's injected-parameters cell in the book (tag remove-cell)."""
    for cell in nb.cells:
        tags = cell.metadata.setdefault("tags", [])
        if "injected-parameters" in tags and "remove-cell" not in tags:
            tags.append("remove-cell")


def _failing_cell_line(nb_path: Path) -> str:
    """First non-empty source line of the cell whose output holds the error."""
    import nbformat

    try:
        cells = nbformat.read(nb_path, as_version=4).cells
    except (OSError, ValueError):
        return "?"
    for cell in cells:
        if any(o.get("output_type") == "error" for o in cell.get("outputs", [])):
            return next((ln for ln in cell.source.splitlines() if ln.strip()), "")[:80]
    return "?"


def _record_timing(timings_file: Path, name: str, entry: dict) -> None:
    """Add one notebook's timing to timings.json, under a lock: notebooks of other lanes
    (:func:`execute_in_lanes`) write the same file."""
    import fcntl

    with open(timings_file.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            timings = json.loads(timings_file.read_text()) if timings_file.exists() else {}
        except ValueError:    # a file cut short by a killed run: start it again
            timings = {}
        timings[name] = entry
        tmp = timings_file.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(timings, indent=1))
        os.replace(tmp, timings_file)


def lane_groups(names: list[str]) -> list[list[str]]:
    """The notebooks that must run one after another, longest group first.

    Notebooks of one chapter share cache entries (the STIR zoo; the Szegedy chapters' MLPs
    and ConvNets), so a group holds every notebook of one chapter family in _toc.yml order;
    run in two lanes, two groups never compute the same entry at once. Groups are ordered
    by ``GROUP_SECONDS`` (a cold ci build, ``benchmarks/profile_ci.py``) so that the longest
    starts first."""
    family = {n: ("szegedy" if NOTEBOOK_MODULE.get(n) in ("blind_spots", "units", "lipschitz")
                  else NOTEBOOK_MODULE.get(n, n)) for n in names}
    groups: dict[str, list[str]] = {}
    for n in names:
        groups.setdefault(family[n], []).append(n)
    return sorted(groups.values(), key=lambda g: -GROUP_SECONDS.get(family[g[0]], 0.0))


def execute_in_lanes(names: list[str], scale: str, params: list[str], root: Path, kernel: str,
                     lanes: int) -> None:
    """Execute the chapters in ``lanes`` processes at once (each group of
    :func:`lane_groups` in one process, the next group starting when a lane is free), then
    the summary pages. Each lane computes on one thread (``STIR_THREADS=1`` unless the
    environment sets another number): the number of threads changes the last bits of
    torch's sums (tests/test_thread_determinism.py), and a fixed one makes the build's
    results the same whatever else the machine runs, where the load-following policy of
    :mod:`stir_lib.threads` would give a lane one thread or two as the other lane's work
    comes and goes."""
    chapters = [n for n in names if n not in SUMMARY_PAGES]
    queue = lane_groups(chapters)
    env = {**os.environ, "STIR_LANES": str(lanes)}
    env.setdefault("STIR_THREADS", "1")
    running: list[tuple[list[str], subprocess.Popen]] = []
    failed = None
    while (queue or running) and failed is None:
        while queue and len(running) < lanes:
            group = queue.pop(0)
            cmd = [sys.executable, "-m", "stir_lib.book.run", "execute", "--scale", scale,
                   "--kernel", kernel, "--no-summary", *group]
            for pair in params:
                cmd += ["-p", pair]
            print(f"[run] lane: {' '.join(group)}", flush=True)
            running.append((group, subprocess.Popen(cmd, cwd=root, env=env)))
        time.sleep(0.5)
        for group, proc in list(running):
            if proc.poll() is not None:
                running.remove((group, proc))
                if proc.returncode:
                    failed = group
    for _, proc in running:      # a lane failed: stop the others, keep their finished pages
        proc.terminate()
        proc.wait()
    if failed is not None:
        raise SystemExit(f"[run] the lane {' '.join(failed)} FAILED (its message is above)")
    summary = [n for n in names if n in SUMMARY_PAGES]
    if summary:
        execute(summary, scale, {}, root, kernel)


def execute(names: list[str], scale: str, overrides: dict, root: Path, kernel: str) -> None:
    """Execute notebooks in order; raise SystemExit naming the first failure."""
    import jupytext
    import nbformat
    import papermill as pm

    out_dir = build_dir(root) / "executed" / "notebooks"
    out_dir.mkdir(parents=True, exist_ok=True)
    timings_file = out_dir.parent / "timings.json"
    env_backup = dict(os.environ)
    os.environ.setdefault("STIR_RESULTS", str(build_dir(root) / "results"))
    os.environ["STIR_BUILD"] = str(build_dir(root))
    os.environ.pop("MPLBACKEND", None)  # the kernel's inline backend must produce the figures
    sources, parameters, declared = {}, {}, {}
    commit, dirty = commit_of(root)
    url, branch = repository(root)
    for name in names:   # every notebook's parameters are checked before any runs
        src = root / "notebooks" / f"{name}.md"
        if not src.exists():
            raise SystemExit(f"no notebook {src}; expected one of {toc_notebooks(root)}")
        sources[name] = jupytext.read(src)
        # the summary pages take the scale only, whatever the chapters were given
        parameters[name] = {"scale": scale, **({} if name in SUMMARY_PAGES else overrides)}
        declared[name] = notebook_parameters(sources[name])
        check_parameters(name, declared[name], parameters[name], scale)
    try:
        for name in names:
            nb, params = sources[name], parameters[name]
            tmp_in = out_dir / f".{name}.input.ipynb"
            nbformat.write(nb, tmp_in)
            target = out_dir / f"{name}.ipynb"
            failed = out_dir / f"{name}.failed.ipynb"
            print(f"[run] {name}: " + " ".join(f"{k}={v!r}" for k, v in params.items()), flush=True)
            t0 = time.perf_counter()
            try:
                pm.execute_notebook(str(tmp_in), str(failed), parameters=params,
                                    kernel_name=kernel, cwd=str(root / "notebooks"),
                                    progress_bar=False, log_output=False)
            except pm.PapermillExecutionError as err:
                first_line = _failing_cell_line(failed)
                raise SystemExit(
                    f"[run] notebook {name} FAILED at cell In [{err.exec_count}] "
                    f"(starting {first_line!r}): {err.ename}: {err.evalue}\n"
                    f"        partial output kept in {failed}") from None
            finally:
                tmp_in.unlink(missing_ok=True)
            seconds = time.perf_counter() - t0
            executed = nbformat.read(failed, as_version=4)
            _tag_injected_cell(executed)
            requested = params.get("device", _declared_value(declared[name].get("device")))
            _stamp(executed, stamp_html(name, scale, device_name(requested), commit, dirty, url,
                                        branch, time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())))
            nbformat.write(executed, failed)
            os.replace(failed, target)
            _record_timing(timings_file, name, {
                "seconds": round(seconds, 1), "scale": scale,
                "parameters": {k: v for k, v in params.items() if k != "scale"},
                "finished": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                "lanes": int(os.environ.get("STIR_LANES", "1"))})
            print(f"[run] {name}: done in {seconds:.1f} s", flush=True)
    finally:
        os.environ.clear()
        os.environ.update(env_backup)


def render(root: Path) -> None:
    """Stage the book with the executed notebooks and build the HTML (warnings are errors)."""
    build = build_dir(root)
    executed = build / "executed" / "notebooks"
    stage = build / "stage"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    for item in ("_config.yml", "_toc.yml", "book"):
        src = root / item
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, stage / item)
    install_mathjax(stage)  # served from the site's _static: no CDN, works offline
    (stage / "notebooks").mkdir()
    names, missing = toc_notebooks(root), []
    for name in names:
        nb = executed / f"{name}.ipynb"
        if not nb.exists():
            missing.append(name)
        else:
            shutil.copy2(nb, stage / "notebooks" / nb.name)
    if missing:
        raise SystemExit(f"[render] not executed yet: {missing}; run "
                         f"`python -m stir_lib.book.run execute --scale ci {' '.join(missing)}`")
    jb = shutil.which("jupyter-book", path=str(Path(sys.executable).parent))
    if jb is None:
        raise SystemExit(f"[render] no jupyter-book next to {sys.executable}; run `make setup`")
    cmd = [jb, "build", str(stage), "--path-output", str(build / "jb"), "-W", "-n",
           "--keep-going"]
    print("[render]", " ".join(cmd), flush=True)
    proc = subprocess.run(cmd)
    if proc.returncode:
        raise SystemExit(f"[render] jupyter-book failed (exit {proc.returncode})")
    html = build / "html"
    shutil.rmtree(html, ignore_errors=True)
    shutil.copytree(build / "jb" / "_build" / "html", html)
    for name in names:   # each page's executed notebook, beside the page
        shutil.copy2(executed / f"{name}.ipynb", html / "notebooks" / f"{name}.ipynb")
    print(f"[render] site: {html / 'index.html'}", flush=True)


def _plan_for(names: list[str], scale: str, params: dict) -> list:
    """The jobs of the named chapters ("stir", "transfer") or notebooks."""
    if not names:
        raise SystemExit(f"plan/warm: name a chapter, one of {sorted(PLANS)} (or a notebook of "
                         f"{sorted(n for v in NOTEBOOKS.values() for n in v)})")
    jobs = []
    for name in names:
        chapter = name if name in PLANS else next(
            (c for c, nbs in NOTEBOOKS.items() if name in nbs), None)
        if chapter is None:
            raise SystemExit(f"no plan for {name!r}; chapters with plans: {sorted(PLANS)}")
        notebooks = NOTEBOOKS[chapter] if name == chapter else (name,)
        overrides = dict(params.pop("overrides", {}) or {})
        jobs += PLANS[chapter](scale, notebooks=notebooks, **params, **overrides)
    return jobs


def plan_command(names: list[str], scale: str, params: dict) -> None:
    from ..jobs import calibration, cost

    plan = _plan_for(names, scale, dict(params))
    gpu = scale == "paper"       # the calibration is of this CPU; a GPU's rate is assumed
    with memoized_fingerprints():      # every key hashes its data: once per tensor is enough
        rows = J.describe_plan(plan, cluster.GPU_FLOPS,
                               seconds_of=None if gpu else cost.predict_seconds)
    for r in rows:
        state = {True: "cached ", False: "missing", None: "unknown"}[r["cached"]]
        print(f"[{r['wave'] if r['wave'] is not None else '-'}] {state} {r['kind']:9s} "
              f"{J.fmt_flops(r['flops']):>7s}FLOP {r['seconds']:8.0f}s  {r['job']}")
    todo = [r for r in rows if r["cached"] is not True]
    hours = sum(r["seconds"] for r in todo) / 3600
    where = ("one GPU at an assumed 25 TFLOP/s (FLOPs as the jobs run; not measured)" if gpu
             else f"the CPU of the calibration (build {calibration.BUILD}, one thread per "
                  f"lane: {calibration.MACHINE}), the jobs' own time without the notebooks' "
                  f"code (about {calibration.NOTEBOOK_SECONDS:.0f} s a notebook)")
    print(f"[plan] {len(rows)} jobs ({sum(r['kind'] == 'model' for r in rows)} models, "
          f"{sum(r['kind'] == 'inversion' for r in rows)} inversions, "
          f"{sum(r['kind'] == 'transfer' for r in rows)} transfers); "
          f"{sum(r['cached'] is True for r in rows)} cached, {len(todo)} to compute: "
          f"{sum(r['flops'] for r in todo):.3g} FLOP, about {hours:.2f} hours on {where}")
    if any(r["cached"] is None for r in rows):
        print("[plan] some jobs' data are not on this machine: their cache state is unknown")


def warm_command(names: list[str], scale: str, params: dict, args) -> None:
    plan = _plan_for(names, scale, dict(params))
    folder = Path(args.folder or build_dir(repo_root()) / "submitit")
    report = cluster.warm(plan, executor=args.executor, workers=args.workers, folder=folder,
                          partition=args.partition, gpus_per_job=args.gpus_per_job,
                          max_parallel=args.max_parallel, time_hours=args.time,
                          wait=not args.no_wait, device=args.device)
    print(f"[warm] {report.submitted} jobs submitted ({args.executor}), {report.completed} "
          f"completed, {len(report.failed)} failed, in {report.seconds:.0f} s; logs under {folder}")
    for what, err, logs in report.failed:
        print(f"[warm] FAILED {what}: {err}\n       logs: {' '.join(logs)}")
    if report.failed:
        raise SystemExit("[warm] some jobs failed; run warm again to resubmit only the missing ones")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m stir_lib.book.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("execute", "render", "all", "list", "plan", "warm"))
    parser.add_argument("notebooks", nargs="*", help="notebook names (default: all of _toc.yml); "
                        "for plan/warm: chapters (stir, transfer) or notebooks")
    parser.add_argument("--scale", choices=SCALES, default="ci")
    parser.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE",
                        help="override a notebook parameter (repeatable)")
    parser.add_argument("--kernel", default="python3", help="Jupyter kernel name")
    parser.add_argument("--lanes", type=int, default=1,
                        help="execute: chapters run in this many processes at once (default 1)")
    parser.add_argument("--no-summary", action="store_true",
                        help="execute: leave out the summary pages not named (a lane's own "
                             "run; the tests' runs of one page)")
    warm_args = parser.add_argument_group("warm")
    warm_args.add_argument("--executor", choices=("slurm", "local"), default="local")
    warm_args.add_argument("--workers", type=int, default=1, help="local processes")
    warm_args.add_argument("--partition", help="SLURM partition")
    warm_args.add_argument("--gpus-per-job", type=int, default=0)
    warm_args.add_argument("--max-parallel", type=int, default=None, help="SLURM array %%K")
    warm_args.add_argument("--time", type=float, default=4.0, help="hours per job")
    warm_args.add_argument("--no-wait", action="store_true", help="submit and return (slurm)")
    warm_args.add_argument("--device", default="auto", help="device inside each job")
    warm_args.add_argument("--folder", default=None, help="submitit's job folder (logs)")
    args = parser.parse_intermixed_args(argv)
    root = repo_root()
    all_names = toc_notebooks(root)
    if args.command == "list":
        print("\n".join(all_names))
        return
    if args.command == "plan":
        plan_command(args.notebooks, args.scale, parse_overrides(args.param))
        return
    if args.command == "warm":
        warm_command(args.notebooks, args.scale, parse_overrides(args.param), args)
        return
    if args.command in ("execute", "all"):
        unknown = [n for n in args.notebooks if n not in all_names]
        if unknown:
            raise SystemExit(f"unknown notebook(s) {unknown}; expected names from _toc.yml: "
                             f"{all_names}")
        chosen = args.notebooks or all_names
        names = [n for n in all_names if n in chosen and n not in SUMMARY_PAGES]
        # the summary pages follow the chapters unless --no-summary; one named is run anyway
        names += [n for n in all_names if n in SUMMARY_PAGES
                  and (n in args.notebooks or not args.no_summary)]
        overrides = parse_overrides(args.param)
        if args.lanes < 1:
            raise SystemExit(f"--lanes: expected 1 or more, got {args.lanes}")
        print(f"[run] python {platform.python_version()}, {len(names)} notebook(s)"
              + (f" in {args.lanes} lanes" if args.lanes > 1 else ""), flush=True)
        if args.lanes > 1:
            execute_in_lanes(names, args.scale, args.param, root, args.kernel, args.lanes)
        else:
            execute(names, args.scale, overrides, root, args.kernel)
    if args.command in ("render", "all"):
        render(root)


if __name__ == "__main__":
    main()
