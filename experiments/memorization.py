"""Memorisation (Zhang et al. 2017): an MLP fits randomised digit labels; test accuracy falls.

For each --label-noise fraction p (trained one after another), each training label is replaced
with probability p by a class drawn uniformly at random (keyed by --seed: the same draws for
every p, so the corrupted sets are nested; validation and test labels stay true). An MLP with
--hidden layers trains on the corrupted labels; after every epoch its accuracy on the whole
training set against the labels it was given (fit_accuracy, eval mode) joins the record. The
network fits even fully random labels (p = 1: nothing to learn but the examples themselves),
and needs more epochs to do so than for true labels, while its test accuracy falls to chance
(0.1 on ten classes).

summary.json: train_accuracy (fit accuracy after training), test_accuracy and epochs_to_fit
(first epoch with fit accuracy >= --fit-threshold; null if never) per fraction. The claim
measured: at p = 1, train >= 95% and test <= 15%. --dropout and --weight-decay add
regularisation to every model (Zhang et al.: it slows memorisation, it does not prevent it).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import numpy as np

from dlfun import losses
from dlfun.data import Split, randomize_labels
from dlfun.data.images import flatten_splits, load_image_dataset
from dlfun.errors import ConfigError
from dlfun.nn import MLP
from dlfun.plots import plot_curves, plot_series
from dlfun.runs.classifier import make_accuracy, predict_probs
from dlfun.runs.cli import run_cli
from dlfun.runs.config import TrainConfig, check_distinct
from dlfun.runs.experiment import run_experiment
from dlfun.runs.training import train_supervised
from dlfun.train.metrics import classification_metrics
from dlfun.validate import check_at_most

NAME = "memorization"
LABEL_NOISE_STREAM = 0x4C4E  # folded into the seed's key: label draws apart from init/data keys
CHANCE = 0.1


@dataclasses.dataclass(frozen=True)
class Config(TrainConfig):
    ranges: ClassVar[dict] = {"label_noise": (0.0, 1.0), "hidden": (1, 65_536),
                              "dropout": (0.0, 0.95), "train_examples": (1, 10_000_000),
                              "fit_threshold": (0.1, 1.0)}

    label_noise: tuple[float, ...] = (0.0, 0.2, 0.5, 1.0)
    """Fractions of training labels to randomise, one model each (in this order)."""
    hidden: tuple[int, ...] = (512, 512)
    """Hidden layer sizes of the MLP."""
    dropout: float = 0.0
    """Dropout rate after each hidden layer (regularisation; 0: none)."""
    train_examples: int | None = None
    """Train on the first this many training examples only (none: all of them)."""
    fit_threshold: float = 0.95
    """Fit accuracy at which the training set counts as fitted (for epochs_to_fit)."""
    split_seed: int = 0
    """Seed of the digits' train/validation/test split (fixed across --seed)."""

    def __post_init__(self):
        super().__post_init__()
        if not self.label_noise:
            raise ConfigError("--label-noise needs one or more fractions, e.g. 0 0.5 1")
        check_distinct(self, "label_noise")


PRESETS = {
    "default": Config(epochs=100, batch_size=64, learning_rate=1e-3, checkpoint_every_epochs=25),
    "smoke": Config(preset="smoke", label_noise=(0.0, 1.0), hidden=(256, 256), epochs=30,
                    batch_size=50, learning_rate=2e-3, train_examples=200,
                    checkpoint_every_epochs=30),
}


def variant_name(fraction: float) -> str:
    """``noise0.2``: the model (and checkpoint folder) of one fraction."""
    return f"noise{fraction:g}"


def main(cfg: Config) -> dict:
    """Train one model per label-noise fraction, one after another; return the summary."""
    def body(run, log):
        splits = flatten_splits(load_image_dataset("digits", jax.random.key(cfg.split_seed)).splits)
        if cfg.train_examples is not None:
            check_at_most(cfg.train_examples, len(splits.train), "--train-examples",
                          "the training split", ", or leave it unset for all")
        train = (splits.train if cfg.train_examples is None else
                 splits.train.take(np.arange(cfg.train_examples)))
        key = jax.random.fold_in(jax.random.key(cfg.seed), LABEL_NOISE_STREAM)
        results = {}
        for p in cfg.label_noise:
            labels, corrupted = randomize_labels(key, train.y, p, 10)
            results[f"{p:g}"] = _train_one(cfg, run, Split(train.x, labels), splits,
                                           variant_name(p))
            results[f"{p:g}"]["corrupted_share"] = float(corrupted.mean())
        _plot(run, cfg, results)
        return _summary(cfg, results, len(train))

    return run_experiment(NAME, cfg, body)


def _train_one(cfg: Config, run, train: Split, splits, name: str) -> dict:
    """Train on ``train`` (its labels possibly randomised); fit and test accuracy."""
    model = MLP(cfg.hidden, 10, activation="relu", dropout_rate=cfg.dropout, **cfg.model_dtypes)
    fit_accuracy = make_accuracy(model, cfg.num_models)

    def on_epoch(state, epoch):  # accuracy on the labels trained on, whole set, eval mode
        return {"fit_accuracy": fit_accuracy(state, train.x, train.y)}

    result = train_supervised(cfg, run, model, losses.softmax_cross_entropy, train, splits.val,
                              name=name, metrics_fn=classification_metrics, on_epoch=on_epoch)
    probs = predict_probs(model, result.state, splits.test.x, result.ensemble)
    fitted = [r["epoch"] for r in result.history if r["fit_accuracy"] >= cfg.fit_threshold]
    return dict(train_accuracy=float(np.mean(fit_accuracy(result.state, train.x, train.y))),
                test_accuracy=float(np.mean((probs.argmax(-1) == splits.test.y).mean(-1))),
                epochs_to_fit=fitted[0] if fitted else None)


def _summary(cfg: Config, results: dict, num_train: int) -> dict:
    """The claim's figures first (scalars), then the per-fraction tables."""
    out: dict = {}
    full = results.get("1")
    if full is not None:
        out.update(random_labels_train_accuracy=full["train_accuracy"],
                   random_labels_test_accuracy=full["test_accuracy"],
                   claim_holds=bool(full["train_accuracy"] >= 0.95
                                    and full["test_accuracy"] <= 0.15))
    clean, rand = results.get("0"), full
    if clean and rand and clean["epochs_to_fit"] and rand["epochs_to_fit"]:
        out["epochs_to_fit_random_over_true"] = rand["epochs_to_fit"] / clean["epochs_to_fit"]
    for key in ("train_accuracy", "test_accuracy", "epochs_to_fit", "corrupted_share"):
        out[key] = {p: r[key] for p, r in results.items()}
    out.update(train_examples=num_train, fit_threshold=cfg.fit_threshold, chance=CHANCE,
               regularization={"dropout": cfg.dropout, "weight_decay": cfg.weight_decay})
    return out


def _plot(run, cfg: Config, results: dict) -> None:
    """Fit and validation accuracy over epochs per fraction; final train/test per fraction."""
    records = [r for p in cfg.label_noise for r in run.records(model=variant_name(p))]
    plot_curves(records, run.file("memorization_curves.png"),
                [("fit_accuracy",), ("val_accuracy",)],
                title="fit accuracy (labels trained on) and validation accuracy (true labels)")
    fractions = [float(p) for p in results]
    plot_series({"after training": {
        "train (labels trained on)": (fractions, [r["train_accuracy"] for r in results.values()]),
        "test (true labels)": (fractions, [r["test_accuracy"] for r in results.values()])}},
        run.file("memorization_accuracy.png"), xlabel="share of training labels randomised",
        ylabel="accuracy", hlines={"chance": CHANCE}, title="memorisation of random labels")


if __name__ == "__main__":
    run_cli(main, Config, PRESETS, prog="python -m experiments.memorization",
            description=__doc__)
