"""What every experiment shares: training flags, the run wrapper and the final summary."""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Callable

from ..errors import ConfigError, NonFiniteError
from ..optim import OPTIMIZERS
from .epoch import ENSEMBLE_STRATEGIES, EPOCH_MODES
from .fit import FitOptions
from .metrics_log import MetricsLog
from .rundir import RunConfig, RunDir, check_choice, check_positive


@dataclasses.dataclass(frozen=True)
class TrainConfig(RunConfig):
    """Flags of experiments that train with :func:`dlfun.train.fit`."""

    epochs: int = 10
    """Passes over the training set."""
    batch_size: int = 64
    """Examples per training step."""
    learning_rate: float = 1e-3
    """Peak learning rate of the optimizer."""
    optimizer: str = "adam"
    """One of sgd, momentum, nesterov, adam, adamw, rmsprop."""
    weight_decay: float = 0.0
    """Weight decay (decoupled for adamw, L2 otherwise)."""
    epoch_mode: str = "auto"
    """auto, loop (Python loop of jitted steps) or scan (the epoch in one lax.scan)."""
    ensemble: str = "auto"
    """How --num-seeds models run together: auto (vmap for dense models; for convolutional
    ones on CPU, sequential), vmap, map (lax.map) or sequential (one compiled step per model)."""
    skip_nonfinite: bool = False
    """Drop updates whose loss or gradients are NaN/inf instead of stopping the run."""
    checkpoint_every: int = 1
    """Save a checkpoint every this many epochs (and at the end)."""

    def __post_init__(self):
        super().__post_init__()
        check_positive(self, "epochs", "batch_size", "checkpoint_every")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ConfigError(f"--learning-rate must be a positive number, got "
                              f"{self.learning_rate}")
        if self.weight_decay < 0:
            raise ConfigError(f"--weight-decay must be >= 0, got {self.weight_decay}")
        check_choice(self, "optimizer", OPTIMIZERS)
        check_choice(self, "epoch_mode", EPOCH_MODES)
        check_choice(self, "ensemble", ENSEMBLE_STRATEGIES)

    @property
    def num_models(self) -> int | None:
        """K for an ensemble run (``--num-seeds`` > 1), else None (one unstacked model)."""
        return self.num_seeds if self.num_seeds > 1 else None

    @property
    def nonfinite_policy(self) -> str:
        return "skip" if self.skip_nonfinite else "stop"


def fit_options(cfg: TrainConfig, name: str = "model", **overrides) -> FitOptions:
    """:class:`FitOptions` from a config's training flags."""
    opts = FitOptions(epochs=cfg.epochs, batch_size=cfg.batch_size, name=name,
                      num_models=cfg.num_models, epoch_mode=cfg.epoch_mode,
                      ensemble=cfg.ensemble, checkpoint_every=cfg.checkpoint_every,
                      keep_checkpoints=cfg.keep_checkpoints)
    return dataclasses.replace(opts, **overrides)


def run_experiment(name: str, cfg: RunConfig,
                   body: Callable[[RunDir, MetricsLog], dict]) -> dict:
    """Open the run directory, run ``body(run, log) -> summary``, write ``summary.json``.

    A run stopped by a non-finite loss still gets a ``summary.json`` (``status``
    "nonfinite" and the reason) before the error propagates.
    """
    run = RunDir.open(cfg, name)
    log = MetricsLog(run)
    t0 = time.perf_counter()
    try:
        summary = body(run, log)
    except NonFiniteError as e:
        run.write_json("summary.json", dict(status="nonfinite", reason=str(e), step=e.step,
                                            wall_seconds=round(time.perf_counter() - t0, 2)))
        raise
    finally:
        log.close()
    summary = dict(status="ok", experiment=name, **summary, resumed=run.resumed,
                   wall_seconds=round(time.perf_counter() - t0, 2), run_dir=str(run.path))
    run.write_json("summary.json", summary)
    print_summary(name, summary)
    return summary


def print_summary(name: str, summary: dict, max_items: int = 14) -> None:
    """A short human summary: the scalar figures, then where the files are."""
    print(f"\n== {name}: done ==")
    shown = 0
    for k, v in summary.items():
        if isinstance(v, (int, float, str)) and k not in ("run_dir", "status", "experiment"):
            print(f"  {k:<24s} {round(v, 4) if isinstance(v, float) else v}")
            shown += 1
            if shown >= max_items:
                break
    print(f"  files in {summary['run_dir']}: config.json metrics.jsonl summary.json *.png "
          f"tensorboard/ checkpoints/")
