"""Vanishing gradients: per-layer gradient norms of deep MLPs by activation, depth, batch norm.

Deep MLPs (--depths hidden layers of --width units) on the embedded digits with each of
--activations, without and with batch norm (Dense -> BatchNorm -> activation). Initialisation:
Glorot normal for sigmoid, tanh and identity (variance 2 / (fan_in + fan_out)), He normal for
relu and gelu (variance 2 / fan_in). For each variant, on a fixed batch of --grad-examples
training images and with the model as the training step runs it:

* the norm of d loss / d kernel of every layer, at initialisation and after each epoch
  (grad_norms_depth<D>.png: per layer; grad_ratio_depth<D>.png: first over last hidden layer
  across training);
* the share of hidden activations that are exactly 0 (ReLU's sparsity);
* the training curves (curves_depth<D>.png) and the test accuracy.

summary.json: grad_ratio_first_to_last (first hidden layer's gradient norm over the last hidden
layer's, at initialisation; ..._trained after training) per variant, named
<activation>[_bn]_depth<D>; relu_zero_share; test_accuracy. The claim measured: at depth 10
without batch norm, sigmoid's ratio is < 1/100 and ReLU's (He init) within 10x of 1.

Also: a linear (identity) activation at any depth stays a linear model. A --xor-depth deep
identity MLP trained on XOR cannot fit it (accuracy <= 0.75, outputs ~0.5: chance), while the
same net with tanh can (--xor-activations).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import flax.linen as fnn
import jax
import jax.numpy as jnp
import numpy as np

from dlfun import losses
from dlfun.data import Split, xor
from dlfun.data.images import flatten_splits, load_image_dataset
from dlfun.errors import ConfigError
from dlfun.nn import MLP
from dlfun.plots import plot_curves, plot_series
from dlfun.runs.classifier import predict_probs
from dlfun.runs.cli import run_cli
from dlfun.runs.config import TrainConfig, check_choice, check_distinct, check_subset
from dlfun.runs.experiment import run_experiment
from dlfun.runs.training import initial_state, train_supervised
from dlfun.train.layer_probe import make_layer_probe
from dlfun.train.metrics import binary_metrics, classification_metrics
from dlfun.train.step import make_predict
from dlfun.validate import check_at_most

NAME = "activations"
INITS = {"sigmoid": "glorot", "tanh": "glorot", "identity": "glorot", "relu": "he", "gelu": "he"}
"""The kernel initialisation of each activation."""
INITIALIZERS = {"glorot": fnn.initializers.glorot_normal(), "he": fnn.initializers.he_normal()}
BATCH_NORM = {"off": (False,), "on": (True,), "both": (False, True)}
XOR_STEPS_PER_EPOCH = 50


@dataclasses.dataclass(frozen=True)
class Config(TrainConfig):
    ranges: ClassVar[dict] = {"depths": (1, 100), "width": (1, 4096),
                              "grad_examples": (1, 100_000), "xor_depth": (1, 100),
                              "xor_width": (1, 1024), "xor_steps": (1, 1_000_000),
                              "xor_learning_rate": (1e-6, 1.0)}

    depths: tuple[int, ...] = (10, 20)
    """Numbers of hidden layers to compare."""
    width: int = 64
    """Units per hidden layer."""
    activations: tuple[str, ...] = ("sigmoid", "tanh", "relu", "gelu")
    """Hidden activations to compare (sigmoid, tanh, identity: Glorot init; relu, gelu: He)."""
    batch_norm: str = "both"
    """Variants without batch norm (off), with it (on), or both."""
    grad_examples: int = 256
    """Training images on which the per-layer gradient norms are measured."""
    xor_depth: int = 10
    """Hidden layers of the deep linear (identity) net trained on XOR."""
    xor_activations: tuple[str, ...] = ("identity", "tanh")
    """Activations of the deep XOR nets (identity: a linear model; tanh: the contrast)."""
    xor_width: int = 8
    """Units per hidden layer of the XOR nets."""
    xor_steps: int = 300
    """Full-batch Adam steps on XOR (rounded up to whole epochs of 50 steps)."""
    xor_learning_rate: float = 0.01
    """Adam's learning rate on XOR."""
    split_seed: int = 0
    """Seed of the digits' train/validation/test split (fixed across --seed)."""

    def __post_init__(self):
        super().__post_init__()
        check_subset(self, "activations", INITS)
        check_distinct(self, "depths")
        check_choice(self, "batch_norm", BATCH_NORM)
        check_subset(self, "xor_activations", INITS)
        if not self.depths:
            raise ConfigError("--depths needs one or more numbers of hidden layers, e.g. 10 20")


PRESETS = {
    "default": Config(epochs=20, batch_size=64, optimizer="momentum", learning_rate=0.02,
                      checkpoint_every_epochs=5),
    "smoke": Config(preset="smoke", depths=(10,), width=32, activations=("sigmoid", "relu"),
                    batch_norm="off", epochs=1, batch_size=128, optimizer="momentum",
                    learning_rate=0.02, grad_examples=128, xor_depth=4,
                    xor_activations=("identity",), xor_steps=100, xor_learning_rate=0.03,
                    checkpoint_every_epochs=1),
}


def variant_name(activation: str, batch_norm: bool, depth: int) -> str:
    """``relu_bn_depth10``."""
    return f"{activation}{'_bn' if batch_norm else ''}_depth{depth}"


def main(cfg: Config) -> dict:
    """Train every variant one after another, then XOR; return the summary."""
    def body(run, log):
        data = load_image_dataset("digits", jax.random.key(cfg.split_seed))
        splits = flatten_splits(data.splits)
        check_at_most(cfg.grad_examples, len(splits.train), "--grad-examples",
                      "the training split")
        probe_batch = (jnp.asarray(splits.train.x[:cfg.grad_examples]),
                       jnp.asarray(splits.train.y[:cfg.grad_examples]))
        results = {}
        for depth in cfg.depths:
            for bn in BATCH_NORM[cfg.batch_norm]:
                for act in cfg.activations:
                    name = variant_name(act, bn, depth)
                    results[name] = _train_variant(cfg, run, act, bn, depth, splits,
                                                   probe_batch, name)
            _plot_depth(run, depth, {n: r for n, r in results.items()
                                     if n.endswith(f"_depth{depth}")})
        return dict(**_claim(results), **_summarise(results), **_linear_xor(cfg, run),
                    inits={a: INITS[a] for a in cfg.activations})

    return run_experiment(NAME, cfg, body)


def _train_variant(cfg: Config, run, act: str, bn: bool, depth: int, splits, probe_batch,
                   name: str) -> dict:
    """Train one deep MLP (with the layer probe after every epoch) and return its per-layer
    gradient norms and zero shares at initialisation and after training, its records and its
    test accuracy."""
    model = MLP((cfg.width,) * depth, 10, activation=act, batch_norm=bn,
                kernel_init=INITIALIZERS[INITS[act]], **cfg.model_dtypes)
    probe = make_layer_probe(model, losses.softmax_cross_entropy, depth)
    if cfg.num_models is not None:
        probe = jax.vmap(probe, in_axes=(0, None, None))
    probe = jax.jit(probe)
    state = initial_state(cfg, model, splits.train, name=name)
    init = [np.asarray(v) for v in probe(state, *probe_batch)]

    def on_epoch(state, epoch):  # joins the epoch's record
        norms, zero = (np.asarray(v) for v in probe(state, *probe_batch))
        return {"grad_ratio_first_to_last": norms[..., 0] / norms[..., depth - 1],
                "zero_activation_share": zero.mean(axis=-1)}

    result = train_supervised(cfg, run, model, losses.softmax_cross_entropy, splits.train,
                              splits.val, name=name, metrics_fn=classification_metrics,
                              on_epoch=on_epoch)
    final = [np.asarray(v) for v in probe(result.state, *probe_batch)]
    probs = predict_probs(model, result.state, splits.test.x, result.ensemble)
    accuracy = (probs.argmax(-1) == splits.test.y).mean(axis=-1)
    return dict(depth=depth, init=init, final=final, records=result.history,
                test_accuracy=float(np.mean(accuracy)))


def _ratio(norms: np.ndarray, depth: int) -> float:
    """First hidden layer's gradient norm over the last hidden layer's (mean over models)."""
    return float(np.mean(norms[..., 0] / norms[..., depth - 1]))


def _summarise(results: dict) -> dict:
    """The per-variant figures of summary.json."""
    ratio = {n: _ratio(r["init"][0], r["depth"]) for n, r in results.items()}
    trained = {n: _ratio(r["final"][0], r["depth"]) for n, r in results.items()}
    zero = {n: {"init": float(np.mean(r["init"][1])), "trained": float(np.mean(r["final"][1]))}
            for n, r in results.items() if n.startswith("relu")}
    layers = {n: {"init": np.mean(np.reshape(r["init"][0], (-1, r["depth"] + 1)), 0).tolist(),
                  "trained": np.mean(np.reshape(r["final"][0], (-1, r["depth"] + 1)), 0).tolist()}
              for n, r in results.items()}
    return dict(grad_ratio_first_to_last=ratio, grad_ratio_first_to_last_trained=trained,
                relu_zero_share=zero,
                test_accuracy={n: r["test_accuracy"] for n, r in results.items()},
                layer_grad_norms=layers)


def _claim(results: dict) -> dict:
    """The claim's figures first (scalars, so the printed summary shows them)."""
    sig, relu = results.get("sigmoid_depth10"), results.get("relu_depth10")
    out = {"sigmoid_depth10_grad_ratio": None if sig is None else _ratio(sig["init"][0], 10),
           "relu_depth10_grad_ratio": None if relu is None else _ratio(relu["init"][0], 10)}
    if sig is not None and relu is not None:
        r_sig, r_relu = out["sigmoid_depth10_grad_ratio"], out["relu_depth10_grad_ratio"]
        out["claim_holds"] = bool(r_sig < 0.01 and 0.1 <= r_relu <= 10)
    return out


def _plot_depth(run, depth: int, results: dict) -> None:
    """Per-layer gradient norms (init, trained), the ratio across training, training curves."""
    layers = np.arange(1, depth + 2)

    def per_layer(which):
        return {n: (layers, np.mean(np.reshape(r[which][0], (-1, depth + 1)), 0))
                for n, r in results.items()}

    plot_series({"at initialisation": per_layer("init"), "after training": per_layer("final")},
                run.file(f"grad_norms_depth{depth}.png"),
                xlabel=f"layer (1 = first hidden, {depth + 1} = output)",
                ylabel="||d loss / d kernel||", log_y=True,
                title=f"depth {depth}: per-layer gradient norms")
    ratios = {n: ([0] + [rec["epoch"] for rec in r["records"]],
                  [_ratio(r["init"][0], depth)]
                  + [rec["grad_ratio_first_to_last"] for rec in r["records"]])
              for n, r in results.items()}
    plot_series({"first / last hidden layer": ratios}, run.file(f"grad_ratio_depth{depth}.png"),
                xlabel="epoch (0 = initialisation)", ylabel="gradient norm ratio", log_y=True,
                hlines={"1/100": 0.01, "1/10": 0.1, "1": 1.0},
                title=f"depth {depth}: first over last hidden layer's gradient norm")
    records = [rec for r in results.values() for rec in r["records"]]
    plot_curves(records, run.file(f"curves_depth{depth}.png"),
                [("train_loss",), ("val_accuracy",)], log_scale=("loss",),
                title=f"depth {depth}: training curves")


def _linear_xor(cfg: Config, run) -> dict:
    """A deep identity MLP (a linear model) and the same net with tanh, trained on XOR."""
    x, y = xor()
    data = Split(x, y[:, None].astype(np.float32))
    # each training example is the whole truth table (4, 2): a batch of one is a full-batch
    # step, and an epoch of XOR_STEPS_PER_EPOCH copies saves fit's per-epoch work
    table = Split(np.broadcast_to(x, (XOR_STEPS_PER_EPOCH, 4, 2)).copy(),
                  np.broadcast_to(data.y, (XOR_STEPS_PER_EPOCH, 4, 1)).copy())
    xor_cfg = dataclasses.replace(cfg, optimizer="adam", learning_rate=cfg.xor_learning_rate,
                                  weight_decay=0.0, batch_size=1,
                                  epochs=-(-cfg.xor_steps // XOR_STEPS_PER_EPOCH))
    out = {}
    for act in cfg.xor_activations:
        model = MLP((cfg.xor_width,) * cfg.xor_depth, 1, activation=act,
                    kernel_init=INITIALIZERS[INITS[act]], **cfg.model_dtypes)
        name = f"xor_{act}_depth{cfg.xor_depth}"
        fit = train_supervised(xor_cfg, run, model, losses.binary_cross_entropy, table,
                               table.take(np.arange(1)), name=name, metrics_fn=binary_metrics,
                               epoch_mode="scan")
        predict = make_predict(model)
        if jnp.ndim(fit.state.step) > 0:
            logits = np.asarray(jax.vmap(predict, in_axes=(0, None))(fit.state, data.x))[..., 0]
        else:
            logits = np.asarray(predict(fit.state, data.x))[None, :, 0]
        probs = 1 / (1 + np.exp(-logits.astype(np.float64)))
        acc = ((logits > 0) == (data.y[None, :, 0] > 0.5)).mean(axis=1)
        out.update({f"xor_{act}_accuracy": float(acc.mean()),
                    f"xor_{act}_output_spread": float(np.abs(probs - 0.5).max(axis=1).mean()),
                    f"xor_{act}_loss": float(np.mean(
                        [losses.binary_cross_entropy(jnp.asarray(lg), data.y[:, 0])
                         for lg in logits]))})
    plot_curves([r for act in cfg.xor_activations
                 for r in run.records(model=f"xor_{act}_depth{cfg.xor_depth}")],
                run.file("xor_linear.png"), [("train_loss",), ("train_accuracy",)],
                title=f"XOR: {cfg.xor_depth} hidden layers, {' vs '.join(cfg.xor_activations)}")
    return out


if __name__ == "__main__":
    run_cli(main, Config, PRESETS, prog="python -m experiments.activations", description=__doc__)
