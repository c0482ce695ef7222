"""Linear projections for looking at learned representations in two dimensions."""

from __future__ import annotations

import numpy as np

from ..errors import ShapeError


def pca_project(x: np.ndarray, dims: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Principal-component projection (float64 SVD of the centred data).

    Args:
      x: points ``(N, D)``, e.g. latent codes of an autoencoder.
      dims: how many leading components to keep (at most ``min(N, D)``).

    Returns:
      ``(projected (N, dims), explained (dims,))``: the coordinates along the leading
      principal directions (each direction's sign fixed so its largest loading is positive)
      and the share of the total variance each explains.
    """
    x = np.asarray(x, np.float64)
    if x.ndim != 2 or not 1 <= dims <= min(x.shape):
        raise ShapeError(f"pca_project needs points (N, D) with 1 <= dims <= min(N, D); got "
                         f"shape {x.shape} and dims={dims}")
    centred = x - x.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    vt = vt[:dims] * np.sign(vt[:dims][np.arange(dims), np.abs(vt[:dims]).argmax(1)])[:, None]
    total = float(np.sum(s ** 2))
    explained = s[:dims] ** 2 / total if total > 0 else np.zeros(dims)
    return centred @ vt.T, explained
