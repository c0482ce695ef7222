"""Dropout with an explicit key (inverted scaling: expectations unchanged)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from ..errors import ConfigError


def _check_rate(rate: float) -> None:
    if not 0.0 <= rate < 1.0:
        raise ConfigError(f"dropout rate must be in [0, 1), got {rate}")


def _apply_mask(keep: jax.Array, x: jax.Array, rate: float) -> jax.Array:
    return jnp.where(keep, x / (1.0 - rate), jnp.zeros_like(x))


def dropout(key: jax.Array, x: jax.Array, rate: float) -> jax.Array:
    """Zero each element with probability ``rate`` and scale survivors by 1/(1-rate).

    Args:
      key: a ``jax.random.key``.
      x: any shape.
      rate: drop probability in [0, 1).
    Returns:
      an array shaped like ``x``.
    """
    _check_rate(rate)
    if rate == 0.0:
        return x
    return _apply_mask(jax.random.bernoulli(key, 1.0 - rate, x.shape), x, rate)


def dropout_per_example(key: jax.Array, x: jax.Array, rate: float,
                        first_row: int | jax.Array = 0) -> jax.Array:
    """Dropout whose mask for row ``i`` is drawn from ``fold_in(key, first_row + i)``.

    Each example's mask depends only on the key and the example's index in the global batch,
    so a batch split over devices (each passing its ``first_row``) draws exactly the masks
    one device would draw for the whole batch.

    Args:
      key: a ``jax.random.key``.
      x: ``(batch, ...)``.
      rate: drop probability in [0, 1).
      first_row: global index of ``x``'s first row.
    Returns:
      an array shaped like ``x``.
    """
    _check_rate(rate)
    if rate == 0.0:
        return x
    rows = first_row + jnp.arange(x.shape[0])
    keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, rows)
    keep = jax.vmap(lambda k: jax.random.bernoulli(k, 1.0 - rate, x.shape[1:]))(keys)
    return _apply_mask(keep, x, rate)


class Dropout(nn.Module):
    """Dropout layer; active only with ``train=True``, drawing from the ``"dropout"`` rng.

    Use as ``model.apply(variables, x, train=True, rngs={"dropout": key})``.

    Attributes:
      rate: drop probability in [0, 1).
      per_example: draw each example's mask from the key and its index in the global batch
        (:func:`dropout_per_example`), so data-parallel training reproduces one device's masks.
      axis_name: the ``shard_map``/``pmap`` axis the batch is split over (implies
        ``per_example``): this device's rows start at ``axis_index * local_batch``.
    """

    rate: float
    per_example: bool = False
    axis_name: str | None = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        if not train or self.rate == 0.0:
            return x
        key = self.make_rng("dropout")
        if self.axis_name is not None:
            return dropout_per_example(key, x, self.rate,
                                       lax.axis_index(self.axis_name) * x.shape[0])
        if self.per_example:
            return dropout_per_example(key, x, self.rate)
        return dropout(key, x, self.rate)
