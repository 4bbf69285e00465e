"""The chapters of the book: each is a notebook under ``notebooks/`` plus one module here.

A notebook holds the question, the evidence and the verdicts; its module holds everything
else the chapter needs: the presets of every scale (``PRESETS``, ``settings``), the models
and data it builds, its plan of jobs where it has one, its helpers, the paper's numbers it
compares with and its claim rules (built on :mod:`stir_lib.verdicts`):

* :mod:`.blind_spots`: Szegedy et al. 2014, Tables 1-4 and section 4.2 (S2-S6);
* :mod:`.units`: Szegedy et al. 2014, section 3 (S1);
* :mod:`.lipschitz`: Szegedy et al. 2014, section 4.3 and Table 5 (S7);
* :mod:`.stir`: Nanda et al. 2022 (N1-N7), three notebooks sharing one zoo;
* :mod:`.transfer`: Salman et al. 2020 (R1-R5).

``PLANS`` maps a chapter with cache entries worth computing ahead (``python -m
stir_lib.book.run plan`` / ``warm``) to its ``plan(scale, **parameters) -> list[job]``;
``NOTEBOOKS`` lists the notebooks each plan covers; ``NOTEBOOK_MODULE`` names every
notebook's module. The Szegedy chapters train their models inside the notebooks;
``MODEL_JOBS`` maps each of those notebooks to ``model_jobs(scale) -> list[Train]``, the
models it trains, for the cost model to count (``benchmarks/cost_model.py``).

Each chapter module also keeps ``RULES`` (:class:`stir_lib.verdicts.RuleRecord` per claim:
the claim's words its rule tests and the date the rule last changed); :func:`rules` merges
them. A rule changed in the current round (``ROUND``) records the verdict the old rule gave
on ``PREVIOUS_BUILD`` and why it changed; the scorecard lists those beside the new verdicts.
"""

from __future__ import annotations

from .rounds import PREVIOUS_BUILD, ROUND
from . import blind_spots as _blind_spots
from . import lipschitz as _lipschitz
from . import stir as _stir
from . import transfer as _transfer
from . import units as _units

PLANS = {"stir": _stir.plan, "transfer": _transfer.plan}
# the notebooks each plan covers (for `run plan stir_pairs` and the tests)
NOTEBOOKS = {"stir": ("stir_pairs", "stir_layers", "stir_losses"), "transfer": ("transfer",)}
# notebook -> its chapter module under stir_lib/chapters/
NOTEBOOK_MODULE = {"blind_spots": "blind_spots", "units_vs_random": "units",
                   "lipschitz": "lipschitz", "stir_pairs": "stir", "stir_layers": "stir",
                   "stir_losses": "stir", "transfer": "transfer"}

# notebooks without a plan -> the models they train, as jobs to count (not to warm: see
# blind_spots.model_jobs)
MODEL_JOBS = {"blind_spots": _blind_spots.model_jobs, "units_vs_random": _units.model_jobs,
              "lipschitz": _lipschitz.model_jobs}
# ... and the L-BFGS attacks they make (stir_lib.jobs.cost.Attack), to count
ATTACK_JOBS = {"blind_spots": _blind_spots.attack_jobs, "lipschitz": _lipschitz.attack_jobs}

CHAPTER_MODULES = ("blind_spots", "units", "lipschitz", "stir", "transfer")


def rules() -> dict:
    """claim id -> :class:`~stir_lib.verdicts.RuleRecord`, from every chapter's ``RULES``."""
    import importlib

    out = {}
    for name in CHAPTER_MODULES:
        module = importlib.import_module(f"{__name__}.{name}")
        for claim, record in module.RULES.items():
            if claim in out:
                raise ValueError(f"{claim} has rule records in two chapters")
            out[claim] = record
    return out


__all__ = ["PLANS", "NOTEBOOKS", "NOTEBOOK_MODULE", "MODEL_JOBS", "ATTACK_JOBS", "ROUND", "PREVIOUS_BUILD",
           "CHAPTER_MODULES", "rules"]
