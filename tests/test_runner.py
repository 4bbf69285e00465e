"""Tests for stir_lib.book.run on a throw-away book: _toc.yml order, -p parsing, failures that
name the notebook and the cell, and what a good run leaves behind.

Each papermill run starts a kernel (a few seconds), so the failing and the passing book
are executed once per module and shared by the tests that inspect them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import pytest

from stir_lib import paths
from stir_lib.book import run
from stir_lib.book.run import main, parse_overrides
from stir_lib.paths import toc_notebooks

HEADER = """\
---
jupytext:
  text_representation:
    extension: .md
    format_name: myst
kernelspec:
  display_name: Python 3
  language: python
  name: python3
---
"""

BAD = HEADER + """
# A notebook that fails

```{code-cell} ipython3
:tags: [parameters]

scale = "ci"  # the scale
```

Some prose between the cells, so that cell positions and code-cell numbers differ.

+++

More prose.

```{code-cell} ipython3
raise RuntimeError("boom in the second code cell")
```

```{code-cell} ipython3
never_reached = True
```
"""

GOOD = HEADER + """
# A notebook that works

```{code-cell} ipython3
:tags: [parameters]

scale = "ci"  # the scale
n = 1         # an overridable number
```

```{code-cell} ipython3
import os
from pathlib import Path

out = Path(os.environ["STIR_RESULTS"])
out.mkdir(parents=True, exist_ok=True)
(out / "good.txt").write_text(f"{scale} {n} {os.environ['STIR_BUILD']}")
```
"""

SCORECARD = HEADER + """
# Summary page

```{code-cell} ipython3
:tags: [parameters]

scale = "ci"  # the scale
```

```{code-cell} ipython3
import os
from pathlib import Path

# summary pages get the scale but not the chapters' overrides
(Path(os.environ["STIR_RESULTS"]) / "scorecard.txt").write_text(f"{scale} {'n' in globals()}")
```
"""

TOC = """\
format: jb-book
root: book/intro
parts:
  - caption: Part one
    chapters:
      - file: notebooks/good
      - file: notebooks/bad
        sections:
          - file: notebooks/sub.md
  - caption: Part two
    chapters:
      - file: notebooks/scorecard
      - file: book/references
"""


def make_book(root: Path) -> Path:
    (root / "notebooks").mkdir(parents=True)
    (root / "_toc.yml").write_text(TOC)
    (root / "notebooks" / "bad.md").write_text(BAD)
    (root / "notebooks" / "good.md").write_text(GOOD)
    (root / "notebooks" / "scorecard.md").write_text(SCORECARD)
    return root


def point_at(mp, root: Path, build: Path, results: Path) -> None:
    mp.setenv("STIR_ROOT", str(root))
    mp.setenv("STIR_BUILD", str(build))
    mp.setenv("STIR_RESULTS", str(results))
    mp.setenv("MPLBACKEND", "Agg")  # execute() clears it for the kernel, then restores it


# ----------------------------------------------------------------------------- no kernel
def test_toc_notebooks_in_order(tmp_path):
    make_book(tmp_path)
    assert toc_notebooks(tmp_path) == ["good", "bad", "sub", "scorecard"]


def test_toc_of_the_real_book_lists_existing_notebooks():
    root = Path(__file__).resolve().parents[1]
    names = toc_notebooks(root)
    assert names and names[-2:] == ["scorecard", "reproducibility"]
    assert all((root / "notebooks" / f"{n}.md").exists() for n in names)


def test_parse_overrides_types():
    got = parse_overrides(["n=10", "name=fc10", "x=[1,2]", "eps=0.5", "flag=True",
                           "none=None", "expr=a=b", "empty="])
    assert got == {"n": 10, "name": "fc10", "x": [1, 2], "eps": 0.5, "flag": True,
                   "none": None, "expr": "a=b", "empty": ""}
    assert type(got["n"]) is int and type(got["eps"]) is float
    assert parse_overrides([]) == {}


def test_parse_overrides_bad_pair():
    with pytest.raises(SystemExit, match="key=value, got 'n10'"):
        parse_overrides(["n=1", "n10"])


def test_unknown_notebook_lists_names(tmp_path, monkeypatch):
    make_book(tmp_path)
    point_at(monkeypatch, tmp_path, tmp_path / "_b", tmp_path / "_r")
    with pytest.raises(SystemExit, match="unknown notebook") as err:
        main(["execute", "--scale", "smoke", "nope"])
    assert "'nope'" in str(err.value) and "'good'" in str(err.value)
    assert not (tmp_path / "_b" / "executed").exists()


def test_summary_pages_run_last_and_params_parse(tmp_path, monkeypatch):
    make_book(tmp_path)
    point_at(monkeypatch, tmp_path, tmp_path / "_b", tmp_path / "_r")
    seen = {}
    monkeypatch.setattr(run, "execute", lambda names, scale, overrides, root, kernel:
                        seen.update(names=names, scale=scale, overrides=overrides, root=root))
    main(["execute", "scorecard", "--scale", "smoke", "bad", "-p", "n=3", "good"])
    assert seen == {"names": ["good", "bad", "scorecard"], "scale": "smoke",
                    "overrides": {"n": 3}, "root": tmp_path.resolve()}
    main(["execute"])
    assert seen["names"] == ["good", "bad", "sub", "scorecard"] and seen["scale"] == "ci"
    main(["execute", "good"])  # a summary page runs whatever was selected
    assert seen["names"] == ["good", "scorecard"]
    main(["execute", "--no-summary", "good"])   # a lane's run: the chapters only
    assert seen["names"] == ["good"]
    main(["execute", "--no-summary", "scorecard"])   # a page named is run, summary or not
    assert seen["names"] == ["scorecard"]


def test_build_dir_and_repo_root_honour_env(tmp_path, monkeypatch):
    make_book(tmp_path)
    monkeypatch.setenv("STIR_ROOT", str(tmp_path))
    monkeypatch.delenv("STIR_BUILD", raising=False)
    assert paths.repo_root() == tmp_path.resolve()
    assert paths.build_dir(tmp_path) == tmp_path / "_build"
    monkeypatch.setenv("STIR_BUILD", str(tmp_path / "elsewhere"))
    assert paths.build_dir(tmp_path) == (tmp_path / "elsewhere").resolve()


# ----------------------------------------------------------------------------- with a kernel
@pytest.fixture(scope="module")
def failed_run(tmp_path_factory):
    root = make_book(tmp_path_factory.mktemp("book_bad"))
    build = root / "_out"
    with pytest.MonkeyPatch.context() as mp:
        point_at(mp, root, build, root / "_results")
        with pytest.raises(SystemExit) as err:
            main(["execute", "--scale", "smoke", "bad"])
    return str(err.value), build / "executed" / "notebooks"


def test_failing_notebook_names_notebook_and_cell(failed_run):
    msg, out = failed_run
    assert "notebook bad FAILED" in msg
    assert "RuntimeError: boom in the second code cell" in msg
    assert not (out / "bad.ipynb").exists()  # no executed copy that looks finished
    failed = out / "bad.failed.ipynb"
    assert failed.exists() and str(failed) in msg
    nb = nbformat.read(failed, as_version=4)
    (bad,) = [c for c in nb.cells if c.cell_type == "code"
              and any(o.get("output_type") == "error" for o in c.get("outputs", []))]
    assert "boom" in bad.source
    m = re.search(r"at cell In \[(\d+)\]", msg)
    assert m and int(m.group(1)) == bad.execution_count  # the In [n] the reader sees


def test_failing_notebook_message_quotes_the_failing_cell(failed_run):
    """The message quotes the first line of the failing cell, so it can be found in the source."""
    msg, out = failed_run
    nb = nbformat.read(out / "bad.failed.ipynb", as_version=4)
    (bad,) = [c for c in nb.cells if c.cell_type == "code" and "boom" in c.source]
    first = next(ln for ln in bad.source.splitlines() if ln.strip())
    assert repr(first[:80]) in msg, msg


@pytest.fixture(scope="module")
def good_run(tmp_path_factory):
    root = make_book(tmp_path_factory.mktemp("book_good"))
    build, results = root / "_out", root / "_results"
    with pytest.MonkeyPatch.context() as mp:
        point_at(mp, root, build, results)
        main(["execute", "--scale", "smoke", "good", "-p", "n=7"])
        env_after = {"MPLBACKEND": run.os.environ.get("MPLBACKEND")}
    return root, build, results, env_after


def test_good_notebook_executes_with_parameters(good_run):
    root, build, results, _ = good_run
    # the kernel saw the injected scale and override, and the runner's folders
    assert (results / "good.txt").read_text() == f"smoke 7 {build.resolve()}"
    assert not (root / "_build").exists()  # STIR_BUILD was honoured
    assert (results / "scorecard.txt").read_text() == "smoke False"


def test_good_notebook_injected_cell_is_hidden(good_run):
    _, build, _, _ = good_run
    out = build / "executed" / "notebooks"
    assert (out / "good.ipynb").exists() and not (out / "good.failed.ipynb").exists()
    assert not list(out.glob(".*.input.ipynb"))  # the temporary input is gone
    nb = nbformat.read(out / "good.ipynb", as_version=4)
    tags = [c.metadata.get("tags", []) for c in nb.cells]
    injected = [t for t in tags if "injected-parameters" in t]
    assert len(injected) == 1 and "remove-cell" in injected[0]
    assert any("parameters" in t and "remove-cell" not in t for t in tags)
    assert "scale = \"smoke\"" in next(c.source for c in nb.cells
                                        if "injected-parameters" in c.metadata.get("tags", []))


def test_good_notebook_timings(good_run):
    _, build, _, _ = good_run
    timings = json.loads((build / "executed" / "timings.json").read_text())
    assert set(timings) == {"good", "scorecard"}
    entry = timings["good"]
    assert entry["scale"] == "smoke" and entry["parameters"] == {"n": 7}
    assert 0 < entry["seconds"] < 600 and entry["finished"]


def test_environment_restored_after_execute(good_run):
    *_, env_after = good_run
    assert env_after["MPLBACKEND"] == "Agg"  # popped for the kernel, put back afterwards


def test_unknown_parameter_is_an_error_naming_the_notebooks_parameters(good_run):
    """A typo in -p (n_imagez for n) stops the run before anything executes, and the
    message quotes the notebook's parameters cell."""
    root, build, results, _ = good_run
    with pytest.MonkeyPatch.context() as mp:
        point_at(mp, root, build, results)
        with pytest.raises(SystemExit) as err:
            main(["execute", "--scale", "smoke", "good", "-p", "n_imagez=7"])
    msg = str(err.value)
    assert "good: unknown parameter(s) ['n_imagez']" in msg
    assert 'scale = "ci"  # the scale' in msg and "n = 1         # an overridable number" in msg


def test_parameters_are_checked_against_the_real_notebooks():
    from stir_lib.book.run import check_parameters, notebook_parameters
    import jupytext

    root = Path(__file__).resolve().parents[1]
    declared = notebook_parameters(jupytext.read(root / "notebooks" / "transfer.md"))
    assert {"scale", "device", "overrides"} <= set(declared)
    check_parameters("transfer", declared, {"scale": "smoke", "overrides": {"coarse": 12}}, "smoke")
    with pytest.raises(SystemExit, match=r"overrides \['coars'\] are not settings of the 'smoke' "
                                         r"preset \(stir_lib.chapters.transfer.PRESETS\)"):
        check_parameters("transfer", declared, {"scale": "smoke", "overrides": {"coars": 12}},
                         "smoke")
    with pytest.raises(SystemExit, match="overrides: expected a dict"):
        check_parameters("transfer", declared, {"scale": "smoke", "overrides": "coarse=12"}, "smoke")
    summary = notebook_parameters(jupytext.read(root / "notebooks" / "scorecard.md"))
    assert list(summary) == ["scale"]     # a summary page takes the scale, nothing else


def test_each_executed_page_says_what_built_it(good_run):
    _, build, _, _ = good_run
    nb = nbformat.read(build / "executed" / "notebooks" / "good.ipynb", as_version=4)
    stamped = [c for c in nb.cells if 'class="build-stamp"' in c.source]
    assert len(stamped) == 1 and stamped[0].cell_type == "markdown"
    lines = stamped[0].source.split("\n")
    assert lines[0] == "# A notebook that works" and lines[1] == ""   # right under the title
    text = lines[2]
    assert 'class="build-stamp"' in text and "scale <b>smoke</b>" in text
    assert "CPU (" in text or "cuda" in text
    assert 'href="good.ipynb" download' in text and "source</a>" not in text   # no url set


def test_stamp_links_to_the_source_only_when_a_repository_is_set():
    from stir_lib.book.run import stamp_html

    args = dict(name="transfer", scale="ci", device="CPU (x86_64, 2 cores)", branch="main",
                when="2026-12-06 10:00 UTC")
    bare = stamp_html(commit="a" * 40, dirty=False, url="", **args)
    assert "source</a>" not in bare and "commit <code>aaaaaaaaaa</code>" in bare
    linked = stamp_html(commit="a" * 40, dirty=False, url="https://github.com/o/r", **args)
    assert f'href="https://github.com/o/r/blob/{"a" * 40}/notebooks/transfer.md"' in linked
    dirty = stamp_html(commit="a" * 40, dirty=True, url="https://github.com/o/r", **args)
    assert "/blob/main/notebooks/transfer.md" in dirty and "uncommitted changes" in dirty


def test_a_second_stamp_replaces_the_first():
    from stir_lib.book.run import _stamp

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# Title\n\nProse."),
                                         nbformat.v4.new_code_cell("x = 1")])
    _stamp(nb, '<div class="build-stamp">first</div>')
    _stamp(nb, '<div class="build-stamp">second</div>')
    cells = nb.cells
    assert cells[0].source == '# Title\n\n<div class="build-stamp">second</div>\n\nProse.'
    assert len(cells) == 2
    bare = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# T\nText")])
    _stamp(bare, '<div class="build-stamp">s</div>')
    assert bare.cells[0].source == \
        '# T\n\n<div class="build-stamp">s</div>\n\nText'   # a blank line ends the HTML block


# ----------------------------------------------------------------------------- lanes
def test_lane_groups_keep_a_chapter_family_together_longest_first():
    names = ["blind_spots", "units_vs_random", "lipschitz", "stir_pairs", "stir_layers",
             "stir_losses", "transfer", "stir_your_models", "extra"]
    groups = run.lane_groups(names)
    assert sorted(map(tuple, groups)) == sorted([
        ("blind_spots", "units_vs_random", "lipschitz"), ("stir_pairs", "stir_layers", "stir_losses"),
        ("transfer",), ("stir_your_models",), ("extra",)])
    seconds = [run.GROUP_SECONDS.get("szegedy" if g[0] == "blind_spots" else
                                     run.NOTEBOOK_MODULE.get(g[0], g[0]), 0.0) for g in groups]
    assert seconds == sorted(seconds, reverse=True)


class _FakeLane:
    """A lane process that ends at once with the return code its group was given."""
    started: list = []

    def __init__(self, cmd, cwd=None, env=None):
        self.group = cmd[cmd.index("--no-summary") + 1:]
        self.env = env
        self.returncode = None
        self.terminated = False
        _FakeLane.started.append(self)

    def poll(self):
        if self.group == ["slow"]:
            return None                     # still running when the other lane fails
        self.returncode = 1 if self.group == ["bad"] else 0
        return self.returncode

    def terminate(self):
        self.terminated = True

    def wait(self):
        return self.returncode


def test_a_failing_lane_stops_the_others_and_is_named(tmp_path, monkeypatch):
    _FakeLane.started = []
    monkeypatch.setattr(run.subprocess, "Popen", _FakeLane)
    monkeypatch.setattr(run.time, "sleep", lambda s: None)
    monkeypatch.delenv("STIR_THREADS", raising=False)
    with pytest.raises(SystemExit, match="the lane bad FAILED"):
        run.execute_in_lanes(["slow", "bad", "later"], "smoke", [], tmp_path, "python3", 2)
    slow, bad = _FakeLane.started[:2]
    assert slow.terminated and not bad.terminated
    assert [lane.group for lane in _FakeLane.started] == [["slow"], ["bad"]]   # "later" never began
    assert slow.env["STIR_THREADS"] == "1" and slow.env["STIR_LANES"] == "2"


def test_lanes_execute_every_notebook_on_one_thread_and_record_it(tmp_path, monkeypatch):
    root = make_book(tmp_path / "book")
    (root / "notebooks" / "good2.md").write_text(
        GOOD.replace('"good.txt"', '"good2.txt"').replace(
            "{os.environ['STIR_BUILD']}", "{os.environ.get('STIR_THREADS')}"))
    (root / "_toc.yml").write_text(TOC.replace("      - file: notebooks/bad\n",
                                               "      - file: notebooks/good2\n"))
    point_at(monkeypatch, root, root / "_out", root / "_results")
    monkeypatch.delenv("STIR_THREADS", raising=False)
    main(["execute", "--scale", "smoke", "--lanes", "2", "good", "good2"])
    executed = root / "_out" / "executed"
    assert {p.stem for p in (executed / "notebooks").glob("*.ipynb")} == {"good", "good2", "scorecard"}
    assert (root / "_results" / "good2.txt").read_text() == "smoke 1 1"     # one thread
    timings = json.loads((executed / "timings.json").read_text())
    assert {n: t["lanes"] for n, t in timings.items()} == {"good": 2, "good2": 2, "scorecard": 1}
