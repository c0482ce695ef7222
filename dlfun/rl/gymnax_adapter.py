"""gymnax environments (optional dependency) behind dlfun's pure-environment convention."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax

from ..errors import ConfigError

Array = jax.Array


@dataclass(frozen=True)
class GymnaxEnv:
    """A gymnax environment with its parameters, following :mod:`dlfun.rl.env`.

    gymnax's ``step_env`` reports only natural termination; the time limit
    (``params.max_steps_in_episode``) becomes ``truncated`` here, as in gymnasium.

    Attributes:
      env: the gymnax environment object.
      params: its ``EnvParams``.
    """

    env: Any
    params: Any

    @property
    def num_actions(self) -> int:
        """Number of discrete actions."""
        return int(self.env.num_actions)

    @property
    def max_steps(self) -> int:
        """The truncation limit."""
        return int(self.params.max_steps_in_episode)

    @property
    def obs_shape(self) -> tuple[int, ...]:
        """Shape of one observation."""
        return tuple(jax.eval_shape(self.reset, jax.random.key(0))[0].shape)

    @property
    def obs_dtype(self):
        """Dtype of the observations."""
        return jax.eval_shape(self.reset, jax.random.key(0))[0].dtype

    def reset(self, key: Array) -> tuple[Array, Any]:
        """gymnax ``reset_env``: ``(obs, state)``."""
        return self.env.reset_env(key, self.params)

    def step(self, key: Array, state: Any, action: Array
             ) -> tuple[Array, Any, Array, Array, Array, dict]:
        """gymnax ``step_env`` plus the time limit: ``(obs, state, reward, terminated,
        truncated, info)``."""
        obs, state, reward, terminated, info = self.env.step_env(key, state, action, self.params)
        truncated = state.time >= self.params.max_steps_in_episode
        return obs, state, reward, terminated, truncated, info


def from_gymnax(env_id: str, **param_overrides) -> GymnaxEnv:
    """``gymnax.make(env_id)`` wrapped as a dlfun environment.

    Args:
      env_id: a gymnax id such as ``"CartPole-v1"`` or ``"Breakout-MinAtar"``.
      **param_overrides: replaced fields of the default ``EnvParams``.

    Returns:
      A :class:`GymnaxEnv` usable with :func:`dlfun.rl.make_train`.
    """
    try:
        import gymnax
    except ImportError as err:
        raise ConfigError("gymnax is not installed; it is optional: pip install gymnax") from err
    env, params = gymnax.make(env_id)
    return GymnaxEnv(env, params.replace(**param_overrides) if param_overrides else params)
