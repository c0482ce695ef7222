"""What the parallel experiments share: their flags, start-up (processes and simulated
devices) and the printed/saved report."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import jax
import numpy as np

from ..data.images import load_image_dataset
from ..errors import CheckpointError, ConfigError
from ..optim import OPTIMIZERS, make_optimizer
from ..train.checkpoint import Checkpointer
from ..train.experiment import run_experiment
from ..train.fit import run_keys
from ..train.metrics_log import MetricsLog
from ..train.rundir import RunConfig, RunDir, check_choice, check_positive
from .devices import simulate_cpu_devices
from .distributed import gather_to_host, initialize, local_rows, place_like
from .measure import SIMULATED_NOTE, measure_scheme
from .schemes import SchemeOptions, build_scheme


@dataclasses.dataclass(frozen=True)
class ParallelConfig(RunConfig):
    """Flags shared by the parallel experiments."""

    devices: int = 8
    """Devices in all (simulated CPU devices; with dlfun.launch: all processes together)."""
    epochs: int = 3
    """Passes over the training set (digits)."""
    batch_size: int = 128
    """Global batch size (all devices together); a multiple of --devices."""
    max_steps: int | None = None
    """Stop after this many steps (default: all epochs)."""
    learning_rate: float = 0.05
    """Learning rate."""
    optimizer: str = "momentum"
    """One of sgd, momentum, nesterov, adam, adamw, rmsprop."""
    check: bool = True
    """Also train on one device with the same batches and keys and compare the parameters."""
    tolerance: float = 1e-4
    """Largest parameter difference from the one-device run that counts as the same result."""
    split_seed: int = 0
    """Seed of the train/validation/test split of the digits."""
    checkpoint_every: int = 10
    """Save the whole training state every this many steps (0: only at the end); process 0
    writes it, every process reads it back on --resume."""

    def __post_init__(self):
        super().__post_init__()
        check_positive(self, "devices", "epochs", "batch_size", "tolerance")
        check_choice(self, "optimizer", OPTIMIZERS)
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ConfigError(f"--learning-rate must be positive, got {self.learning_rate}")
        if self.num_seeds != 1:
            raise ConfigError("the parallel experiments train one model; drop --num-seeds")
        if self.checkpoint_every < 0:
            raise ConfigError(f"--checkpoint-every must be >= 0 (0: only at the end), got "
                              f"{self.checkpoint_every}")
        if self.batch_size % self.devices:
            raise ConfigError(f"--batch-size {self.batch_size} must be a multiple of --devices "
                              f"{self.devices}")


def start_devices(num_devices: int) -> tuple[int, int]:
    """Join a multi-process run if launched as one, else simulate ``num_devices`` devices.

    Returns:
      ``(process_index, process_count)``.
    Raises:
      ConfigError: fewer devices than asked for (e.g. a launcher giving too few).
    """
    index, count = initialize()
    if count == 1:
        simulate_cpu_devices(num_devices)
    if jax.device_count() < num_devices:
        raise ConfigError(f"--devices {num_devices} but the {count} process(es) have "
                          f"{jax.device_count()} devices in all; pass --devices "
                          f"{jax.device_count()} or give the launcher more --devices-per-proc")
    return index, count


def run_parallel_experiment(name: str, cfg: ParallelConfig, scheme: str,
                            options: SchemeOptions) -> dict:
    """Train ``scheme`` on the digits, print and return its report (process 0 writes the
    run directory: config, metrics.jsonl, summary.json, final_params.npz)."""
    index, _ = start_devices(cfg.devices)

    def body(run: RunDir | None, log: MetricsLog) -> dict:
        data = load_image_dataset("digits", jax.random.key(cfg.split_seed))
        train, test = data.splits.train, data.splits.test
        keys = run_keys(cfg.seed)
        built = build_scheme(scheme, cfg.devices, train.x[:cfg.batch_size],
                             make_optimizer(cfg.optimizer, cfg.learning_rate), keys[0], options)
        # Process 0 writes checkpoints; the others only read them, on --resume (opening them
        # earlier could create folders in a run directory process 0 has not opened yet).
        ckpt = _checkpointer(cfg, run, scheme) if index == 0 or cfg.resume else None
        state, start = _restore(ckpt, built.state) if cfg.resume else (None, 0)
        total = _total_steps(cfg, len(train))

        def after_step(t: int, state) -> None:
            if t == total or (cfg.checkpoint_every and t % cfg.checkpoint_every == 0):
                host = gather_to_host(state)  # a collective: every process takes part
                if index == 0:
                    ckpt.save(t, host, {"step": t})

        try:
            report, params = measure_scheme(built, train, test, keys, cfg.epochs,
                                            cfg.batch_size, cfg.max_steps,
                                            local_rows(cfg.batch_size), cfg.check, state=state,
                                            start_step=start, after_step=after_step)
        finally:
            if ckpt is not None:
                ckpt.close()
        report["start_step"] = start
        if "max_param_diff_vs_1_device" in report:
            report["matches_1_device"] = report["max_param_diff_vs_1_device"] <= cfg.tolerance
        if run is not None:
            save_params(run.file("final_params.npz"), params)
            log.log(dict(step=report["steps"], train_loss=report["last_loss"]),
                    step=report["steps"])
        if index == 0:
            print_report(report, cfg)
        return report

    if index == 0:
        return run_experiment(name, cfg, body)
    return body(None, MetricsLog(None))


def _checkpointer(cfg: ParallelConfig, run: RunDir | None, scheme: str) -> Checkpointer:
    """This process's view of the run's checkpoints (process 0 has the run directory; the
    others find it through --run-dir, which --resume requires)."""
    root = run.path if run is not None else Path(cfg.run_dir or ".")
    return Checkpointer(root / "checkpoints" / scheme, cfg.keep_checkpoints, process_local=True)


def _restore(ckpt: Checkpointer, initial: Any) -> tuple[Any, int]:
    """The newest checkpoint, laid out like ``initial``, and its step."""
    found = ckpt.restore_latest(gather_to_host(initial))
    if found is None:
        raise CheckpointError(f"cannot resume: no checkpoint in {ckpt.directory}; start the "
                              "run again without --resume")
    host, _, step = found
    return place_like(jax.device_get(host), initial), step


def _total_steps(cfg: ParallelConfig, n_train: int) -> int:
    steps = cfg.epochs * (n_train // cfg.batch_size)
    return steps if cfg.max_steps is None else min(steps, cfg.max_steps)


def save_params(path: Path, params: Any) -> None:
    """Write a parameter pytree as ``.npz``, one array per leaf named by its tree path
    (``Dense_0/kernel``)."""
    def name(path) -> str:
        return "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)

    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    np.savez(path, **{name(k): np.asarray(v) for k, v in leaves})


def load_params(path: Path) -> dict[str, np.ndarray]:
    """The arrays written by :func:`save_params`, by tree path."""
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def print_report(r: dict, cfg: ParallelConfig) -> None:
    """The human summary: timing, collectives vs ideal, memory, agreement with one device."""
    print(f"\n{r['scheme']} on {r['devices']} devices ({r['mesh']}), {r['processes']} "
          f"process(es), global batch {cfg.batch_size}")
    print(f"  step time {r['step_ms']:.2f} ms (median of {r['steps'] - 1} steps after the "
          f"first), {r['images_per_s']:.0f} images/s")
    print(f"  note: {SIMULATED_NOTE}")
    c = r["collectives"]
    kinds = ", ".join(f"{k} x{v['count']} ({v['bytes_per_device']:,} B)"
                      for k, v in c["ops"].items()) or "none"
    print(f"  collectives per step: {kinds}")
    print(f"  bytes sent per device {c['bytes_per_device']:,}; data-parallel ideal (ring "
          f"all-reduce of {r['memory']['param_bytes']:,} gradient bytes) "
          f"{c['ideal_bytes_per_device']:,}; ratio {c['ratio_to_ideal']:.3f}")
    m = r["memory"]
    print(f"  parameters per device {m['param_bytes_per_device']:,} of {m['param_bytes']:,} "
          f"bytes ({m['param_fraction']:.3f}; 1/N = {1 / r['devices']:.3f})")
    if "bubble_fraction" in r:
        print(f"  pipeline: {r['stages']} stages, {r['microbatches']} micro-batches, bubble "
              f"fraction (S-1)/(M+S-1) = {r['bubble_fraction']:.3f}")
    if "max_param_diff_vs_1_device" in r:
        verdict = "same" if r["matches_1_device"] else "DIFFERENT"
        print(f"  vs 1 device: max |parameter difference| {r['max_param_diff_vs_1_device']:.2e}"
              f" (tolerance {cfg.tolerance:g}): {verdict}")
