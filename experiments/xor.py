"""XOR: a single-layer perceptron cannot fit it, a 2-layer MLP reaches 100%.

Trains both on the four rows of the XOR truth table with binary cross-entropy (full batch)
and reports each model's loss, outputs and thresholded accuracy (output > 0.5). No line
separates XOR's classes: any linear model gets at most 3 of the 4 rows right (accuracy <= 0.75),
and the perceptron's cross-entropy optimum is the constant output 0.5 (loss ln 2 = 0.693),
which decides no row. Its thresholded accuracy is then set by rounding noise in outputs that
all equal 0.5 (0.25, 0.5 or 0.75 can come out) and measures nothing, so the summary also gives
perceptron_output_spread, the largest distance of its outputs from 0.5 (about 0: it is at the
optimum, i.e. at chance), and perceptron_decided (whether any output is at least 0.01 from
0.5). One hidden layer bends the boundary and fits all four rows.

--explain also prints one step of backpropagation by hand (the lectures' chain rule) for a
2-2-1 sigmoid network with squared error on the four rows: forward activations, deltas, and
the gradients next to jax.grad's (also written to explain.txt).
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
from dlfun.nn import sigmoid_mlp_deltas
from dlfun.nn.activations import ACTIVATIONS
from dlfun.plots import plot_curves
from dlfun.runs.config import TrainConfig
from dlfun.runs.experiment import run_experiment
from dlfun.train.metrics import binary_metrics
from dlfun.runs.config import check_choice, check_positive
from dlfun.train.step import make_predict
from dlfun.runs.training import train_supervised

NAME = "xor"
UNDECIDED_MARGIN = 0.01
"""Outputs closer than this to 0.5 decide nothing (their thresholded class is rounding noise)."""


@dataclasses.dataclass(frozen=True)
class Config(TrainConfig):
    hidden: int = 4
    """Hidden units of the 2-layer MLP."""
    activation: str = "tanh"
    """Hidden activation of the MLP."""
    explain: bool = False
    """Before training, print one backpropagation step by hand (2-2-1 sigmoid net, squared
    error, the four rows): activations, deltas, gradients next to jax.grad's."""

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
        models = {"perceptron": MLP((), 1, **cfg.model_dtypes),
                  "mlp": MLP((cfg.hidden,), 1, activation=cfg.activation, **cfg.model_dtypes)}
        summary = _explain(run, cfg.seed, data) if cfg.explain else {}
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
    probs = 1 / (1 + np.exp(-logits.astype(np.float64)))
    spread = np.abs(probs - 0.5).max(axis=1)  # (K,): 0 at the linear models' optimum
    out = {f"{name}_accuracy": float(acc.mean()), f"{name}_loss": float(np.mean(loss)),
           f"{name}_output_spread": float(spread.mean()),
           f"{name}_decided": bool((spread >= UNDECIDED_MARGIN).all()),
           f"{name}_outputs": probs.round(3).tolist()}
    if len(acc) > 1:
        out[f"{name}_accuracy_each"] = acc.tolist()
    return out


def _explain(run, seed: int, data: Split) -> dict:
    """Print (and write to explain.txt) one hand-derived backpropagation step of a 2-2-1 sigmoid
    net with squared error on ``data``, next to jax.grad; return the largest difference."""
    model = MLP((2,), 1, activation="sigmoid", output_activation="sigmoid")
    params = model.init(jax.random.key(seed), jnp.asarray(data.x))["params"]
    hand = sigmoid_mlp_deltas(params, data.x, data.y)

    def loss(p):
        return 0.5 * jnp.sum((model.apply({"params": p}, data.x) - data.y) ** 2)

    auto = jax.tree.map(np.asarray, jax.grad(loss)(params))
    text = format_backprop_step(hand, auto)
    print(text)
    run.file("explain.txt").write_text(text + "\n")
    diff = max(float(np.abs(hand["grads"][layer][k] - auto[layer][k]).max())
               for layer in auto for k in auto[layer])
    return {"explain_loss": hand["loss"], "explain_max_abs_grad_difference": diff}


def format_backprop_step(hand: dict, auto: dict) -> str:
    """The forward pass, the deltas per row, and each gradient entry by hand vs jax.grad."""
    x, h, y_hat = hand["activations"]
    d_hid, d_out = hand["deltas"]
    lines = ["one backpropagation step by hand: 2-2-1 sigmoid net, E = 1/2 sum (y_hat - y)^2",
             "  delta_out = (y_hat - y) y_hat (1 - y_hat);  delta_hid = (W2 delta_out) h (1 - h)",
             f"  {'x':>9} {'h':>17} {'y_hat':>7} {'delta_out':>10} {'delta_hid':>21}"]
    for xi, hi, yi, do, dh in zip(x, h, y_hat, d_out, d_hid):
        lines.append(f"  {_row(xi, 1)} {_row(hi, 4)} {yi[0]:7.4f} {do[0]:10.5f} {_row(dh, 6)}")
    lines.append(f"  loss E = {hand['loss']:.6f}")
    lines.append("  gradient = sum over rows of (layer input) outer (delta):")
    lines.append(f"  {'parameter':<22} {'by hand':>12} {'jax.grad':>12}")
    for layer in auto:
        for k in ("kernel", "bias"):
            for idx in np.ndindex(auto[layer][k].shape):
                name = f"{layer}.{k}{list(idx)}"
                lines.append(f"  {name:<22} {hand['grads'][layer][k][idx]:12.7f} "
                             f"{float(auto[layer][k][idx]):12.7f}")
    return "\n".join(lines)


def _row(values, digits: int) -> str:
    return "[" + " ".join(f"{v:{digits + 4}.{digits}f}" for v in values) + "]"


if __name__ == "__main__":
    run_cli(main, Config, PRESETS, prog="python -m experiments.xor", description=__doc__)
