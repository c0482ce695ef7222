"""The environment convention shared by dlfun's pure-JAX environments and the DQN loop.

An environment is a frozen dataclass (its fields are static configuration) with two pure
methods, both written for ONE environment and vmapped by the caller:

* ``reset(key) -> (obs, state)``
* ``step(key, state, action) -> (obs, state, reward, terminated, truncated, info)``

``terminated`` means the MDP reached a terminal state (no bootstrapping past it); ``truncated``
means the episode was cut by a time limit (the value of the next state still counts). Both
can be true on the same step, as in gymnasium. ``step`` does not reset; :func:`auto_reset_step`
adds the reset that vmapped training needs and keeps the true final observation in
``info["final_obs"]``. Besides the two methods an environment exposes ``num_actions``,
``obs_shape``, ``obs_dtype`` and ``max_steps`` (the truncation limit).
"""

from __future__ import annotations

from typing import Any, Protocol

import jax
import jax.numpy as jnp

Array = jax.Array


class Env(Protocol):
    """Structural type of a pure-JAX environment (see the module docstring)."""

    num_actions: int
    obs_shape: tuple[int, ...]
    max_steps: int

    @property
    def obs_dtype(self) -> Any: ...

    def reset(self, key: Array) -> tuple[Array, Any]: ...

    def step(self, key: Array, state: Any, action: Array
             ) -> tuple[Array, Any, Array, Array, Array, dict]: ...


def select_tree(pred: Array, on_true: Any, on_false: Any) -> Any:
    """Leafwise ``where(pred, on_true, on_false)`` over two pytrees; ``pred`` is a scalar."""
    return jax.tree.map(lambda a, b: jnp.where(pred, a, b), on_true, on_false)


def auto_reset_step(env: Env, key: Array, state: Any, action: Array
                    ) -> tuple[Array, Any, Array, Array, Array, dict]:
    """One step of ``env`` that resets when the episode ends (terminated or truncated).

    Args:
      env: a pure-JAX environment.
      key: PRNG key for this step (split into step and reset keys).
      state: the environment state (one environment; vmap for a batch).
      action: int32 scalar.

    Returns:
      ``(obs, state, reward, terminated, truncated, info)`` as ``env.step``, except that ``obs``
      and ``state`` are the reset ones when the episode ended, and ``info["final_obs"]`` holds
      the observation the step actually reached (the ``next_obs`` of the transition).
    """
    step_key, reset_key = jax.random.split(key)
    obs, next_state, reward, terminated, truncated, info = env.step(step_key, state, action)
    reset_obs, reset_state = env.reset(reset_key)
    done = jnp.logical_or(terminated, truncated)
    out_state = select_tree(done, reset_state, next_state)
    out_obs = jnp.where(done, reset_obs, obs)
    return out_obs, out_state, reward, terminated, truncated, dict(info, final_obs=obs)


def reset_batch(env: Env, key: Array, num_envs: int) -> tuple[Array, Any]:
    """Reset ``num_envs`` environments with independent keys.

    Returns:
      ``obs`` of shape ``(num_envs, *env.obs_shape)`` and the batched state.
    """
    return jax.vmap(env.reset)(jax.random.split(key, num_envs))


def step_batch(env: Env, key: Array, state: Any, action: Array
               ) -> tuple[Array, Any, Array, Array, Array, dict]:
    """:func:`auto_reset_step` over a batch of environments; ``action``: ``(num_envs,)``."""
    keys = jax.random.split(key, action.shape[0])
    return jax.vmap(lambda k, s, a: auto_reset_step(env, k, s, a))(keys, state, action)
