"""Execute the book's notebooks with papermill, then render the static site.

    python -m stir_lib.run execute --scale ci            # every notebook of _toc.yml
    python -m stir_lib.run execute --scale ci blind_spots -p n_attack=200
    python -m stir_lib.run render                          # Jupyter Book, -W -n --keep-going
    python -m stir_lib.run all --scale ci                  # both
    python -m stir_lib.run plan --scale paper stir         # a chapter's jobs, cached or not, cost
    python -m stir_lib.run warm --scale paper stir --executor slurm --partition gpu \
        --gpus-per-job 1 [--max-parallel K] [--time H] [--no-wait]
    python -m stir_lib.run warm --scale smoke transfer --executor local --workers 2

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
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

SCALES = ("smoke", "ci", "paper")
SUMMARY_PAGES = ("scorecard", "reproducibility")  # run last, whatever was selected


def repo_root() -> Path:
    """The folder holding _toc.yml: from $STIR_ROOT, the working directory or this file."""
    candidates = [os.environ.get("STIR_ROOT"), Path.cwd(), *Path.cwd().parents,
                  Path(__file__).resolve().parents[1]]
    for c in candidates:
        if c and (Path(c) / "_toc.yml").exists():
            return Path(c).resolve()
    raise FileNotFoundError("could not find the book's root (a folder with _toc.yml); "
                            "run from the repository or set STIR_ROOT")


def build_dir(root: Path | None = None) -> Path:
    """``$STIR_BUILD`` if set, else ``<root>/_build``."""
    env = os.environ.get("STIR_BUILD")
    return Path(env).resolve() if env else (root or repo_root()) / "_build"


def toc_notebooks(root: Path) -> list[str]:
    """Notebook names (stems under notebooks/) in _toc.yml order."""
    import yaml

    toc = yaml.safe_load((root / "_toc.yml").read_text())
    files: list[str] = []

    def walk(node):
        if isinstance(node, dict):
            if "file" in node:
                files.append(str(node["file"]))
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(toc)
    return [f.split("/", 1)[1].removesuffix(".md") for f in files if f.startswith("notebooks/")]


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


def _tag_injected_cell(nb_path: Path) -> None:
    """Hide papermill's injected-parameters cell in the book (tag remove-cell)."""
    import nbformat

    nb = nbformat.read(nb_path, as_version=4)
    for cell in nb.cells:
        tags = cell.metadata.setdefault("tags", [])
        if "injected-parameters" in tags and "remove-cell" not in tags:
            tags.append("remove-cell")
    nbformat.write(nb, nb_path)


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


def execute(names: list[str], scale: str, overrides: dict, root: Path, kernel: str) -> None:
    """Execute notebooks in order; raise SystemExit naming the first failure."""
    import jupytext
    import nbformat
    import papermill as pm

    out_dir = build_dir(root) / "executed" / "notebooks"
    out_dir.mkdir(parents=True, exist_ok=True)
    timings_file = out_dir.parent / "timings.json"
    timings = json.loads(timings_file.read_text()) if timings_file.exists() else {}
    env_backup = dict(os.environ)
    os.environ.setdefault("STIR_RESULTS", str(build_dir(root) / "results"))
    os.environ["STIR_BUILD"] = str(build_dir(root))
    os.environ.pop("MPLBACKEND", None)  # the kernel's inline backend must produce the figures
    try:
        for name in names:
            src = root / "notebooks" / f"{name}.md"
            if not src.exists():
                raise SystemExit(f"no notebook {src}; expected one of "
                                 f"{toc_notebooks(root)}")
            nb = jupytext.read(src)
            tmp_in = out_dir / f".{name}.input.ipynb"
            nbformat.write(nb, tmp_in)
            target = out_dir / f"{name}.ipynb"
            failed = out_dir / f"{name}.failed.ipynb"
            params = {"scale": scale, **({} if name in SUMMARY_PAGES else overrides)}
            print(f"[run] {name}: scale={scale} {overrides or ''}", flush=True)
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
            _tag_injected_cell(failed)
            os.replace(failed, target)
            timings[name] = {"seconds": round(seconds, 1), "scale": scale,
                             "parameters": overrides, "finished": time.strftime(
                                 "%Y-%m-%d %H:%M:%S %Z")}
            timings_file.write_text(json.dumps(timings, indent=1))
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
    from stir_lib import site

    site.install_mathjax(stage)  # served from the site's _static: no CDN, works offline
    (stage / "notebooks").mkdir()
    missing = []
    for name in toc_notebooks(root):
        nb = executed / f"{name}.ipynb"
        if not nb.exists():
            missing.append(name)
        else:
            shutil.copy2(nb, stage / "notebooks" / nb.name)
    if missing:
        raise SystemExit(f"[render] not executed yet: {missing}; run "
                         f"`python -m stir_lib.run execute --scale ci {' '.join(missing)}`")
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
    print(f"[render] site: {html / 'index.html'}", flush=True)


def _plan_for(names: list[str], scale: str, params: dict) -> list:
    """The jobs of the named chapters ("stir", "transfer") or notebooks."""
    from .chapters import NOTEBOOKS, PLANS

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
    from . import cluster, jobs as J
    from .cache import memoized_fingerprints

    plan = _plan_for(names, scale, dict(params))
    rate = cluster.GPU_FLOPS if scale == "paper" else cluster.CPU_FLOPS
    with memoized_fingerprints():      # every key hashes its data: once per tensor is enough
        rows = J.describe_plan(plan, rate)
    for r in rows:
        state = {True: "cached ", False: "missing", None: "unknown"}[r["cached"]]
        print(f"[{r['wave'] if r['wave'] is not None else '-'}] {state} {r['kind']:9s} "
              f"{J.fmt_flops(r['flops']):>7s}FLOP  {r['job']}")
    todo = [r for r in rows if r["cached"] is not True]
    hours = sum(r["flops"] for r in todo) / rate / 3600
    where = "one GPU at an assumed 25 TFLOP/s" if scale == "paper" else "this 2-core CPU at an assumed 50 GFLOP/s"
    print(f"[plan] {len(rows)} jobs ({sum(r['kind'] == 'model' for r in rows)} models, "
          f"{sum(r['kind'] == 'inversion' for r in rows)} inversions, "
          f"{sum(r['kind'] == 'transfer' for r in rows)} transfers); "
          f"{sum(r['cached'] is True for r in rows)} cached, {len(todo)} to compute: "
          f"{sum(r['flops'] for r in todo):.3g} FLOP, about {hours:.2f} hours on {where} "
          f"(an estimate from FLOPs, not a measurement)")
    if any(r["cached"] is None for r in rows):
        print("[plan] some jobs' data are not on this machine: their cache state is unknown")


def warm_command(names: list[str], scale: str, params: dict, args) -> None:
    from . import cluster

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
    parser = argparse.ArgumentParser(prog="python -m stir_lib.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("execute", "render", "all", "list", "plan", "warm"))
    parser.add_argument("notebooks", nargs="*", help="notebook names (default: all of _toc.yml); "
                        "for plan/warm: chapters (stir, transfer) or notebooks")
    parser.add_argument("--scale", choices=SCALES, default="ci")
    parser.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE",
                        help="override a notebook parameter (repeatable)")
    parser.add_argument("--kernel", default="python3", help="Jupyter kernel name")
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
        names += [n for n in all_names if n in SUMMARY_PAGES]
        overrides = parse_overrides(args.param)
        print(f"[run] python {platform.python_version()}, {len(names)} notebook(s)", flush=True)
        execute(names, args.scale, overrides, root, args.kernel)
    if args.command in ("render", "all"):
        render(root)


if __name__ == "__main__":
    main()
