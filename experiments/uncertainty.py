"""Uncertainty: softmax confidence off the training distribution; one net vs an ensemble vs MC dropout.

Trains K MLPs on the embedded 8x8 digits at once (``--num-seeds K``, one compiled program)
and compares three ways to get class probabilities: one model (each member alone, figures
averaged over the K members), MC dropout (Gal & Ghahramani 2016: each member with dropout
left on, ``--mc-samples`` stochastic passes averaged) and the deep ensemble (Lakshminarayanan
et al. 2017: the K members' probabilities averaged). For the test digits and for inputs the
nets never saw (uniform noise, digits rotated by 90 degrees, inverted digits 1 - x, and
Fashion-MNIST test images shrunk to 8x8 when its IDX files are in ``--data-dir``) it reports
the max-probability and predictive entropy, the AUROC of telling test digits from each
out-of-distribution set by max-probability, and on the test digits the expected calibration
error with reliability diagrams.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from dlfun.data.images import flatten_splits, load_image_dataset
from dlfun.data.idx import load_idx_dataset
from dlfun.errors import ConfigError, DataError
from dlfun.nn import MLP
from dlfun.nn.precision import at_least_float32
from dlfun.plots import plot_histograms, plot_image_grid, plot_reliability
from dlfun.runs.classifier import predict_probs, train_classifier
from dlfun.runs.cli import run_cli
from dlfun.runs.config import TrainConfig
from dlfun.runs.experiment import run_experiment
from dlfun.runs.run import Run
from dlfun.train.calibration import auroc, expected_calibration_error, reliability_bins
from dlfun.train.metrics import predictive_entropy
from dlfun.train.step import apply_model

NAME = "uncertainty"
METHODS = ("single", "mc_dropout", "ensemble")


@dataclasses.dataclass(frozen=True)
class Config(TrainConfig):
    data_dir: str | None = None
    """Folder with Fashion-MNIST's test IDX files (t10k-*), one more out-of-distribution set;
    given, the files must be there. Unset: $DLFUN_DATA's files when it holds them (nothing is
    downloaded)."""
    hidden: tuple[int, ...] = (256, 128)
    """Hidden layer sizes of the MLP."""
    dropout: float = 0.3
    """Dropout rate after each hidden layer (in training, and in MC dropout's passes)."""
    mc_samples: int = 30
    """Stochastic forward passes of MC dropout."""
    num_bins: int = 15
    """Confidence bins of the reliability diagram and the ECE."""
    split_seed: int = 0
    """Seed of the train/validation/test split (fixed across --seed so runs compare)."""
    num_seeds: int = 5
    """Members of the deep ensemble (seeds seed..seed+K-1), trained at once in one compiled
    program; 2 or more."""

    hidden_flags: ClassVar[frozenset] = frozenset({"sweep"})
    sweepable: ClassVar[tuple[str, ...]] = ()  # its seeds are one deep ensemble, which must share hyperparameters
    ranges: ClassVar[dict[str, tuple]] = {"dropout": (0.0, 0.95), "mc_samples": (1, 10_000),
                                          "num_bins": (2, 1000)}

    def __post_init__(self):
        super().__post_init__()
        if self.num_seeds < 2:
            raise ConfigError(f"--num-seeds {self.num_seeds}: the deep ensemble needs 2 or "
                              f"more members, e.g. --num-seeds 5")
        if self.dropout <= 0.0:
            raise ConfigError("--dropout 0 leaves MC dropout nothing to sample; pass e.g. "
                              "--dropout 0.3")
        if not self.hidden or min(self.hidden) < 1:
            raise ConfigError("--hidden needs one or more positive layer sizes, e.g. "
                              "--hidden 256 128")


PRESETS = {
    "default": Config(epochs=60, batch_size=64, learning_rate=1e-3, checkpoint_every_epochs=20),
    "smoke": Config(preset="smoke", epochs=5, batch_size=32, learning_rate=2e-3, num_seeds=3,
                    hidden=(64,), mc_samples=8, checkpoint_every_epochs=5),
}


def fashion_images(cfg: Config, count: int, size: int) -> np.ndarray | None:
    """Up to ``count`` Fashion-MNIST test images shrunk to ``size x size`` (area-weighted), or
    None when the files are not in $DLFUN_DATA; a --data-dir given without them is an error
    (the user asked for them)."""
    try:
        x, _ = load_idx_dataset("fashion_mnist", cfg.data_dir, "test", as_float=True)
    except DataError:
        if cfg.data_dir is not None:
            raise
        return None
    x = jnp.asarray(x[:count])
    return np.asarray(jax.image.resize(x, (len(x), size, size, 1), "linear", antialias=True))


def out_of_distribution(cfg: Config, test: np.ndarray) -> dict[str, np.ndarray]:
    """The out-of-distribution sets, each as many images as ``test`` ``(N, H, W, 1)``."""
    noise = jax.random.uniform(jax.random.key(cfg.seed + 10_000), test.shape)
    sets = {"noise": np.asarray(noise, np.float32),
            "rotated": np.ascontiguousarray(np.rot90(test, k=1, axes=(1, 2))),
            "inverted": (1.0 - test).astype(np.float32)}
    fashion = fashion_images(cfg, len(test), test.shape[1])
    if fashion is not None:
        sets["fashion_mnist"] = fashion
    return sets


def mc_dropout_probs(model: nn.Module, state, x: np.ndarray, samples: int,
                     key: jax.Array) -> np.ndarray:
    """Each member's class probabilities averaged over ``samples`` passes with dropout on:
    ``(K, N, C)`` for K stacked members and inputs ``(N, features)``."""
    def member(s, k):
        def one_pass(pass_key):
            out, _ = apply_model(model, s, s.params, x, train=True, key=pass_key)
            return jax.nn.softmax(at_least_float32(out), axis=-1)  # also for --precision bf16

        return jax.vmap(one_pass)(jax.random.split(k, samples)).mean(axis=0)

    num_models = int(np.shape(state.step)[0])
    keys = jax.random.split(key, num_models)
    return np.asarray(jax.jit(jax.vmap(member))(state, keys))


def method_probs(cfg: Config, model: nn.Module, state, strategy: str,
                 images: dict[str, np.ndarray], key: jax.Array) -> dict[str, dict]:
    """``{set: {method: (M, N, C)}}`` for sets of images ``(N, H, W, 1)``: single and MC
    dropout per member (M = K), the ensemble (M = 1). All sets go through in one call, so
    each of the two programs compiles once."""
    names = list(images)
    x = np.concatenate([images[n] for n in names])
    x = x.reshape(len(x), -1)  # (S*N, H*W)
    members = predict_probs(model, state, x, strategy)
    by_method = {"single": members,
                 "mc_dropout": mc_dropout_probs(model, state, x, cfg.mc_samples, key),
                 "ensemble": members.mean(axis=0, keepdims=True)}
    bounds = np.cumsum([0] + [len(images[n]) for n in names])
    return {n: {m: p[:, bounds[i]:bounds[i + 1]] for m, p in by_method.items()}
            for i, n in enumerate(names)}


def per_model(values: list[float]) -> dict:
    """The mean over a method's models, and each model's value when there are several."""
    out = {"mean": float(np.mean(values))}
    if len(values) > 1:
        out["each"] = [float(v) for v in values]
    return out


def figures(probs: dict[str, dict[str, np.ndarray]], labels: np.ndarray,
            num_bins: int) -> dict:
    """Summary figures from ``probs[set][method]`` ``(M, N, C)``; set "test" is in-distribution."""
    out = {k: {} for k in ("test_accuracy", "ece", "ood_auroc", "mean_max_probability",
                           "mean_entropy")}
    for method in METHODS:
        test = probs["test"][method]
        out["test_accuracy"][method] = per_model(
            [float((p.argmax(-1) == labels).mean()) for p in test])
        out["ece"][method] = per_model(
            [expected_calibration_error(p, labels, num_bins) for p in test])
        out["ood_auroc"][method] = {
            name: per_model([auroc(t.max(-1), o.max(-1)) for t, o in zip(test, sets[method])])
            for name, sets in probs.items() if name != "test"}
        out["mean_max_probability"][method] = {
            name: float(sets[method].max(-1).mean()) for name, sets in probs.items()}
        out["mean_entropy"][method] = {
            name: float(np.mean([predictive_entropy(p).mean() for p in sets[method]]))
            for name, sets in probs.items()}
    return out


def flatten_means(fig: dict) -> dict:
    """``{"mean": v, "each": [...]}`` leaves -> ``v``, for the headline figures."""
    if isinstance(fig, dict) and "mean" in fig:
        return fig["mean"]
    return {k: flatten_means(v) for k, v in fig.items()} if isinstance(fig, dict) else fig


def draw(cfg: Config, run: Run, probs: dict, labels: np.ndarray, images: dict,
         ece: dict) -> list[str]:
    """Reliability diagrams (member 0 for single and MC dropout), max-probability and entropy
    histograms per method, and a few images of every set."""
    title = {"single": "one model (member 0)", "mc_dropout": "MC dropout (member 0)",
             "ensemble": f"ensemble of {cfg.num_seeds}"}
    first = {m: ece[m]["each"][0] if "each" in ece[m] else ece[m]["mean"] for m in METHODS}
    plot_reliability({f"{title[m]}: ECE {first[m]:.3f}":
                      reliability_bins(probs["test"][m][0], labels, cfg.num_bins)
                      for m in METHODS}, run.file("reliability.png"),
                     title="test digits: accuracy against confidence")
    plot_histograms({title[m]: {name: sets[m].max(-1).reshape(-1) for name, sets in probs.items()}
                     for m in METHODS}, run.file("max_probability.png"), "max probability",
                    value_range=(0.0, 1.0), title="confidence on test digits and on inputs "
                                                  "never seen")
    top = float(np.log(labels.max() + 1))
    plot_histograms({title[m]: {name: np.concatenate([predictive_entropy(p) for p in sets[m]])
                                for name, sets in probs.items()} for m in METHODS},
                    run.file("entropy.png"), "predictive entropy (nats)",
                    value_range=(0.0, top), title="predictive entropy")
    shown = 6
    plot_image_grid(np.concatenate([x[:shown] for x in images.values()]),
                    run.file("ood_sets.png"),
                    [name for name in images for _ in range(shown)], cols=shown,
                    value_range=(0.0, 1.0), title="in-distribution (test) and the others")
    return ["reliability.png", "max_probability.png", "entropy.png", "ood_sets.png"]


def main(cfg: Config) -> dict:
    """Train the ensemble, score every method on every set; returns the summary."""
    def body(run, log):
        data = load_image_dataset("digits", jax.random.key(cfg.split_seed))
        test = data.splits.test
        # before training, so that a --data-dir without Fashion-MNIST fails at once
        images = {"test": test.x, **out_of_distribution(cfg, test.x)}
        model = MLP(cfg.hidden, data.num_classes, dropout_rate=cfg.dropout, **cfg.model_dtypes)
        trained = train_classifier(cfg, run, model, flatten_splits(data.splits),
                                   data.class_names, name="mlp")
        probs = method_probs(cfg, model, trained.fit.state, trained.fit.ensemble, images,
                             jax.random.key(cfg.seed + 20_000))
        figs = figures(probs, test.y, cfg.num_bins)
        pictures = draw(cfg, run, probs, test.y, images, figs["ece"])
        auc = figs["ood_auroc"]
        gain = {name: auc["ensemble"][name]["mean"] - auc["single"][name]["mean"]
                for name in auc["single"]}
        return dict(num_members=cfg.num_seeds, mc_samples=cfg.mc_samples,
                    ood_sets=[n for n in images if n != "test"], **flatten_means(figs),
                    ensemble_auroc_gain=gain, per_member=figs, pictures=pictures)

    return run_experiment(NAME, cfg, body)


if __name__ == "__main__":
    run_cli(main, Config, PRESETS, prog="python -m experiments.uncertainty", description=__doc__)
