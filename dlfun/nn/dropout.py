"""Dropout with an explicit key (inverted scaling: expectations unchanged)."""

import flax.linen as nn
import jax
import jax.numpy as jnp

from ..errors import ConfigError


def dropout(key: jax.Array, x: jax.Array, rate: float) -> jax.Array:
    """Zero each element with probability ``rate`` and scale survivors by 1/(1-rate).

    Args:
      key: a ``jax.random.key``.
      x: any shape.
      rate: drop probability in [0, 1).
    Returns:
      an array shaped like ``x``.
    """
    if not 0.0 <= rate < 1.0:
        raise ConfigError(f"dropout rate must be in [0, 1), got {rate}")
    if rate == 0.0:
        return x
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), jnp.zeros_like(x))


class Dropout(nn.Module):
    """Dropout layer; active only with ``train=True``, drawing from the ``"dropout"`` rng.

    Use as ``model.apply(variables, x, train=True, rngs={"dropout": key})``.
    """

    rate: float

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        if not train or self.rate == 0.0:
            return x
        return dropout(self.make_rng("dropout"), x, self.rate)
