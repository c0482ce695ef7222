"""Pooling over (batch, height, width, channels) maps: max, average, min and L2-norm."""

from typing import Sequence

import jax
import jax.numpy as jnp
from jax import lax

from .checks import check_ndim
from .conv import Padding, normalize_padding, pair, with_batch_axis
from .conv_ops import max_pool2d


def _window(x: jax.Array, init, op, window, strides, padding) -> jax.Array:
    """``lax.reduce_window`` over the height and width axes of a 4-D NHWC array."""
    wh, ww = pair(window, "window")
    sh, sw = pair(window if strides is None else strides, "strides")
    pad = normalize_padding(padding)
    if not isinstance(pad, str):
        pad = ((0, 0),) + tuple(pad) + ((0, 0),)
    return lax.reduce_window(x, init, op, (1, wh, ww, 1), (1, sh, sw, 1), pad)


def _pool(name: str, fn, x: jax.Array) -> jax.Array:
    check_ndim(name, x, (3, 4), "(batch, height, width, channels)")
    return with_batch_axis(fn, x)


def max_pool(x: jax.Array, window: int | Sequence[int], strides=None,
             padding: Padding = "VALID", impl: str = "auto") -> jax.Array:
    """Maximum over each window.

    Args:
      x: ``(batch, height, width, channels)`` or ``(height, width, channels)``.
      window: window size, int or (height, width).
      strides: defaults to ``window`` (non-overlapping windows).
      padding: as in :class:`dlfun.nn.Conv`; padded positions never win (they hold -inf).
      impl: "auto" (on CPU a first-maximum mask backward, faster than XLA's scatter, same
        gradients), "xla" or "cpu"; see :func:`dlfun.nn.max_pool2d`.
    Returns:
      ``(batch, height_out, width_out, channels)`` (or without the batch axis).
    """
    wh_ww = pair(window, "window")
    st = wh_ww if strides is None else pair(strides, "strides")
    pad = normalize_padding(padding)
    return _pool("max_pool", lambda b: max_pool2d(b, wh_ww, st, pad, impl), x)


def min_pool(x: jax.Array, window: int | Sequence[int], strides=None,
             padding: Padding = "VALID", impl: str = "auto") -> jax.Array:
    """Minimum over each window (shapes as :func:`max_pool`)."""
    return -max_pool(-x, window, strides, padding, impl)


def avg_pool(x: jax.Array, window: int | Sequence[int], strides=None,
             padding: Padding = "VALID") -> jax.Array:
    """Mean over each window; with padding, padded zeros count (divide by the window size).

    Shapes as :func:`max_pool`.
    """
    wh, ww = pair(window, "window")
    total = _pool("avg_pool", lambda b: _window(b, 0.0, lax.add, window, strides, padding), x)
    return total / (wh * ww)


def l2_pool(x: jax.Array, window: int | Sequence[int], strides=None,
            padding: Padding = "VALID") -> jax.Array:
    """L2 norm of each window, sqrt(sum of squares) (shapes as :func:`max_pool`)."""
    sq = _pool("l2_pool", lambda b: _window(b * b, 0.0, lax.add, window, strides, padding), x)
    return jnp.sqrt(sq)


def global_avg_pool(x: jax.Array) -> jax.Array:
    """Mean over height and width: ``(batch, H, W, C)`` -> ``(batch, C)``."""
    check_ndim("global_avg_pool", x, (4,), "(batch, height, width, channels)")
    return jnp.mean(x, axis=(1, 2))
