"""Per-example normalisation over the features: LayerNorm (Ba et al. 2016) and RMSNorm (Zhang
& Sennrich 2019).

Unlike batch normalisation, each position of each example is normalised with its own statistics
over the last axis, so training and inference compute the same function and nothing depends on
the batch. The statistics are computed in float32 (float64 for float64 inputs) whatever the
input dtype; the result is cast to ``dtype``.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from ..errors import ShapeError
from .axis_names import EMBED
from .checks import along_last_axis, check_param_axis
from .sharding import maybe_partitioned

Array = jax.Array


def _check_features(module: nn.Module, x: Array) -> None:
    if x.ndim < 1:
        raise ShapeError(f"{type(module).__name__} expected an array with a feature axis, got "
                         f"shape {x.shape}")


def _feature_param(module: nn.Module, name: str, init, x: Array) -> Array:
    """A per-feature parameter ``(features,)``, named ``"embed"`` when partitioned."""
    check_param_axis(module, name, 0, x)
    axes = (EMBED,) if module.partitioned else None
    value = module.param(name, maybe_partitioned(init, axes), (x.shape[-1],), module.param_dtype)
    return along_last_axis(value, x.ndim)


class LayerNorm(nn.Module):
    """``y = (x - mean) / sqrt(var + epsilon) * scale + bias`` over the last axis.

    Attributes:
      epsilon: added to the (biased) variance; 1e-5 as PyTorch.
      use_scale, use_bias: learn ``scale`` (init 1) and ``bias`` (init 0).
      dtype: of the output; None: the input's.
      param_dtype: of ``scale`` and ``bias``.
      partitioned: logical axis name ``"embed"`` on the parameters.

    Input ``(..., features)`` -> the same shape. Parameters: ``2 * features`` (each of
    ``use_scale``/``use_bias`` adds ``features``).
    """

    epsilon: float = 1e-5
    use_scale: bool = True
    use_bias: bool = True
    dtype: Any = None
    param_dtype: Any = jnp.float32
    partitioned: bool = True

    @nn.compact
    def __call__(self, x: Array) -> Array:
        x = jnp.asarray(x)
        _check_features(self, x)
        calc = jnp.promote_types(x.dtype, jnp.float32)
        xs = x.astype(calc)
        mean = jnp.mean(xs, axis=-1, keepdims=True)
        centred = xs - mean
        var = jnp.mean(centred * centred, axis=-1, keepdims=True)  # two-pass: no cancellation
        y = centred * lax.rsqrt(var + self.epsilon)
        if self.use_scale:
            y = y * _feature_param(self, "scale", nn.initializers.ones_init(), x).astype(calc)
        if self.use_bias:
            y = y + _feature_param(self, "bias", nn.initializers.zeros_init(), x).astype(calc)
        return y.astype(self.dtype or x.dtype)


class RMSNorm(nn.Module):
    """``y = x / sqrt(mean(x²) + epsilon) * scale`` over the last axis (no centring, no bias).

    Attributes:
      epsilon: added to the mean square.
      use_scale: learn ``scale`` (init 1).
      dtype: of the output; None: the input's.
      param_dtype: of ``scale``.
      partitioned: logical axis name ``"embed"`` on ``scale``.

    Input ``(..., features)`` -> the same shape. Parameters: ``features``.
    """

    epsilon: float = 1e-6
    use_scale: bool = True
    dtype: Any = None
    param_dtype: Any = jnp.float32
    partitioned: bool = True

    @nn.compact
    def __call__(self, x: Array) -> Array:
        x = jnp.asarray(x)
        _check_features(self, x)
        calc = jnp.promote_types(x.dtype, jnp.float32)
        xs = x.astype(calc)
        y = xs * lax.rsqrt(jnp.mean(xs * xs, axis=-1, keepdims=True) + self.epsilon)
        if self.use_scale:
            y = y * _feature_param(self, "scale", nn.initializers.ones_init(), x).astype(calc)
        return y.astype(self.dtype or x.dtype)
