"""Headline numbers of each chapter, machine-readable, for the scorecard.

A notebook collects one :class:`Claim` per checked claim of
``PAPER_TARGETS.md`` (its id, the quantity, the paper's value with its
source, ours, a verdict and a one-line reason) in a :class:`Scorecard` and
saves it as ``<results dir>/<chapter>.json``. The results folder is
``$STIR_RESULTS`` (set by ``python -m stir_lib.run``), else ``_build/results``
under the book's root.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .validation import check_choice

__all__ = ["Claim", "Scorecard", "results_dir", "load_all", "VERDICTS", "choose_scale"]

VERDICTS = ("reproduced", "partly", "not reproduced")


def results_dir() -> Path:
    """``$STIR_RESULTS``, else ``<book root>/_build/results``."""
    env = os.environ.get("STIR_RESULTS")
    if env:
        return Path(env)
    from .run import build_dir, repo_root

    try:
        return build_dir(repo_root()) / "results"
    except FileNotFoundError:
        return Path.cwd() / "_build" / "results"


@dataclass
class Claim:
    """One row of the scorecard."""

    claim: str      # claim id from PAPER_TARGETS.md, e.g. "S2"
    quantity: str   # what is compared, in words
    paper: str      # the paper's value, as printed there
    ours: str       # our value, formatted
    verdict: str    # one of VERDICTS
    reason: str     # one line: why this verdict
    source: str = ""  # where the paper's value is (table / figure / section)

    def __post_init__(self):
        check_choice(self.verdict, "verdict", VERDICTS)
        if not self.claim or not self.reason:
            raise ValueError("a claim needs an id and a one-line reason, got "
                             f"claim={self.claim!r}, reason={self.reason!r}")


@dataclass
class Scorecard:
    """The claims and headline numbers of one chapter."""

    chapter: str
    scale: str
    claims: list[Claim] = field(default_factory=list)
    numbers: dict = field(default_factory=dict)  # other headline numbers, name -> value

    def add(self, **kwargs) -> None:
        """Add (or replace, for the same claim and quantity) one :class:`Claim`."""
        c = Claim(**kwargs)
        self.claims = [x for x in self.claims if (x.claim, x.quantity) != (c.claim, c.quantity)]
        self.claims.append(c)

    def save(self) -> Path:
        out = results_dir()
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"{self.chapter}.json"
        data = {"chapter": self.chapter, "scale": self.scale,
                "saved": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                "claims": [asdict(c) for c in self.claims], "numbers": self.numbers}
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1, default=float))
        os.replace(tmp, path)
        return path


def load_all(folder: Path | None = None) -> list[dict]:
    """Every saved chapter's results, sorted by chapter name."""
    folder = folder or results_dir()
    return [json.loads(p.read_text()) for p in sorted(Path(folder).glob("*.json"))]


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
