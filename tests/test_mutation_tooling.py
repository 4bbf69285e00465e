"""The mutation-testing script's own logic: names, classes of equivalent mutants, scores.

tests/mutation/run_mutation.py is run by hand (not in CI); what it decides about a mutant
(which function it is in, whether an equivalence rule explains it, the score) is checked
here, so that a report cannot call a real bug equivalent by a loose rule.
"""

from __future__ import annotations

import importlib.util
import math
import sys
import tomllib
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
spec = importlib.util.spec_from_file_location("run_mutation", HERE / "mutation" / "run_mutation.py")
rm = importlib.util.module_from_spec(spec)
sys.modules["run_mutation"] = rm          # dataclasses look their module up there
spec.loader.exec_module(rm)


def test_mutant_function_names():
    assert rm.mutant_function("stir_lib.verdicts.x__finite__mutmut_3") == "_finite"
    assert rm.mutant_function("stir_lib.verdicts.x_welch__mutmut_17") == "welch"
    assert rm.mutant_function("stir_lib.verdicts.xǁEstimateǁformat__mutmut_2") == "format"
    assert rm.mutant_function("stir_lib.transfer.heads.x_fine_tune__mutmut_1") == "fine_tune"


@pytest.mark.parametrize("diff, device_only", [
    ('-    d = torch.empty(n, dtype=torch.long, device="cpu")\n'
     '+    d = torch.empty(n, dtype=torch.long, device=None)', True),
    ('-    d = torch.empty(n, dtype=torch.long, device="cpu")\n'
     '+    d = torch.empty(n, dtype=torch.long, )', True),
    ('-    return p["x"].to(device)\n+    return p["x"].to(None)', True),
    ('-        X1 = X.to(device_of(m1))\n+        X1 = X.to(None)', True),
    ('-        model.to(dev)\n+        model.to(None)', True),
    ('-            device=device_of(model))\n+            device=None)', True),
    ('-            device=device_of(model))\n+            )', True),
    ('-    model.to(dev).eval()\n+    model.to(None).eval()', True),
    ('-    d = torch.empty(n, dtype=torch.long, device="cpu")\n'
     '+    d = torch.empty(n, dtype=None, device="cpu")', False),
    ('-    rows = torch.arange(n, device=dev)\n+    rows = torch.arange(n + 1, device=dev)', False),
    ('-    a = x + 1\n+    a = x - 1', False),
])
def test_device_only_mutants(diff, device_only):
    assert rm._only_device(diff) is device_only


def test_rules_match_on_module_function_and_lines(tmp_path):
    toml = tmp_path / "eq.toml"
    toml.write_text('''
[[rule]]
module = "verdicts"
function = "welch"
plus = 'x\\.size <= 2'
reason = "r1"

[[rule]]
plus = 'float\\("NAN"\\)'
reason = "r2"

[[rule]]
module = "attacks"
plus = 'held'
reason = "r4"
equivalent = false

[mutants]
"stir_lib.stir.x_stir__mutmut_5" = "r3"
''')
    eq = rm.Equivalence(toml)
    diff = "-    if x.size < 2:\n+    if x.size <= 2:"
    assert eq.explain("verdicts", "stir_lib.verdicts.x_welch__mutmut_18", diff) == "r1"
    assert eq.explain("verdicts", "stir_lib.verdicts.x_paired__mutmut_18", diff) is None
    assert eq.explain("similarity", "stir_lib.similarity.x_welch__mutmut_18", diff) is None
    assert eq.explain("stir", "stir_lib.stir.x_a__mutmut_1",
                      '-    v = float("nan")\n+    v = float("NAN")') == "r2"
    assert eq.explain("stir", "stir_lib.stir.x_stir__mutmut_5", "") == "r3"
    assert eq.used == {"stir_lib.stir.x_stir__mutmut_5"}
    assert eq.explain("stir", "stir_lib.stir.x_a__mutmut_2", "-    a = 1\n+    a = 2") is None
    held = "-    held = a\n+    held = b"
    assert eq.explain("attacks", "stir_lib.attacks.x_f__mutmut_1", held) == "r4"
    assert not eq.equivalent("attacks", "stir_lib.attacks.x_f__mutmut_1", held)
    assert eq.equivalent("verdicts", "stir_lib.verdicts.x_welch__mutmut_18", diff)


def test_scores_leave_equivalent_and_text_mutants_out(tmp_path):
    r = rm.ModuleResult("verdicts", ["stir_lib/verdicts.py"], [], status={
        "stir_lib.verdicts.x_a__mutmut_1": "killed",
        "stir_lib.verdicts.x_a__mutmut_2": "survived",
        "stir_lib.verdicts.x_a__mutmut_3": "timeout",
        "stir_lib.verdicts.x_b__mutmut_1": "no tests",
        "stir_lib.verdicts.xǁEstimateǁformat__mutmut_1": "survived",
    }, diffs={"stir_lib.verdicts.x_a__mutmut_2": '-    v = float("nan")\n+    v = float("NAN")',
              "stir_lib.verdicts.x_b__mutmut_1": "-    a = 1\n+    a = 2"})
    eq = rm.Equivalence(HERE / "mutation" / "equivalent.toml")
    c = r.counts(eq)
    assert (c["total"], c["killed"], c["timeout"], c["equivalent"], c["no tests"],
            c["not numerical"], c["explained"]) == (4, 1, 1, 1, 1, 1, 0)
    assert rm.score(c) == pytest.approx(100 * 2 / 3)
    assert math.isnan(rm.score(dict(total=0, equivalent=0, killed=0, timeout=0)))


def test_the_shipped_rules_are_well_formed():
    data = tomllib.loads((HERE / "mutation" / "equivalent.toml").read_text())
    for rule in data["rule"]:
        assert set(rule) <= {"module", "function", "minus", "plus", "reason", "equivalent"}
        assert rule["reason"] and ("plus" in rule or "minus" in rule), rule
        assert rule.get("module", "verdicts") in rm.MODULES
    for name, reason in data.get("mutants", {}).items():
        assert name.startswith("stir_lib.") and "__mutmut_" in name and reason
    for name, (files, tests) in rm.MODULES.items():
        assert all((HERE.parent / f).is_file() for f in files), name
        assert all((HERE.parent / t).is_file() for t in tests), name


def test_a_rerun_keeps_the_earlier_status_of_mutants_it_did_not_run():
    old = rm.ModuleResult("m", [], [], 10.0, {"a": "killed", "b": "survived", "c": "not checked",
                                              "d": "timeout"}, "2026-01-01",
                          {"b": "-x\n+y", "c": "-p\n+q"})
    new = rm.ModuleResult("m", [], [], 12.0, {"a": "not checked", "b": "killed",
                                              "c": "survived", "d": "not checked"},
                          "2026-01-02", {"a": "-1\n+2", "c": "-p\n+q", "d": "-3\n+4"})
    merged = rm.merge_rerun(old, new, ["b", "c"])
    assert merged.status == {"a": "killed", "b": "killed", "c": "survived", "d": "timeout"}
    assert merged.diffs == {"c": "-p\n+q"} and merged.seconds == 12.0


def test_a_module_changed_since_its_run_is_named(tmp_path, monkeypatch):
    monkeypatch.setattr(rm, "ROOT", tmp_path)
    (tmp_path / "stir_lib").mkdir()
    (tmp_path / "stir_lib" / "a.py").write_text("x = 1\n")
    (tmp_path / "stir_lib" / "b.py").write_text("y = 1\n")
    scratch = tmp_path / "_build" / "mutation" / "m" / "stir_lib"
    scratch.mkdir(parents=True)
    (scratch / "a.py").write_text("x = 1\n")
    (scratch / "b.py").write_text("y = 2\n")
    r = rm.ModuleResult("m", ["stir_lib/a.py", "stir_lib/b.py", "stir_lib/c.py"], [])
    assert rm.changed_since_run(r) == ["b.py", "c.py"]
