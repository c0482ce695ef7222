"""Tuned DQN configurations, and which environment and Q-network each environment name means.

Environment names: ``cartpole`` and ``breakout`` are dlfun's pure-JAX environments (trained by
the compiled loop); ``gym:<id>`` is a gymnasium environment (trained by the host loop), with
the standard Atari preprocessing for ``gym:ALE/...`` ids.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError
from .breakout import Breakout
from .cartpole import CartPole
from .dqn import DQNConfig
from .networks import MLPQNetwork, minatar_q_network, nature_q_network

CARTPOLE = DQNConfig()
"""CartPole: MLP 120-84, 8 envs, one update per 8 env steps, 201k env steps (40 evaluations).

Over seeds 0-9 and 10-19 every seed reached a greedy return of 500 within 200k steps.
"""

BREAKOUT = DQNConfig(num_envs=8, batch_size=64, buffer_size=100_000, learning_rate=1e-3,
                     target_update_interval=500, epsilon_decay_steps=100_000,
                     learning_starts=5_000, iterations_per_eval=3_125, num_evals=8,
                     eval_episodes=10)
"""MinAtar-scale Breakout with :func:`dlfun.rl.minatar_q_network`: 205k env steps."""

CARTPOLE_SMOKE = DQNConfig(num_envs=8, buffer_size=10_000, batch_size=64, learning_starts=500,
                           epsilon_decay_steps=5_000, iterations_per_eval=400, num_evals=4,
                           eval_episodes=8)
"""CartPole in seconds (13k env steps): enough for the greedy return to leave random play."""

BREAKOUT_SMOKE = DQNConfig(num_envs=8, batch_size=64, buffer_size=20_000, learning_rate=1e-3,
                           target_update_interval=200, epsilon_decay_steps=10_000,
                           learning_starts=1_000, iterations_per_eval=500, num_evals=3,
                           eval_episodes=8)
"""MinAtar-scale Breakout in 13k env steps: the greedy return rises above random play."""

ATARI = DQNConfig(num_envs=8, buffer_size=100_000, batch_size=32, learning_starts=50_000,
                  updates_per_iteration=2, learning_rate=1e-4, target_update_interval=1_000,
                  epsilon_end=0.01, epsilon_decay_steps=1_000_000,
                  iterations_per_eval=12_500, num_evals=100, eval_episodes=5, eval_epsilon=0.05)
"""Atari (Nature DQN, one update per 4 agent steps, 10M agent steps): GPU-scale. The replay
buffer keeps both frame stacks of each transition, ~5.6 GB at 100k transitions."""

ATARI_SMOKE = DQNConfig(num_envs=4, buffer_size=2_000, batch_size=8, learning_starts=1_000,
                        iterations_per_eval=50, num_evals=2, target_update_interval=25,
                        epsilon_decay_steps=1_000, learning_rate=1e-4, eval_episodes=1,
                        eval_epsilon=0.05)
"""A few thousand Atari frames through the whole pipeline (nothing is learned)."""

DQN_PRESETS = {
    ("cartpole", "default"): CARTPOLE, ("cartpole", "smoke"): CARTPOLE_SMOKE,
    ("breakout", "default"): BREAKOUT, ("breakout", "smoke"): BREAKOUT_SMOKE,
    ("gym", "default"): CARTPOLE, ("gym", "smoke"): CARTPOLE_SMOKE,
    ("atari", "default"): ATARI, ("atari", "smoke"): ATARI_SMOKE,
}
"""``(environment family, preset) -> DQNConfig``; families as :attr:`EnvSpec.family`."""

SOLVED_RETURN = {"cartpole": 475.0, "gym:CartPole-v1": 475.0}
"""Greedy evaluation return that counts as solving an environment (where one is defined)."""


@dataclass(frozen=True)
class EnvSpec:
    """An environment name parsed: ``cartpole``, ``breakout`` or ``gym:<id>``.

    Attributes:
      name: the name as given.
      gym_id: the gymnasium id for ``gym:<id>``, else None.
    """

    name: str
    gym_id: str | None = None

    @classmethod
    def parse(cls, name: str) -> "EnvSpec":
        """Check the syntax of ``name`` (no imports); raise ConfigError naming the choices."""
        if name in ("cartpole", "breakout"):
            return cls(name)
        if name.startswith("gym:"):
            gym_id = name[len("gym:"):].strip()
            if not gym_id:
                raise ConfigError("--env gym: needs a gymnasium id after the colon, e.g. "
                                  "gym:CartPole-v1 or gym:ALE/Breakout-v5")
            return cls(name, gym_id)
        raise ConfigError(f"--env must be cartpole, breakout or gym:<gymnasium id>; got "
                          f"{name!r}")

    @property
    def is_atari(self) -> bool:
        """An Atari game through ale-py (gets the standard DQN preprocessing)."""
        return self.gym_id is not None and self.gym_id.startswith("ALE/")

    @property
    def family(self) -> str:
        """``cartpole``, ``breakout``, ``atari`` or ``gym`` (other gymnasium ids)."""
        return "atari" if self.is_atari else ("gym" if self.gym_id else self.name)

    @property
    def solved_return(self) -> float | None:
        """The greedy return that counts as solved, if the environment defines one."""
        return SOLVED_RETURN.get(self.name)


def dqn_preset(spec: EnvSpec, preset: str) -> DQNConfig:
    """The tuned :class:`DQNConfig` for an environment family and ``default``/``smoke``."""
    return DQN_PRESETS[(spec.family, preset)]


def jax_env(spec: EnvSpec):
    """The pure-JAX environment of ``cartpole`` / ``breakout``."""
    return {"cartpole": CartPole, "breakout": Breakout}[spec.name]()


def q_network(spec: EnvSpec, obs_shape: tuple[int, ...], num_actions: int,
              hidden: tuple[int, ...] = (120, 84), **dtypes):
    """The Q-network for an environment: MinAtar conv net for Breakout, the Nature network for
    Atari, an MLP with ``hidden`` widths for vector observations; ``dtypes`` are its
    ``dtype``/``param_dtype`` (see :mod:`dlfun.nn.precision`).

    Raises:
      ConfigError: a gymnasium environment whose observations are neither vectors nor
        Atari frames.
    """
    if spec.name == "breakout":
        return minatar_q_network(num_actions, **dtypes)
    if spec.is_atari:
        return nature_q_network(num_actions, **dtypes)
    if len(obs_shape) != 1:
        raise ConfigError(f"--env {spec.name} has observations of shape {obs_shape}; dlfun's DQN "
                          "takes vector observations, or Atari frames via gym:ALE/<game>")
    return MLPQNetwork(num_actions, tuple(hidden), **dtypes)
