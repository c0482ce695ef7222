"""DQN pieces: configuration, bootstrapped targets (plain and double), Huber loss, one update.

The TD target bootstraps through time-limit truncation and stops only at termination:
``y = r + gamma * (1 - terminated) * Q_target(s', a*)`` with ``a* = argmax_a Q_target(s', a)``
(DQN) or ``argmax_a Q_online(s', a)`` (double DQN). The training loop that uses these pieces
lives in :mod:`dlfun.rl.dqn_train`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax.training.train_state import TrainState

from ..errors import ConfigError
from ..nn.precision import at_least_float32
from .exploration import epsilon_greedy
from .replay import ReplayBuffer, Transition, replay_sample

Array = jax.Array


@dataclass(frozen=True)
class DQNConfig:
    """Hyperparameters of DQN; every count of "steps" is per seed (one training run)."""

    num_envs: int = 8
    """Parallel environments stepped together in one iteration."""
    buffer_size: int = 20_000
    """Replay capacity, in transitions."""
    batch_size: int = 128
    """Transitions per gradient update."""
    learning_starts: int = 1_000
    """Environment steps of uniformly random actions that fill the buffer before learning."""
    updates_per_iteration: int = 1
    """Gradient updates after each iteration (one step of every environment)."""
    gamma: float = 0.99
    """Discount factor."""
    learning_rate: float = 2e-3
    """Adam step size."""
    max_grad_norm: float = 10.0
    """Global-norm gradient clipping threshold."""
    huber_delta: float = 1.0
    """Huber loss threshold between the quadratic and linear parts (very large: MSE)."""
    double_dqn: bool = True
    """Pick the next action with the online network, value it with the target network."""
    target_update_interval: int = 100
    """Updates between target-network updates."""
    target_tau: float = 1.0
    """Target update ``target <- tau * online + (1 - tau) * target``; 1.0 is a hard copy."""
    epsilon_start: float = 1.0
    """Exploration rate at environment step 0."""
    epsilon_end: float = 0.05
    """Exploration rate after the ramp."""
    epsilon_decay_steps: int = 10_000
    """Environment steps over which epsilon falls linearly."""
    iterations_per_eval: int = 625
    """Iterations between two greedy evaluations (one "period" of the compiled loop)."""
    num_evals: int = 40
    """Periods in a full run of ``train``."""
    eval_episodes: int = 10
    """Episodes per greedy evaluation (run in parallel)."""
    eval_epsilon: float = 0.0
    """Exploration rate during evaluation (0 = greedy)."""

    def __post_init__(self):
        positive = ("num_envs", "buffer_size", "batch_size", "updates_per_iteration",
                    "target_update_interval", "iterations_per_eval", "num_evals", "eval_episodes")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"DQNConfig.{name}={getattr(self, name)} must be >= 1; pass a "
                                  "positive count")
        if self.num_envs > self.buffer_size:
            raise ConfigError(f"DQNConfig.num_envs={self.num_envs} exceeds buffer_size="
                              f"{self.buffer_size}; raise buffer_size or lower num_envs")
        if not 0.0 < self.target_tau <= 1.0:
            raise ConfigError(f"DQNConfig.target_tau={self.target_tau} must be in (0, 1]; use "
                              "1.0 for a hard copy, e.g. 0.005 for Polyak averaging")

    @property
    def env_steps_per_period(self) -> int:
        """Environment steps between two evaluations."""
        return self.iterations_per_eval * self.num_envs

    @property
    def prefill_iterations(self) -> int:
        """Iterations of random actions before learning (``learning_starts`` rounded up)."""
        return -(-self.learning_starts // self.num_envs)

    @property
    def total_env_steps(self) -> int:
        """Environment steps of a full run (prefill included)."""
        return (self.prefill_iterations + self.num_evals * self.iterations_per_eval) * self.num_envs


def q_targets(next_q_target: Array, reward: Array, terminated: Array, gamma: float,
              next_q_online: Array | None = None) -> Array:
    """Bootstrapped TD targets.

    Args:
      next_q_target: ``(batch, num_actions)`` target-network values of the next observations.
      reward: ``(batch,)``.
      terminated: ``(batch,)`` bool; True drops the bootstrap term (truncation must be False
        here: a truncated transition bootstraps).
      gamma: discount.
      next_q_online: ``(batch, num_actions)`` online-network values of the next observations;
        given, the next action is their argmax (double DQN), else the target network's.

    Returns:
      ``(batch,)`` float32 targets (no gradient flows through them).
    """
    chooser = next_q_target if next_q_online is None else next_q_online
    next_action = jnp.argmax(chooser, axis=-1)
    next_value = jnp.take_along_axis(next_q_target, next_action[:, None], axis=-1)[:, 0]
    not_done = 1.0 - terminated.astype(jnp.float32)
    return jax.lax.stop_gradient(reward + gamma * not_done * next_value)


def dqn_loss(params: Any, target_params: Any, apply_fn, batch: Transition, cfg: DQNConfig
             ) -> tuple[Array, dict]:
    """Mean Huber loss between ``Q(s, a)`` and the TD target, on a batch of transitions.

    Args:
      params: online network parameters (differentiated).
      target_params: target network parameters.
      apply_fn: ``apply_fn(params, obs (batch, ...)) -> (batch, num_actions)``.
      batch: :class:`Transition` with a leading batch axis.
      cfg: uses ``gamma``, ``double_dqn`` and ``huber_delta``.

    Returns:
      ``(loss, {"q": mean Q(s, a)})``.
    """
    def q_of(p, obs):  # a bfloat16 network's Q-values too: targets and loss in float32
        return at_least_float32(apply_fn(p, obs))

    next_q_target = q_of(target_params, batch.next_obs)
    next_q_online = q_of(params, batch.next_obs) if cfg.double_dqn else None
    target = q_targets(next_q_target, batch.reward, batch.terminated, cfg.gamma, next_q_online)
    q = jnp.take_along_axis(q_of(params, batch.obs), batch.action[:, None], axis=-1)[:, 0]
    loss = optax.losses.huber_loss(q, target, delta=cfg.huber_delta).mean()
    return loss, {"q": q.mean()}


def make_optimizer(cfg: DQNConfig) -> optax.GradientTransformation:
    """Adam after global-norm gradient clipping."""
    return optax.chain(optax.clip_by_global_norm(cfg.max_grad_norm), optax.adam(cfg.learning_rate))


def update_target(target_params: Any, params: Any, update_count: Array, cfg: DQNConfig) -> Any:
    """Every ``target_update_interval`` updates, ``target <- tau * online + (1 - tau) * target``.

    Args:
      target_params: current target parameters.
      params: online parameters after the update.
      update_count: int scalar, gradient updates done so far (including this one).
      cfg: uses ``target_update_interval`` and ``target_tau``.

    Returns:
      The new target parameters (unchanged between intervals).
    """
    due = update_count % cfg.target_update_interval == 0
    moved = optax.incremental_update(params, target_params, cfg.target_tau)
    return jax.tree.map(lambda m, t: jnp.where(due, m, t), moved, target_params)


def dqn_update(train_state: TrainState, target_params: Any, batch: Transition, cfg: DQNConfig
               ) -> tuple[TrainState, Any, dict]:
    """One gradient step on ``batch`` and the target-network update that may follow it.

    Returns:
      ``(train_state, target_params, {"loss", "q"})``.
    """
    (loss, aux), grads = jax.value_and_grad(dqn_loss, has_aux=True)(
        train_state.params, target_params, train_state.apply_fn, batch, cfg)
    train_state = train_state.apply_gradients(grads=grads)
    target_params = update_target(target_params, train_state.params, train_state.step, cfg)
    return train_state, target_params, dict(aux, loss=loss)


def create_learner(network, cfg: DQNConfig, key: Array, example_obs: Array
                   ) -> tuple[TrainState, Any]:
    """Initial online train state and target parameters (a copy of the online ones).

    Args:
      network: a Flax module mapping ``(batch, *obs_shape)`` to ``(batch, num_actions)``.
      cfg: uses the optimizer settings.
      key: PRNG key for the parameters.
      example_obs: ``(batch, *obs_shape)``, only its shape and dtype matter.

    Returns:
      ``(train_state, target_params)``.
    """
    params = network.init(key, example_obs)
    state = TrainState.create(apply_fn=network.apply, params=params, tx=make_optimizer(cfg))
    # an int32 step counter, as a restored checkpoint's is (TrainState starts from a Python 0,
    # weakly typed under jit: a resumed run would compile its programs again for the type)
    state = state.replace(step=jnp.zeros((), jnp.int32))
    return state, jax.tree.map(jnp.copy, params)


def act(train_state: TrainState, obs: Array, key: Array, epsilon: Array) -> Array:
    """Epsilon-greedy actions of the online network for a batch ``obs`` -> ``(batch,)`` int32."""
    return epsilon_greedy(key, train_state.apply_fn(train_state.params, obs), epsilon)


def learn(train_state: TrainState, target_params: Any, buffer: ReplayBuffer, key: Array,
          cfg: DQNConfig) -> tuple[TrainState, Any, dict]:
    """``cfg.updates_per_iteration`` updates, each on a fresh uniform batch from ``buffer``.

    Returns:
      ``(train_state, target_params, {"loss", "q"})``, metrics averaged over the updates.
    """
    def one(carry, sample_key):
        state, target = carry
        batch = replay_sample(buffer, sample_key, cfg.batch_size)
        state, target, metrics = dqn_update(state, target, batch, cfg)
        return (state, target), metrics

    keys = jax.random.split(key, cfg.updates_per_iteration)
    (train_state, target_params), metrics = jax.lax.scan(one, (train_state, target_params), keys)
    return train_state, target_params, jax.tree.map(jnp.mean, metrics)
