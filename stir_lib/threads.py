"""How many CPU threads each kind of work uses: measured, not torch's default.

torch's intra-op pool uses every core by default. On a quiet 2-core machine that is
right for large convolutions and matrix products, but beside one other busy process a
second thread costs far more than it gains: every parallel operation waits for the
thread whose core was taken (measured by ``benchmarks/bench_threads.py``: the batched
L-BFGS attack took 2.8x longer with 2 threads than with 1 beside a busy process). So
the library's loops declare what they are:

* ``"parallel"``: every loop of the library (training and autoencoder pre-training,
  PGD/TRADES/MART, the batched L-BFGS attack, inversion, CKA products, spectral norms,
  transfer heads): as many threads as there are cores *not busy with other processes*,
  measured from ``/proc/stat`` and this process's own CPU time since the last check
  (no sleeping except on the first check), re-checked at most every ``_RECHECK``
  seconds. Beside one busy process on a 2-core machine that is one thread; on a quiet
  one, all cores (``bench_threads``: 0.93-1.02x the faster of 1 and 2 quiet threads on
  every slice; a second free core gains 8 % on the attack, 1.8x on an autoencoder).
* ``"serial"``: always one thread, for small operations where a second thread gains
  nothing even on a quiet machine (available to user code; the library has none).

Use :func:`use` around a loop, and :func:`refresh` at natural boundaries inside long
loops (an epoch) so that a process that starts later is noticed::

    with threads.use("parallel"):
        for epoch in range(epochs):
            threads.refresh()
            ...

``STIR_THREADS`` overrides the choice: an int fixes the number of threads for every
kind (``STIR_THREADS=1`` gives the single-threaded build); ``auto`` (or unset) is the
measured policy. On machines without ``/proc`` the parallel kind uses every core.

torch's thread count is a process-wide setting, so the library restores it: every
:func:`use` block (and so every entry point: :func:`stir_lib.stir.stir`,
:func:`stir_lib.inversion.invert`, training, attacks) leaves ``torch.get_num_threads()`` as
it found it. To have the library leave it alone altogether, call ``threads.manage(False)``
or set ``STIR_THREADS=off``: then every loop runs with whatever the caller set.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable
from contextlib import contextmanager
from typing import ParamSpec, TypeVar

import torch

from .validation import check_choice

__all__ = ["KINDS", "use", "parallel", "refresh", "threads_for", "free_cores", "remeasure", "settings",
           "manage", "managed"]

KINDS = ("serial", "parallel")
_RECHECK = 2.0          # seconds between load measurements
_MIN_INTERVAL = 0.05    # shortest interval a load measurement is taken over
_KEEP = 0.25            # a core counts as ours unless others use more than 1 - _KEEP of it
_DEFAULT_THREADS = torch.get_num_threads()   # torch's own choice at import


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _read() -> tuple[float, float, float] | None:
    """(monotonic time, busy jiffies of all cores, this process's jiffies), or None."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
        with open("/proc/self/stat") as f:
            own = f.read().rsplit(")", 1)[1].split()
    except (OSError, ValueError, IndexError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)        # idle + iowait
    busy = sum(fields[:8]) - idle                                  # user .. steal
    return time.monotonic(), float(busy), float(int(own[11]) + int(own[12]))  # utime + stime


class _Meter:
    """Cores used by *other* processes, from counter differences between two readings."""

    def __init__(self) -> None:
        self.last: tuple[float, float, float] | None = None
        self.value: int | None = None       # last measured free cores
        self.when = -1e9

    def free(self) -> int:
        now = time.monotonic()
        if self.value is not None and now - self.when < _RECHECK:
            return self.value
        cur = _read()
        if cur is None:
            self.value, self.when = _cores(), now
            return self.value
        if self.last is None or cur[0] - self.last[0] < _MIN_INTERVAL:
            self.last = cur
            time.sleep(_MIN_INTERVAL)
            cur = _read()
            if cur is None or self.last is None:         # /proc/stat went away meanwhile
                self.value, self.when = _cores(), now
                return self.value
        dt = cur[0] - self.last[0]
        hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        others = max(0.0, ((cur[1] - self.last[1]) - (cur[2] - self.last[2])) / hz / dt)
        self.last = cur
        self.value = max(1, min(_cores(), int(_cores() - others + _KEEP)))
        self.when = now
        return self.value


_METER = _Meter()


def free_cores() -> int:
    """Cores not busy with other processes (at least 1), measured at most every 2 s."""
    return _METER.free()


def remeasure() -> int:
    """Forget the last measurement and measure the free cores now (benchmarks, tests)."""
    _METER.value, _METER.when = None, -1e9
    return _METER.free()


_OFF = "off"
_MANAGE: bool | None = None     # manage(flag) sets it; None follows STIR_THREADS


def _override() -> int | str | None:
    """None (measure), a fixed int, or "off" (leave torch's setting alone)."""
    env = os.environ.get("STIR_THREADS", "auto").strip().lower()
    if env in ("", "auto"):
        return None
    if env == _OFF:
        return _OFF
    why = "(or 'off' to leave torch's setting alone)"
    try:
        n = int(env)
    except ValueError:
        raise ValueError(f"STIR_THREADS: expected a positive int or 'auto' {why}, got "
                         f"{env!r}") from None
    if n < 1:
        raise ValueError(f"STIR_THREADS: expected a positive int or 'auto' {why}, got {n}")
    return n


def manage(enabled: bool | None) -> bool | None:
    """Whether the library sets torch's thread count in its loops; returns the previous setting.

    ``manage(False)``: every loop runs with the caller's ``torch.get_num_threads()``, and the
    library never calls ``torch.set_num_threads``; ``manage(True)``: the policy of the
    module docstring (a fixed ``STIR_THREADS=N`` still fixes the number); ``manage(None)``
    (the start): follow ``STIR_THREADS`` (``off`` means False). Restore with
    ``threads.manage(previous)``.
    """
    global _MANAGE
    if enabled is not None and not isinstance(enabled, bool):
        raise TypeError(f"enabled: expected True, False or None, got {type(enabled).__name__}")
    before, _MANAGE = _MANAGE, enabled
    return before


def managed() -> bool:
    """True if the library sets torch's thread count now (see :func:`manage`)."""
    if _MANAGE is not None:
        return _MANAGE
    return _override() != _OFF


def threads_for(kind: str) -> int:
    """The number of intra-op threads for a kind of work (see the module docstring)."""
    check_choice(kind, "kind", KINDS)
    if not managed():
        return torch.get_num_threads()
    fixed = _override()
    if isinstance(fixed, int):
        return fixed
    return 1 if kind == "serial" else free_cores()


_STACK: list[str] = []


@contextmanager
def use(kind: str):
    """Run the block with :func:`threads_for(kind) <threads_for>` threads, then restore.

    Nested blocks follow the innermost kind. Does nothing on a CUDA-only workload's
    speed (the GPU does the work) but keeps the host threads sensible. With
    :func:`manage(False) <manage>` (or ``STIR_THREADS=off``) it sets nothing.
    """
    n = threads_for(kind)
    before, managing = torch.get_num_threads(), managed()
    _STACK.append(kind)
    if managing and n != before:
        torch.set_num_threads(n)
    try:
        yield n
    finally:
        _STACK.pop()
        if managing and torch.get_num_threads() != before:
            torch.set_num_threads(before)


_P = ParamSpec("_P")
_R = TypeVar("_R")


def parallel(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """Decorator: run ``fn`` inside ``use("parallel")`` (for library entry points); the
    signature is kept (for type checkers too)."""
    @functools.wraps(fn)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        with use("parallel"):
            return fn(*args, **kwargs)
    return wrapper


def refresh() -> int:
    """Inside a :func:`use` block: re-measure the free cores and adjust (cheap, no sleep)."""
    if not _STACK or not managed():
        return torch.get_num_threads()
    n = threads_for(_STACK[-1])
    if n != torch.get_num_threads():
        torch.set_num_threads(n)
    return n


def settings() -> dict:
    """What the policy is and would choose now, for the Reproducibility page."""
    return {"STIR_THREADS": os.environ.get("STIR_THREADS", "auto"), "managed": managed(),
            "cores": _cores(), "torch default threads": _DEFAULT_THREADS,
            "serial": threads_for("serial"), "parallel (now)": threads_for("parallel")}
