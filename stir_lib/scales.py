"""The three scales every chapter runs at, and how a chapter's settings are chosen.

``smoke`` (seconds, for the tests), ``ci`` (the published book, a 2-core CPU from a cold
cache) and ``paper`` (the papers' own setups, on a GPU). Each chapter module keeps a
``PRESETS`` dict with one entry per scale; :func:`choose_scale` picks one and applies a
notebook's overrides. Imports nothing from ``stir_lib`` but the input checks.
"""

from __future__ import annotations

from .validation import check_choice

__all__ = ["SCALES", "choose_scale"]

SCALES = ("smoke", "ci", "paper")


def choose_scale(scale: str, presets: dict, **overrides) -> dict:
    """Settings for ``scale`` from ``presets`` ({"smoke": {...}, "ci": {...}, "paper": {...}}),
    with every override that is not None replacing its preset."""
    check_choice(scale, "scale", list(presets))
    settings = dict(presets[scale])
    for key, value in overrides.items():
        if key not in settings:
            raise ValueError(f"override {key!r}: expected one of {sorted(settings)}")
        if value is not None:
            settings[key] = value
    return settings
