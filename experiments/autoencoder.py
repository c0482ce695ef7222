"""Autoencoders on the digits: reconstructions, a latent map, and the encoder fine-tuned.

An MLP autoencoder (64 -> --hidden -> --latent-dim -> mirror -> 64, sigmoid output) and a
convolutional one (two stride-2 3x3 convolutions -> --latent-dim; nearest upsampling and 3x3
convolutions back, :class:`dlfun.nn.ConvEncoder` / :class:`dlfun.nn.ConvDecoder`) learn to
reproduce the 8x8 digits (pixels in [0, 1]) under the mean squared error, with no labels.
Pictures: test digits and both reconstructions (``reconstructions.png``); the test set's
latent codes projected on their two principal components, coloured by class (``latent_map.png``;
with --latent-dim 2 the codes themselves).

Then each encoder gets a fresh 10-way dense head and the whole classifier trains on
--labels-per-class labelled training digits per class (``finetune``), against the same network
from a random start (``scratch``: the same random head, and a random encoder in place of the
trained one); both take --finetune-steps updates. --num-seeds K trains K of
everything (autoencoders included) in one program; fine-tuned model k starts from autoencoder k.

summary.json: ``reconstruction_mse`` per model (test set, mean over seeds) next to
``data_variance`` (the per-pixel variance of the test digits: the error of always answering
the mean image), ``finetune_accuracy`` and ``scratch_accuracy`` per model (test, mean over
seeds; each seed under ``*_each``).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import numpy as np

from dlfun import losses
from dlfun.data import Split, few_labels
from dlfun.data.tasks import check_per_class
from dlfun.data.images import flatten_images, load_image_dataset
from dlfun.errors import ConfigError
from dlfun.nn import MLP, Autoencoder, ConvDecoder, ConvEncoder, EncoderClassifier
from dlfun.plots import plot_embeddings, plot_image_grid
from dlfun.runs.classifier import make_accuracy, predict_outputs
from dlfun.runs.cli import run_cli
from dlfun.runs.config import TrainConfig, check_subset
from dlfun.runs.experiment import run_experiment
from dlfun.runs.run import Run
from dlfun.runs.training import initial_state, train_supervised
from dlfun.train.metrics import classification_metrics
from dlfun.viz import pca_project

NAME = "autoencoder"
MODELS = ("mlp", "conv")
IMAGE_SHAPE = (8, 8, 1)


@dataclasses.dataclass(frozen=True)
class Config(TrainConfig):
    ranges: ClassVar[dict[str, tuple]] = {
        "latent_dim": (2, 4096), "hidden": (1, 65_536), "conv_features": (1, 4096),
        "labels_per_class": (1, 10_000), "finetune_steps": (1, 1_000_000)}

    models: tuple[str, ...] = MODELS
    """Autoencoders to train: mlp and/or conv."""
    latent_dim: int = 16
    """Size of the code (2: the latent map shows the codes themselves, else their PCA)."""
    hidden: tuple[int, ...] = (128,)
    """Hidden layer sizes of the MLP encoder (the decoder mirrors them)."""
    conv_features: tuple[int, ...] = (16, 32)
    """Channels of the convolutional encoder's stride-2 stages, 1 to 3 of them (8x8 -> 4x4 ->
    2x2 -> 1x1; the decoder mirrors them)."""
    labels_per_class: int = 10
    """Labelled training digits per class for the classifiers."""
    finetune_steps: int = 300
    """Updates of each classifier (fine-tuned and from scratch alike)."""
    split_seed: int = 0
    """Seed of the digits' train/validation/test split (fixed across --seed)."""

    def __post_init__(self):
        super().__post_init__()
        check_subset(self, "models", MODELS)
        if not 1 <= len(self.conv_features) <= 3:
            raise ConfigError(f"--conv-features needs 1 to 3 stages for 8x8 digits, got "
                              f"{len(self.conv_features)}; e.g. --conv-features 16 32")
        if not self.hidden:
            raise ConfigError("--hidden needs one or more layer sizes, e.g. --hidden 128")


PRESETS = {
    "default": Config(epochs=100, batch_size=32, learning_rate=2e-3, num_seeds=3,
                      checkpoint_every_epochs=50),
    "smoke": Config(preset="smoke", models=("mlp",), epochs=8, batch_size=32,
                    learning_rate=3e-3, finetune_steps=20, checkpoint_every_epochs=8),
}


def build(cfg: Config, kind: str) -> tuple[Autoencoder, EncoderClassifier]:
    """The autoencoder of ``kind`` and the classifier over a fresh copy of its encoder."""
    dtypes = cfg.model_dtypes
    if kind == "mlp":
        encoder = MLP(cfg.hidden, cfg.latent_dim, **dtypes)
        decoder = MLP(cfg.hidden[::-1], int(np.prod(IMAGE_SHAPE)), output_activation="sigmoid",
                      **dtypes)
    else:
        encoder = ConvEncoder(cfg.latent_dim, cfg.conv_features, **dtypes)
        decoder = ConvDecoder(IMAGE_SHAPE, cfg.conv_features[::-1], **dtypes)
    return Autoencoder(encoder, decoder), EncoderClassifier(encoder.clone(), 10, **dtypes)


def inputs_for(kind: str, split: Split) -> Split:
    """Vectors ``(N, 64)`` for the MLP, images ``(N, 8, 8, 1)`` for the conv net."""
    return flatten_images(split) if kind == "mlp" else split


def train_autoencoder(cfg: Config, run: Run, kind: str, splits) -> dict:
    """Fit the autoencoder to reproduce its inputs; test reconstructions and codes."""
    ae, _ = build(cfg, kind)
    train, val, test = (inputs_for(kind, s) for s in (splits.train, splits.val, splits.test))
    result = train_supervised(cfg, run, ae, losses.mse, Split(train.x, train.x),
                              Split(val.x, val.x), name=f"{kind}_autoencoder")
    recon = predict_outputs(ae, result.state, test.x, result.ensemble)
    recon = recon if recon.ndim > test.x.ndim else recon[None]  # (K, N, ...)
    mse_each = [float(np.mean((r - test.x) ** 2)) for r in recon]
    first = jax.tree.map(lambda a: a[0], result.state) if cfg.num_models else result.state
    codes = np.asarray(jax.jit(lambda p, x: ae.apply({"params": p}, x, method=Autoencoder.encode))(
        first.params, test.x))
    return dict(state=result.state, mse=float(np.mean(mse_each)), mse_each=mse_each,
                reconstructions=recon[0].reshape(len(test.x), *IMAGE_SHAPE), codes=codes)


def train_classifiers(cfg: Config, run: Run, kind: str, splits, ae_state) -> dict:
    """The encoder fine-tuned with a new head vs the same network from scratch, both on
    ``labels_per_class`` examples per class; test accuracy per seed."""
    _, clf = build(cfg, kind)
    labelled = inputs_for(kind, few_labels(splits.train, cfg.labels_per_class))
    val, test = inputs_for(kind, splits.val), inputs_for(kind, splits.test)
    batch = min(cfg.batch_size, len(labelled))
    epochs = -(-cfg.finetune_steps // (len(labelled) // batch))
    accuracy = make_accuracy(clf, cfg.num_models)
    # both start from the same random network; the fine-tuned one with the trained encoder
    fresh = initial_state(cfg, clf, labelled).params
    starts = dict(finetune=dict(fresh, encoder=ae_state.params["encoder"]), scratch=fresh)
    out = {}
    for start, params in starts.items():
        result = train_supervised(cfg, run, clf, losses.softmax_cross_entropy, labelled, val,
                                  name=f"{kind}_{start}", metrics_fn=classification_metrics,
                                  start_params=params, epochs=epochs, batch_size=batch)
        out[start] = np.atleast_1d(accuracy(result.state, test.x, test.y)).tolist()
    return out


def main(cfg: Config) -> dict:
    """Train the autoencoders, then the classifiers; returns the summary."""
    def body(run, log):
        splits = load_image_dataset("digits", jax.random.key(cfg.split_seed)).splits
        check_per_class(splits.train, cfg.labels_per_class, "--labels-per-class",
                        "the digits' training split")
        aes, clfs = {}, {}
        for kind in cfg.models:
            aes[kind] = train_autoencoder(cfg, run, kind, splits)
            clfs[kind] = train_classifiers(cfg, run, kind, splits, aes[kind]["state"])
        maps = plot_pictures(cfg, run, splits.test, aes)
        return summarize(cfg, splits.test, aes, clfs, maps)

    return run_experiment(NAME, cfg, body)


def latent_points(codes: np.ndarray) -> tuple[np.ndarray, str]:
    """2-D points of the codes and how they were made."""
    if codes.shape[1] == 2:
        return codes, "the 2-d codes themselves"
    points, explained = pca_project(codes, 2)
    return points, (f"PCA of the {codes.shape[1]}-d codes (first two components:\n"
                    f"{100 * explained.sum():.0f}% of their variance)")


def plot_pictures(cfg: Config, run: Run, test: Split, aes: dict) -> dict[str, str]:
    """Reconstructions of the first test digit of each class; the latent maps."""
    picks = np.array([np.flatnonzero(test.y == c)[0] for c in range(10)])
    rows = [("input", test.x[picks])] + [(k, a["reconstructions"][picks]) for k, a in aes.items()]
    plot_image_grid(np.concatenate([r for _, r in rows]), run.file("reconstructions.png"),
                    titles=[f"{name} {c}" for name, _ in rows for c in range(10)], cols=10,
                    value_range=(0.0, 1.0), title="test digits and their reconstructions")
    maps = {k: latent_points(a["codes"]) for k, a in aes.items()}
    plot_embeddings({f"{k} autoencoder, {how}": pts for k, (pts, how) in maps.items()},
                    test.y, run.file("latent_map.png"), [str(c) for c in range(10)],
                    xlabel="component 1", ylabel="component 2",
                    title="test digits in the latent space (seed 0), coloured by class")
    return {k: how.replace("\n", " ") for k, (_, how) in maps.items()}


def summarize(cfg: Config, test: Split, aes: dict, clfs: dict, maps: dict) -> dict:
    """The claim's figures first, then each seed's."""
    variance = float(np.mean(np.var(test.x.reshape(len(test.x), -1), axis=0)))
    mean = {k: {s: float(np.mean(v)) for s, v in c.items()} for k, c in clfs.items()}
    return dict(
        reconstruction_mse={k: a["mse"] for k, a in aes.items()}, data_variance=variance,
        mse_over_variance={k: a["mse"] / variance for k, a in aes.items()},
        finetune_accuracy={k: m["finetune"] for k, m in mean.items()},
        scratch_accuracy={k: m["scratch"] for k, m in mean.items()},
        finetune_gain={k: m["finetune"] - m["scratch"] for k, m in mean.items()},
        reconstruction_mse_each={k: a["mse_each"] for k, a in aes.items()},
        finetune_accuracy_each={k: c["finetune"] for k, c in clfs.items()},
        scratch_accuracy_each={k: c["scratch"] for k, c in clfs.items()},
        latent_map=maps, latent_dim=cfg.latent_dim, labels_per_class=cfg.labels_per_class,
        seeds=cfg.num_seeds, pictures=["reconstructions.png", "latent_map.png"])


if __name__ == "__main__":
    run_cli(main, Config, PRESETS, prog="python -m experiments.autoencoder", description=__doc__)
