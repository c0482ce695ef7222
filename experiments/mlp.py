"""MLP classifier on the digits (or MNIST-format files): accuracy, confusion, precision/recall.

A multi-layer perceptron on flattened images. The default preset trains on scikit-learn's
bundled 8x8 digits (no download) and reports test accuracy, the confusion matrix and per-class
precision and recall (plots and summary.json). ``--num-seeds K`` trains K models in one
compiled program and reports each member and the ensemble.
"""

from __future__ import annotations

import dataclasses

import jax

from dlfun.runs.cli import run_cli
from dlfun.errors import ConfigError
from dlfun.data.images import (IMAGE_DATASETS, check_data_dir_used, flatten_splits,
                               load_image_dataset)
from dlfun.nn import MLP
from dlfun.nn.activations import ACTIVATIONS
from dlfun.runs.classifier import train_classifier
from dlfun.runs.config import TrainConfig
from dlfun.runs.experiment import run_experiment
from dlfun.runs.config import check_choice

NAME = "mlp"


@dataclasses.dataclass(frozen=True)
class Config(TrainConfig):
    dataset: str = "digits"
    """digits (embedded), mnist or fashion_mnist (IDX files in --data-dir)."""
    data_dir: str | None = None
    """Folder with the dataset files (default: $DLFUN_DATA)."""
    hidden: tuple[int, ...] = (256, 128)
    """Hidden layer sizes."""
    activation: str = "relu"
    """Hidden activation: relu, gelu, elu, leaky_relu, softplus, tanh, sigmoid or identity."""
    dropout: float = 0.2
    """Dropout rate after each hidden layer (training only)."""
    split_seed: int = 0
    """Seed of the train/validation/test split (fixed across --seed so runs compare)."""

    def __post_init__(self):
        super().__post_init__()
        check_choice(self, "dataset", [d for d in IMAGE_DATASETS if d != "cifar10"])
        check_data_dir_used(self, "dataset")
        check_choice(self, "activation", ACTIVATIONS)
        if not self.hidden or min(self.hidden) < 1:
            raise ConfigError(f"--hidden needs one or more positive layer sizes, got "
                              f"{' '.join(map(str, self.hidden)) or 'none'}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"--dropout must be in [0, 1), got {self.dropout}")


PRESETS = {
    "default": Config(epochs=60, batch_size=64, learning_rate=1e-3, checkpoint_every_epochs=10),
    "smoke": Config(preset="smoke", epochs=3, batch_size=32, hidden=(64,), checkpoint_every_epochs=1),
}


def main(cfg: Config) -> dict:
    """Train the MLP and return the summary (also written to summary.json)."""
    def body(run, log):
        data = load_image_dataset(cfg.dataset, jax.random.key(cfg.split_seed), cfg.data_dir)
        model = MLP(cfg.hidden, data.num_classes, activation=cfg.activation,
                    dropout_rate=cfg.dropout, **cfg.model_dtypes)
        trained = train_classifier(cfg, run, model, flatten_splits(data.splits),
                                   data.class_names, name="mlp")
        return dict(dataset=cfg.dataset, **trained.report)

    return run_experiment(NAME, cfg, body)


if __name__ == "__main__":
    run_cli(main, Config, PRESETS, prog="python -m experiments.mlp", description=__doc__)
