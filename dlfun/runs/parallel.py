"""The parallel experiments on the run layer: their flags, start-up (processes and simulated
devices), the step loop's checks, records and checkpoints, and the printed/saved report."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, ClassVar

import jax
import numpy as np

from ..data.images import load_image_dataset
from ..errors import ConfigError, DlfunError, NonFiniteError
from ..optim import OPTIMIZERS, make_optimizer
from ..parallel.devices import simulate_cpu_devices
from ..parallel.distributed import gather_to_host, initialize, local_rows, place_like
from ..parallel.measure import SIMULATED_NOTE, measure_scheme
from ..parallel.params_file import save_params
from ..parallel.schemes import SchemeOptions, build_scheme
from ..plots import _pyplot, plot_curves
from ..train.fit import run_keys
from .config import RunConfig, check_choice
from .experiment import run_experiment
from .run import Run, StopSignals


@dataclasses.dataclass(frozen=True)
class ParallelConfig(RunConfig):
    """Flags shared by the parallel experiments."""

    ranges: ClassVar[dict[str, tuple]] = {
        "devices": (1, 4096), "epochs": (1, 100_000), "batch_size": (1, 1_048_576),
        "max_steps": (1, 10**9), "learning_rate": (1e-12, None), "tolerance": (0.0, 1.0),
        "checkpoint_every_steps": (0, 10**9), "num_seeds": (1, 1)}
    hidden_flags: ClassVar[frozenset] = frozenset({"num_seeds"})  # one model per run

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
    checkpoint_every_steps: int = 10
    """Save the whole training state every this many steps (0: only at the end, and on
    SIGTERM/SIGINT); process 0 writes it, every process reads it back on --resume."""

    def unused_because(self, name: str) -> str | None:
        if name == "tolerance" and not self.check:
            return "with --no-check"
        return super().unused_because(name)

    def __post_init__(self):
        super().__post_init__()
        check_choice(self, "optimizer", OPTIMIZERS)
        if self.precision != "f32":  # and --check compares with one device to 1e-4
            raise ConfigError(f"--precision {self.precision}: the parallel experiments' "
                              f"networks (dlfun.parallel.nets) compute in float32 only; drop "
                              f"--precision")
        if self.batch_size % self.devices:
            raise ConfigError(f"--batch-size {self.batch_size} must be a multiple of --devices "
                              f"{self.devices}")


def run_parallel_experiment(name: str, cfg: ParallelConfig, scheme: str,
                            options: SchemeOptions) -> dict:
    """Train ``scheme`` on the digits, print and return its report. Process 0 owns the run
    directory (config, metrics.jsonl, summary.json, plots, final_params.npz, checkpoints);
    every process takes part in gathering the state for a checkpoint and reads it back on
    --resume."""
    index, count = start_devices(cfg.devices)
    if index == 0:
        opened = False

        def body(run: Run, log: Any) -> dict:
            nonlocal opened
            opened = True
            share_opening(None, count)
            return _train(cfg, scheme, options, run)

        try:
            return run_experiment(name, cfg, body)
        except BaseException as e:
            if not opened:  # e.g. the run directory is locked: the others must not train
                share_opening(e, count)
            raise
    share_opening(None, count)  # raises process 0's error if it could not open the run
    root = Path(cfg.run_dir or ".") / "checkpoints"
    with StopSignals() as signals:
        run = Run(None, cfg, signals, checkpoint_root=root, writer=False, process_local=True)
        try:
            return _train(cfg, scheme, options, run)
        finally:
            run.close()


OPENING_MESSAGE_BYTES = 2048


def share_opening(error: BaseException | None, count: int) -> None:
    """Process 0 tells every process whether it opened the run directory (a collective that
    every process calls once, before training; nothing with one process).

    Without it, the other processes of a run that process 0 refused (locked by another run,
    a configuration that does not match the one saved, an unwritable folder) would wait in
    the first training collective until the coordinator's timeout and end in a traceback.

    Raises:
      on processes > 0, process 0's error: ``ConfigError`` with its message for bad input
      (exit 2, the same one line), ``RuntimeError`` for anything else.
    """
    if count == 1:
        return
    if error is not None:  # every process ends with it: the CLI exits normally
        error.shared_by_all_processes = True
    from jax.experimental import multihost_utils

    verdict = np.zeros(OPENING_MESSAGE_BYTES + 1, np.uint8)
    if error is not None:
        text = str(error).encode()[:OPENING_MESSAGE_BYTES]
        verdict[0] = 2 if isinstance(error, DlfunError) else 1
        verdict[1:1 + len(text)] = np.frombuffer(text, np.uint8)
    verdict = np.asarray(multihost_utils.broadcast_one_to_all(verdict))
    if jax.process_index() == 0 or verdict[0] == 0:
        return
    message = bytes(verdict[1:]).rstrip(b"\0").decode(errors="replace")
    error = ConfigError(message) if verdict[0] == 2 else RuntimeError(
        f"process 0 failed before training: {message}")
    error.shared_by_all_processes = True
    raise error


def _train(cfg: ParallelConfig, scheme: str, options: SchemeOptions, run: Run) -> dict:
    data = load_image_dataset("digits", jax.random.key(cfg.split_seed))
    train, test = data.splits.train, data.splits.test
    keys = run_keys(cfg.seed)
    built = build_scheme(scheme, cfg.devices, train.x[:cfg.batch_size],
                         make_optimizer(cfg.optimizer, cfg.learning_rate), keys[0], options)
    steps_per_epoch = len(train) // cfg.batch_size
    total = _total_steps(cfg, len(train))
    saved, position = run.restore(scheme, gather_to_host(built.state), "step")
    state, start = (None, 0) if position is None else (
        place_like(jax.device_get(saved), built.state), int(position["step"]))
    after_step = _StepHooks(run, scheme, total, steps_per_epoch)
    report, params = measure_scheme(built, train, test, keys, cfg.epochs, cfg.batch_size,
                                    cfg.max_steps, local_rows(cfg.batch_size), cfg.check,
                                    state=state, start_step=start, after_step=after_step)
    report["start_step"] = start
    if "max_param_diff_vs_1_device" in report:
        report["matches_1_device"] = report["max_param_diff_vs_1_device"] <= cfg.tolerance
    if run.rundir is not None:
        save_params(run.file("final_params.npz"), params)
        plot_parallel_report(run, report)
        print_report(report, cfg)
    return report


class _StepHooks:
    """The step loop's ``after_step``: NaN stop, one record per epoch, checkpoints, signals.
    Gathering the state is a collective, so every process calls it at the same steps."""

    def __init__(self, run: Run, name: str, total: int, steps_per_epoch: int):
        self.run, self.name, self.total, self.per_epoch = run, name, total, steps_per_epoch
        self.losses: list[float] = []

    def __call__(self, t: int, state: Any, loss: float) -> None:
        if not math.isfinite(loss):
            raise NonFiniteError.at_step(t, f"training stopped: the loss became non-finite "
                                            f"({loss}) at step {t}")
        self.losses.append(loss)
        if t % self.per_epoch == 0 or t == self.total:
            self.run.record(dict(epoch=math.ceil(t / self.per_epoch), step=t,
                                 train_loss=float(np.mean(self.losses))), step=t)
            self.losses = []
        every = self.run.cfg.checkpoint_every
        stop = self._stop_agreed() and t < self.total
        if t == self.total or stop or (every and t % every == 0):
            host = gather_to_host(state)  # a collective: every process takes part
            if stop:
                self.run.interrupt(self.name, t, host, {"step": t})
            self.run.save(self.name, t, host, {"step": t})


    def _stop_agreed(self) -> bool:
        """Whether any process was asked to stop: all of them must stop at the same step
        (the checkpoint gather and the next step are collectives)."""
        mine = self.run.stop_requested()
        if jax.process_count() == 1:
            return mine
        from jax.experimental import multihost_utils
        return bool(np.any(multihost_utils.process_allgather(np.int32(mine))))


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


def _total_steps(cfg: ParallelConfig, n_train: int) -> int:
    steps = cfg.epochs * (n_train // cfg.batch_size)
    return steps if cfg.max_steps is None else min(steps, cfg.max_steps)


def plot_parallel_report(run: Run, report: dict) -> None:
    """The loss curve, and per-device parameter memory and collective bytes against their
    ideals (1/N of the parameters; a ring all-reduce of the gradient, and the scheme's own
    ideal where it has one)."""
    plt = _pyplot()
    plot_curves(run.records(), run.file("loss_curve.png"), [("train_loss",)], x="step",
                group=None, title=f"{report['scheme']} on {report['devices']} devices: training loss")
    m, c, n = report["memory"], report["collectives"], report["devices"]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    axes[0].bar(["per device", "ideal 1/N", "all"], [m["param_bytes_per_device"],
                                                     m["param_bytes"] / n, m["param_bytes"]])
    axes[0].set_title("parameter bytes")
    names, heights = ["sent per device", "all-reduce ideal"], [c["bytes_per_device"],
                                                               c["ideal_bytes_per_device"]]
    if "scheme_ideal_bytes_per_device" in c:
        names, heights = names + [f"{report['scheme']} ideal"], heights + [
            c["scheme_ideal_bytes_per_device"]]
    axes[1].bar(names, heights)
    axes[1].set_title("collective bytes per step")
    fig.suptitle(f"{report['scheme']}, {n} devices")
    fig.tight_layout()
    fig.savefig(run.file("memory_and_traffic.png"), dpi=100)
    plt.close(fig)


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
    if "scheme_ideal" in c:
        print(f"  {r['scheme']} ideal: {c['scheme_ideal']} = "
              f"{c['scheme_ideal_bytes_per_device']:,} bytes per device; measured / ideal "
              f"{c['ratio_to_scheme_ideal']:.3f}")
    m = r["memory"]
    print(f"  parameters per device {m['param_bytes_per_device']:,} of {m['param_bytes']:,} "
          f"bytes ({m['param_fraction']:.3f}; 1/N = {1 / r['devices']:.3f}; within 1/N + 5%: "
          f"{'yes' if m['within_1_over_n_plus_5_percent'] else 'no'})")
    if "task" in r:
        print(f"  {r['model']}: {r['layers']} layers, width {r['width']}, {r['heads']} heads, "
              f"MLP {r['mlp']}, vocabulary {r['vocab']}, T = {r['seq_len']}; task: {r['task']}")
    if "bubble_fraction" in r:
        print(f"  pipeline: {r['stages']} stages, {r['microbatches']} micro-batches, bubble "
              f"fraction (S-1)/(M+S-1) = {r['bubble_fraction']:.3f}")
    if "max_param_diff_vs_1_device" in r:
        verdict = "same" if r["matches_1_device"] else "DIFFERENT"
        print(f"  vs 1 device: max |parameter difference| {r['max_param_diff_vs_1_device']:.2e}"
              f" (tolerance {cfg.tolerance:g}): {verdict}; max |training loss difference| "
              f"{r['max_loss_diff_vs_1_device']:.2e}")
