"""Mutation testing of the library's numerical core, module by module (mutmut 3).

Plants small bugs (an operator flipped, a constant changed, an argument dropped) in one
module at a time and runs the tests that exercise the mutated function; a mutant is
*killed* when some test fails. What survives is either a missing test or an *equivalent*
mutant (one that cannot change any result), listed with its reason in ``equivalent.toml``.

    .venv/bin/python tests/mutation/run_mutation.py              # every module, report
    .venv/bin/python tests/mutation/run_mutation.py verdicts     # one module
    .venv/bin/python tests/mutation/run_mutation.py --list       # the modules and tests

Each module runs in its own scratch copy of the checkout under ``_build/mutation/<name>``
(the working tree is never touched), and the report goes to ``tests/mutation/REPORT.md``
(``--report PATH`` to change). Not run in CI: a full run takes tens of minutes on 2 cores.

What is left out of the mutation, and why (``DO_NOT_MUTATE``): statements that raise an
error or warn (their messages are text, and that an error is raised is what the tests
check, which the condition above the ``raise`` still carries), and functions that only
format text for people (``NOT_NUMERICAL``), reported apart from the score.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent

# name -> (the module's file(s), the tests that are meant to catch its bugs)
MODULES: dict[str, tuple[list[str], list[str]]] = {
    "attacks": (["stir_lib/attacks.py"],
                ["tests/test_attacks.py", "tests/test_box_lbfgs.py", "tests/test_pgd_steps.py",
                 "tests/test_independent_answers.py"]),
    "training": (["stir_lib/training.py"],
                 ["tests/test_training.py", "tests/test_training_steps.py",
                  "tests/test_independent_answers.py"]),
    "similarity": (["stir_lib/similarity.py", "stir_lib/batch_cka.py"],
                   ["tests/test_similarity.py", "tests/test_similarity_edges.py",
                    "tests/test_independent_answers.py"]),
    "inversion": (["stir_lib/inversion.py"],
                  ["tests/test_inversion_stir.py", "tests/test_inversion_paths.py",
                   "tests/test_inversion_seeds.py",
                   "tests/test_independent_answers.py"]),
    "straight_relu": (["stir_lib/straight_relu.py"],
                      ["tests/test_inversion_paths.py", "tests/test_independent_answers.py"]),
    "stir": (["stir_lib/stir.py", "stir_lib/stir_batches.py", "stir_lib/stir_result.py",
              "stir_lib/baselines.py"],
             ["tests/test_inversion_stir.py", "tests/test_stir_paths.py",
              "tests/test_stir_surface.py", "tests/test_independent_answers.py"]),
    "verdicts": (["stir_lib/verdicts.py"],
                 ["tests/test_verdicts.py", "tests/test_verdict_edges.py", "tests/test_claims.py",
                  "tests/test_rule_records.py", "tests/test_independent_answers.py"]),
    "transfer": (["stir_lib/transfer/heads.py"],
                 ["tests/test_transfer.py", "tests/test_transfer_selection.py",
                  "tests/test_independent_answers.py"]),
    "cache": (["stir_lib/cache.py"], ["tests/test_cache.py", "tests/test_cache_api.py"]),
}

# Tests left out of mutation runs, with the reason: the peak memory of fresh processes
# (benchmarks/stir_memory.py) grows with N under mutmut, whose trampolines record every
# call of the library in those processes too; it passes, and is run, in the plain suite.
NOT_UNDER_MUTMUT = ["tests/test_stir_surface.py::test_memory_of_a_loader_does_not_grow_with_n"]

# Lines (regular expressions) whose whole statement is never mutated.
DO_NOT_MUTATE = [
    r"^\s*raise\s",            # an error's message; the condition that raises it is mutated
    r"warnings\.warn\(",       # a warning's text
    r"^\s*(print|log|logger\.\w+|progress\.\w+)\(",   # output for people
]

# Functions whose mutants are reported apart from the score: they format text only.
NOT_NUMERICAL = {
    "verdicts": ["format", "__repr__", "__str__"],
    "stir": ["__repr__", "__str__"],
    "similarity": ["__repr__"],
    "cache": ["__repr__"],
}

STATUSES = ("killed", "survived", "no tests", "timeout", "suspicious", "skipped", "segfault",
            "caught by type check", "check was interrupted by user", "not checked")


@dataclass
class ModuleResult:
    name: str
    files: list[str]
    tests: list[str]
    seconds: float = 0.0
    status: dict[str, str] = field(default_factory=dict)        # mutant -> status
    date: str = ""
    diffs: dict[str, str] = field(default_factory=dict)         # mutant -> its diff (not killed)

    def counts(self, eq: "Equivalence") -> dict[str, int]:
        c = {"total": 0, "killed": 0, "timeout": 0, "survived": 0, "no tests": 0,
             "equivalent": 0, "explained": 0, "not numerical": 0, "other": 0}
        for mutant, status in self.status.items():
            if self.not_numerical(mutant):
                c["not numerical"] += 1
                continue
            c["total"] += 1
            if status in ("killed", "timeout"):
                c[status] += 1
            elif eq.equivalent(self.name, mutant, self.diffs.get(mutant, "")):
                c["equivalent"] += 1
            elif eq.explain(self.name, mutant, self.diffs.get(mutant, "")):
                c["explained"] += 1
            elif status in ("survived", "no tests"):
                c[status] += 1
            else:
                c["other"] += 1
        return c

    def not_numerical(self, mutant: str) -> bool:
        function = mutant_function(mutant)
        return function in NOT_NUMERICAL.get(self.name, [])


def mutant_function(mutant: str) -> str:
    """'stir_lib.verdicts.xǁEstimateǁformat__mutmut_3' -> 'format'; 'x__finite__mutmut_1' -> '_finite'."""
    last = mutant.rsplit(".", 1)[-1]
    last = re.sub(r"__mutmut_\d+$", "", last)
    if "ǁ" in last:
        return last.split("ǁ")[-1]
    return last[2:] if last.startswith("x_") else last


def score(c: dict[str, int]) -> float:
    """Killed share of the mutants that were run and are not equivalent."""
    tested = c["total"] - c["equivalent"] - c.get("other", 0)
    return 100.0 * (c["killed"] + c["timeout"]) / tested if tested else float("nan")


def mutmut_exe() -> str:
    exe = Path(sys.executable).with_name("mutmut")
    if not exe.exists():
        sys.exit("run_mutation: expected mutmut beside this Python, got none at "
                 f"{exe}; install the test extra: pip install -e '.[test]' "
                 "(it pins mutmut), then run this script with that environment's Python")
    return str(exe)


_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "mutation")   # not copied to scratch


def prepare(name: str, files: list[str], tests: list[str]) -> Path:
    """A scratch copy of the checkout whose pyproject tells mutmut what to mutate."""
    work = ROOT / "_build" / "mutation" / name
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    _copy_checkout(work)
    _write_config(work, files, tests)
    return work


def _copy_checkout(work: Path) -> None:
    """The package, the tests and what the tests read, copied over ``work``'s copy."""
    for part in ("stir_lib", "tests", "book", "notebooks", "benchmarks", "_config.yml",
                 "_toc.yml", "requirements", "environment.yml", "README.md"):
        src = ROOT / part
        if src.is_dir():
            shutil.copytree(src, work / part, ignore=_IGNORE, dirs_exist_ok=True)
        elif src.exists():
            shutil.copy2(src, work / part)


def _write_config(work: Path, files: list[str], tests: list[str]) -> None:
    """The checkout's pyproject plus the [tool.mutmut] table: what to mutate, which tests."""
    text = (ROOT / "pyproject.toml").read_text()
    text += "\n[tool.mutmut]\n"
    text += 'source_paths = ["stir_lib"]\n'
    text += f"only_mutate = {files!r}\n".replace("'", '"')
    text += f"pytest_add_cli_args_test_selection = {tests!r}\n".replace("'", '"')
    # files the tests read besides the package and tests/ (mutmut runs them in mutants/)
    extras = [e for e in ("book", "benchmarks", "_config.yml", "_toc.yml") if (work / e).exists()]
    text += f"also_copy = {extras!r}\n".replace("'", '"')
    args = ["-p", "no:cacheprovider", "-x"] + [a for t in NOT_UNDER_MUTMUT for a in ("--deselect", t)]
    text += f"pytest_add_cli_args = {args!r}\n".replace("'", '"')
    patterns = ", ".join("'" + p + "'" for p in DO_NOT_MUTATE)
    text += f"do_not_mutate_patterns = [{patterns}]\n"
    (work / "pyproject.toml").write_text(text)


def run_module(name: str, max_children: int) -> ModuleResult:
    files, tests = MODULES[name]
    tests = [t for t in tests if (ROOT / t).exists()]   # (an older checkout has fewer)
    work = prepare(name, files, tests)
    seconds = _mutmut(name, work, ["--max-children", str(max_children)], "mutmut-run.log")
    return collect(name, tests, seconds)


def update_module(name: str, max_children: int) -> ModuleResult:
    """Bring the module's last run up to the checkout, or finish a stopped run: the scratch
    copy gets the current package and tests, and mutmut (which keeps a hash of every
    function it mutated) mutates again only the functions whose source changed, runs their
    mutants and the ones a stopped run left unchecked, and keeps every other mutant's result.
    Then the mutants not killed are run again with the current tests (:func:`rerun_open`).
    Valid while tests are only added (a kill recorded before stays a kill) and the list of
    test files is the same (mutmut resets every result when it changes)."""
    work = ROOT / "_build" / "mutation" / name
    old = load_result(name)
    if not (work / "mutants").is_dir():
        sys.exit(f"run_mutation: expected an earlier run of {name} in {work}, found none; "
                 f"run it first: run_mutation.py {name}")
    files, tests = MODULES[name]
    tests = [t for t in tests if (ROOT / t).exists()]
    _copy_checkout(work)
    for f in files:                  # newer than its mutants: mutmut mutates it again
        (work / f).touch()
    _write_config(work, files, tests)
    seconds = _mutmut(name, work, ["--max-children", str(max_children)], "mutmut-update.log")
    save_result(collect(name, tests, (old.seconds if old else 0.0) + seconds))
    return rerun_open(name, max_children)


def rerun_open(name: str, max_children: int) -> ModuleResult:
    """Run again only the mutants of the last run of ``name`` that were not killed, with the
    tests as they are now (copied into its scratch copy, and the module's current list of
    test files); the others keep their status.
    For the tests added after a full run: much faster than a full run, the same verdicts
    for the mutants it reruns (tests are only ever added between the two, so a mutant
    killed before stays killed)."""
    old = load_result(name)
    if old is None:
        sys.exit(f"run_mutation: expected an earlier run of {name} to rerun, found none; "
                 f"run it first: run_mutation.py {name}")
    work = ROOT / "_build" / "mutation" / name
    files, tests = MODULES[name]
    tests = [t for t in tests if (ROOT / t).exists()]
    shutil.copytree(ROOT / "tests", work / "tests", ignore=_IGNORE, dirs_exist_ok=True)
    _write_config(work, files, tests)          # the module's test list as it is now
    # mutmut runs for a mutant only the tests its last stats run saw calling the function;
    # a test changed since then (a new call) would be skipped: collect the stats again
    (work / "mutants" / "mutmut-stats.json").unlink(missing_ok=True)
    open_ = sorted(m for m, st in old.status.items() if st not in ("killed", "timeout"))
    seconds = _mutmut(name, work, ["--max-children", str(max_children), *open_],
                      "mutmut-rerun.log")
    return merge_rerun(old, collect(name, tests, old.seconds + seconds), open_)


def merge_rerun(old: ModuleResult, new: ModuleResult, rerun: list[str]) -> ModuleResult:
    """The statuses of a rerun for the mutants it ran, the earlier run's for the rest.
    (mutmut forgets its earlier results when its configuration changes, for example the
    list of test files, so the others cannot be read back from mutmut.)"""
    again = set(rerun)
    for mutant, status in old.status.items():
        if mutant not in again:
            new.status[mutant] = status
            new.diffs.pop(mutant, None)
    return new


def _mutmut(name: str, work: Path, args: list[str], log: str) -> float:
    """``mutmut run *args`` in the scratch copy ``work``; its output goes to ``log`` there.
    Returns the wall time; a failed run stops the script, naming the log."""
    t0 = time.perf_counter()
    proc = subprocess.run([mutmut_exe(), "run", *args], cwd=work, env=_env(work),
                          capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    (work / log).write_text(proc.stdout[-20000:] + "\n" + proc.stderr[-20000:])
    if proc.returncode != 0:
        sys.exit(f"run_mutation: mutmut run failed for {name} (exit {proc.returncode}); "
                 f"its output is in {work / log}")
    return seconds


def _env(work: Path) -> dict:
    # one thread: mutmut forks every mutant's process from one that has used torch, and
    # OpenMP's pool does not survive a fork (a second thread in the child waits forever;
    # stir's mutants hung so, on 0 CPU, past every time limit)
    return dict(os.environ, STIR_CACHE=str(work / "_cache"), PYTHONDONTWRITEBYTECODE="1",
                STIR_THREADS="1", OMP_NUM_THREADS="1")


def collect(name: str, tests: list[str], seconds: float) -> ModuleResult:
    """Statuses and diffs of a finished run in the module's scratch copy."""
    work = ROOT / "_build" / "mutation" / name
    result = ModuleResult(name, MODULES[name][0], tests, seconds,
                          date=datetime.date.fromtimestamp(work.stat().st_mtime).isoformat())
    listing = subprocess.run([mutmut_exe(), "results", "--all", "true"], cwd=work,
                             env=_env(work), capture_output=True, text=True, check=True).stdout
    for line in listing.splitlines():
        mutant, _, status = line.strip().rpartition(": ")
        if mutant:
            result.status[mutant] = status
    open_ = [m for m, st in result.status.items() if st not in ("killed", "timeout")]
    shown = subprocess.run([sys.executable, "-c", _DIFFS], cwd=work, env=_env(work),
                           input="\n".join(open_), capture_output=True, text=True,
                           check=True).stdout
    result.diffs = json.loads(shown)
    return result


# Run in a module's scratch copy: the diff of every mutant named on stdin, in one process.
_DIFFS = """
import json, sys
from pathlib import Path
from mutmut.mutation.diff_apply import get_diff_for_mutant
out = {}
for name in sys.stdin.read().split():
    module = name.split(".x")[0] if ".x" in name else name.rsplit(".", 1)[0]
    path = Path(*module.split(".")).with_suffix(".py")
    diff = get_diff_for_mutant(name, path=path)
    out[name] = "\\n".join(l for l in diff.splitlines()
                           if l[:1] in "+-" and not l.startswith(("+++", "---")))
print(json.dumps(out))
"""


_DEVICE_ARG = re.compile(r",?\s*device=(?:[^,()]|\([^()]*\))*")   # one level of (...)
_TO_DEVICE = re.compile(r"\.to\((dev|device|None|[a-z_]+\.device|device_of\([a-z_0-9\[\]]*\))\)")


def _changed_lines(diff: str) -> tuple[list[str], list[str]]:
    minus = [l[1:] for l in diff.splitlines() if l.startswith("-")]
    plus = [l[1:] for l in diff.splitlines() if l.startswith("+")]
    return minus, plus


def _only_device(diff: str) -> bool:
    """The mutant only drops or None-s a device argument (or a .to(device) target)."""
    minus, plus = _changed_lines(diff)
    if not minus or len(minus) != len(plus):
        return False

    def norm(line):
        line = _TO_DEVICE.sub(".to()", _DEVICE_ARG.sub("", line))
        return re.sub(r"[\s,]+", "", line)
    return all(norm(a) == norm(b) for a, b in zip(minus, plus)) and "dev" in diff


BUILTIN_REASON = {
    "device": "changes only a device argument: every test runs on the CPU, where None, "
              "'cpu' and the model's device are the same device (benchmarks/gpu_check.py "
              "runs the CUDA paths)",
}


class Equivalence:
    """Why a surviving mutant cannot change a result: ``equivalent.toml`` names single
    mutants ([mutants]) or classes of them ([[rule]]: module, and regular expressions on
    the function, the removed and the added lines), plus the device class above."""

    def __init__(self, path: Path = HERE / "equivalent.toml"):
        data = tomllib.loads(path.read_text()) if path.exists() else {}
        self.mutants: dict[str, str] = dict(data.get("mutants", {}))
        self.rules: list[dict] = list(data.get("rule", []))
        self.used: set[str] = set()

    def explain(self, module: str, mutant: str, diff: str) -> str | None:
        """The reason this mutant survives, or None. A reason from a rule with
        ``equivalent = false`` explains a mutant that could change a result but that the
        tests do not reach (it stays in the score's denominator); see :meth:`equivalent`."""
        return self._match(module, mutant, diff)[0]

    def equivalent(self, module: str, mutant: str, diff: str) -> bool:
        reason, is_equivalent = self._match(module, mutant, diff)
        return reason is not None and is_equivalent

    def _match(self, module: str, mutant: str, diff: str) -> tuple[str | None, bool]:
        if mutant in self.mutants:
            self.used.add(mutant)
            return self.mutants[mutant], True
        minus, plus = _changed_lines(diff)
        function = mutant_function(mutant)
        for rule in self.rules:
            if rule.get("module", module) != module:
                continue
            if "function" in rule and not re.fullmatch(rule["function"], function):
                continue
            if "minus" in rule and not any(re.search(rule["minus"], l) for l in minus):
                continue
            if "plus" in rule and not any(re.search(rule["plus"], l) for l in plus):
                continue
            return rule["reason"], bool(rule.get("equivalent", True))
        if _only_device(diff):
            return BUILTIN_REASON["device"], True
        return None, True


def report(results: list[ModuleResult], path: Path, started: str) -> str:
    eq = Equivalence()
    total_s = sum(r.seconds for r in results)
    lines = [
        "# Mutation testing of the numerical core",
        "",
        f"Run {started} with mutmut {mutmut_version()} by `tests/mutation/run_mutation.py` "
        f"on this machine ({os.cpu_count()} cores, 2 mutants at a time): "
        f"{total_s / 60:.1f} min for the modules below (each module's run date in its row; "
        "a module brought up to date with --update counts its full run, the update and the "
        "reruns of its survivors).",
        "",
        "A mutant is *killed* when one of the module's tests fails on it; *equivalent* mutants "
        "cannot change any result (the reasons are in `tests/mutation/equivalent.toml` and "
        "beside each mutant below); *explained, not killed*: mutants that could change a "
        "result in a case the tests do not reach, with the reason (they count against the "
        "score); *open*: survivors nobody has explained (*no tests*: no selected test runs "
        "the mutated function); *not run*: mutants a stopped run did not reach. Score = "
        "(killed + timeout) / (mutants - equivalent - not run). Left out of the "
        "mutation: statements that raise or warn (their message text; the condition that "
        "raises is mutated) and print/log/progress output; reported apart (*text only*): "
        "functions that only format text ("
        + ", ".join(sorted({f for v in NOT_NUMERICAL.values() for f in v})) + ").",
        "",
        "| module | files | mutants | killed | timeout | equivalent | explained, not killed | "
        "open (survived / no tests) | not run | score | text only | minutes | run on |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        c = r.counts(eq)
        lines.append(f"| {r.name} | {', '.join(Path(f).name for f in r.files)} | {c['total']} | "
                     f"{c['killed']} | {c['timeout']} | {c['equivalent']} | {c['explained']} | "
                     f"{c['survived']} / {c['no tests']} | {c['other']} | {score(c):.1f} % | "
                     f"{c['not numerical']} | "
                     f"{r.seconds / 60:.1f} | {r.date} |")
    changed = {r.name: changed_since_run(r) for r in results}
    if any(changed.values()):
        lines += ["", "Changed since their run (the source mutated differs from the checkout's; "
                  "rerun these modules to measure the code as it is now): "
                  + "; ".join(f"{n}: {', '.join(fs)}" for n, fs in changed.items() if fs) + "."]
    lines += ["", "Tests run per module:", ""]
    for r in results:
        lines.append(f"- {r.name}: " + ", ".join(f"`{t}`" for t in r.tests))
    for r in results:
        open_ = [m for m, st in r.status.items()
                 if st not in ("killed", "timeout") and not r.not_numerical(m)]
        if not open_:
            continue
        lines += ["", f"## {r.name}: mutants not killed", ""]
        for m in sorted(open_, key=natural):
            diff = r.diffs.get(m, "")
            why = eq.explain(r.name, m, diff)
            label = ("not run (the run was stopped)" if r.status[m] == "not checked" else
                     "**open**" if why is None else f"equivalent: {why}"
                     if eq.equivalent(r.name, m, diff) else f"not equivalent, not tested: {why}")
            lines.append(f"- `{m}` ({r.status[m]}): {label}")
            diff = r.diffs.get(m, "")
            if diff:
                lines += ["  ```diff"] + ["  " + l for l in diff.splitlines()] + ["  ```"]
    modules = {Path(f).with_suffix("").as_posix().replace("/", ".") + "."
               for r in results for f in r.files}                  # "stir_lib.verdicts."
    stale = sorted(m for m in set(eq.mutants) - eq.used if m.startswith(tuple(modules)))
    if stale:
        lines += ["", "## Explanations in equivalent.toml no longer needed (killed or renamed)",
                  ""] + [f"- `{m}`" for m in stale]
    text = "\n".join(lines) + "\n"
    path.write_text(text)
    return text


def changed_since_run(r: ModuleResult) -> list[str]:
    """The files of ``r`` whose source in the checkout differs from the copy its run mutated
    (kept in the module's scratch copy; a file missing there counts as changed)."""
    work = ROOT / "_build" / "mutation" / r.name
    return [Path(f).name for f in r.files
            if not (work / f).exists() or (work / f).read_bytes() != (ROOT / f).read_bytes()]


def save_result(r: ModuleResult) -> None:
    out = ROOT / "_build" / "mutation" / r.name / "result.json"
    out.write_text(json.dumps(dict(name=r.name, files=r.files, tests=r.tests, date=r.date,
                                   seconds=r.seconds, status=r.status, diffs=r.diffs)))


def load_result(name: str) -> ModuleResult | None:
    path = ROOT / "_build" / "mutation" / name / "result.json"
    if not path.exists():
        return None
    d = json.loads(path.read_text())
    return ModuleResult(d["name"], d["files"], d["tests"], d["seconds"], d["status"], d["date"],
                        d["diffs"])


def natural(s: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


def mutmut_version() -> str:
    from importlib.metadata import version
    return version("mutmut")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", help=f"some of {sorted(MODULES)}; all by default")
    parser.add_argument("--list", action="store_true", help="list the modules and their tests")
    parser.add_argument("--report-only", action="store_true",
                        help="write the report from the last run of each module (after "
                             "editing equivalent.toml), running nothing")
    parser.add_argument("--collect", type=float, metavar="SECONDS",
                        help="read the finished mutmut run of each named module from its "
                             "scratch copy (its wall time in SECONDS) instead of running it")
    parser.add_argument("--rerun-open", action="store_true",
                        help="rerun only the mutants the last run of each module did not kill, "
                             "with the current tests")
    parser.add_argument("--update", action="store_true",
                        help="bring each module's last run up to the checkout (only changed "
                             "functions are mutated again), or finish a stopped run")
    parser.add_argument("--max-children", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--report", type=Path, default=HERE / "REPORT.md")
    args = parser.parse_args(argv)
    if args.list:
        for name, (files, tests) in MODULES.items():
            print(f"{name}: {' '.join(files)}  <-  {' '.join(tests)}")
        return
    unknown = [m for m in args.modules if m not in MODULES]
    if unknown:
        sys.exit(f"run_mutation: expected module names among {sorted(MODULES)}, got {unknown}")
    names = args.modules or list(MODULES)
    started = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    for name in names:
        if args.report_only:
            continue
        if args.update:
            print(f"{name}: updating the last run to the checkout ...", flush=True)
            r = update_module(name, args.max_children)
        elif args.rerun_open:
            print(f"{name}: rerunning the mutants not killed ...", flush=True)
            r = rerun_open(name, args.max_children)
        elif args.collect is not None:
            tests = [t for t in MODULES[name][1] if (ROOT / t).exists()]
            r = collect(name, tests, args.collect)
        else:
            print(f"{name}: mutating {', '.join(MODULES[name][0])} ...", flush=True)
            r = run_module(name, args.max_children)
        save_result(r)
        c = r.counts(Equivalence())
        print(f"{name}: {c['killed'] + c['timeout']}/{c['total'] - c['equivalent']} killed "
              f"({score(c):.1f} %), {c['survived']} survived and {c['no tests']} without tests "
              f"unexplained, {c['explained']} explained, "
              f"{c['equivalent']} equivalent, {r.seconds:.0f} s", flush=True)
    # the report covers every module with a saved run (its date is that of this call)
    results = [r for r in (load_result(n) for n in MODULES) if r is not None]
    report(results, args.report, started)
    print(f"report: {args.report}")


if __name__ == "__main__":
    main()
