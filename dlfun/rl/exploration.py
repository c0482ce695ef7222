"""Exploration: the linear epsilon schedule and epsilon-greedy action choice."""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


def linear_epsilon(step: Array, start: float, end: float, duration: int) -> Array:
    """Epsilon moving linearly from ``start`` to ``end`` over ``duration`` steps, then flat.

    Args:
      step: int scalar (e.g. environment steps taken so far).
      start: epsilon at step 0.
      end: epsilon from step ``duration`` on.
      duration: length of the ramp; 0 means ``end`` from the start.

    Returns:
      float32 scalar.
    """
    frac = jnp.clip(jnp.asarray(step, jnp.float32) / max(duration, 1), 0.0, 1.0)
    return jnp.asarray(start + (end - start) * frac, jnp.float32)


def epsilon_greedy(key: Array, q_values: Array, epsilon: Array) -> Array:
    """With probability ``epsilon`` a uniform random action, else the greedy one (per row).

    Args:
      key: PRNG key.
      q_values: ``(batch, num_actions)``.
      epsilon: float scalar in [0, 1].

    Returns:
      int32 actions of shape ``(batch,)``.
    """
    explore_key, action_key = jax.random.split(key)
    batch, num_actions = q_values.shape
    greedy = jnp.argmax(q_values, axis=-1).astype(jnp.int32)
    random = jax.random.randint(action_key, (batch,), 0, num_actions, jnp.int32)
    explore = jax.random.uniform(explore_key, (batch,)) < epsilon
    return jnp.where(explore, random, greedy)
