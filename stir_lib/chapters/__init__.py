"""The experiments of the book's chapters, as data: presets per scale and the plans of jobs.

A notebook holds the questions, the evidence and the verdicts; the settings of each
scale and the list of models, inversions and transfers a chapter needs live here, so
that ``python -m stir_lib.run plan`` / ``warm`` and the notebook read the same
definitions (:mod:`stir_lib.jobs`). ``PLANS`` maps a chapter name to its ``plan``
function ``plan(scale, **parameters) -> list[job]``.
"""

from __future__ import annotations

from . import stir as _stir
from . import transfer as _transfer

PLANS = {"stir": _stir.plan, "transfer": _transfer.plan}
# the notebooks each plan covers (for `run plan stir_pairs` and the tests)
NOTEBOOKS = {"stir": ("stir_pairs", "stir_layers", "stir_losses"), "transfer": ("transfer",)}

__all__ = ["PLANS", "NOTEBOOKS"]
