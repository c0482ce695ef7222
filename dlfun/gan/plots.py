"""GAN pictures: generated points over the real density, image grids and interpolation strips."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ..plots import _pyplot, plot_image_grid, save_figure


def plot_ring_snapshots(snapshots: Sequence[tuple[int, np.ndarray]], real: np.ndarray,
                        centers: np.ndarray, radius: float, path: str | Path,
                        title: str = "") -> Path:
    """One panel per snapshot: real points (grey) with the generated points on top (red) and
    the "high quality" circles of ``radius`` around each centre (blue).

    Args:
      snapshots: ``[(epoch, samples (n, 2)), ...]``.
      real: real points ``(m, 2)``.
      centers: the mixture's centres ``(modes, 2)``.
      radius: the circles' radius (e.g. 3 standard deviations).
    """
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(snapshots), figsize=(3.2 * len(snapshots), 3.4),
                             squeeze=False)
    lim = 1.25 * float(np.abs(centers).max())
    for ax, (epoch, pts) in zip(axes[0], snapshots):
        ax.scatter(real[:, 0], real[:, 1], s=1, c="0.45", alpha=0.3, linewidths=0)
        ax.scatter(pts[:, 0], pts[:, 1], s=2, c="tab:red", alpha=0.4, linewidths=0)
        for cx, cy in centers:
            ax.add_patch(plt.Circle((cx, cy), radius, fill=False, color="tab:blue", lw=0.6))
        ax.set(xlim=(-lim, lim), ylim=(-lim, lim), aspect="equal", title=f"epoch {epoch}")
        ax.tick_params(labelsize=7)
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def plot_sample_grid(images: np.ndarray, path: str | Path, title: str = "",
                     cols: int = 10) -> Path:
    """Generated images ``(n, H, W, C)`` in [0, 1] on a fixed grey scale."""
    return plot_image_grid(images, path, cols=cols, title=title, value_range=(0.0, 1.0))


def plot_interpolation(strip: np.ndarray, path: str | Path, title: str = "") -> Path:
    """Rows of a latent interpolation ``(rows, steps, H, W, C)``, one row per pair of latents,
    left to right from one end to the other."""
    rows, steps = strip.shape[:2]
    return plot_image_grid(strip.reshape((rows * steps,) + strip.shape[2:]), path, cols=steps,
                           title=title, value_range=(0.0, 1.0))
