"""Gymnasium environments through a host loop, with the agent code of the compiled loop.

gymnasium (extra ``rl``) and ale-py (extra ``atari``) are optional: they are imported when a
function here needs them, and a missing one raises :class:`dlfun.errors.ConfigError` saying
what to install. The host loop steps real gymnasium environments in Python and calls the same
jitted agent functions the scan-compiled loop uses (:func:`dlfun.rl.act`, :func:`replay_add`,
:func:`dlfun.rl.learn`), one iteration at a time.
"""

from __future__ import annotations

import time
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax.training.train_state import TrainState

from ..errors import ConfigError
from .dqn import DQNConfig, act, create_learner, learn
from .exploration import linear_epsilon
from .replay import ReplayBuffer, Transition, replay_add, replay_init

Array = jax.Array


def import_gymnasium():
    """The ``gymnasium`` module, or a ConfigError naming the extra to install."""
    try:
        import gymnasium
    except ImportError as err:
        raise ConfigError("gymnasium is not installed; install it with pip install 'dlfun[rl]' "
                          "(or pip install gymnasium)") from err
    return gymnasium


def make_vector_env(make_env: str | Callable[[], Any], num_envs: int):
    """``num_envs`` gymnasium environments stepped in lockstep, reset in the same step.

    Args:
      make_env: a registered id such as ``"CartPole-v1"``, or a function returning an env.
      num_envs: number of copies.

    Returns:
      A ``gymnasium.vector.SyncVectorEnv`` with ``AutoresetMode.SAME_STEP`` (the final
      observation of an ended episode is in ``info["final_obs"]``).
    """
    gym = import_gymnasium()
    factory = (lambda: gym.make(make_env)) if isinstance(make_env, str) else make_env
    return gym.vector.SyncVectorEnv([factory for _ in range(num_envs)],
                                    autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)


def vector_step(envs, actions: np.ndarray) -> tuple[np.ndarray, ...]:
    """Step a SAME_STEP vector env; returns ``(obs, reward, terminated, truncated, next_obs)``.

    ``obs`` is what the next action sees (a reset observation where an episode ended) and
    ``next_obs`` what the step reached (the transition's next observation), each
    ``(num_envs, *obs_shape)``.
    """
    obs, reward, terminated, truncated, info = envs.step(actions)
    next_obs = obs.copy()
    if "_final_obs" in info:
        for i in np.flatnonzero(info["_final_obs"]):
            next_obs[i] = info["final_obs"][i]
    return obs, reward.astype(np.float32), terminated, truncated, next_obs


class HostLoopState(NamedTuple):
    """What the host loop carries: the same learner and buffer as :class:`DQNCarry`.

    Attributes:
      train_state: online parameters, optimizer state and update count.
      target_params: target network parameters.
      buffer: the replay buffer.
      key: PRNG key for exploration and replay sampling.
    """

    train_state: TrainState
    target_params: Any
    buffer: ReplayBuffer
    key: Array


def host_agent_functions(cfg: DQNConfig):
    """Jitted ``act`` and ``store_and_learn`` around the compiled loop's agent functions.

    ``act(train_state, key, obs, epsilon) -> (actions, key)`` advances the key it is given;
    ``store_and_learn(state, transitions, do_learn) -> (state, metrics)`` donates ``state``.
    """
    def act_and_advance(train_state: TrainState, key: Array, obs: Array, epsilon: Array):
        key, act_key = jax.random.split(key)
        return act(train_state, obs, act_key, epsilon), key

    def store_and_learn(state: HostLoopState, transitions: Transition, do_learn: bool):
        buffer = replay_add(state.buffer, transitions)
        if not do_learn:
            return state._replace(buffer=buffer), {}
        key, learn_key = jax.random.split(state.key)
        train_state, target, metrics = learn(state.train_state, state.target_params, buffer,
                                             learn_key, cfg)
        return HostLoopState(train_state, target, buffer, key), metrics

    return jax.jit(act_and_advance), jax.jit(store_and_learn, static_argnums=2, donate_argnums=0)


def host_loop_init(cfg: DQNConfig, network, key: Array, example_obs: np.ndarray
                   ) -> HostLoopState:
    """Fresh learner and an empty buffer for observations like ``example_obs[0]``.

    Args:
      cfg: hyperparameters.
      network: Flax Q-network.
      key: PRNG key (parameters, then exploration and sampling).
      example_obs: ``(num_envs, *obs_shape)`` observations (shape and dtype only).
    """
    param_key, loop_key = jax.random.split(key)
    train_state, target = create_learner(network, cfg, param_key, jnp.asarray(example_obs))
    obs = np.asarray(example_obs)
    example = Transition(obs[0], np.int32(0), np.float32(0), obs[0], np.bool_(False))
    buffer = replay_init(jax.tree.map(jnp.asarray, example), cfg.buffer_size)
    return HostLoopState(train_state, target, buffer, loop_key)


def run_host_loop(cfg: DQNConfig, envs, network, key: Array, num_iterations: int, seed: int = 0,
                  eval_fn: Callable[[Any], float] | None = None,
                  on_period: Callable[[HostLoopState, dict], None] | None = None,
                  state: HostLoopState | None = None, start_iteration: int = 0
                  ) -> tuple[HostLoopState, list[dict]]:
    """Train DQN on gymnasium environments in a Python loop (not jitted across steps).

    Same schedule as :func:`dlfun.rl.make_train`: ``cfg.prefill_iterations`` random-action
    iterations, then ``num_iterations`` iterations of acting in every env and
    ``cfg.updates_per_iteration`` updates; every ``cfg.iterations_per_eval`` iterations a
    metrics record (and ``eval_fn(params)`` when given).

    Args:
      cfg: hyperparameters (``cfg.num_envs`` must equal ``envs.num_envs``).
      envs: a vector env from :func:`make_vector_env`.
      network: Flax Q-network.
      key: PRNG key (parameters, exploration, sampling); unused when ``state`` is given.
      num_iterations: learning iterations after the prefill.
      seed: seed of the environments' first reset.
      eval_fn: optional ``eval_fn(params) -> float``, e.g. a greedy gymnasium evaluation.
      on_period: optional ``on_period(state, record)`` after each metrics record (logging,
        checkpoints; it may raise to stop the run).
      state: continue from this state (e.g. restored from a checkpoint) instead of a fresh
        learner. The environments cannot be saved: they restart from a reset seeded with
        ``seed + start_iteration``, so a resumed run is not identical to an uninterrupted one.
      start_iteration: iterations (prefill included) already done by ``state``.

    Returns:
      ``(state, records)``; each record has ``period``, ``env_steps``, ``train_return``,
      ``loss``, ``wall_s`` and ``eval_return`` when ``eval_fn`` is given.
    """
    if envs.num_envs != cfg.num_envs:
        raise ConfigError(f"the vector env has {envs.num_envs} copies but cfg.num_envs="
                          f"{cfg.num_envs}; make them equal")
    obs, _ = envs.reset(seed=seed + start_iteration)
    state = host_loop_init(cfg, network, key, obs) if state is None else state
    act_fn, learn_fn = host_agent_functions(cfg)
    tally, records, start = _Tally(cfg.num_envs), [], time.perf_counter()
    for it in range(start_iteration, cfg.prefill_iterations + num_iterations):
        learning = it >= cfg.prefill_iterations
        eps = linear_epsilon(it * cfg.num_envs, cfg.epsilon_start, cfg.epsilon_end,
                             cfg.epsilon_decay_steps) if learning else 1.0
        actions, key = act_fn(state.train_state, state.key, obs, jnp.float32(eps))
        state = state._replace(key=key)
        actions = np.asarray(actions)
        next_obs_for_act, reward, terminated, truncated, next_obs = vector_step(envs, actions)
        state, metrics = learn_fn(state, Transition(obs, actions, reward, next_obs, terminated),
                                  learning)
        obs = next_obs_for_act
        tally.add(reward, terminated | truncated, metrics.get("loss"))
        done = it + 1 - cfg.prefill_iterations
        if learning and done % cfg.iterations_per_eval == 0:
            record = dict(period=done // cfg.iterations_per_eval,
                          env_steps=(it + 1) * cfg.num_envs, **tally.flush(),
                          wall_s=time.perf_counter() - start)
            if eval_fn is not None:
                record["eval_return"] = float(eval_fn(state.train_state.params))
            records.append(record)
            if on_period is not None:
                on_period(state, record)
    return state, records


class _Tally:
    """Episode returns and losses of the host loop between two records."""

    def __init__(self, num_envs: int):
        self.returns, self.ended, self.losses = np.zeros(num_envs), [], []

    def add(self, reward: np.ndarray, done: np.ndarray, loss) -> None:
        self.returns += reward
        self.ended += self.returns[done].tolist()
        self.returns[done] = 0.0
        if loss is not None:
            self.losses.append(loss)

    def flush(self) -> dict:
        """``train_return`` (NaN if no episode ended), ``episodes`` and mean ``loss``."""
        out = dict(train_return=float(np.mean(self.ended)) if self.ended else float("nan"),
                   episodes=len(self.ended), loss=float(np.mean(jax.device_get(self.losses))))
        self.ended, self.losses = [], []
        return out


def evaluate_gymnasium(apply_fn, params: Any, make_env: str | Callable[[], Any] = "CartPole-v1",
                       episodes: int = 20, seed: int = 0, epsilon: float = 0.0) -> np.ndarray:
    """Episode returns of the (epsilon-)greedy policy in a real gymnasium environment.

    Args:
      apply_fn: ``apply_fn(params, obs (1, ...)) -> (1, num_actions)``.
      params: network parameters (e.g. ``carry.best_params`` of a compiled run).
      make_env: a registered id or a function returning an env (e.g. :func:`make_atari_env`).
      episodes: number of episodes, run one after another with seeds ``seed, seed + 1, ...``.
      seed: first reset seed.
      epsilon: probability of a uniformly random action (0 = greedy).

    Returns:
      ``(episodes,)`` float64 undiscounted returns.
    """
    gym = import_gymnasium()
    env = gym.make(make_env) if isinstance(make_env, str) else make_env()
    q_fn = jax.jit(apply_fn)
    rng, returns = np.random.default_rng(seed), []
    env.action_space.seed(seed)
    for episode in range(episodes):
        obs, _ = env.reset(seed=seed + episode)
        total, done = 0.0, False
        while not done:
            if rng.random() < epsilon:  # epsilon = 1 never runs the network
                action = int(env.action_space.sample())
            else:
                action = int(np.argmax(q_fn(params, obs[None])[0]))
            obs, reward, terminated, truncated, _ = env.step(action)
            total, done = total + float(reward), terminated or truncated
        returns.append(total)
    env.close()
    return np.asarray(returns)


def gymnasium_rollout(apply_fn, params: Any, make_env: str | Callable[[], Any], seed: int = 0,
                      max_steps: int = 10_000) -> tuple[np.ndarray, float]:
    """One greedy episode in a gymnasium environment, recorded for rendering.

    Args:
      apply_fn: ``apply_fn(params, obs (1, ...)) -> (1, num_actions)``.
      params: network parameters.
      make_env: a registered id or a function returning an env.
      seed: reset seed.
      max_steps: stop after this many steps even if the episode goes on.

    Returns:
      ``(observations (T + 1, *obs_shape), episode return)``.
    """
    gym = import_gymnasium()
    env = gym.make(make_env) if isinstance(make_env, str) else make_env()
    q_fn = jax.jit(apply_fn)
    obs, _ = env.reset(seed=seed)
    frames, total, done = [obs], 0.0, False
    while not done and len(frames) <= max_steps:
        obs, reward, terminated, truncated, _ = env.step(int(np.argmax(q_fn(params, obs[None])[0])))
        frames.append(obs)
        total, done = total + float(reward), terminated or truncated
    env.close()
    return np.stack(frames), total


def make_atari_env(env_id: str = "ALE/Breakout-v5", clip_rewards: bool = True,
                   noop_max: int = 30, **make_kwargs):
    """An Atari game with the standard DQN preprocessing, via gymnasium + ale-py.

    Frame skip 4 (max over the last two frames), 84x84 greyscale, up to ``noop_max`` no-ops
    at reset, a stack of the last 4 frames as channels, and rewards clipped to their sign
    when ``clip_rewards``. Sticky actions stay as the ``-v5`` environments define them
    (override with ``repeat_action_probability=...`` in ``make_kwargs``).

    Returns:
      A gymnasium env with uint8 observations of shape ``(84, 84, 4)``.
    """
    gym = import_gymnasium()
    try:
        import ale_py
    except ImportError as err:
        raise ConfigError("ale-py is not installed; install it with pip install 'dlfun[atari]' "
                          "(the Atari ROMs ship with ale-py)") from err
    from gymnasium import wrappers

    gym.register_envs(ale_py)
    env = gym.make(env_id, frameskip=1, **make_kwargs)  # AtariPreprocessing does the skipping
    env = wrappers.AtariPreprocessing(env, noop_max=noop_max, frame_skip=4, screen_size=84,
                                      grayscale_obs=True, scale_obs=False)
    env = wrappers.FrameStackObservation(env, 4)  # (4, 84, 84)
    space = gym.spaces.Box(0, 255, (84, 84, 4), np.uint8)
    env = wrappers.TransformObservation(env, lambda obs: np.moveaxis(obs, 0, -1), space)
    if clip_rewards:
        env = wrappers.TransformReward(env, lambda r: float(np.sign(r)))
    return env
