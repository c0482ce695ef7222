"""Fitting image arrays to a model's input: size (upsample or pad) and channel statistics."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ..errors import ConfigError
from .split import Split, Splits


def fit_to_size(images: np.ndarray, size: int) -> np.ndarray:
    """Bring square images ``(N, H, H, C)`` to ``(N, size, size, C)``.

    * ``size == H``: unchanged.
    * ``size`` a multiple of ``H`` (the 8x8 digits to 16 or 32): bilinear upsampling, so a
      5x5 filter sees strokes rather than single pixels.
    * otherwise ``size > H`` (MNIST's 28x28 to LeNet's 32x32): zero padding around the
      centre, as LeCun et al. fed MNIST to LeNet-5.

    Raises:
      ConfigError: for a size smaller than the images or non-square images.
    """
    n, h, w, c = images.shape
    if h != w:
        raise ConfigError(f"fit_to_size expects square images, got {h}x{w}; crop or pad them "
                          f"to a square first")
    if size == h:
        return images
    if size < h:
        raise ConfigError(f"image size {size} is smaller than the images ({h}x{w}); choose "
                          f"--image-size {h} or larger")
    if size % h == 0:
        return np.asarray(jax.image.resize(jnp.asarray(images), (n, size, size, c), "bilinear"))
    lo = (size - h) // 2
    pads = ((0, 0), (lo, size - h - lo), (lo, size - h - lo), (0, 0))
    return np.pad(images, pads)


def channel_stats(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation ``(C,)`` over ``(N, H, W, C)`` images."""
    return images.mean(axis=(0, 1, 2)), images.std(axis=(0, 1, 2)) + 1e-8


def prepare_splits(splits: Splits, size: int, standardize: bool = False) -> Splits:
    """:func:`fit_to_size` on every split, then optionally standardise each channel with the
    training split's statistics (zero mean, unit variance: zero padding is then the mean)."""
    parts = [Split(fit_to_size(s.x, size), s.y) for s in (splits.train, splits.val, splits.test)]
    if standardize:
        mean, std = channel_stats(parts[0].x)
        parts = [Split(((s.x - mean) / std).astype(np.float32), s.y) for s in parts]
    return Splits(*parts)
