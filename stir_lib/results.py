"""Headline numbers of each chapter, machine-readable, for the scorecard.

A notebook collects one :class:`Claim` per checked claim of
``PAPER_TARGETS.md`` (its id, the quantity, the paper's value with its
source, ours with its spread, the noise floor it was judged against, a verdict
from :mod:`stir_lib.verdicts` and its one-line reason) in a :class:`Scorecard`,
and sanity :class:`Check` s that cannot fail by design of the claim (identities,
bounds that hold by construction) apart from the claims, and saves it as
``<results dir>/<chapter>.json``. The results folder is
``$STIR_RESULTS`` (set by ``python -m stir_lib.book.run``), else ``_build/results``
under the book's root.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .paths import build_dir, repo_root
from .validation import check_choice
from .verdicts import VERDICTS, Verdict

__all__ = ["Claim", "Check", "Scorecard", "results_dir", "load_all", "VERDICTS",
           "PAPERS"]

# claim id prefix -> paper
PAPERS = {"S": "Szegedy et al. 2014", "R": "Salman et al. 2020", "N": "Nanda et al. 2022"}


def results_dir() -> Path:
    """``$STIR_RESULTS``, else ``<book root>/_build/results``."""
    env = os.environ.get("STIR_RESULTS")
    if env:
        return Path(env)
    try:
        return build_dir(repo_root()) / "results"
    except FileNotFoundError:
        return Path.cwd() / "_build" / "results"


@dataclass
class Claim:
    """One row of the scorecard."""

    claim: str      # claim id from PAPER_TARGETS.md, e.g. "S2"
    quantity: str   # what is compared, in words
    paper: str      # the paper's value, as printed there (or computed from its table)
    ours: str       # our value with its spread over seeds
    verdict: str    # one of VERDICTS
    reason: str     # one line: why this verdict
    source: str = ""  # where the paper's value is (table / figure / section)
    noise: str = ""   # the noise floor the effect was judged against

    def __post_init__(self):
        check_choice(self.verdict, "verdict", VERDICTS)
        if not self.claim or not self.reason:
            raise ValueError("a claim needs an id and a one-line reason, got "
                             f"claim={self.claim!r}, reason={self.reason!r}")
        if self.claim[0] not in PAPERS:
            raise ValueError(f"claim id: expected S.., R.. or N.. (the paper's initial), got "
                             f"{self.claim!r}")

    @property
    def paper_name(self) -> str:
        return PAPERS[self.claim[0]]


@dataclass
class Check:
    """A sanity check: a property that holds by construction if the code is right (it
    belongs to the tests and to the "checks" table, not to the scorecard)."""

    name: str
    value: str
    passed: bool


@dataclass
class Scorecard:
    """The claims and headline numbers of one chapter."""

    chapter: str
    scale: str
    claims: list[Claim] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    numbers: dict = field(default_factory=dict)  # other headline numbers, name -> value

    def add(self, *, result: Verdict | None = None, **kwargs) -> Claim:
        """Add (or replace, for the same claim id) one :class:`Claim`: one row per claim.

        ``result``: a :class:`~stir_lib.verdicts.Verdict` giving ``verdict`` and ``reason``.
        """
        if result is not None:
            kwargs.update(verdict=result.verdict, reason=result.reason)
        c = Claim(**kwargs)
        self.claims = [x for x in self.claims if x.claim != c.claim]
        self.claims.append(c)
        return c

    def check(self, name: str, value: str, passed: bool) -> None:
        """Record a sanity check (it leaves the scorecard for the checks table)."""
        self.checks = [x for x in self.checks if x.name != name]
        self.checks.append(Check(name, value, bool(passed)))

    def table(self):
        """The chapter's claims as a styled table (text wraps; for the book)."""
        import pandas as pd
        cols = ["claim", "quantity", "paper", "source", "ours", "noise", "verdict", "reason"]
        frame = pd.DataFrame([asdict(c) for c in self.claims], columns=cols)
        return frame.style.hide(axis="index")

    def save(self) -> Path:
        out = results_dir()
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"{self.chapter}.json"
        data = {"chapter": self.chapter, "scale": self.scale,
                "saved": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                "claims": [asdict(c) for c in self.claims],
                "checks": [asdict(c) for c in self.checks], "numbers": self.numbers}
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1, default=float))
        os.replace(tmp, path)
        return path


def load_all(folder: Path | None = None) -> list[dict]:
    """Every saved chapter's results, sorted by chapter name."""
    folder = folder or results_dir()
    return [json.loads(p.read_text()) for p in sorted(Path(folder).glob("*.json"))]
