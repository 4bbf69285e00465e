"""Tests for stir_lib.scales: a scale's settings resolve, overrides apply, typos fail."""

from __future__ import annotations

import pytest

from stir_lib.scales import SCALES, choose_scale

PRESETS = {"smoke": {"n": 10, "epochs": 1, "name": "fc10"},
           "ci": {"n": 300, "epochs": 20, "name": "fc10"},
           "paper": {"n": 10000, "epochs": 60, "name": "fc10"}}



def test_the_three_scales():
    assert SCALES == ("smoke", "ci", "paper")


def test_choose_scale_preset_and_overrides():
    assert choose_scale("ci", PRESETS) == PRESETS["ci"]
    got = choose_scale("smoke", PRESETS, n=50, epochs=None)
    assert got == {"n": 50, "epochs": 1, "name": "fc10"}  # None keeps the preset
    assert PRESETS["smoke"]["n"] == 10  # the presets themselves are not modified
    assert choose_scale("paper", PRESETS, name="fc100-100-10")["name"] == "fc100-100-10"
    assert choose_scale("ci", PRESETS, n=0)["n"] == 0  # falsy but not None: applied


def test_choose_scale_rejects_unknown_scale():
    with pytest.raises(ValueError, match="scale: expected one of") as err:
        choose_scale("huge", PRESETS)
    assert "'smoke'" in str(err.value) and "'huge'" in str(err.value)


def test_choose_scale_rejects_unknown_override():
    with pytest.raises(ValueError, match="override 'n_atack'") as err:
        choose_scale("ci", PRESETS, n_atack=5)
    assert "['epochs', 'n', 'name']" in str(err.value)
    with pytest.raises(ValueError, match="override"):
        choose_scale("ci", PRESETS, n_atack=None)  # a typo is an error even when unset
