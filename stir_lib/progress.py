"""Progress bars that show on a terminal and stay quiet elsewhere (papermill, CI, logs)."""

from __future__ import annotations

import os

from tqdm import tqdm  # plain bars: the notebook widget needs ipywidgets, and bars are off there anyway

__all__ = ["bar"]


def bar(iterable=None, *, progress: bool | None = None, **kwargs):
    """A tqdm bar. ``progress=None`` shows it only when stderr is a terminal.

    The environment variable ``STIR_PROGRESS=1`` (or ``0``) forces it on (or off)
    wherever ``progress`` is None.
    """
    if progress is None:
        env = os.environ.get("STIR_PROGRESS")
        disable = None if env is None else env == "0"
    else:
        disable = not progress
    return tqdm(iterable, disable=disable, leave=False, **kwargs)
