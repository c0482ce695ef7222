"""DQN on CartPole, MinAtar-scale Breakout (pure JAX, compiled) or any gymnasium environment.

``--env cartpole`` (default) and ``--env breakout`` train dlfun's pure-JAX environments with
the scan-compiled loop; ``--num-seeds K`` trains K seeds vmapped in one program. ``--env
gym:<id>`` (e.g. ``gym:CartPole-v1``, ``gym:ALE/Breakout-v5`` with the standard Atari
preprocessing) steps real gymnasium environments in a host loop around the same agent code;
it needs ``pip install 'dlfun[rl]'`` (``'dlfun[atari]'`` for Atari) and trains one seed.
Full Atari training is GPU-scale (10M agent steps); on a CPU run ``--preset smoke``.

The run directory gets metrics.jsonl (one record per evaluation period), summary.json,
returns.png (greedy and training returns over seeds: mean, min-max band, each seed),
episode.gif and episode.png (a greedy episode of the best policy), TensorBoard files,
checkpoints/dqn (the whole training state, every --checkpoint-every periods) and
checkpoints/policy (the best parameters of each seed). After CartPole training the saved
policy also plays gymnasium's own CartPole-v1 (--gym-eval-episodes) when gymnasium is
installed.

--resume continues from the newest checkpoint. Pure-JAX runs restore everything (learner,
target network, replay buffer, environment states, keys, counters) and end bit-identical to
an uninterrupted run; gymnasium runs restore the learner, optimizer, target network, replay
buffer and key, but their environments restart from a fresh reset (gymnasium cannot save
them), so a resumed gym run differs from an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from dlfun.runs.cli import run_cli
from dlfun.errors import ConfigError
from dlfun.platform import request_cpu_devices
from dlfun.plots import plot_frames, plot_seed_bands, save_gif
from dlfun.rl.dqn import DQNConfig
from dlfun.rl.evaluate import evaluate_episodes, greedy_rollout
from dlfun.rl.gym_adapter import (evaluate_gymnasium, gymnasium_rollout, import_gymnasium,
                                  make_atari_env, make_vector_env)
from dlfun.rl.policy import load_policy, save_policy
from dlfun.rl.presets import EnvSpec, dqn_preset, jax_env, q_network
from dlfun.rl.render import observation_frames
from dlfun.rl.run_compiled import RunOptions, train_compiled
from dlfun.rl.run_host import discrete_actions, train_host
from dlfun.runs.experiment import run_experiment
from dlfun.runs.config import RunConfig, check_choice, check_positive

NAME = "dqn"
DQN_FIELDS = tuple(f.name for f in dataclasses.fields(DQNConfig) if f.name != "num_evals")
"""Config fields passed on to the library's DQNConfig (its num_evals is --periods)."""
RENDER_MAX_STEPS = 2_000
"""Longest gymnasium episode rendered (a greedy Atari policy that never serves goes on)."""
GYM_COUNTERPART = {"cartpole": "CartPole-v1"}
"""gymnasium ids whose dynamics dlfun's pure-JAX environments reproduce."""
SOLVE_STEP_LIMIT = 200_000
"""Environment steps per seed within which "solved" is counted (the CartPole target)."""


@dataclasses.dataclass(frozen=True)
class Config(RunConfig):
    preset_by: ClassVar[str] = "env"
    env: str = "cartpole"
    """cartpole or breakout (pure JAX, compiled), or gym:<id> (e.g. gym:CartPole-v1,
    gym:ALE/Breakout-v5). It picks the preset's values: cartpole, breakout, atari (gym:ALE/...)
    or gym (any other gymnasium id, CartPole's values)."""
    periods: int = 40
    """Evaluation periods to train; raise it with --resume to extend a run."""
    iterations_per_eval: int = 625
    """Iterations (every env steps once, then the updates) per evaluation period."""
    num_envs: int = 8
    """Environments stepped together per seed."""
    buffer_size: int = 20_000
    """Replay capacity in transitions."""
    batch_size: int = 128
    """Transitions per gradient update."""
    learning_starts: int = 1_000
    """Random-action environment steps that fill the buffer before learning."""
    updates_per_iteration: int = 1
    """Gradient updates per iteration."""
    learning_rate: float = 2e-3
    """Adam step size."""
    gamma: float = 0.99
    """Discount factor."""
    max_grad_norm: float = 10.0
    """Global-norm gradient clipping threshold."""
    huber_delta: float = 1.0
    """Huber loss threshold between its quadratic and linear parts (very large: MSE)."""
    double_dqn: bool = True
    """Double DQN: the online network picks the next action, the target network values it."""
    target_update_interval: int = 100
    """Updates between target-network updates."""
    target_tau: float = 1.0
    """Target update target <- tau * online + (1 - tau) * target; 1 is a hard copy."""
    epsilon_start: float = 1.0
    """Exploration rate at environment step 0."""
    epsilon_end: float = 0.05
    """Exploration rate after the ramp."""
    epsilon_decay_steps: int = 10_000
    """Environment steps over which exploration falls from --epsilon-start to --epsilon-end."""
    eval_episodes: int = 10
    """Greedy episodes per evaluation."""
    eval_epsilon: float = 0.0
    """Exploration rate during evaluation (0: greedy)."""
    hidden: tuple[int, ...] = (120, 84)
    """Hidden widths of the MLP Q-network (vector observations; Breakout/Atari use conv nets)."""
    checkpoint_every_periods: int = 10
    """Save the whole training state every this many evaluation periods (and after the last,
    and on SIGTERM/SIGINT)."""
    gym_eval_episodes: int = 20
    """Episodes the saved policy plays in gymnasium after training (CartPole-v1 for
    cartpole); 0: skip."""
    random_episodes: int = 100
    """Episodes of a uniformly random policy, the baseline the returns are compared with."""
    render: bool = True
    """Render a greedy episode of the best policy (episode.gif and episode.png)."""
    compile_cache: str | None = None
    """Folder for JAX's persistent compilation cache: repeat runs skip compiling (off by
    default)."""
    cpu_devices: int = 0
    """With --num-seeds > 1 on a CPU, split the seeds over this many simulated devices, one
    thread each (0: one per core; 1: off)."""

    ranges: ClassVar[dict[str, tuple]] = {
        "num_seeds": (1, 1024), "periods": (1, 10**6), "gamma": (0.0, 1.0),
        "learning_rate": (1e-12, None), "max_grad_norm": (1e-9, 1e9),
        "huber_delta": (1e-9, None), "target_tau": (1e-9, 1.0), "epsilon_start": (0.0, 1.0),
        "epsilon_end": (0.0, 1.0), "eval_epsilon": (0.0, 1.0),
        "eval_episodes": (1, 10**5), "gym_eval_episodes": (0, 10**5),
        "random_episodes": (1, 10**6), "cpu_devices": (0, 1024)}
    nonfinite_advice: ClassVar[str] = "lower --learning-rate or --max-grad-norm"

    # Fields that may change on --resume: they extend a run or only change its report.
    resumable_changes: ClassVar[frozenset] = frozenset({
        "periods", "checkpoint_every_periods", "keep_checkpoints", "gym_eval_episodes",
        "random_episodes", "render", "compile_cache"})

    def unused_because(self, name: str) -> str | None:
        if name == "cpu_devices" and self.num_seeds == 1:
            return "with --num-seeds 1 (it splits the seeds over devices)"
        return super().unused_because(name)

    def __post_init__(self):
        super().__post_init__()
        check_choice(self, "preset", ("default", "smoke"))
        spec = EnvSpec.parse(self.env)
        check_positive(self, "checkpoint_every_periods", "random_episodes", "periods",
                       "iterations_per_eval", "num_envs", "buffer_size", "batch_size",
                       "updates_per_iteration", "target_update_interval", "eval_episodes")
        for name in ("learning_starts", "epsilon_decay_steps"):
            if getattr(self, name) < 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 0, got "
                                  f"{getattr(self, name)}")
        if not math.isfinite(self.learning_rate):
            raise ConfigError(f"--learning-rate must be a finite number, got {self.learning_rate}")
        if self.cpu_devices < 0:
            raise ConfigError(f"--cpu-devices must be >= 0, got {self.cpu_devices}")
        if self.gym_eval_episodes < 0:
            raise ConfigError(f"--gym-eval-episodes must be >= 0, got {self.gym_eval_episodes}")
        if spec.gym_id and self.num_seeds > 1:
            raise ConfigError("--num-seeds > 1 is for the compiled environments (cartpole, "
                              "breakout); gymnasium runs train one seed: use --seed")
        dqn = self.dqn  # validates the combined DQN settings now, not mid-run
        if dqn.buffer_size < dqn.batch_size:
            raise ConfigError(f"the replay buffer ({dqn.buffer_size} transitions) is smaller "
                              f"than a batch ({dqn.batch_size}); raise --buffer-size or lower "
                              f"--batch-size")

    @property
    def env_spec(self) -> EnvSpec:
        """The parsed ``--env``."""
        return EnvSpec.parse(self.env)

    @classmethod
    def preset_key(cls, value: str) -> str:
        """The environment family of ``--env``: each preset holds one config per family."""
        return EnvSpec.parse(value).family

    @property
    def dqn(self) -> DQNConfig:
        """The library's DQN settings of this run."""
        return DQNConfig(num_evals=self.periods, **{f: getattr(self, f) for f in DQN_FIELDS})

    @property
    def seeds(self) -> tuple[int, ...]:
        """Seeds of the runs: seed, seed + 1, ..., seed + num_seeds - 1."""
        return tuple(range(self.seed, self.seed + self.num_seeds))


FAMILY_ENV = {"cartpole": "cartpole", "breakout": "breakout", "gym": "gym:CartPole-v1",
              "atari": "gym:ALE/Breakout-v5"}
"""Each environment family's --env in the presets (a given --env replaces it)."""
SMOKE = dict(preset="smoke", checkpoint_every_periods=2, gym_eval_episodes=5, random_episodes=50)


def _preset_entry(family: str, preset: str) -> Config:
    tuned = dqn_preset(EnvSpec.parse(FAMILY_ENV[family]), preset)
    return Config(env=FAMILY_ENV[family], periods=tuned.num_evals,
                  **{f: getattr(tuned, f) for f in DQN_FIELDS},
                  **(SMOKE if preset == "smoke" else {}))


PRESETS = {preset: {family: _preset_entry(family, preset) for family in FAMILY_ENV}
           for preset in ("default", "smoke")}
"""One complete config per preset and environment family (the tuned settings of
:mod:`dlfun.rl.presets`)."""


def main(cfg: Config) -> dict:
    """Train DQN on ``cfg.env``; return the summary (also written to summary.json)."""
    spec = cfg.env_spec
    if spec.gym_id:
        check_gymnasium_env(spec)  # before the run directory exists: a clear one-line error
    if cfg.compile_cache:
        jax.config.update("jax_compilation_cache_dir", cfg.compile_cache)
    if cfg.num_seeds > 1:
        request_cpu_devices(cfg.cpu_devices or os.cpu_count() or 1)

    def body(run, log):
        train = train_gym if spec.gym_id else train_pure_jax
        return dict(env=cfg.env, num_seeds=cfg.num_seeds, **train(cfg, spec, run, log))

    return run_experiment(NAME, cfg, body)


def check_gymnasium_env(spec: EnvSpec) -> None:
    """gymnasium (and ale-py for Atari) installed and the id registered, else ConfigError."""
    gym = import_gymnasium()
    if spec.is_atari:
        make_atari_env(spec.gym_id).close()  # raises the ale-py advice when it is missing
        return
    if spec.gym_id not in gym.envs.registry:
        raise ConfigError(f"--env {spec.name}: gymnasium has no environment {spec.gym_id!r}; "
                          "list them with python -c 'import gymnasium; "
                          "gymnasium.pprint_registry()'")


# ----------------------------------------------------------------------------- pure JAX


def train_pure_jax(cfg: Config, spec: EnvSpec, run, log) -> dict:
    """The compiled loop on cartpole/breakout, then policy, baseline, plots, render, gym check."""
    env, dqn = jax_env(spec), cfg.dqn
    network = q_network(spec, env.obs_shape, env.num_actions, cfg.hidden, **cfg.model_dtypes)
    opts = RunOptions(dqn.num_evals, cfg.seeds, max_devices=cfg.cpu_devices or None)
    result = train_compiled(dqn, env, network, opts, run)
    best = result.carry.best_params
    best_returns = np.atleast_1d(np.asarray(result.carry.best_eval_return)).tolist()
    random = evaluate_episodes(env, network.apply, _seed_slice(best, 0, opts),
                               jax.random.key(10_000 + cfg.seed), cfg.random_episodes, 1.0)
    summary, policy_dir = save_and_report(cfg, spec, run, result.records, best, best_returns,
                                          float(random.mean()))
    best_seed = int(np.argmax(best_returns))
    if cfg.render:
        rollout = jax.jit(lambda p, k: greedy_rollout(env, network.apply, p, k))(
            _seed_slice(best, best_seed, opts), jax.random.key(20_000 + cfg.seed))
        obs = np.asarray(rollout.obs)[: int(rollout.length) + 1]
        summary["render"] = render_episode(cfg.env, obs, float(rollout.episode_return), run)
    summary["gymnasium_eval"] = gymnasium_check(cfg, network, policy_dir, best, opts)
    return summary


def _seed_slice(tree: Any, index: int, opts: RunOptions) -> Any:
    """Seed ``index`` of a per-seed stacked pytree (the tree itself for a single seed)."""
    return jax.tree.map(lambda a: a[index], tree) if opts.vmapped else tree


def gymnasium_check(cfg: Config, network, policy_dir, template, opts: RunOptions) -> dict | str:
    """Load the saved policy and play ``cfg.gym_eval_episodes`` episodes of the gymnasium
    counterpart with each seed's parameters (or say why not)."""
    gym_id = GYM_COUNTERPART.get(cfg.env)
    if gym_id is None:
        return f"skipped: {cfg.env} has no gymnasium counterpart"
    if cfg.gym_eval_episodes == 0:
        return "skipped: --gym-eval-episodes 0"
    try:
        import_gymnasium()
    except ConfigError:
        return "skipped: gymnasium not installed (pip install 'dlfun[rl]')"
    params, _ = load_policy(policy_dir, template)
    per_seed = [evaluate_gymnasium(network.apply, _seed_slice(params, k, opts), gym_id,
                                   episodes=cfg.gym_eval_episodes, seed=1000 * (k + 1))
                for k in range(cfg.num_seeds)]
    means = [float(r.mean()) for r in per_seed]
    return dict(env=gym_id, episodes=cfg.gym_eval_episodes, policy="best greedy evaluation",
                mean_return=float(np.mean(means)), mean_return_each=means,
                min_return=float(min(r.min() for r in per_seed)))


# ----------------------------------------------------------------------------- gymnasium


def gym_env_makers(spec: EnvSpec) -> tuple[Any, Any]:
    """``(training env, evaluation env)`` for :func:`make_vector_env` / evaluation: Atari games
    get the DQN preprocessing, and are evaluated on unclipped rewards."""
    if not spec.is_atari:
        return spec.gym_id, spec.gym_id
    return (lambda: make_atari_env(spec.gym_id)), (lambda: make_atari_env(spec.gym_id,
                                                                           clip_rewards=False))


def train_gym(cfg: Config, spec: EnvSpec, run, log) -> dict:
    """The host loop on a gymnasium environment, then policy, baseline, plots, render."""
    dqn = cfg.dqn
    make_env, eval_env = gym_env_makers(spec)
    envs = make_vector_env(make_env, dqn.num_envs)
    network = q_network(spec, envs.single_observation_space.shape, discrete_actions(envs),
                        cfg.hidden, **cfg.model_dtypes)

    def greedy_return(params) -> float:
        return float(evaluate_gymnasium(network.apply, params, eval_env, dqn.eval_episodes,
                                        seed=10_000, epsilon=dqn.eval_epsilon).mean())

    opts = RunOptions(dqn.num_evals, cfg.seeds)
    result = train_host(dqn, envs, network, greedy_return, opts, run)
    envs.close()
    best = result.final.best_params
    random = evaluate_gymnasium(network.apply, best, eval_env, cfg.random_episodes, seed=20_000,
                                epsilon=1.0)
    summary, policy_dir = save_and_report(cfg, spec, run, result.records, best, [float(
        result.final.best_eval_return)], float(random.mean()))
    params, _ = load_policy(policy_dir, best)
    if cfg.gym_eval_episodes:
        returns = evaluate_gymnasium(network.apply, params, eval_env, cfg.gym_eval_episodes,
                                     seed=30_000, epsilon=dqn.eval_epsilon)
        summary["gymnasium_eval"] = dict(env=spec.gym_id, episodes=cfg.gym_eval_episodes,
                                         mean_return=float(returns.mean()),
                                         min_return=float(returns.min()))
    if cfg.render:
        obs, episode_return = gymnasium_rollout(network.apply, params, eval_env, seed=40_000,
                                                max_steps=RENDER_MAX_STEPS)
        summary["render"] = render_episode(cfg.env, obs, episode_return, run)
    return summary


# ----------------------------------------------------------------------------- report


def save_and_report(cfg: Config, spec: EnvSpec, run, records: list[dict], best: Any,
                    best_returns: list[float], random_return: float) -> tuple[dict, Any]:
    """Save the best parameters as the run's policy checkpoint; the summary figures and plot.

    Returns:
      ``(summary, policy checkpoint folder)``.
    """
    policy_dir = run.file("checkpoints/policy")
    save_policy(policy_dir, best, dict(env=cfg.env, seeds=list(cfg.seeds), hidden=list(
        cfg.hidden), best_eval_return_each=best_returns), step=len(records))
    summary = report(cfg, spec, run, records, random_return, best_returns)
    summary["policy_checkpoint"] = str(policy_dir)
    return summary, policy_dir


def report(cfg: Config, spec: EnvSpec, run, records: list[dict], random_return: float,
           best_returns: list[float]) -> dict:
    """Summary figures and the return curves plot from the period records."""
    if not records:
        raise ConfigError("no evaluation period finished; raise --periods")
    last = records[-1]
    summary = dict(periods=last["period"], env_steps_per_seed=last["env_steps"],
                   final_eval_return=last["eval_return"],
                   final_eval_return_each=each(last, "eval_return"),
                   best_eval_return_each=best_returns, random_return=random_return,
                   random_episodes=cfg.random_episodes,
                   train_wall_s=last["wall_s"], **solve_stats(spec, records, cfg.num_seeds))
    x = np.asarray([r["env_steps"] for r in records])
    panels = {name: np.asarray([[np.nan if v is None else v for v in each(r, name)]
                                for r in records], np.float64).T
              for name in ("eval_return", "train_return", "loss")}
    refs = {name: [(random_return, "random policy")] for name in ("eval_return", "train_return")}
    if spec.solved_return is not None:
        refs["eval_return"].append((spec.solved_return, "solved"))
    plot_seed_bands(x, panels, run.file("returns.png"), references=refs,
                    title=f"DQN on {cfg.env}: {cfg.num_seeds} seed(s)")
    summary["plots"] = ["returns.png"]
    return summary


def each(record: dict, name: str) -> list:
    """The per-seed list ``record[name + "_each"]`` (metrics.jsonl keeps one seed's as a
    scalar)."""
    values = record[f"{name}_each"]
    return list(values) if isinstance(values, (list, tuple)) else [values]


def solve_stats(spec: EnvSpec, records: list[dict], num_seeds: int) -> dict:
    """Per seed, the first env step and wall time with greedy return >= the solved return."""
    if spec.solved_return is None:
        return {}
    steps, walls = [None] * num_seeds, [None] * num_seeds
    for r in records:
        for k, ret in enumerate(each(r, "eval_return")):
            if steps[k] is None and ret is not None and ret >= spec.solved_return:
                steps[k], walls[k] = r["env_steps"], r["wall_s"]
    within = sum(s is not None and s <= SOLVE_STEP_LIMIT for s in steps)
    return dict(solved_return=spec.solved_return, solved_env_steps_each=steps,
                solved_wall_s_each=walls, seeds_solved_within_200k=within)


def render_episode(env_name: str, observations: np.ndarray, episode_return: float, run,
                   max_gif_frames: int = 200, strip_frames: int = 16) -> dict | str:
    """episode.gif (every frame, or an even subsample of ``max_gif_frames``) and episode.png
    (``strip_frames`` frames spread over the episode)."""
    frames = observation_frames(env_name, observations)
    if frames is None:
        return f"skipped: no renderer for {env_name} observations"
    n = len(frames)
    gif_index = np.linspace(0, n - 1, min(n, max_gif_frames)).round().astype(int)
    save_gif(frames[gif_index], run.file("episode.gif"), fps=25)
    strip_index = np.unique(np.linspace(0, n - 1, min(n, strip_frames)).round().astype(int))
    plot_frames(frames[strip_index], run.file("episode.png"),
                titles=[f"t={t}" for t in strip_index], cols=8,
                title=f"greedy episode on {env_name}: return {episode_return:g}")
    return dict(files=["episode.gif", "episode.png"], steps=n - 1, episode_return=episode_return)


if __name__ == "__main__":
    run_cli(main, Config, PRESETS, prog="python -m experiments.dqn", description=__doc__)
