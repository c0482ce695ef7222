"""The DQN training loop compiled as nested ``lax.scan``s, vmappable over seeds.

``trainer = make_train(cfg, env, network)`` gives three pure functions:

* ``trainer.init(key, run_id=0) -> carry``: parameters, optimizer, target network, environments
  and a replay buffer already holding ``cfg.learning_starts`` random-action transitions;
* ``trainer.run(carry, num_periods) -> (carry, metrics)``: ``num_periods`` periods, each
  ``cfg.iterations_per_eval`` iterations (step every environment once, store the transitions,
  ``cfg.updates_per_iteration`` gradient updates) followed by a greedy evaluation;
* ``trainer.train(key) -> (carry, metrics)``: ``init`` then ``run`` for ``cfg.num_evals`` periods.

The carry (:class:`DQNCarry`) is one pytree holding everything, so a run can be checkpointed
between chunks and resumed; running ``run`` twice for ``n`` periods equals running it once for
``2 n`` bit for bit. Evaluation happens at the end of every period rather than under a
``lax.cond`` because a ``cond`` under ``vmap`` over seeds would run both branches every
iteration. ``num_periods`` is static: ``jax.jit(trainer.run, static_argnums=1)``, and
``jax.vmap(trainer.train)(keys)`` trains several seeds in one program.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from flax.training.train_state import TrainState

from .dqn import DQNConfig, act, create_learner, learn
from .env import Env, reset_batch, step_batch
from .evaluate import evaluate_episodes
from .exploration import linear_epsilon
from .replay import ReplayBuffer, Transition, replay_add, replay_init

Array = jax.Array


class DQNCarry(NamedTuple):
    """Everything the compiled loop carries from one iteration to the next.

    Attributes:
      train_state: online parameters, optimizer state and update count (``.step``).
      target_params: target network parameters.
      buffer: the replay buffer.
      env_state: state of the ``num_envs`` environments (leading axis ``num_envs``).
      obs: ``(num_envs, *obs_shape)`` current observations.
      episode_return: ``(num_envs,)`` float32, return so far of the running episodes.
      env_steps: int32 scalar, environment steps taken (prefill included).
      key: PRNG key for everything that follows.
      best_params: parameters with the best greedy evaluation so far (ties: the later).
      best_eval_return: float32 scalar, their evaluation return (-inf before the first).
      run_id: int32 scalar passed to ``init``, reported with the metrics to tell seeds apart.
    """

    train_state: TrainState
    target_params: Any
    buffer: ReplayBuffer
    env_state: Any
    obs: Array
    episode_return: Array
    env_steps: Array
    key: Array
    best_params: Any
    best_eval_return: Array
    run_id: Array


class DQNTrainer(NamedTuple):
    """The pure functions returned by :func:`make_train` (see the module docstring)."""

    init: Callable[..., DQNCarry]
    run: Callable[[DQNCarry, int], tuple[DQNCarry, dict]]
    train: Callable[[Array], tuple[DQNCarry, dict]]


def make_train(cfg: DQNConfig, env: Env, network, on_period: Callable[[dict], None] | None = None
               ) -> DQNTrainer:
    """Build the DQN training functions for one environment and Q-network.

    Args:
      cfg: hyperparameters.
      env: a pure-JAX environment (:mod:`dlfun.rl.env`).
      network: Flax module, ``(batch, *obs_shape) -> (batch, env.num_actions)``.
      on_period: optional host function called after every period with that period's metrics
        (numpy scalars, one call per seed under ``vmap``) through ``jax.debug.callback``, so
        progress streams out of a compiled run.

    Returns:
      A :class:`DQNTrainer`. The per-period metrics (arrays with a leading ``num_periods``
      axis) are ``env_steps``, ``eval_return``, ``train_return`` (mean of the episodes that
      ended in the period, NaN if none), ``episodes``, ``loss``, ``q``, ``epsilon``, ``run_id``
      and ``nonfinite_env_step`` (the environment step count after the period's first iteration
      whose loss was NaN/inf, -1 if none: a run that diverged can name where).
    """
    def init(key: Array, run_id: Array | int = 0) -> DQNCarry:
        return _init(cfg, env, network, key, run_id)

    def run(carry: DQNCarry, num_periods: int) -> tuple[DQNCarry, dict]:
        return jax.lax.scan(lambda c, _: _period(cfg, env, on_period, c), carry, None,
                            length=num_periods)

    def train(key: Array) -> tuple[DQNCarry, dict]:
        return run(init(key), cfg.num_evals)

    return DQNTrainer(init, run, train)


def _init(cfg: DQNConfig, env: Env, network, key: Array, run_id) -> DQNCarry:
    """Fresh learner and environments, then ``cfg.prefill_iterations`` random-action iterations."""
    param_key, env_key, run_key = jax.random.split(key, 3)
    obs, env_state = reset_batch(env, env_key, cfg.num_envs)
    train_state, target_params = create_learner(network, cfg, param_key, obs)
    example = Transition(obs[0], jnp.zeros((), jnp.int32), jnp.zeros((), jnp.float32), obs[0],
                         jnp.zeros((), bool))
    best_params = jax.tree.map(jnp.copy, train_state.params)  # own arrays: the carry is donatable
    carry = DQNCarry(train_state, target_params, replay_init(example, cfg.buffer_size), env_state,
                     obs, jnp.zeros((cfg.num_envs,), jnp.float32), jnp.zeros((), jnp.int32),
                     run_key, best_params, jnp.full((), -jnp.inf, jnp.float32),
                     jnp.asarray(run_id, jnp.int32))
    carry, _ = jax.lax.scan(lambda c, _: _collect(env, c, jnp.float32(1.0)), carry, None,
                            length=cfg.prefill_iterations)
    return carry


def _collect(env: Env, carry: DQNCarry, epsilon: Array) -> tuple[DQNCarry, tuple[Array, Array]]:
    """Step every environment once with epsilon-greedy actions and store the transitions.

    Returns:
      ``(carry, (sum of returns of the episodes that ended, number of them))``.
    """
    key, action_key, step_key = jax.random.split(carry.key, 3)
    actions = act(carry.train_state, carry.obs, action_key, epsilon)
    obs, env_state, reward, terminated, truncated, info = step_batch(env, step_key,
                                                                     carry.env_state, actions)
    reward = reward.astype(jnp.float32)
    transitions = Transition(carry.obs, actions, reward, info["final_obs"], terminated)
    episode_return = carry.episode_return + reward
    done = terminated | truncated
    ended = (jnp.where(done, episode_return, 0.0).sum(), done.sum().astype(jnp.int32))
    carry = carry._replace(buffer=replay_add(carry.buffer, transitions), env_state=env_state,
                           obs=obs, episode_return=jnp.where(done, 0.0, episode_return),
                           env_steps=carry.env_steps + actions.shape[0], key=key)
    return carry, ended


def _iteration(cfg: DQNConfig, env: Env, carry: DQNCarry) -> tuple[DQNCarry, dict]:
    """Collect one step of every environment, then learn from the buffer."""
    epsilon = linear_epsilon(carry.env_steps, cfg.epsilon_start, cfg.epsilon_end,
                             cfg.epsilon_decay_steps)
    carry, (ended_sum, ended_count) = _collect(env, carry, epsilon)
    key, learn_key = jax.random.split(carry.key)
    train_state, target_params, metrics = learn(carry.train_state, carry.target_params,
                                                carry.buffer, learn_key, cfg)
    carry = carry._replace(train_state=train_state, target_params=target_params, key=key)
    return carry, dict(metrics, ended_sum=ended_sum, ended_count=ended_count, epsilon=epsilon)


def _period(cfg: DQNConfig, env: Env, on_period, carry: DQNCarry) -> tuple[DQNCarry, dict]:
    """``cfg.iterations_per_eval`` iterations, then a greedy evaluation and the period's metrics."""
    start_steps = carry.env_steps
    carry, steps = jax.lax.scan(lambda c, _: _iteration(cfg, env, c), carry, None,
                                length=cfg.iterations_per_eval)
    key, eval_key = jax.random.split(carry.key)
    params = carry.train_state.params
    eval_return = evaluate_episodes(env, carry.train_state.apply_fn, params, eval_key,
                                    cfg.eval_episodes, cfg.eval_epsilon).mean()
    better = eval_return >= carry.best_eval_return
    carry = carry._replace(
        key=key, best_params=jax.tree.map(lambda p, b: jnp.where(better, p, b), params,
                                          carry.best_params),
        best_eval_return=jnp.maximum(eval_return, carry.best_eval_return))
    count = steps["ended_count"].sum()
    metrics = dict(env_steps=carry.env_steps, eval_return=eval_return,
                   train_return=jnp.where(count > 0, steps["ended_sum"].sum() / count, jnp.nan),
                   episodes=count, loss=steps["loss"].mean(), q=steps["q"].mean(),
                   epsilon=steps["epsilon"][-1], run_id=carry.run_id,
                   nonfinite_env_step=_first_nonfinite(steps["loss"], start_steps, cfg.num_envs))
    if on_period is not None:
        jax.debug.callback(on_period, metrics)
    return carry, metrics


def _first_nonfinite(losses: Array, start_steps: Array, num_envs: int) -> Array:
    """Env step count after the first iteration whose loss (``(iterations,)``) is not finite,
    or -1."""
    bad = ~jnp.isfinite(losses)
    return jnp.where(bad.any(), start_steps + (jnp.argmax(bad) + 1) * num_envs, -1)
