"""Checkpointed runs of the gymnasium host loop on a run directory (one seed).

The host loop (:func:`dlfun.rl.gym_adapter.run_host_loop`) reports after every evaluation
period; there the record goes to ``metrics.jsonl``, a non-finite loss stops the run, the best
parameters so far are kept, and every ``checkpoint_every`` periods the learner is saved:
parameters, optimizer state, target parameters, replay buffer, PRNG key and the best
parameters. gymnasium environments cannot be saved, so a resumed run restarts its
environments from a fresh reset (the episodes running at the checkpoint are lost) and is
not bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import time
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ..errors import ConfigError, NonFiniteError
from ..train.hooks import RunHooks
from .dqn import DQNConfig
from .exploration import linear_epsilon
from .gym_adapter import HostLoopState, host_loop_init, run_host_loop
from .run_compiled import RunOptions, period_record


class HostCheckpoint(NamedTuple):
    """What a host-loop checkpoint holds: the learner and the best parameters so far.

    Attributes:
      state: the host loop's learner, buffer and key.
      best_params: parameters with the best greedy evaluation so far.
      best_eval_return: float32 scalar, their evaluation return (-inf before the first).
    """

    state: HostLoopState
    best_params: Any
    best_eval_return: Any


class HostRun(NamedTuple):
    """Result of :func:`train_host`: final checkpoint contents, all period records, and the
    periods already done when this process started."""

    final: HostCheckpoint
    records: list[dict]
    start_period: int


def discrete_actions(envs) -> int:
    """Number of actions of a vector env with a Discrete action space, else ConfigError."""
    space = envs.single_action_space
    if not hasattr(space, "n"):
        raise ConfigError(f"DQN needs a discrete action space; this environment has {space}; "
                          "choose an environment with discrete actions")
    return int(space.n)


def train_host(cfg: DQNConfig, envs, network, eval_fn: Callable[[Any], float],
               opts: RunOptions, hooks: RunHooks | None = None) -> HostRun:
    """Train (or, when the run restores a saved learner, continue) DQN on gymnasium
    environments.

    Args:
      cfg: hyperparameters (``cfg.num_envs`` copies in ``envs``).
      envs: a vector env from :func:`dlfun.rl.make_vector_env`.
      network: the Q-network.
      eval_fn: ``eval_fn(params) -> greedy return``, run after every period.
      opts: periods, the seed (exactly one).
      hooks: the run driving the loop (restore, one record per period with the fields of
        :func:`dlfun.rl.run_compiled.train_compiled`, checkpoints, stop requests).

    Returns:
      A :class:`HostRun`.
    """
    if opts.vmapped:
        raise ConfigError("gymnasium runs train one seed at a time; drop --num-seeds (or run "
                          "each --seed separately)")
    hooks = hooks or RunHooks()
    key = jax.random.key(opts.seeds[0])
    obs, _ = envs.reset(seed=opts.seeds[0])
    state = host_loop_init(cfg, network, key, obs)
    best = HostCheckpoint(state, jax.tree.map(jnp.copy, state.train_state.params),
                          jnp.full((), -jnp.inf, jnp.float32))
    # arrays throughout: a fresh TrainState counts its steps in a Python int
    saved, position = hooks.restore(opts.name, jax.tree.map(jnp.asarray, _checkpoint_form(best)),
                                    "period")
    start = 0
    if position is not None:
        best, start = _from_checkpoint_form(saved), int(position["period"])
    bar = hooks.progress(opts.periods - start, opts.name)
    tracker = _PeriodHandler(cfg, opts, hooks, bar, best, time.perf_counter())
    try:
        run_host_loop(cfg, envs, network, key, opts.periods * cfg.iterations_per_eval,
                      seed=opts.seeds[0], eval_fn=eval_fn, on_period=tracker,
                      state=best.state if start else None,
                      start_iteration=cfg.prefill_iterations + start * cfg.iterations_per_eval
                      if start else 0)
    finally:
        bar.close()
    return HostRun(tracker.best, [r for r in hooks.records() if "period" in r], start)


class _PeriodHandler:
    """The host loop's ``on_period``: NaN check, record, best parameters, end of period."""

    def __init__(self, cfg, opts, hooks: RunHooks, bar, best: HostCheckpoint,
                 start_time: float):
        self.cfg, self.opts, self.hooks, self.bar = cfg, opts, hooks, bar
        self.best, self.start_time = best, start_time

    def __call__(self, state: HostLoopState, raw: dict) -> None:
        cfg, period = self.cfg, raw["period"]
        if not np.isfinite(raw["loss"]):
            raise NonFiniteError.at_step(
                raw["env_steps"], f"training stopped: the DQN loss became non-finite in the "
                f"period ending at env step {raw['env_steps']}")
        better = raw["eval_return"] >= float(self.best.best_eval_return)
        params = jax.tree.map(jnp.copy, state.train_state.params) if better else \
            self.best.best_params  # copied: the next update donates the state's arrays
        self.best = HostCheckpoint(state, params, jnp.float32(max(
            raw["eval_return"], float(self.best.best_eval_return))))
        metrics = {k: np.asarray([raw[k]]) for k in
                   ("env_steps", "eval_return", "train_return", "loss", "episodes")}
        metrics["epsilon"] = np.asarray([linear_epsilon(raw["env_steps"], cfg.epsilon_start,
                                                        cfg.epsilon_end, cfg.epsilon_decay_steps)])
        record = period_record(metrics, period, time.perf_counter() - self.start_time)
        self.hooks.record(record, step=record["env_steps"], prefix=f"{self.opts.name}/")
        self.bar.update(1)
        position = {"period": period, "env_steps": record["env_steps"]}
        # wait for each save: the next update donates the state's arrays
        self.hooks.end_of_unit(self.opts.name, period, self.opts.periods, period,
                               _checkpoint_form(self.best), position, wait=True)
        if self.hooks.stop_requested() and period < self.opts.periods:
            self.hooks.interrupt(self.opts.name, period, _checkpoint_form(self.best), position)


def _checkpoint_form(best: HostCheckpoint) -> HostCheckpoint:
    """The checkpoint with its PRNG key as raw key data (what orbax stores)."""
    return best._replace(state=best.state._replace(key=jax.random.key_data(best.state.key)))


def _from_checkpoint_form(saved: HostCheckpoint) -> HostCheckpoint:
    """Inverse of :func:`_checkpoint_form` (restored arrays as JAX arrays)."""
    saved = jax.tree.map(jnp.asarray, saved)
    state = saved.state._replace(key=jax.random.wrap_key_data(saved.state.key))
    return saved._replace(state=state)
