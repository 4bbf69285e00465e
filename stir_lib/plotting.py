"""Figures shared by the chapters: one style for the book, heatmaps, seed spreads, image grids.

:func:`book_style` sets the figure style once per notebook (seaborn's "ticks" theme with
font sizes that stay legible when a figure is scaled to the text column, about 7
inches wide at 100 dpi): every chapter calls it first.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch

__all__ = ["book_style", "COLUMN_WIDTH", "SIMILARITY_CMAP", "matrix_heatmap", "seed_spread",
           "image_grid", "perturbation_image"]

COLUMN_WIDTH = 7.0   # inches: the book's text column at 100 dpi
#: The colour map of every similarity matrix (ours and the papers', on the scale 0 to 1).
SIMILARITY_CMAP = "viridis"


def book_style() -> None:
    """The book's one figure style (call once at the top of a notebook)."""
    sns.set_theme(context="notebook", style="ticks", font_scale=1.0, rc={
        "figure.dpi": 100, "savefig.dpi": 150, "figure.figsize": (COLUMN_WIDTH, 3.6),
        "axes.titlesize": 12, "axes.labelsize": 11, "xtick.labelsize": 10,
        "ytick.labelsize": 10, "legend.fontsize": 10, "axes.spines.right": False,
        "axes.spines.top": False})


def matrix_heatmap(frame: pd.DataFrame, ax=None, *, title: str = "", vmin: float = 0.0,
                   vmax: float = 1.0, fmt: str = ".2f", cbar: bool = True,
                   cmap: str = SIMILARITY_CMAP):
    """An annotated heatmap of a square similarity matrix (rows and columns labelled as the
    frame's index and columns, with their names as axis labels).

    The colour scale is fixed, 0 to 1 in ``SIMILARITY_CMAP`` by default, not fitted to the
    data: a matrix of ours and one of a paper's drawn with the defaults compare at a glance
    (a zoo whose entries all sit near 1 looks saturated, as it is).
    """
    if not vmin < vmax:
        raise ValueError(f"vmin, vmax: expected vmin < vmax, got {vmin} and {vmax}; the "
                         f"default 0 to 1 is the scale of STIR and CKA")
    if ax is None:
        side = min(COLUMN_WIDTH, 0.42 * len(frame) + 2.0)
        _, ax = plt.subplots(figsize=(side + (0.8 if cbar else 0), side))
    size = 10 if len(frame) <= 8 else 8 if len(frame) <= 14 else 6.5
    sns.heatmap(frame, ax=ax, vmin=vmin, vmax=vmax, cmap=cmap, annot=True, fmt=fmt,
                annot_kws={"size": size}, square=True, cbar=cbar, linewidths=0.3,
                cbar_kws={"shrink": 0.7})
    ax.set_xlabel(frame.columns.name or "")
    ax.set_ylabel(frame.index.name or "")
    ax.tick_params(axis="x", rotation=60, labelsize=size + 1)
    ax.tick_params(axis="y", rotation=0, labelsize=size + 1)
    if title:
        ax.set_title(title)
    return ax


def seed_spread(frame: pd.DataFrame, *, x: str, y: str, hue: str | None = None, ax=None,
                style: str | None = None, markers: bool = True, **kwargs):
    """Per-seed values drawn as their mean with a 95 % interval over seeds (t-based, what the
    verdicts use) as error bars; one line per ``hue``."""
    if ax is None:
        _, ax = plt.subplots()
    sns.pointplot(data=frame, x=x, y=y, hue=hue, ax=ax, errorbar=_t_interval, capsize=0.15,
                  dodge=0.25 if hue and frame[hue].nunique() > 1 else False,
                  markers="o" if markers else None,
                  linestyles="-", **kwargs)
    return ax


def _t_interval(values) -> tuple[float, float]:
    from .verdicts import over_seeds
    e = over_seeds(list(values))
    hw = e.half_width if e.measured else 0.0
    return e.mean - hw, e.mean + hw


def perturbation_image(delta: torch.Tensor, scale: float | None = None) -> torch.Tensor:
    """Map a perturbation to [0, 1] for display: grey is zero, ``scale`` is full contrast.

    Default ``scale``: the largest absolute value, so the perturbation is magnified.
    """
    scale = float(delta.abs().max()) if scale is None else scale
    return (0.5 + 0.5 * delta / max(scale, 1e-12)).clamp(0, 1)


def image_grid(rows: Sequence[torch.Tensor], row_titles: Sequence[str] = (),
               captions: Sequence[Sequence[str]] | None = None, size: float = 1.1,
               cmap: str = "gray"):
    """Show rows of images (each a (K, C, H, W) tensor in [0, 1]) as one figure.

    ``captions[r][k]`` is written under image k of row r.
    """
    n_rows, n_cols = len(rows), max(len(r) for r in rows)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(size * n_cols + 1.2, size * n_rows * 1.12),
                             squeeze=False)
    for r, images in enumerate(rows):
        for k in range(n_cols):
            ax = axes[r][k]
            ax.set_xticks([]), ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if k >= len(images):
                continue
            img = images[k].detach().cpu().numpy()
            img = img[0] if img.shape[0] == 1 else np.transpose(img, (1, 2, 0))
            ax.imshow(img, cmap=cmap if img.ndim == 2 else None, vmin=0, vmax=1)
            if captions is not None and k < len(captions[r]):
                ax.set_xlabel(captions[r][k], fontsize=8, labelpad=2)
        if r < len(row_titles):
            axes[r][0].set_ylabel(row_titles[r], fontsize=9, rotation=0, ha="right", va="center")
    fig.tight_layout()
    return fig
