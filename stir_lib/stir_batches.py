"""X in batches for STIR: reading batches from any iterable, and giving each batch exactly
the inversion starts that the all-at-once call would give its images.

:func:`stir_lib.stir.stir` accepts X as one tensor or as any iterable of batches (a
``torch.utils.data.DataLoader``, a list of tensors, a generator). A batch is a tensor, or a
tuple or list whose first element is the images (``(x, y, ...)``, as a DataLoader over a
``TensorDataset`` yields); a second tensor element is kept as the batch's labels.

The starts. With X as one tensor, the inversion of seed s starts from
``inversion.seeds(kind, X, s)``: one draw over all of X from a generator seeded with s.
:class:`Starts` reproduces that draw batch by batch, so that image i starts from the same
x'_0 however X is cut into batches, and the batched STIR equals the all-at-once one:

* "uniform", "constant" and "pool" draw one value (or one image index) after another, so
  drawing batch after batch from one generator gives the same numbers;
* "noise" (``torch.randn``): torch's CPU generator fills a tensor of at least 16 values
  with uniforms, one per value, then turns each block of 16 into normals (Box-Muller);
  when the length is not a multiple of 16 it redraws the last 16 values from 16 further
  uniforms (shorter tensors draw value by value). :class:`Starts` draws whole blocks of
  16, holds back a batch until at least 16 values are known to follow it (or the end is
  known), and at the end spends and redraws exactly as the one draw does.
* "shuffle" (a derangement of all of X) cannot be drawn batch by batch: it is refused.

That "noise" equality rests on how torch draws normals on the CPU (ATen's ``normal_fill``,
unchanged since torch 1.x). :func:`draws_match` checks it on this torch at first use; if it
ever fails, the batched starts are still standard normal noise clipped to the box (equally
distributed, so STIR is unchanged in expectation) but no longer the all-at-once ones, and a
warning says so. ``tests/test_stir_surface.py`` checks the equality for awkward batch sizes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import warnings
from collections import deque
from collections.abc import Iterable, Iterator, Sequence

import torch

from .inversion import _check_clamp, _in_box, _pool_starts, _unit_starts
from .validation import check_choice

__all__ = ["BATCH_SEED_KINDS", "Starts", "batches", "with_rest", "draws_match", "check_draws",
           "release_free_memory"]

BATCH_SEED_KINDS = ("noise", "uniform", "pool", "constant")   # "shuffle" needs all of X
_BLOCK = 16                  # torch's CPU normal_fill turns uniforms into normals 16 at a time


def batches(X: Iterable, name: str = "X") -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """``(images, labels or None)`` for each batch of ``X`` (see the module docstring)."""
    for k, item in enumerate(X):
        if isinstance(item, torch.Tensor):
            x, labels = item, None
        elif isinstance(item, (tuple, list)) and item and isinstance(item[0], torch.Tensor):
            x = item[0]
            labels = item[1] if len(item) > 1 and isinstance(item[1], torch.Tensor) else None
        else:
            raise TypeError(f"{name}: expected batches that are tensors or (x, y, ...) tuples or lists "
                        f"with the images first, got a {type(item).__name__} as batch {k}; "
                        f"yield x or (x, y) from the loader")
        if len(x):                               # an empty batch adds nothing
            yield x, labels


def with_rest(items: Iterable[tuple[torch.Tensor, torch.Tensor | None]], need: int = _BLOCK):
    """``(x, y, rest)`` for each batch: ``rest`` is None while at least ``need`` values (of
    the images, ``x.numel()``) are known to follow the batch, else the exact number that
    follows (the end is near). Reads ahead as few batches as that takes (one, for images of
    16 or more values)."""
    queue: deque = deque()
    ahead = 0                                   # values in the queue after its head
    it, done = iter(items), False
    while True:
        while not done and (not queue or ahead < need):
            try:
                x, y = next(it)
            except StopIteration:
                done = True
                break
            if queue:
                ahead += x.numel()
            queue.append((x, y))
        if not queue:
            return
        x, y = queue.popleft()
        if queue:
            ahead -= queue[0][0].numel()        # the new head no longer counts as ahead
        rest = sum(q[0].numel() for q in queue) if done else None
        yield x, y, rest


class Starts:
    """The starts of ``inversion.seeds(kind, X, seed, pool, box)`` for X given batch by batch.

    Call :meth:`take` once per batch, in order, with the batch and the ``rest`` that
    :func:`with_rest` gives it; it returns the rows of the all-at-once draw that belong to
    the batch, on the batch's device and in its dtype. ``clamp=False``: the raw "noise" of
    ``seeds(..., clamp=False)`` (the start of ``invert(..., clamp_start=False)``).
    """

    def __init__(self, kind: str, seed: int, pool: torch.Tensor | None = None,
                 box: Sequence[float] = (0.0, 1.0), clamp: bool = True) -> None:
        check_choice(kind, "seed_kind (X given as batches)", BATCH_SEED_KINDS)
        _check_clamp(kind, clamp)
        self.clamp = clamp
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed: expected an int, got {type(seed).__name__}")
        if kind == "pool" and not (isinstance(pool, torch.Tensor) and len(pool)):
            raise ValueError(f"seed_kind='pool': expected a non-empty pool of images "
                             f"(M, C, H, W), got {type(pool).__name__}; pass pool=held_out_images")
        self.kind, self.pool = kind, pool
        self.lo, self.hi = float(box[0]), float(box[1])
        self.g = torch.Generator().manual_seed(seed)
        self.pos = 0                             # values handed out so far ("noise")
        self.buf = torch.empty(0)                # values drawn for positions pos, pos + 1, ...
        self.total: int | None = None            # the number of values, once known

    def take(self, x: torch.Tensor, rest: int | None) -> torch.Tensor:
        shape = x.shape
        if self.kind == "pool":
            assert self.pool is not None            # checked in __init__
            if tuple(self.pool.shape[1:]) != tuple(shape[1:]):
                raise ValueError(f"pool: expected images of shape (M, "
                                 f"{', '.join(map(str, shape[1:]))}), got {tuple(self.pool.shape)}")
            return _pool_starts(self.pool, len(x), self.g, x)
        out = _unit_starts(self.kind, shape, self.g, clamp=self.clamp,
                           normal=lambda s: self._normal(x.numel(), rest).view(s))
        return _in_box(out, self.lo, self.hi, x)

    # ----------------------------------------------------------------- "noise"
    def _normal(self, k: int, rest: int | None) -> torch.Tensor:
        """The next ``k`` values of one ``torch.randn`` over all of X."""
        if self.total is None and rest is not None:
            self._finish(self.pos + k + rest)
        elif self.total is None:
            # at least 16 values follow, so positions < pos + k are never redrawn at the end
            need = k - len(self.buf)
            if need > 0:
                blocks = -(-need // _BLOCK) * _BLOCK
                self.buf = torch.cat([self.buf, torch.randn(blocks, generator=self.g)])
        if len(self.buf) < k:
            raise RuntimeError(f"Starts: {k} values asked for, {len(self.buf)} left; call take() "
                               f"once per batch with the rest that with_rest() gives")
        out, self.buf = self.buf[:k], self.buf[k:].clone()     # the rest's own memory, not a
        self.pos += k                                           # view pinning all of it
        return out

    def _finish(self, total: int) -> None:
        """Draw the values for positions pos .. total - 1 exactly as ``randn(total)`` does."""
        drawn = self.pos + len(self.buf)
        if total < _BLOCK:                       # torch's value-by-value path; nothing drawn yet
            self.buf = torch.randn(total, generator=self.g)
        else:
            whole = total // _BLOCK * _BLOCK
            parts = [self.buf]
            if whole > drawn:
                parts.append(torch.randn(whole - drawn, generator=self.g))
            buf = torch.cat(parts)               # positions pos .. whole - 1
            if total > whole:
                # randn(total) spends one uniform on each of the last total - whole values,
                # then redraws the last 16 values from 16 further uniforms
                torch.rand(total - whole, generator=self.g)
                tail = torch.randn(_BLOCK, generator=self.g)
                buf = torch.cat([buf[:total - _BLOCK - self.pos], tail])
            self.buf = buf
        self.total = total


@functools.lru_cache(maxsize=None)
def draws_match() -> bool:
    """True if :class:`Starts` reproduces ``torch.randn`` over all of X on this torch, checked
    on a few awkward cuts (values per image 9 and 64; batches not multiples of 16)."""
    for shape, sizes in (((37, 1, 3, 3), (5, 1, 20, 11)), ((7, 1, 3, 3), (3, 4)),
                         ((5, 1, 8, 8), (2, 3)), ((1, 1, 3, 3), (1,))):
        full = torch.randn(shape, generator=torch.Generator().manual_seed(3))
        starts = Starts("noise", 3)
        parts = []
        items = [(torch.zeros((b,) + shape[1:]), None) for b in sizes]
        for x, _, rest in with_rest(items):
            parts.append(starts._normal(x.numel(), rest).view(x.shape))
        if not torch.equal(torch.cat(parts), full):
            return False
    return True


def check_draws(kind: str) -> None:
    """Warn (once per process) if batched "noise" starts cannot equal the all-at-once ones."""
    if kind == "noise" and not draws_match():
        _warn_once()


@functools.lru_cache(maxsize=None)
def _warn_once() -> None:
    warnings.warn("stir_batches: this torch draws normals differently from the block rule "
                  "the batched starts rely on; the starts of X given as batches are equally "
                  "distributed noise but not those of the all-at-once call, so the two agree "
                  "only in expectation", stacklevel=3)


@functools.lru_cache(maxsize=None)
def _libc_trim():
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):         # not glibc: nothing to call
        return None


def release_free_memory() -> None:
    """Hand the heap's free pages back to the system (glibc's ``malloc_trim``; elsewhere
    nothing), between batches.

    Measured (``benchmarks/stir_memory.py --shape 3 32 32``): without it, glibc leaves the
    big per-batch temporaries' freed chunks resident between the small results that outlive
    a batch (representations, distances), and the peak grew by about one image per image:
    +110 MB from N = 1,000 to 5,000. It changes no setting and costs a heap walk per call.
    """
    trim = _libc_trim()
    if trim is not None:
        trim(0)
