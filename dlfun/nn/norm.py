"""Batch normalisation with running statistics (train and eval modes)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from .checks import along_last_axis, check_param_axis


class BatchNorm(nn.Module):
    """Batch normalisation over all axes but the last (features/channels).

    In training mode (``train=True``) it normalises with the batch's mean and (biased)
    variance and updates the running averages in the ``"batch_stats"`` collection (pass
    ``mutable=["batch_stats"]`` to ``apply``); in eval mode it uses the running averages.

    Attributes:
      momentum: running = momentum * running + (1 - momentum) * batch statistic.
      epsilon: added to the variance.
      axis_name: mesh/pmap axis to average the statistics over, so data-parallel training
        normalises with the global batch's statistics (needed under ``shard_map``/``pmap``;
        under ``jit`` with sharded arrays the mean is global already).

    Input ``(..., features)`` -> same shape. Parameters: ``2 * features`` (scale, bias), plus
    ``2 * features`` running statistics (not trained).
    """

    momentum: float = 0.9
    epsilon: float = 1e-5
    axis_name: str | None = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        check_param_axis(self, "scale", 0, x)
        features = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones_init(), (features,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros_init(), (features,), jnp.float32)
        ra_mean = self.variable("batch_stats", "mean", jnp.zeros, (features,), jnp.float32)
        ra_var = self.variable("batch_stats", "var", jnp.ones, (features,), jnp.float32)
        if train:
            mean, var = self._batch_moments(x)
            if not self.is_initializing():
                ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
                ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var
        else:
            mean, var = ra_mean.value, ra_var.value
        inv = lax.rsqrt(var + self.epsilon) * scale
        mean, inv, bias = (along_last_axis(v, x.ndim) for v in (mean, inv, bias))
        return ((x - mean) * inv + bias).astype(x.dtype)

    def _batch_moments(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Mean and biased variance over every axis but the last (and over ``axis_name``)."""
        axes = tuple(range(x.ndim - 1))
        x32 = x.astype(jnp.float32)
        mean, mean_sq = jnp.mean(x32, axes), jnp.mean(x32 * x32, axes)
        if self.axis_name is not None:
            mean, mean_sq = lax.pmean((mean, mean_sq), self.axis_name)
        return mean, jnp.maximum(mean_sq - mean * mean, 0.0)
