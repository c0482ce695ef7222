"""Regularisation: which of L2, dropout, batch norm, shifts, early stopping narrow the train/test gap.

An MLP trained on a small subset of the embedded 8x8 digits (``--train-examples``, 200 by
default) fits it perfectly and generalises worse than it fits. Trained one after another
(each its own model name, checkpoint folder and records) from the same seeds, data order and
number of updates: no regularisation (``none``), L2 (``l2_<λ>`` for each ``--l2`` value: λ·w
added to the gradients, i.e. (λ/2)·‖w‖² in the loss, before the optimizer), dropout
(``dropout_<p>``) after each hidden layer, batch norm before each hidden activation
(``batch_norm``), random shifts of up to ``--shift`` pixels of the 8x8 image inside the
compiled step (``shift_<s>``), and early stopping on the validation loss (``early_stop_p<n>``:
patience n epochs, the best epoch's weights restored; it alone sees the validation split
during training). The validation split (180 examples) and the test split (359) are the full
ones at every training-set size.

For each: ``train_accuracy`` (eval mode, the un-augmented training subset),
``test_accuracy`` and the ``generalization_gap`` = train - test accuracy, averaged over the
``--num-seeds`` seeds (trained at once), with their spread (std over seeds), and
``gap_reduction`` = gap(none) - gap(method) per seed (mean, std, share of seeds where it is
positive); ``loss_gap`` = test - train mean NLL (nats), which moves where accuracy saturates. Then the test accuracy against the training-set size (``--sizes``, 0 = the whole
training split) for ``none`` and the regulariser with the best validation accuracy (each
size gets the same number of updates as the main size: epochs scaled by the batches per
epoch). The claim measured: each regulariser narrows the gap against ``none``; the summary
says which do (``narrows_gap``) and by how much.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, ClassVar

import jax
import numpy as np

from dlfun import losses
from dlfun.data import Split
from dlfun.data.augment import random_crop
from dlfun.data.images import flatten_splits, load_image_dataset
from dlfun.errors import ConfigError
from dlfun.nn import MLP
from dlfun.plots import plot_bar_panels, plot_curves, plot_series
from dlfun.runs.classifier import predict_probs
from dlfun.runs.cli import run_cli
from dlfun.runs.config import TrainConfig, check_distinct, check_subset
from dlfun.runs.experiment import run_experiment
from dlfun.runs.training import initial_state, train_supervised
from dlfun.train import EarlyStopping
from dlfun.train.metrics import classification_metrics
from dlfun.validate import check_at_most

NAME = "regularization"
METHODS = ("none", "l2", "dropout", "batch_norm", "shift", "early_stopping")
IMAGE_SHAPE = (8, 8, 1)


@dataclasses.dataclass(frozen=True)
class Config(TrainConfig):
    ranges: ClassVar[dict] = {"train_examples": (1, 10_000_000), "sizes": (0, 10_000_000),
                              "hidden": (1, 65_536), "l2": (0.0, 10.0), "dropout": (0.0, 0.95),
                              "shift": (1, 7), "patience": (1, 1_000_000)}

    methods: tuple[str, ...] = METHODS
    """Methods to train: none, l2, dropout, batch_norm, shift, early_stopping (none is always
    trained: the others are measured against it)."""
    train_examples: int = 200
    """Training examples of the method comparison (the first of the shuffled training split)."""
    sizes: tuple[int, ...] = (50, 100, 200, 500, 0)
    """Training-set sizes of the accuracy-vs-size curves (0: the whole training split)."""
    hidden: tuple[int, ...] = (256, 256)
    """Hidden layer sizes of the MLP."""
    l2: tuple[float, ...] = (1e-4, 1e-3, 1e-2)
    """L2 strengths λ, one model each (λ·w added to the gradients before the optimizer)."""
    dropout: tuple[float, ...] = (0.2, 0.5)
    """Dropout rates after each hidden layer, one model each."""
    shift: int = 1
    """Random shifts of up to this many pixels of the 8x8 image (zero padding) in training."""
    patience: int = 10
    """Early stopping: epochs without a lower validation loss before training ends."""
    split_seed: int = 0
    """Seed of the digits' train/validation/test split (fixed across --seed)."""

    def unused_because(self, name: str) -> str | None:
        needs = {"l2": "l2", "dropout": "dropout", "shift": "shift",
                 "patience": "early_stopping"}.get(name)
        if needs and needs not in self.methods:
            return f"without {needs} in --methods"
        return super().unused_because(name)

    def __post_init__(self):
        super().__post_init__()
        check_subset(self, "methods", METHODS)
        check_distinct(self, "l2")
        check_distinct(self, "dropout")
        check_distinct(self, "sizes")
        if self.weight_decay:
            raise ConfigError("--weight-decay is not used here: the L2 models take their "
                              "strengths from --l2 (e.g. --l2 0.001 0.01); leave it at 0")
        if not self.hidden:
            raise ConfigError("--hidden needs one or more layer sizes, e.g. 256 256")
        smallest = min([self.train_examples, *(n for n in self.sizes if n)])
        if self.batch_size > smallest:
            raise ConfigError(f"--batch-size {self.batch_size} is larger than the smallest "
                              f"training set ({smallest} examples); pass --batch-size "
                              f"{smallest} or less")
        for name in ("l2", "dropout"):
            if name in self.methods and not getattr(self, name):
                raise ConfigError(f"--methods {name} needs one or more --{name} values")


PRESETS = {
    "default": Config(epochs=150, batch_size=50, learning_rate=1e-3, num_seeds=5,
                      epoch_mode="scan", ensemble="vmap", checkpoint_every_epochs=50),
    "smoke": Config(preset="smoke", methods=("none", "l2"), hidden=(128, 128), epochs=60,
                    batch_size=50, learning_rate=2e-3, l2=(1e-2,), sizes=(),
                    epoch_mode="scan", checkpoint_every_epochs=60),
}


@dataclasses.dataclass(frozen=True)
class Variant:
    """One regularised (or plain) model: its name, method and settings."""

    name: str
    method: str
    weight_decay: float = 0.0
    dropout: float = 0.0
    batch_norm: bool = False
    shift: int = 0
    patience: int | None = None


def variants(cfg: Config) -> list[Variant]:
    """``none`` first, then each method of ``--methods`` with each of its settings."""
    out = [Variant("none", "none")]
    chosen = set(cfg.methods)
    out += [Variant(f"l2_{lam:g}", "l2", weight_decay=lam) for lam in cfg.l2 if "l2" in chosen]
    out += [Variant(f"dropout_{p:g}", "dropout", dropout=p) for p in cfg.dropout
            if "dropout" in chosen]
    if "batch_norm" in chosen:
        out.append(Variant("batch_norm", "batch_norm", batch_norm=True))
    if "shift" in chosen:
        out.append(Variant(f"shift_{cfg.shift}", "shift", shift=cfg.shift))
    if "early_stopping" in chosen:
        out.append(Variant(f"early_stop_p{cfg.patience}", "early_stopping",
                           patience=cfg.patience))
    return out


def main(cfg: Config) -> dict:
    """Train every variant at --train-examples, then none and the best at each size."""
    def body(run, log):
        splits = flatten_splits(load_image_dataset("digits", jax.random.key(cfg.split_seed)).splits)
        check_at_most(cfg.train_examples, len(splits.train), "--train-examples",
                      "the training split")
        for n in cfg.sizes:
            check_at_most(n, len(splits.train), "--sizes", "the training split", ", or 0 for all")
        main_n = cfg.train_examples
        results = {v.name: _train_variant(cfg, run, v, splits, main_n, v.name)
                   for v in variants(cfg)}
        best = _best_regularizer(results)
        by_size = _size_sweep(cfg, run, splits, main_n, best, results) if best else {}
        _plot(run, cfg, results, by_size, best)
        return _summary(cfg, results, by_size, best, main_n)

    return run_experiment(NAME, cfg, body)


def _subset(split: Split, n: int) -> Split:
    return split.take(np.arange(min(n, len(split))))


def _epochs_at(cfg: Config, n: int, main_n: int) -> int:
    """Epochs giving ``n`` examples the updates ``cfg.epochs`` gives ``main_n``."""
    return max(1, math.ceil(cfg.epochs * (main_n // cfg.batch_size) / (n // cfg.batch_size)))


def _shift_fn(shift: int) -> Callable | None:
    """``(key, x) -> x``: flat digits ``(B, 64)`` shifted as 8x8 images inside the step."""
    if not shift:
        return None

    def augment(key, x):
        images = x.reshape((x.shape[0],) + IMAGE_SHAPE)  # (B, 8, 8, 1)
        return random_crop(key, images, shift).reshape(x.shape)

    return augment


def _train_config(cfg: Config, **changes) -> TrainConfig:
    """The training flags of ``cfg`` as a plain TrainConfig, with ``changes``."""
    fields = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**(fields | changes))


def _train_variant(cfg: Config, run, v: Variant, splits, n: int, name: str,
                   main_n: int | None = None) -> dict:
    """Train ``v`` on the first ``n`` training examples; its per-seed figures."""
    train = _subset(splits.train, n)
    epochs = _epochs_at(cfg, len(train), main_n or len(train))
    model = MLP(cfg.hidden, 10, dropout_rate=v.dropout, batch_norm=v.batch_norm,
                **cfg.model_dtypes)
    stop = None if v.patience is None else EarlyStopping(v.patience, monitor="val_loss")
    tcfg = _train_config(cfg, weight_decay=v.weight_decay, epochs=epochs)
    # eagerly: the variants share layer shapes, so the init ops compile once for all of them
    state = initial_state(tcfg, model, train, name=name, eager=True)
    result = train_supervised(tcfg, run, model, losses.softmax_cross_entropy, train, splits.val,
                              name=name, metrics_fn=classification_metrics,
                              augment_fn=_shift_fn(v.shift), early_stopping=stop, state=state)
    figures = _split_figures(model, result, {"train": train, "val": splits.val,
                                             "test": splits.test})
    figures["gap"] = figures["train_accuracy"] - figures["test_accuracy"]
    figures["loss_gap"] = figures["test_loss"] - figures["train_loss"]
    figures = {k: v.tolist() for k, v in figures.items()}  # per seed
    figures.update(examples=len(train), epochs=epochs)
    if result.best_epoch is not None:
        figures.update(best_epoch=np.atleast_1d(result.best_epoch).tolist(),
                       stopped_epoch=result.stopped_epoch)
    return figures


def _split_figures(model, result, split_map: dict[str, Split]) -> dict[str, np.ndarray]:
    """``<split>_accuracy`` and ``<split>_loss`` (mean NLL) per seed ``(K,)``, eval mode. The
    splits go through the model as one array: one compiled prediction, not one per shape."""
    x = np.concatenate([s.x for s in split_map.values()])
    probs = predict_probs(model, result.state, x, result.ensemble, batch_size=len(x))
    probs = probs.reshape((-1,) + probs.shape[-2:])  # (K, N, C); K = 1 for one model
    out, lo = {}, 0
    for name, split in split_map.items():
        p, lo = probs[:, lo:lo + len(split)], lo + len(split)
        true = np.take_along_axis(p, split.y[None, :, None].astype(np.int64), -1)[..., 0]
        out[f"{name}_accuracy"] = (p.argmax(-1) == split.y).mean(-1)
        out[f"{name}_loss"] = -np.log(np.clip(true, 1e-12, 1.0)).mean(-1)
    return out


def _best_regularizer(results: dict) -> str | None:
    """The regularised variant with the highest mean validation accuracy (ties: the first)."""
    candidates = [k for k in results if k != "none"]
    return max(candidates, key=lambda k: np.mean(results[k]["val_accuracy"]), default=None)


def _size_sweep(cfg: Config, run, splits, main_n: int, best: str, results: dict) -> dict:
    """``{variant: {n: figures}}`` for none and ``best`` at each of ``--sizes``."""
    by_variant = {v.name: v for v in variants(cfg)}
    sizes = sorted({n or len(splits.train) for n in cfg.sizes})
    if not sizes:
        return {}
    out: dict = {}
    for name in ("none", best):
        out[name] = {}
        for n in sizes:
            if n == main_n:  # the comparison's model: same data, seeds and updates
                out[name][n] = results[name]
                continue
            label = "all" if n == len(splits.train) else str(n)
            out[name][n] = _train_variant(cfg, run, by_variant[name], splits, n,
                                          f"{name}_n{label}", main_n)
    return out


def _stats(values) -> tuple[float, float]:
    """Mean and (population) std over seeds."""
    a = np.asarray(values, np.float64)
    return float(a.mean()), float(a.std())


def _summary(cfg: Config, results: dict, by_size: dict, best: str | None, main_n: int) -> dict:
    """The claim's figures (per method), then the per-size table and the settings."""
    gap_none = np.asarray(results["none"]["gap"])
    reduction = {k: gap_none - np.asarray(r["gap"]) for k, r in results.items() if k != "none"}
    narrowing = [k for k, d in reduction.items() if d.mean() > 0]
    out: dict = {"train_examples": main_n, "seeds": len(gap_none),
                 "gap_none": float(gap_none.mean()),
                 "methods_that_narrow_gap": ", ".join(narrowing) or "none of them",
                 "claim_holds": len(narrowing) == len(reduction)}
    for key in ("test_accuracy", "train_accuracy", "generalization_gap", "loss_gap"):
        field = "gap" if key == "generalization_gap" else key
        stats = {k: _stats(r[field]) for k, r in results.items()}
        out[key] = {k: m for k, (m, _) in stats.items()}
        out[f"{key}_std"] = {k: s for k, (_, s) in stats.items()}
    out["gap_reduction"] = {k: float(d.mean()) for k, d in reduction.items()}
    out["gap_reduction_std"] = {k: float(d.std()) for k, d in reduction.items()}
    out["gap_narrowed_share_of_seeds"] = {k: float((d > 0).mean()) for k, d in reduction.items()}
    out["narrows_gap"] = {k: bool(d.mean() > 0) for k, d in reduction.items()}
    out["early_stopping_best_epoch"] = {k: r["best_epoch"] for k, r in results.items()
                                        if "best_epoch" in r}
    out["best_regularizer"] = best
    if by_size:
        out["test_accuracy_by_size"] = {k: {str(n): _stats(r["test_accuracy"])[0]
                                            for n, r in rows.items()} for k, rows in by_size.items()}
        out["generalization_gap_by_size"] = {k: {str(n): _stats(r["gap"])[0]
                                                 for n, r in rows.items()}
                                             for k, rows in by_size.items()}
    out.update(epochs=cfg.epochs, batch_size=cfg.batch_size, hidden=list(cfg.hidden),
               chance=0.1)
    return out


def _plot(run, cfg: Config, results: dict, by_size: dict, best: str | None) -> None:
    """Gap and test accuracy per method (bars, std over seeds); accuracy against size."""
    def bars(field):
        return {k: _stats(r[field]) for k, r in results.items()}

    plot_bar_panels({"train - test accuracy (gap)": bars("gap"),
                     "test accuracy": bars("test_accuracy")},
                    run.file("regularization_bars.png"),
                    title=f"{results['none']['examples']} training digits, "
                          f"mean ± std over {len(results['none']['gap'])} seed(s)")
    plot_curves([r for k in results for r in run.records(model=k)],
                run.file("regularization_curves.png"),
                [("val_loss",), ("val_accuracy",)], title="validation curves per method")
    if by_size:
        panels = {"test accuracy": {}, "train - test accuracy (gap)": {}}
        for name, rows in by_size.items():
            ns = list(rows)
            panels["test accuracy"][name] = (ns, [_stats(r["test_accuracy"])[0]
                                                  for r in rows.values()])
            panels["train - test accuracy (gap)"][name] = (ns, [_stats(r["gap"])[0]
                                                                for r in rows.values()])
        plot_series(panels, run.file("accuracy_vs_size.png"), xlabel="training examples",
                    ylabel="accuracy", log_x=True,
                    title=f"none vs {best} (best validation accuracy), mean over seeds")


if __name__ == "__main__":
    run_cli(main, Config, PRESETS, prog="python -m experiments.regularization",
            description=__doc__)
