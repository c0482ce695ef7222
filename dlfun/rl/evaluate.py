"""Policy evaluation inside JAX: batched greedy episodes and a recorded rollout for rendering."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from .env import Env, reset_batch
from .exploration import epsilon_greedy

Array = jax.Array
ApplyFn = Callable[[Any, Array], Array]


class Rollout(NamedTuple):
    """One recorded episode, padded to a fixed length ``T = env.max_steps``.

    Attributes:
      obs: ``(T + 1, *obs_shape)``; ``obs[t]`` is the observation before action ``t``.
      actions: ``(T,)`` int32.
      rewards: ``(T,)`` float32, zero after the episode ended.
      length: int32 scalar, steps until termination or truncation; entries past it are padding.
      episode_return: float32 scalar.
    """

    obs: Array
    actions: Array
    rewards: Array
    length: Array
    episode_return: Array


def evaluate_episodes(env: Env, apply_fn: ApplyFn, params: Any, key: Array, num_episodes: int,
                      epsilon: float = 0.0) -> Array:
    """Returns of ``num_episodes`` episodes run in parallel with an epsilon-greedy policy.

    Stops when every episode has terminated or been truncated (at most ``env.max_steps``
    steps), so short episodes are cheap. Works under ``jit`` and ``vmap``.

    Args:
      env: a pure-JAX environment.
      apply_fn: ``apply_fn(params, obs (batch, ...)) -> (batch, num_actions)``.
      params: network parameters.
      key: PRNG key (resets and, with ``epsilon > 0``, exploration).
      num_episodes: episodes run side by side.
      epsilon: exploration rate; 0 is greedy.

    Returns:
      ``(num_episodes,)`` float32 episode returns.
    """
    reset_key, run_key = jax.random.split(key)
    obs, state = reset_batch(env, reset_key, num_episodes)
    alive = jnp.ones((num_episodes,), bool)
    returns = jnp.zeros((num_episodes,), jnp.float32)

    def body(carry):
        t, obs, state, returns, alive = carry
        action_key, step_key = jax.random.split(jax.random.fold_in(run_key, t))
        actions = epsilon_greedy(action_key, apply_fn(params, obs), epsilon)
        step_keys = jax.random.split(step_key, num_episodes)
        obs, state, reward, term, trunc, _ = jax.vmap(env.step)(step_keys, state, actions)
        returns = returns + jnp.where(alive, reward, 0.0).astype(jnp.float32)
        return t + 1, obs, state, returns, alive & ~(term | trunc)

    carry = (jnp.zeros((), jnp.int32), obs, state, returns, alive)
    carry = jax.lax.while_loop(lambda c: c[4].any() & (c[0] < env.max_steps), body, carry)
    return carry[3]


def greedy_rollout(env: Env, apply_fn: ApplyFn, params: Any, key: Array) -> Rollout:
    """Record one greedy episode (observations, actions, rewards) for rendering or inspection.

    Args:
      env: a pure-JAX environment.
      apply_fn: ``apply_fn(params, obs (batch, ...)) -> (batch, num_actions)``.
      params: network parameters.
      key: PRNG key for the reset (and any randomness in the dynamics).

    Returns:
      A :class:`Rollout` padded to ``env.max_steps`` steps; slice with ``length``.
    """
    reset_key, run_key = jax.random.split(key)
    obs0, state = env.reset(reset_key)

    def body(carry, step_key):
        obs, state, alive = carry
        action = jnp.argmax(apply_fn(params, obs[None])[0]).astype(jnp.int32)
        obs, state, reward, term, trunc, _ = env.step(step_key, state, action)
        reward = jnp.where(alive, reward, 0.0).astype(jnp.float32)
        return (obs, state, alive & ~(term | trunc)), (obs, action, reward, alive)

    step_keys = jax.random.split(run_key, env.max_steps)
    _, (obs, actions, rewards, alive) = jax.lax.scan(
        body, (obs0, state, jnp.ones((), bool)), step_keys)
    all_obs = jnp.concatenate([obs0[None], obs], axis=0)  # (T + 1, *obs_shape)
    return Rollout(all_obs, actions, rewards, alive.sum().astype(jnp.int32), rewards.sum())
