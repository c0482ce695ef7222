"""Sequence classification: digit images read row by row (or pixel by pixel), LSTM vs GRU vs RNN.

Each 8x8 digit becomes a sequence: by default 8 steps of one 8-pixel row each (``--read rows``),
or 64 steps of one pixel each (``--read pixels``, a longer memory task). A one-layer recurrent
network reads the sequence and classifies from its last hidden state. The same split, seed and
training settings are used for every cell; the summary reports each cell's test accuracy
(``<cell>_test_accuracy``), ``accuracy.png`` compares them, and each cell has its curves,
confusion matrix and per-class precision/recall plots.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from dlfun.runs.cli import run_cli
from dlfun.data import Split, Splits
from dlfun.data.images import IMAGE_DATASETS, check_data_dir_used, load_image_dataset
from dlfun.errors import ConfigError
from dlfun.nn import SequenceToOne
from dlfun.nn.recurrent import CELLS
from dlfun.plots import plot_bars, plot_series
from dlfun.runs.classifier import train_classifier
from dlfun.runs.config import TrainConfig
from dlfun.runs.experiment import run_experiment
from dlfun.runs.config import check_choice, check_positive, check_subset

NAME = "seqclass"
READ_MODES = ("rows", "pixels")


@dataclasses.dataclass(frozen=True)
class Config(TrainConfig):
    cells: tuple[str, ...] = ("lstm", "gru", "rnn")
    """Recurrent cells to compare."""
    hidden: int = 128
    """Hidden units of the recurrent layer."""
    read: str = "rows"
    """rows: one image row per step (8 steps for digits); pixels: one pixel per step (64)."""
    dataset: str = "digits"
    """digits (embedded), mnist or fashion_mnist (IDX files in --data-dir)."""
    data_dir: str | None = None
    """Folder with the dataset files (default: $DLFUN_DATA)."""
    clip_norm: float = 1.0
    """Clip the global gradient norm to this value before each update."""
    forget_bias: float = 1.0
    """Initial forget-gate bias of the LSTM."""
    split_seed: int = 0
    """Seed of the train/validation/test split (fixed across --seed so runs compare)."""

    def __post_init__(self):
        super().__post_init__()
        check_positive(self, "hidden", "clip_norm")
        check_choice(self, "read", READ_MODES)
        check_choice(self, "dataset", [d for d in IMAGE_DATASETS if d != "cifar10"])
        check_data_dir_used(self, "dataset")
        check_subset(self, "cells", CELLS)


PRESETS = {
    "default": Config(epochs=40, batch_size=32, learning_rate=2e-3, checkpoint_every_epochs=10),
    "smoke": Config(preset="smoke", epochs=4, batch_size=32, hidden=32, learning_rate=1e-2,
                    checkpoint_every_epochs=2),
}


def as_sequences(images: np.ndarray, read: str) -> np.ndarray:
    """Images ``(N, H, W, 1)`` -> sequences: rows ``(N, H, W)`` or pixels ``(N, H*W, 1)``."""
    n, h, w, c = images.shape
    if c != 1:
        raise ConfigError(f"sequence reading needs one-channel images, got {c} channels")
    return images.reshape(n, h, w) if read == "rows" else images.reshape(n, h * w, 1)


def sequence_splits(splits: Splits, read: str) -> Splits:
    """The image splits with their inputs read as sequences."""
    return Splits(*(Split(as_sequences(s.x, read), s.y)
                    for s in (splits.train, splits.val, splits.test)))


def main(cfg: Config) -> dict:
    """Train each cell on the sequences; return the summary (also in summary.json)."""
    def body(run, log):
        data = load_image_dataset(cfg.dataset, jax.random.key(cfg.split_seed), cfg.data_dir)
        splits = sequence_splits(data.splits, cfg.read)
        summary = dict(dataset=cfg.dataset, read=cfg.read, steps=int(splits.train.x.shape[1]))
        reports = {}
        for cell in cfg.cells:
            model = SequenceToOne(cell, cfg.hidden, data.num_classes,
                                  forget_bias=cfg.forget_bias, **cfg.model_dtypes)
            trained = train_classifier(cfg, run, model, splits, data.class_names,
                                       name=cell, clip_norm=cfg.clip_norm)
            reports[cell] = trained.report
            summary[f"{cell}_test_accuracy"] = trained.report["test_accuracy"]
            print(f"  {cell:>4s} test accuracy {trained.report['test_accuracy']:.4f}",
                  flush=True)
        plot_comparison(cfg, run, log, reports)
        summary["reports"] = reports
        return summary

    return run_experiment(NAME, cfg, body)


def plot_comparison(cfg: Config, run, log, reports: dict) -> None:
    """``accuracy.png``: test accuracy per cell, and validation accuracy per epoch."""
    plot_bars({c: reports[c]["test_accuracy"] for c in cfg.cells}, run.file("accuracy.png"),
              "test accuracy", title=f"{cfg.dataset} read by {cfg.read}")
    curves = {c: ([r["epoch"] for r in log.select(model=c)],
                  [r["val_accuracy"] for r in log.select(model=c)]) for c in cfg.cells}
    plot_series({"validation accuracy": curves}, run.file("val_accuracy.png"), "epoch",
                "accuracy", title=f"{cfg.dataset} read by {cfg.read}")


if __name__ == "__main__":
    run_cli(main, Config, PRESETS, prog="python -m experiments.seqclass", description=__doc__)
