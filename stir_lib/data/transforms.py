"""Transforms of image tensors: a seeded (stratified) subset, and the resize-down-and-up
"granularity" transform."""

from __future__ import annotations


import numpy as np
import torch

from ..validation import check_image_batch

__all__ = ["subset", "downscale"]


def subset(x: torch.Tensor, y: torch.Tensor, n: int | None, seed: int = 0, stratified=True):
    """A seeded random subset of ``n`` examples (all if n is None or >= len(x))."""
    if n is None or n >= len(x):
        return x, y
    g = torch.Generator().manual_seed(seed)
    if not stratified:
        idx = torch.randperm(len(x), generator=g)[:n]
    else:
        # largest-remainder allocation: class c gets floor(n p_c) plus one of the
        # leftover slots if its remainder is among the largest; exactly n in all
        classes, counts = torch.unique(y, return_counts=True)
        share = n * counts.double() / len(y)
        take = share.floor().long()
        leftover = n - int(take.sum())
        take[torch.argsort(share - take, descending=True)[:leftover]] += 1
        idx = torch.cat([_pick(torch.nonzero(y == c).flatten(), int(t), g)
                         for c, t in zip(classes, take)])
        idx = idx[torch.randperm(len(idx), generator=g)]
    return x[idx], y[idx]


def _pick(pool: torch.Tensor, k: int, g: torch.Generator) -> torch.Tensor:
    """k random members of an index pool."""
    return pool[torch.randperm(len(pool), generator=g)[:k]]



def downscale(x: torch.Tensor, size: int) -> torch.Tensor:
    """The "granularity" transform R3 (Salman et al. 2020): lose detail, keep the size.

    Each image is resized to ``size`` x ``size`` (bilinear, antialiased, so the small
    image averages rather than skips pixels) and back to its own (H, W) (bilinear).
    Both steps take convex combinations of pixels, so values stay in [0, 1].

    Args:
        x: images (N, C, H, W), floating point, in [0, 1].
        size: side of the intermediate image in pixels, 1 <= size <= min(H, W);
            size = H = W returns x unchanged.

    Returns:
        Tensor of x's shape and dtype, in [0, 1].
    """
    check_image_batch(x, "x")
    h, w = x.shape[-2:]
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)):
        raise TypeError(f"size: expected an int (pixels), got {type(size).__name__}")
    if not 1 <= size <= min(h, w):
        raise ValueError(f"size: expected an int in [1, {min(h, w)}] (at most the images' "
                         f"smaller side), got {size}")
    interp = torch.nn.functional.interpolate
    small = interp(x, size=(int(size), int(size)), mode="bilinear", align_corners=False,
                   antialias=True)  # (N, C, size, size)
    return interp(small, size=(h, w), mode="bilinear", align_corners=False).clamp_(0, 1)
