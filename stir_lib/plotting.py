"""Figures shared by the chapters: image grids and paper-versus-ours tables."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch

__all__ = ["image_grid", "perturbation_image"]


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
