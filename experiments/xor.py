"""XOR: a single-layer perceptron cannot fit it, a 2-layer MLP reaches 100%.

Trains both on the four rows of the XOR truth table with binary cross-entropy (full batch)
and reports each model's accuracy, loss and outputs. No line separates XOR's classes, so the
perceptron's cross-entropy optimum is the constant output 0.5 (accuracy at chance); one
hidden layer bends the boundary and fits all four rows.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from dlfun import losses
from dlfun.runs.cli import run_cli
from dlfun.data import Split, xor
from dlfun.nn import MLP
from dlfun.nn.activations import ACTIVATIONS
from dlfun.plots import plot_curves
from dlfun.runs.config import TrainConfig
from dlfun.runs.experiment import run_experiment
from dlfun.train.metrics import binary_metrics
from dlfun.runs.config import check_choice, check_positive
from dlfun.train.step import make_predict
from dlfun.runs.training import train_supervised

NAME = "xor"


@dataclasses.dataclass(frozen=True)
class Config(TrainConfig):
    hidden: int = 4
    """Hidden units of the 2-layer MLP."""
    activation: str = "tanh"
    """Hidden activation of the MLP."""

    def __post_init__(self):
        super().__post_init__()
        check_positive(self, "hidden")
        check_choice(self, "activation", ACTIVATIONS)


PRESETS = {
    "default": Config(epochs=400, batch_size=4, learning_rate=0.05, checkpoint_every_epochs=100),
    "smoke": Config(preset="smoke", epochs=300, batch_size=4, learning_rate=0.05,
                    checkpoint_every_epochs=150),
}


def main(cfg: Config) -> dict:
    """Train the perceptron and the MLP on XOR; return the summary."""
    def body(run, log):
        x, y = xor()
        data = Split(x, y[:, None].astype(np.float32))
        models = {"perceptron": MLP((), 1),
                  "mlp": MLP((cfg.hidden,), 1, activation=cfg.activation)}
        summary = {}
        for name, model in models.items():
            fit = train_supervised(cfg, run, model, losses.binary_cross_entropy, data, data,
                                   name=name, metrics_fn=binary_metrics, epoch_mode="scan")
            summary.update(_report(name, model, fit.state, data))
        plot_curves(log.records, run.file("curves.png"), [("train_loss",), ("val_accuracy",)],
                    title="XOR: perceptron vs 2-layer MLP")
        return summary

    return run_experiment(NAME, cfg, body)


def _report(name: str, model, state, data: Split) -> dict:
    """Accuracy, loss and predictions on the four rows (mean over models for ensembles)."""
    predict = make_predict(model)
    if jnp.ndim(state.step) > 0:  # K seeds: report the mean, and each
        logits = np.asarray(jax.vmap(predict, in_axes=(0, None))(state, data.x))[..., 0]
    else:
        logits = np.asarray(predict(state, data.x))[None, :, 0]
    acc = ((logits > 0) == (data.y[None, :, 0] > 0.5)).mean(axis=1)
    loss = [float(losses.binary_cross_entropy(jnp.asarray(lg), data.y[:, 0])) for lg in logits]
    out = {f"{name}_accuracy": float(acc.mean()), f"{name}_loss": float(np.mean(loss)),
           f"{name}_outputs": (1 / (1 + np.exp(-logits))).round(3).tolist()}
    if len(acc) > 1:
        out[f"{name}_accuracy_each"] = acc.tolist()
    return out


if __name__ == "__main__":
    run_cli(main, Config, PRESETS, prog="python -m experiments.xor", description=__doc__)
