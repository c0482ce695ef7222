"""Optimizers compared: SGD, momentum, Nesterov, RMSprop, Adam, AdamW; learning rate; batch size.

One MLP on the embedded 8x8 digits, trained by each optimizer over a grid of learning rates
from 1e-4 to 10 (log-spaced). Each optimizer's grid is ONE compiled program (the ``--sweep``
machinery: the learning rate is carried in the optimizer state, the grid's points vmapped
like seeds), and it runs through divergence: a point whose loss or gradients become NaN/inf
is frozen at its last good state while the others train on. A point counts as diverged when
that happened or its final training loss is above the loss at initialisation.

Reported: each optimizer's best learning rate (lowest final validation loss; summary
``best_learning_rate``), ``diverged`` per grid point, the final loss over the grid
(lr_sweep.png: too small learns slowly, too large diverges), training curves at too small /
best / too large a rate (lr_curves.png), and every optimizer's curves at its best rate
(loss_curves.png).

Then full batch (gradient descent) vs mini-batch vs batch 1 with one optimizer and learning
rate (``--optimizer``, ``--learning-rate``): at equal epochs (``--batch-epochs`` each), and at
equal training time (the time the slowest of them took for those epochs, measured without
compilation or evaluation; the faster ones train again for as many epochs as fit in it and
are read at their last epoch within it): batch_size.png and summary ``batch_size``. Times
come from this machine and its load; compare them within one run (a resumed run measures
the parts it trains again anew).
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import jax
import numpy as np

from dlfun import losses
from dlfun.data.images import flatten_splits, load_image_dataset
from dlfun.errors import ConfigError
from dlfun.nn import MLP
from dlfun.optim import OPTIMIZERS
from dlfun.plots import plot_series
from dlfun.runs.cli import run_cli
from dlfun.runs.config import TrainConfig, check_distinct, check_subset
from dlfun.runs.experiment import run_experiment
from dlfun.runs.sweep import format_sweep_table
from dlfun.runs.training import initial_state, train_supervised
from dlfun.train.metrics import classification_metrics
from dlfun.train.step import make_predict
from dlfun.train.sweep import member_figures, point_results

NAME = "optimizers"
CHANCE_LOSS = math.log(10)
"""Cross-entropy of a uniform guess over the 10 digits: a final loss above it has diverged."""


@dataclasses.dataclass(frozen=True)
class Config(TrainConfig):
    optimizers: tuple[str, ...] = OPTIMIZERS
    """Optimizers compared, each with its own learning-rate sweep (sgd, momentum, nesterov,
    adam, adamw, rmsprop)."""
    lr_min: float = 1e-4
    """Smallest learning rate of the sweeps."""
    lr_max: float = 10.0
    """Largest learning rate of the sweeps."""
    lr_points: int = 11
    """Learning rates per sweep, log-spaced from --lr-min to --lr-max."""
    adamw_weight_decay: float = 1e-2
    """AdamW's decoupled weight decay (the others use --weight-decay, L2)."""
    hidden: tuple[int, ...] = (64,)
    """Hidden layer sizes of the MLP."""
    optimizer: str = "sgd"
    """Optimizer of the batch-size comparison."""
    learning_rate: float = 0.05
    """Learning rate of the batch-size comparison."""
    batch_sizes: tuple[int, ...] = (0, 32, 1)
    """Batch sizes of the batch-size comparison (0: the whole training set, i.e. gradient
    descent); the smoke preset has none (no comparison)."""
    batch_epochs: int = 20
    """Epochs of each batch size at equal epochs."""
    max_timed_epochs: int = 5000
    """At most this many epochs for a batch size at equal training time."""
    split_seed: int = 0
    """Seed of the train/validation/test split."""

    hidden_flags: ClassVar[frozenset] = frozenset({"sweep"})  # the sweeps are this experiment
    ranges: ClassVar[dict[str, tuple]] = {
        "lr_min": (1e-12, 1e6), "lr_max": (1e-12, 1e6), "lr_points": (3, 64),
        "adamw_weight_decay": (0.0, 10.0), "batch_sizes": (0, 1_048_576),
        "batch_epochs": (2, 100_000), "max_timed_epochs": (1, 1_000_000)}

    @property
    def optimizers_used(self) -> tuple[str, ...]:
        return (*self.optimizers, self.optimizer)  # the sweeps, then the batch-size part

    def __post_init__(self):
        super().__post_init__()
        check_subset(self, "optimizers", OPTIMIZERS)
        check_distinct(self, "batch_sizes")
        if not self.lr_min < self.lr_max:
            raise ConfigError(f"--lr-min {self.lr_min} must be below --lr-max {self.lr_max}, "
                              f"e.g. --lr-min 1e-4 --lr-max 10")
        if not self.hidden or min(self.hidden) < 1:
            raise ConfigError(f"--hidden needs positive layer sizes, got "
                              f"{' '.join(map(str, self.hidden)) or 'none'}")

    @property
    def learning_rates(self) -> tuple[float, ...]:
        """The sweeps' grid, rounded to 4 significant digits (as the records show it)."""
        grid = np.logspace(math.log10(self.lr_min), math.log10(self.lr_max), self.lr_points)
        return tuple(float(f"{v:.4g}") for v in grid)


PRESETS = {
    "default": Config(epochs=20, batch_size=32, checkpoint_every_epochs=20),
    "smoke": Config(preset="smoke", epochs=3, batch_size=32, optimizers=("sgd",),
                    lr_points=6, hidden=(32,), batch_sizes=(), checkpoint_every_epochs=3),
}


def main(cfg: Config) -> dict:
    """Sweep each optimizer's learning rate, compare batch sizes; return the summary."""
    def body(run, log):
        data = load_image_dataset("digits", jax.random.key(cfg.split_seed))
        splits = flatten_splits(data.splits)
        model = MLP(cfg.hidden, data.num_classes, **cfg.model_dtypes)
        sizes = batch_sizes(cfg, len(splits.train))  # bad sizes fail before any training
        sweeps = {opt: sweep_learning_rate(cfg, run, model, splits, opt)
                  for opt in cfg.optimizers}
        summary = learning_rate_summary(sweeps)
        plot_learning_rates(run, sweeps)
        if sizes:
            summary["batch_size"] = compare_batch_sizes(cfg, run, model, splits, sizes)
        return dict(learning_rates=list(cfg.learning_rates), **summary)

    return run_experiment(NAME, cfg, body)


def train(cfg: Config, run, model, splits, name: str, state=None):
    return train_supervised(cfg, run, model, losses.softmax_cross_entropy, splits.train,
                            splits.val, name=name, metrics_fn=classification_metrics,
                            state=state)


def initial_losses(model, state, split) -> np.ndarray:
    """Each stacked member's cross-entropy on ``split`` at initialisation, ``(K,)``."""
    logits = jax.jit(jax.vmap(make_predict(model), in_axes=(0, None)))(state, split.x)
    logp = jax.nn.log_softmax(np.asarray(logits, np.float64), axis=-1)
    return -np.asarray(logp)[:, np.arange(len(split.y)), split.y].mean(axis=1)


def sweep_learning_rate(cfg: Config, run, model, splits, opt: str) -> dict:
    """Train ``opt`` at every learning rate of the grid at once; its points and curves.

    Returns:
      ``{"points": [record per learning rate], "curves": {"train_loss"|"val_loss":
      (P, epochs) means over seeds}}``.
    """
    grid = ",".join(f"{v:g}" for v in cfg.learning_rates)
    ocfg = dataclasses.replace(
        cfg, optimizer=opt, sweep=(f"learning_rate={grid}",),
        weight_decay=cfg.adamw_weight_decay if opt == "adamw" else cfg.weight_decay)
    state = initial_state(ocfg, model, splits.train, name=f"lr_{opt}")
    start = initial_losses(model, state, splits.train).reshape(-1, cfg.num_seeds).mean(axis=1)
    fit = train(ocfg, run, model, splits, f"lr_{opt}", state)
    final = fit.history[-1]
    points = point_results(ocfg.sweep_points, cfg.num_seeds,
                           member_figures(final, ocfg.num_models), final["nonfinite_step_each"])
    for p, initial in zip(points, start):
        p["nonfinite"] = p.pop("diverged")
        p["initial_train_loss"] = float(initial)
        loss = p.get("train_loss")
        p["diverged"] = bool(p["nonfinite"] or loss is None or loss > initial)
    curves = {k: np.asarray([r[f"{k}_each"] for r in fit.history], np.float64)  # (E, P * S)
              .reshape(len(fit.history), len(points), cfg.num_seeds).mean(axis=2).T
              for k in ("train_loss", "val_loss")}
    return {"points": points, "curves": curves}


def best_point(points: list[dict]) -> int | None:
    """Index of the point with the lowest final validation loss among those that did not
    diverge (None if all did)."""
    ok = [i for i, p in enumerate(points) if not p["diverged"] and p.get("val_loss") is not None]
    return min(ok, key=lambda i: points[i]["val_loss"]) if ok else None


def learning_rate_summary(sweeps: dict[str, dict]) -> dict:
    """``best_learning_rate``, its ``best_val_loss`` and ``best_val_accuracy``, and
    ``diverged`` (per grid point) for each optimizer, and every point's record (``sweep``)."""
    out = {"best_learning_rate": {}, "best_val_loss": {}, "best_val_accuracy": {},
           "diverged": {}, "sweep": []}
    for opt, s in sweeps.items():
        pts, best = s["points"], best_point(s["points"])
        out["best_learning_rate"][opt] = None if best is None else pts[best]["learning_rate"]
        out["best_val_loss"][opt] = None if best is None else pts[best]["val_loss"]
        out["best_val_accuracy"][opt] = None if best is None else pts[best].get("val_accuracy")
        out["diverged"][opt] = [p["diverged"] for p in pts]
        out["sweep"] += [dict(optimizer=opt, **p) for p in pts]
    print(format_sweep_table([{"model": p["optimizer"], "learning_rate": p["learning_rate"],
                               **{k: p.get(k) for k in TABLE}} for p in out["sweep"]],
                             ["learning_rate"]))
    return out


TABLE = ("initial_train_loss", "train_loss", "val_loss", "val_accuracy", "nonfinite", "diverged")


def regimes(points: list[dict]) -> dict[str, int]:
    """Grid indices of "too small" (the smallest rate), "best", and "too large" (the smallest
    rate that diverged, else the largest)."""
    best = best_point(points)
    over = [i for i, p in enumerate(points) if p["diverged"] and (best is None or i > best)]
    out = {"too small": 0, "too large": over[0] if over else len(points) - 1}
    if best is not None:
        out["best"] = best
    return out


def plot_learning_rates(run, sweeps: dict[str, dict]) -> None:
    """lr_sweep.png (final losses over the grid), lr_curves.png (too small / best / too large)
    and loss_curves.png (every optimizer at its best rate)."""
    clip = 2 * CHANCE_LOSS  # diverged losses run to 1e30 or NaN: cut them at the plot's top
    final = {"final training loss": {}, "final validation loss": {}}
    regime_curves, best_curves = {}, {}
    for opt, s in sweeps.items():
        pts = s["points"]
        lrs = [p["learning_rate"] for p in pts]
        for title, key in (("final training loss", "train_loss"),
                           ("final validation loss", "val_loss")):
            final[title][opt] = (lrs, [_clipped(p.get(key), clip) for p in pts])
        panel = {}
        for label, i in sorted(regimes(pts).items(), key=lambda kv: kv[1]):
            ys = s["curves"]["train_loss"][i]
            panel[f"{label}: lr {lrs[i]:g}"] = (np.arange(1, len(ys) + 1),
                                                [_clipped(y, clip) for y in ys])
        regime_curves[opt] = panel
        best = best_point(pts)
        if best is not None:
            ys = s["curves"]["val_loss"][best]
            best_curves[f"{opt} (lr {lrs[best]:g})"] = (np.arange(1, len(ys) + 1), ys)
    plot_series(final, run.file("lr_sweep.png"), "learning rate", "loss (NaN/inf: missing)",
                log_x=True, log_y=True, hlines={"chance (ln 10)": CHANCE_LOSS},
                title="final loss over the learning rate: too small learns slowly, too large "
                      "diverges")
    plot_series(regime_curves, run.file("lr_curves.png"), "epoch", "training loss",
                log_y=True, columns=3, hlines={"chance": CHANCE_LOSS},
                title="training loss at too small, the best and too large a learning rate")
    if best_curves:
        plot_series({"validation loss at each optimizer's best learning rate": best_curves},
                    run.file("loss_curves.png"), "epoch", "validation loss", log_y=True)


def _clipped(v, top: float) -> float:
    """NaN for missing or non-finite values; values above ``top`` at ``top``."""
    return math.nan if v is None or not math.isfinite(v) else min(float(v), top)


def epoch_seconds(history: list[dict]) -> np.ndarray:
    """Each epoch's training seconds without compilation: the first epoch (which compiled)
    counts as the median of the others."""
    secs = np.asarray([r["seconds"] for r in history], np.float64)
    if len(secs) > 1:
        secs[0] = np.median(secs[1:])
    return secs


def batch_sizes(cfg: Config, n: int) -> dict[str, int]:
    """``{label: batch size}`` of the comparison for ``n`` training examples."""
    sizes = {("full" if b == 0 else f"batch {b}"): (n if b == 0 else b) for b in cfg.batch_sizes}
    if sizes and max(sizes.values()) > n:
        raise ConfigError(f"--batch-sizes: {max(sizes.values())} is larger than the training "
                          f"set ({n} examples); use 0 for the full batch")
    return sizes


def compare_batch_sizes(cfg: Config, run, model, splits, sizes: dict[str, int]) -> dict:
    """Full batch vs mini-batch vs batch 1 at equal epochs and at equal training time.

    Every batch size trains ``cfg.batch_epochs`` epochs; the slowest of them sets the time
    budget. Each faster one trains again, from the start, for 1.5x as many epochs as its
    median epoch time fits into the budget (at most ``cfg.max_timed_epochs``), and is read
    at its last epoch within the budget (epoch times vary with the machine's load).
    """
    n = len(splits.train)
    base = dataclasses.replace(cfg, epochs=cfg.batch_epochs)
    equal_epochs = {label: train(dataclasses.replace(base, batch_size=b), run, model, splits,
                                 _slug(label)).history for label, b in sizes.items()}
    budget = max(epoch_seconds(h).sum() for h in equal_epochs.values())
    equal_time = {}
    for label, b in sizes.items():
        history = equal_epochs[label]
        if epoch_seconds(history).sum() < budget:
            per_epoch = float(np.median(epoch_seconds(history)))
            epochs = int(min(math.ceil(1.5 * budget / per_epoch), cfg.max_timed_epochs))
            tcfg = dataclasses.replace(base, batch_size=b, epochs=max(epochs, cfg.batch_epochs))
            history = train(tcfg, run, model, splits, f"{_slug(label)}_timed").history
        equal_time[label] = within(history, budget)
    plot_batch_sizes(run, equal_epochs, equal_time)
    return {label: dict(batch_size=b, updates_per_epoch=n // b,
                        equal_epochs=_figures(equal_epochs[label]),
                        equal_time=_figures(equal_time[label]))
            for label, b in sizes.items()} | {"time_budget_s": round(float(budget), 3)}


def within(history: list[dict], budget: float) -> list[dict]:
    """The epoch records up to the last one that ended within ``budget`` training seconds
    (at least the first), each with its cumulative ``train_seconds``."""
    cum = np.cumsum(epoch_seconds(history))
    keep = max(1, int(np.searchsorted(cum, budget * (1 + 1e-9), side="right")))
    return [dict(r, train_seconds=float(c)) for r, c in zip(history[:keep], cum[:keep])]


def _slug(label: str) -> str:
    return "batch_" + label.replace("batch ", "")


def _figures(history: list[dict]) -> dict:
    """The last epoch's figures, the best validation loss on the way, the training time."""
    last = history[-1]
    seconds = last.get("train_seconds", float(epoch_seconds(history).sum()))
    return dict(epochs=last["epoch"], updates=last["step"], seconds=round(seconds, 3),
                val_loss=last.get("val_loss"), val_accuracy=last.get("val_accuracy"),
                best_val_loss=min(r["val_loss"] for r in history), train_loss=last["train_loss"])


def plot_batch_sizes(run, equal_epochs: dict, equal_time: dict) -> None:
    """Validation loss over epochs (equal epochs) and over training seconds (equal time)."""
    by_epoch = {label: ([r["epoch"] for r in h], [r["val_loss"] for r in h])
                for label, h in equal_epochs.items()}
    by_time = {label: ([r["train_seconds"] for r in h], [r["val_loss"] for r in h])
               for label, h in equal_time.items()}
    plot_series({"equal epochs (x: epoch)": by_epoch,
                 "equal training time (x: seconds, compilation excluded)": by_time},
                run.file("batch_size.png"), "epoch  |  training seconds", "validation loss",
                log_y=True, title="full batch vs mini-batch vs batch 1")


if __name__ == "__main__":
    run_cli(main, Config, PRESETS, prog="python -m experiments.optimizers",
            description=__doc__)
