"""The record of the claim rules: every claim has one, its words are the claim's, and a rule
changed in this round names the verdict the old rule gave on the previous build (the one
the profile kept) and why it changed."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from stir_lib import chapters
from stir_lib.verdicts import VERDICTS, RuleRecord, rule_records

ROOT = Path(__file__).resolve().parents[1]
CLAIMS = [f"S{i}" for i in range(1, 8)] + [f"N{i}" for i in range(1, 8)] + \
    [f"R{i}" for i in range(1, 6)]


def _flat(text: str) -> str:
    return re.sub(r"\s+", " ", text)


def _previous_verdicts() -> dict[str, str]:
    """claim -> verdict of the two-lane build of b348c59, as the profile kept it."""
    saved = json.loads((ROOT / "benchmarks/profiles/2026-12-06-verdicts-b348c59.json").read_text())
    compared = (ROOT / "benchmarks/profiles/2026-12-06-results-compared.txt").read_text()
    for m in re.finditer(r"^([SNR]\d): (.+?) -> (.+)$", compared, re.M):   # the same build
        assert saved["claims"][m[1]]["verdict"] == m[3], m[1]
    return {c: v["verdict"] for c, v in saved["claims"].items()}


def test_every_claim_has_one_record_with_the_claims_words():
    records = chapters.rules()
    assert sorted(records) == sorted(CLAIMS)
    targets = _flat((ROOT / "book/paper_targets.md").read_text())
    for claim, r in records.items():
        assert r.claim == claim
        for piece in r.words.split(" … "):
            assert _flat(piece) in targets, f"{claim}: {piece!r} is not in paper_targets.md"


def test_rules_changed_this_round_name_the_previous_verdict_and_why():
    previous = _previous_verdicts()
    assert len(previous) == 19
    changed = {c: r for c, r in chapters.rules().items() if r.changed == chapters.ROUND}
    for claim, r in changed.items():
        assert r.previous == previous[claim], claim
        assert r.previous_build == chapters.PREVIOUS_BUILD
        assert len(r.why) > 40, f"{claim}: say why the rule changed"
    for claim, r in chapters.rules().items():
        assert r.changed <= chapters.ROUND, claim
        if r.changed != chapters.ROUND:
            assert r.previous is None, f"{claim}: a previous verdict belongs to this round's changes"


def test_record_refuses_bad_input():
    with pytest.raises(ValueError, match="ISO date"):
        RuleRecord("S1", "words", "6 Dec 2026")
    with pytest.raises(ValueError, match="words"):
        RuleRecord("S1", "", "2026-12-06")
    with pytest.raises(ValueError, match="one of"):
        RuleRecord("S1", "w", "2026-12-06", previous="yes", previous_build="b", why="w")
    with pytest.raises(ValueError, match="why"):
        RuleRecord("S1", "w", "2026-12-06", previous=VERDICTS[0])
    with pytest.raises(ValueError, match="two rule records"):
        rule_records(RuleRecord("S1", "w", "2026-12-06"), RuleRecord("S1", "v", "2026-12-06"))
    frozen = rule_records(RuleRecord("S1", "w", "2026-12-06"))
    with pytest.raises(TypeError):
        frozen["S2"] = frozen["S1"]


def test_record_accepts_what_it_should_and_refuses_each_missing_piece():
    ok = RuleRecord("S1", "w", "2026-12-06", previous="partly", previous_build="b", why="y")
    assert (ok.claim, ok.previous, ok.previous_build, ok.why) == ("S1", "partly", "b", "y")
    assert RuleRecord("S1", "w", "2026-12-06").previous is None       # unchanged this round
    for claim, words in (("", "w"), ("S1", ""), ("", "")):
        with pytest.raises(ValueError, match="id and words"):
            RuleRecord(claim, words, "2026-12-06")
    with pytest.raises(ValueError, match="ISO date"):
        RuleRecord("S1", "w", None)
    for why, build in (("y", ""), ("", "b")):       # a changed rule needs both
        with pytest.raises(ValueError, match="why it changed"):
            RuleRecord("S1", "w", "2026-12-06", previous="partly", previous_build=build, why=why)


def test_rule_records_keeps_every_record_under_its_claim():
    a, b = RuleRecord("S1", "w", "2026-12-06"), RuleRecord("N2", "v", "2026-12-01")
    records = rule_records(a, b)
    assert dict(records) == {"S1": a, "N2": b}
    assert dict(rule_records()) == {}
