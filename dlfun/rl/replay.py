"""A fixed-capacity circular replay buffer that is a pytree (jit/vmap/checkpoint friendly)."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array


class Transition(NamedTuple):
    """One transition (or a batch of them: a leading axis on every field).

    Attributes:
      obs: observation the action was taken in, ``(*obs_shape)``.
      action: int32 scalar.
      reward: float32 scalar.
      next_obs: observation the step reached (the true final one at an episode's end).
      terminated: bool scalar; True stops bootstrapping. Truncation is not stored because a
        truncated step bootstraps like any other.
    """

    obs: Array
    action: Array
    reward: Array
    next_obs: Array
    terminated: Array


class ReplayBuffer(NamedTuple):
    """Circular storage: every leaf of ``storage`` has shape ``(capacity, ...)``.

    Attributes:
      storage: pytree of arrays (e.g. a :class:`Transition` with a leading capacity axis).
      position: int32 scalar, the index the next item is written to.
      size: int32 scalar, the number of valid items (``<= capacity``).
    """

    storage: Any
    position: Array
    size: Array

    @property
    def capacity(self) -> int:
        """Number of items the buffer holds when full."""
        return jax.tree.leaves(self.storage)[0].shape[0]


def replay_init(example: Any, capacity: int) -> ReplayBuffer:
    """An empty buffer for items shaped like ``example`` (one item, no batch axis).

    Args:
      example: pytree of arrays (or ``jax.ShapeDtypeStruct``) describing one item.
      capacity: number of items kept; older ones are overwritten first.

    Returns:
      A :class:`ReplayBuffer` with zero-filled storage of shape ``(capacity, *leaf.shape)``.
    """
    storage = jax.tree.map(lambda x: jnp.zeros((capacity, *x.shape), x.dtype), example)
    # Two separate arrays, not one: a donated buffer must not hold the same array twice.
    return ReplayBuffer(storage, jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32))


def replay_add(buffer: ReplayBuffer, batch: Any) -> ReplayBuffer:
    """Write a batch of items at the current position, wrapping around at the end.

    Args:
      buffer: the buffer.
      batch: pytree like the storage, each leaf with a leading axis of ``n <= capacity`` items.

    Returns:
      The buffer with the items written at ``(position + arange(n)) % capacity``.
    """
    capacity = buffer.capacity
    n = jax.tree.leaves(batch)[0].shape[0]
    index = (buffer.position + jnp.arange(n, dtype=jnp.int32)) % capacity
    storage = jax.tree.map(lambda s, b: s.at[index].set(b.astype(s.dtype)), buffer.storage, batch)
    return ReplayBuffer(storage, (buffer.position + n) % capacity,
                        jnp.minimum(buffer.size + n, capacity))


def replay_sample(buffer: ReplayBuffer, key: Array, batch_size: int) -> Any:
    """Draw ``batch_size`` items uniformly (with replacement) from the filled part.

    Args:
      buffer: a buffer with ``size > 0`` (an empty buffer returns its zero-filled slots).
      key: PRNG key.
      batch_size: number of items.

    Returns:
      Pytree like the storage, each leaf with leading axis ``batch_size``.
    """
    index = jax.random.randint(key, (batch_size,), 0, jnp.maximum(buffer.size, 1))
    return jax.tree.map(lambda s: s[index], buffer.storage)
