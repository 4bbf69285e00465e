"""Tests for stir_lib.results: claims are validated, scorecards round-trip."""

from __future__ import annotations

import json

import numpy as np
import pytest

from stir_lib.results import VERDICTS, Claim, Scorecard, load_all, results_dir

ROW = dict(claim="S2", quantity="mean RMS distortion, FC10(1e-4)", paper="0.062",
           ours="0.058", verdict="reproduced", reason="within 10% of the paper",
           source="Table 1", noise="95% interval over 3 seeds")

@pytest.fixture
def results(tmp_path, monkeypatch):
    folder = tmp_path / "results"
    monkeypatch.setenv("STIR_RESULTS", str(folder))
    return folder


def test_claim_accepts_every_verdict():
    for v in VERDICTS:
        assert Claim(**{**ROW, "verdict": v}).verdict == v
    assert VERDICTS == ("reproduced", "partly", "not reproduced", "not tested")


@pytest.mark.parametrize("verdict", ["Reproduced", "yes", "", "partially"])
def test_claim_rejects_unknown_verdict(verdict):
    with pytest.raises(ValueError, match="verdict: expected one of") as err:
        Claim(**{**ROW, "verdict": verdict})
    assert all(repr(v) in str(err.value) for v in VERDICTS)


@pytest.mark.parametrize("field", ["reason", "claim"])
def test_claim_rejects_empty_reason_or_id(field):
    with pytest.raises(ValueError, match="needs an id and a one-line reason"):
        Claim(**{**ROW, field: ""})


def test_scorecard_save_and_load(results):
    assert results_dir() == results
    card = Scorecard("blind_spots", "smoke")
    card.add(**ROW)
    card.add(**{**ROW, "claim": "S3", "verdict": "partly", "reason": "half the models"})
    card.numbers["accuracy"] = np.float32(0.975)  # numpy scalars are saved as numbers
    card.numbers["n"] = 20
    path = card.save()
    assert path == results / "blind_spots.json" and not list(results.glob("*.tmp"))
    Scorecard("another", "ci", numbers={"x": 1.5}).save()

    loaded = load_all()
    assert [d["chapter"] for d in loaded] == ["another", "blind_spots"]  # sorted by chapter
    bs = loaded[1]
    assert bs["scale"] == "smoke" and bs["saved"]
    assert [c["claim"] for c in bs["claims"]] == ["S2", "S3"]
    assert bs["claims"][0] == ROW
    assert bs["numbers"]["accuracy"] == pytest.approx(0.975) and bs["numbers"]["n"] == 20
    assert json.loads(path.read_text()) == bs
    assert load_all(results) == loaded


def test_scorecard_keeps_one_row_per_claim(results):
    card = Scorecard("ch", "ci")
    card.add(**ROW)
    card.add(**{**ROW, "claim": "S3"})
    card.add(**{**ROW, "ours": "0.070", "verdict": "partly", "reason": "re-run"})
    assert [(c.claim, c.ours) for c in card.claims] == [("S3", "0.058"), ("S2", "0.070")]
    with pytest.raises(ValueError):
        card.add(**{**ROW, "verdict": "maybe"})
    assert len(card.claims) == 2  # a rejected claim leaves the card unchanged
    with pytest.raises(ValueError, match="claim id: expected S.., R.. or N.."):
        card.add(**{**ROW, "claim": "X1"})


def test_scorecard_takes_a_verdict_object_and_keeps_checks_apart(results):
    from stir_lib.verdicts import Verdict
    card = Scorecard("ch", "ci")
    c = card.add(**{k: v for k, v in ROW.items() if k not in ("verdict", "reason")},
                 result=Verdict("not tested", "no premise"))
    assert c.verdict == "not tested" and c.reason == "no premise" and c.paper_name.startswith("Szegedy")
    card.check("bound holds", "ratio >= 1.0", True)
    saved = json.loads(card.save().read_text())
    assert saved["checks"] == [{"name": "bound holds", "value": "ratio >= 1.0", "passed": True}]
    assert len(saved["claims"]) == 1


def test_save_overwrites(results):
    Scorecard("ch", "smoke", numbers={"v": 1}).save()
    Scorecard("ch", "ci", numbers={"v": 2}).save()
    (only,) = load_all()
    assert only["scale"] == "ci" and only["numbers"] == {"v": 2}


def test_load_all_empty_folder(tmp_path):
    assert load_all(tmp_path) == []
