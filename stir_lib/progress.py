"""Progress bars that show on a terminal and stay quiet elsewhere (papermill, CI, logs).

tqdm draws them when it is installed (the book's environment has it). The library does not
need it: without tqdm every bar is a :class:`SilentBar`, which iterates and counts and
draws nothing.
"""

from __future__ import annotations

import os

__all__ = ["bar", "SilentBar"]


class SilentBar:
    """A bar that draws nothing, with the part of tqdm's interface the library uses:
    iteration over ``iterable``, ``update(n)``, ``set_postfix(...)``,
    ``set_description(...)``, ``close()`` and use as a context manager."""

    def __init__(self, iterable=None, *, total=None, **kwargs):
        self.iterable = iterable
        self.total = total if total is not None or iterable is None else _len_or_none(iterable)
        self.n = 0

    def __iter__(self):
        if self.iterable is None:
            raise TypeError("SilentBar: expected an iterable to iterate over, got None; pass "
                            "one (bar(items)) or call update(n) on a bar(total=N)")
        for item in self.iterable:
            yield item
            self.n += 1

    def __len__(self) -> int:
        if self.total is None:
            raise TypeError("SilentBar: expected a bar with a total or a sized iterable, got "
                            "neither")
        return self.total

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix(self, *args, **kwargs) -> None:
        pass

    def set_description(self, *args, **kwargs) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> SilentBar:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _len_or_none(iterable):
    try:
        return len(iterable)
    except TypeError:
        return None


def bar(iterable=None, *, progress: bool | None = None, **kwargs):
    """A tqdm bar (a :class:`SilentBar` when tqdm is not installed).

    ``progress=None`` shows it only when stderr is a terminal. The environment variable
    ``STIR_PROGRESS=1`` (or ``0``) forces it on (or off) wherever ``progress`` is None.
    """
    if progress is None:
        env = os.environ.get("STIR_PROGRESS")
        disable = None if env is None else env == "0"
    else:
        disable = not progress
    try:
        # plain bars: the notebook widget needs ipywidgets, and bars are off there anyway
        from tqdm import tqdm
    except ImportError:
        return SilentBar(iterable, **kwargs)
    return tqdm(iterable, disable=disable, leave=False, **kwargs)
