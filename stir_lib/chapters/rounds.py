"""The current round of rule changes: the date its rules were written (``ROUND``) and the
build whose verdicts the changed rules are compared with on the scorecard
(``PREVIOUS_BUILD``). A leaf module, so that the package and every chapter module read the
same two values without importing each other."""

from __future__ import annotations

__all__ = ["ROUND", "PREVIOUS_BUILD"]

ROUND = "2026-12-06"
PREVIOUS_BUILD = ("ci build of commit b348c59 (2026-12-06; the rules as landed in f041e1b, "
                  "CI of stop 28)")
