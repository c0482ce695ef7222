"""Checkpointed, resumable runs of the compiled DQN loop (one seed or K vmapped seeds).

The loop runs one evaluation period per call of ``jax.jit(trainer.run, donate_argnums=0)``.
Between two calls the period's metrics come back as arrays and go to ``metrics.jsonl`` and
TensorBoard, a non-finite loss stops the run (naming the environment step), the progress bar
moves, and every ``checkpoint_every`` periods the whole :class:`DQNCarry` of every seed (train
state, target parameters, replay buffer, environment states, keys, counters, best parameters)
is saved with orbax. Resuming restores the newest checkpoint and continues; because the
chunks of :func:`make_train`'s ``run`` compose exactly, a resumed run ends with the same
parameters, bit for bit, as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from ..errors import NonFiniteError
from ..train.hooks import RunHooks
from .dqn import DQNConfig
from .dqn_train import DQNCarry, make_train
from .env import Env

PER_SEED = ("eval_return", "train_return", "loss", "q")
"""Metrics logged for each seed (``<name>_each``) as well as their mean over seeds."""


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """How a compiled DQN run is driven (what is trained comes from the trainer).

    Attributes:
      periods: evaluation periods to reach (a resumed run continues up to this many).
      seeds: one seed per run; more than one trains them vmapped in one program.
      name: names the checkpoints folder and prefixes the TensorBoard tags.
      max_devices: split the seeds over at most this many local devices (None: all that
        divide the number of seeds; 1: one vmapped program on one device).
    """

    periods: int
    seeds: tuple[int, ...] = (0,)
    name: str = "dqn"
    max_devices: int | None = None

    @property
    def vmapped(self) -> bool:
        """Whether the seeds run vmapped (the carry has a leading seed axis)."""
        return len(self.seeds) > 1


class CompiledRun(NamedTuple):
    """Result of :func:`train_compiled`.

    Attributes:
      carry: the final carry (leading axis ``K`` when several seeds ran vmapped), on the
        first local device.
      records: one metrics record per period, the restored ones of a resumed run included.
      start_period: periods already done when this process started (0 unless resumed).
    """

    carry: DQNCarry
    records: list[dict]
    start_period: int


def seed_mesh(num_seeds: int, max_devices: int | None = None) -> Mesh | None:
    """A 1-D ``seeds`` mesh over as many local devices as divide ``num_seeds`` evenly.

    Args:
      num_seeds: K, the length of the seed axis.
      max_devices: use at most this many devices (None: all local devices).

    Returns:
      The mesh, or None when only one device would take part.
    """
    devices = jax.local_devices()[:max_devices]
    count = max(n for n in range(1, len(devices) + 1) if num_seeds % n == 0)
    if count == 1:
        return None
    return jax.make_mesh((count,), ("seeds",), axis_types=(AxisType.Auto,),
                         devices=devices[:count])


class SeedPrograms(NamedTuple):
    """The compiled programs of a K-seed run (see :func:`compiled_functions`)."""

    init: Callable
    one_period: Callable
    place: Callable


@functools.lru_cache(maxsize=8)
def compiled_functions(cfg: DQNConfig, env: Env, network, num_seeds: int,
                       max_devices: int | None = None) -> SeedPrograms:
    """Jitted programs for ``num_seeds`` seeds of the compiled loop.

    ``init(keys (K,), run_ids (K,)) -> carry`` and ``one_period(carry) -> (carry, metrics)``
    (which donates its carry); for K > 1 both are vmapped over seeds, and when several local
    devices divide K the seeds are split over them with ``shard_map``: on a CPU, simulated
    devices each run in their own thread, so the seeds use every core (one vmapped program
    runs its small matmuls on one core). The seeds never communicate, so the split changes
    only speed and float rounding (XLA picks matmul kernels by batch size). ``place(tree)``
    puts a per-seed stacked pytree (e.g. a restored carry) where the programs expect it.

    Cached per (hyperparameters, environment, network, K): a second run in the same process
    (a resume, a test) reuses the compiled programs.
    """
    trainer = make_train(cfg, env, network)
    if num_seeds == 1:
        return SeedPrograms(jax.jit(lambda k, r: trainer.init(k[0], r[0])),
                            jax.jit(lambda c: trainer.run(c, 1), donate_argnums=0),
                            lambda tree: tree)
    init, one_period = jax.vmap(trainer.init), jax.vmap(lambda c: trainer.run(c, 1))
    mesh = seed_mesh(num_seeds, max_devices)
    if mesh is None:
        return SeedPrograms(jax.jit(init), jax.jit(one_period, donate_argnums=0),
                            lambda tree: tree)
    spec = PartitionSpec("seeds")
    split = functools.partial(jax.shard_map, mesh=mesh, in_specs=spec, out_specs=spec,
                              check_vma=False)  # the carry mixes per-seed and loop-made arrays
    sharding = NamedSharding(mesh, spec)
    return SeedPrograms(jax.jit(split(init)), jax.jit(split(one_period), donate_argnums=0),
                        lambda tree: jax.device_put(tree, sharding))


def seed_keys(seeds: tuple[int, ...]) -> tuple[jax.Array, jax.Array]:
    """``(keys (K,), run_ids (K,))``: ``jax.random.key(s)`` for each seed, and the seeds."""
    seeds_arr = jnp.asarray(seeds, jnp.int32)
    return jax.vmap(jax.random.key)(seeds_arr), seeds_arr


def train_compiled(cfg: DQNConfig, env: Env, network, opts: RunOptions,
                   hooks: RunHooks | None = None) -> CompiledRun:
    """Train (or, when the run restores a saved carry, continue) the compiled DQN loop.

    Args:
      cfg: hyperparameters (``cfg.num_evals`` is not used: ``opts.periods`` counts).
      env: a pure-JAX environment.
      network: the Q-network (Flax module).
      opts: periods, seeds.
      hooks: the run driving the loop (:class:`dlfun.train.hooks.RunHooks`): it restores the
        carry (position ``{"period", "env_steps"}``), receives one record per period (
        ``period``, ``env_steps`` (per seed), the means over seeds of ``eval_return``,
        ``train_return``, ``loss``, ``q`` and the per-seed lists ``<name>_each``, ``epsilon``,
        ``episodes`` (ended in the period, all seeds) and ``wall_s`` (seconds since this call
        started, compilation included)), may checkpoint after each period, and stops the
        loop after a period when asked to.

    Returns:
      A :class:`CompiledRun`.

    Raises:
      NonFiniteError: a seed's loss became NaN/inf; the message names the environment step.
    """
    start_time = time.perf_counter()
    hooks = hooks or RunHooks()
    # num_evals does not enter the one-period programs: one cache entry for any run length
    programs = compiled_functions(dataclasses.replace(cfg, num_evals=1), env, network,
                                  len(opts.seeds), opts.max_devices)
    carry = programs.init(*programs.place(seed_keys(opts.seeds)))
    saved, position = hooks.restore(opts.name, checkpoint_form(carry), "period")
    start = 0
    if position is not None:
        carry, start = from_checkpoint_form(jax.tree.map(jnp.asarray, saved)), position["period"]
    carry = programs.place(carry)
    bar = hooks.progress(opts.periods - start, opts.name)
    try:
        for period in range(start, opts.periods):
            carry, metrics = programs.one_period(carry)
            metrics = _per_seed(metrics, opts)  # {name: (K,)}
            _raise_if_nonfinite(metrics, cfg, opts)
            record = period_record(metrics, period + 1, time.perf_counter() - start_time)
            hooks.record(record, step=record["env_steps"], prefix=f"{opts.name}/")
            bar.update(1)
            bar.set_postfix(greedy=f"{record['eval_return']:.4g}", refresh=False)
            position = {"period": period + 1, "env_steps": record["env_steps"]}
            # wait for each save: the next period donates the carry's buffers
            hooks.end_of_unit(opts.name, period + 1, opts.periods, period + 1,
                              checkpoint_form(carry), position, wait=True)
            if hooks.stop_requested() and period + 1 < opts.periods:
                hooks.interrupt(opts.name, period + 1, checkpoint_form(carry), position)
    finally:
        bar.close()
    # on one device again: callers slice seeds out of it (a seed-sharded array refuses that)
    carry = jax.device_put(carry, jax.local_devices()[0])
    return CompiledRun(carry, [r for r in hooks.records() if "period" in r], start)


def _per_seed(metrics: dict, opts: RunOptions) -> dict[str, np.ndarray]:
    """One period's metrics as host arrays of shape ``(K,)``."""
    return {k: np.asarray(v).reshape(len(opts.seeds)) for k, v in jax.device_get(metrics).items()}


def period_record(metrics: dict[str, np.ndarray], period: int, wall_s: float) -> dict:
    """The metrics.jsonl record of one period from per-seed ``(K,)`` metrics."""
    record = dict(period=period, env_steps=int(metrics["env_steps"][0]))
    for name in (n for n in PER_SEED if n in metrics):
        values = metrics[name].astype(np.float64)
        record[name] = float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")
        record[f"{name}_each"] = [None if np.isnan(v) else float(v) for v in values]
    record.update(epsilon=float(metrics["epsilon"][0]), episodes=int(metrics["episodes"].sum()),
                  wall_s=round(wall_s, 3))
    return record


def _raise_if_nonfinite(metrics: dict[str, np.ndarray], cfg: DQNConfig, opts: RunOptions
                        ) -> None:
    """Stop with a message naming the seed and environment step of the first NaN/inf loss."""
    bad = metrics["nonfinite_env_step"]
    if (bad < 0).all():
        return
    member = int(np.argmax(bad >= 0))
    env_step = int(bad[member])
    update = (env_step // cfg.num_envs - cfg.prefill_iterations) * cfg.updates_per_iteration
    raise NonFiniteError.at_step(
        env_step, f"training stopped: the DQN loss became non-finite at env step {env_step} "
        f"(gradient update {update}) of seed {opts.seeds[member]}")


def checkpoint_form(carry: DQNCarry) -> DQNCarry:
    """The carry with its PRNG key as raw ``uint32`` key data (what orbax stores)."""
    return carry._replace(key=jax.random.key_data(carry.key))


def from_checkpoint_form(saved: DQNCarry) -> DQNCarry:
    """Inverse of :func:`checkpoint_form`."""
    return saved._replace(key=jax.random.wrap_key_data(jnp.asarray(saved.key)))
