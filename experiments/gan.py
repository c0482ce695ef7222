"""GAN: a generator and a discriminator trained against each other, with measured quality.

--data gaussians8: MLP players on the classic ring of 8 Gaussians (radius 2, std 0.02). Each
epoch reports the modes covered (a mode counts when >= 1% of the samples lie within 3 std of
its centre) and the high-quality share (samples within 3 std of any centre); plots show the
samples over the real density at several epochs.

--data digits (default; scikit-learn's embedded 8x8 digits) or mnist (IDX files in
--data-dir): DCGAN-style players (upsample + conv, batch norm, ReLU / strided convs,
LeakyReLU). A small CNN trained here on the same data scores the samples each epoch: class
coverage (share of samples per predicted class), confidence, and a classifier-feature Fréchet
distance (FID) to held-out real images, next to the real-vs-real baseline. Plots: a sample
grid from fixed noise every --sample-every epochs, loss curves, a latent interpolation strip.

Coverage (modes or classes covered) below --collapse-threshold for --collapse-patience epochs
in a row is reported as mode collapse in the log and the summary. Each preset holds one
complete configuration per --data (epochs, batch size, widths, ... differ by dataset; --help
lists them); flags given override it, and summary.json lists the values used.
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from dlfun.runs.cli import run_cli
from dlfun.data import Split, ring_centers, ring_of_gaussians
from dlfun.data.images import check_data_dir_used, load_image_dataset
from dlfun.errors import ConfigError
from dlfun.gan import GAN_LOSSES, create_gan_state, feature_stats, frechet_distance
from dlfun.gan import generate, interpolate_latents, make_gan_step, sample_latent
from dlfun.gan.monitor import (CollapseWatch, FeatureClassifier, coverage_history,
                               image_scores, make_sampler, member, per_model, ring_scores)
from dlfun.gan.plots import plot_interpolation, plot_ring_snapshots, plot_sample_grid
from dlfun.nn import MLP, DCGANDiscriminator, DCGANGenerator, SmallCNN, doublings
from dlfun.optim import SCHEDULES, make_optimizer
from dlfun.plots import plot_curves, plot_per_class
from dlfun.runs.classifier import train_classifier
from dlfun.train.epoch import ENSEMBLE_STRATEGIES, EPOCH_MODES, choose_ensemble_strategy
from dlfun.runs.config import TrainConfig
from dlfun.runs.experiment import run_experiment
from dlfun.train.fit import FitOptions, fit, init_states, run_keys
from dlfun.runs.config import RunConfig, check_choice, check_positive

NAME = "gan"
DATASETS = ("digits", "mnist", "gaussians8")
RING_MODES, RING_RADIUS, RING_STD = 8, 2.0, 0.02


PER_DATA = {  # each preset's values per --data
    "default": {
        "gaussians8": dict(epochs=100, batch_size=256, learning_rate=1e-3, latent_dim=2,
                          r1_gamma=0.1, width=128, eval_samples=2500, sample_every=25,
                          collapse_warmup=10, train_size=20000, classifier_epochs=0),
        "digits": dict(epochs=100, batch_size=64, learning_rate=5e-4, latent_dim=32,
                     r1_gamma=0.1, width=32, eval_samples=0, sample_every=10,
                     classifier_epochs=15, collapse_warmup=10, train_size=0),
        # MNIST is not measured here (no files on the build machine); sized from step
        # timings on MNIST-shaped data to stay near 10 minutes on 2 cores
        "mnist": dict(epochs=2, batch_size=128, learning_rate=5e-4, latent_dim=64,
                    r1_gamma=0.1, width=16, eval_samples=5000, sample_every=1,
                    classifier_epochs=1, collapse_warmup=0, train_size=0),
    },
    "smoke": {
        "gaussians8": dict(epochs=24, batch_size=128, learning_rate=2e-3, latent_dim=2,
                          r1_gamma=0.1, width=64, eval_samples=1000, sample_every=8,
                          collapse_warmup=12, train_size=6144, classifier_epochs=0),
        "digits": dict(epochs=6, batch_size=64, learning_rate=1e-3, latent_dim=16,
                     r1_gamma=0.1, width=16, eval_samples=0, sample_every=3,
                     classifier_epochs=4, collapse_warmup=0, train_size=0),
        "mnist": dict(epochs=1, batch_size=32, learning_rate=1e-3, latent_dim=16,
                    r1_gamma=0.1, width=8, eval_samples=200, sample_every=1,
                    classifier_epochs=1, collapse_warmup=0, train_size=0),
    },
}


@dataclasses.dataclass(frozen=True)
class Config(RunConfig):
    preset_by: ClassVar[str] = "data"
    data: str = "digits"
    """gaussians8 (2-D ring of Gaussians), digits (embedded 8x8) or mnist (IDX files)."""
    data_dir: str | None = None
    """Folder with the MNIST files (default: $DLFUN_DATA)."""
    loss: str = "nonsaturating"
    """GAN loss: minimax (original), nonsaturating, or lsgan (least squares)."""
    d_steps: int = 1
    """Discriminator updates per generator update (each on its own real batch)."""
    epochs: int = 100
    """Passes over the training set."""
    batch_size: int = 64
    """Real examples per discriminator update."""
    learning_rate: float = 5e-4
    """Peak Adam learning rate of both players."""
    beta1: float = 0.5
    """Adam's b1 for both players (0.5 as in DCGAN)."""
    lr_schedule: str = "cosine"
    """Learning-rate schedule of both players: constant, cosine, warmup_cosine or step."""
    latent_dim: int = 32
    """Size of the generator's input noise."""
    r1_gamma: float = 0.1
    """Weight of the R1 gradient penalty on real data; 0 turns it off."""
    width: int = 32
    """MLP width (gaussians8) or base channel count of the conv players."""
    eval_samples: int = 0
    """Samples scored each epoch (0: as many as the held-out images)."""
    final_samples: int = 10000
    """Samples scored once at the end for the summary's coverage and quality figures (FID
    keeps --eval-samples, the size of its real-vs-real baseline)."""
    sample_every: int = 10
    """Save a sample grid / snapshot every this many epochs."""
    classifier_epochs: int = 15
    """Epochs of the evaluation classifier for images."""
    collapse_threshold: float = 0.75
    """Mode collapse is declared when coverage (modes or classes covered, as a share) stays
    below this for --collapse-patience epochs in a row after --collapse-warmup."""
    collapse_patience: int = 5
    """Epochs in a row below --collapse-threshold that declare mode collapse."""
    collapse_warmup: int = 10
    """Epochs not judged for mode collapse (the first this many)."""
    train_size: int = 0
    """gaussians8: points drawn from the ring for training (the image data sets: 0, their
    training split)."""
    split_seed: int = 0
    """Seed of the data (ring samples, image splits) and the evaluation noise."""
    epoch_mode: str = "auto"
    """auto, loop (Python loop of jitted steps) or scan (the epoch in one lax.scan)."""
    ensemble: str = "auto"
    """How --num-seeds GANs run together: auto, vmap or map."""
    skip_nonfinite: bool = False
    """Drop steps whose losses or gradients are NaN/inf instead of stopping the run."""
    checkpoint_every_epochs: int = 10
    """Save a checkpoint every this many epochs (and at the end)."""

    def __post_init__(self):
        super().__post_init__()
        check_choice(self, "data", DATASETS)
        check_data_dir_used(self, "data")
        check_choice(self, "loss", GAN_LOSSES)
        check_choice(self, "lr_schedule", SCHEDULES)
        check_choice(self, "epoch_mode", EPOCH_MODES)
        check_choice(self, "ensemble", ENSEMBLE_STRATEGIES)
        check_choice(self, "preset", PER_DATA)
        check_positive(self, "d_steps", "collapse_patience", "checkpoint_every_epochs",
                       "final_samples", "epochs", "batch_size", "learning_rate", "latent_dim",
                       "width", "sample_every")
        for name in ("r1_gamma", "eval_samples", "classifier_epochs", "collapse_warmup",
                     "train_size"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 0, got "
                                  f"{getattr(self, name)}")
        if self.data == "gaussians8" and self.train_size < 1:
            raise ConfigError("--train-size must be >= 1 for --data gaussians8 (e.g. 20000)")
        if self.data != "gaussians8" and self.train_size:
            raise ConfigError(f"--train-size is for --data gaussians8 (points drawn from the "
                              f"ring); --data {self.data} trains on its training split: drop "
                              f"--train-size")
        if not (0.0 <= self.beta1 < 1.0 and 0.0 <= self.collapse_threshold <= 1.0):
            raise ConfigError(f"--beta1 must be in [0, 1) and --collapse-threshold in [0, 1], "
                              f"got {self.beta1}, {self.collapse_threshold}")
        if not math.isfinite(self.learning_rate):
            raise ConfigError(f"--learning-rate must be finite, got {self.learning_rate}")

    @property
    def num_models(self) -> int | None:
        """K GANs at once (``--num-seeds`` > 1), else None."""
        return self.num_seeds if self.num_seeds > 1 else None


HYPERPARAMETERS = ("epochs", "batch_size", "learning_rate", "latent_dim", "r1_gamma", "width",
                   "eval_samples", "sample_every", "classifier_epochs", "collapse_warmup",
                   "train_size")
"""The fields whose values each preset sets per --data (reported in summary.json)."""
SMOKE = dict(preset="smoke", checkpoint_every_epochs=2, collapse_patience=2, final_samples=2000)
PRESETS = {name: {data: Config(data=data, **(SMOKE if name == "smoke" else {}), **values)
                  for data, values in by_data.items()}
           for name, by_data in PER_DATA.items()}
"""One complete config per preset and --data."""


# ---------------------------------------------------------------- the two datasets' tasks

class RingTask:
    """gaussians8: data, MLP players, mode metrics, and snapshots of the samples."""

    coverage_what = "modes covered"

    def __init__(self, cfg: Config):
        points, component = ring_of_gaussians(jax.random.key(cfg.split_seed), cfg.train_size,
                                              RING_MODES, RING_RADIUS, RING_STD)
        self.train = Split(points, component)
        self.centers = ring_centers(RING_MODES, RING_RADIUS)
        self.generator = MLP((cfg.width,) * 3, 2, activation="relu", **cfg.model_dtypes)
        self.discriminator = MLP((cfg.width,) * 3, 1, activation="leaky_relu",
                                 **cfg.model_dtypes)
        self.eval_samples = cfg.eval_samples

    def score(self, samples: np.ndarray) -> list[dict]:
        return ring_scores(samples, self.centers, RING_STD)

    def snapshot(self, run, epoch: int, samples: np.ndarray) -> None:
        path = run.file(f"samples/epoch_{epoch:04d}.npy")
        path.parent.mkdir(exist_ok=True)
        np.save(path, samples)

    def final_plots(self, run, state, sampler, z, final: list[dict]) -> dict:
        files = sorted(run.file("samples").glob("epoch_*.npy"))
        snaps = [(int(f.stem.split("_")[1]), np.load(f)) for f in files]
        plot_ring_snapshots(snaps, self.train.x, self.centers, 3 * RING_STD,
                            run.file("samples_over_density.png"),
                            title="generated (red) over real samples (grey); circles: 3 std; "
                                  "seed member 0")
        return {}


class ImageTask:
    """digits / MNIST: data, DCGAN players, the evaluation classifier and its scores."""

    coverage_what = "classes covered (>= half their share)"

    def __init__(self, cfg: Config, run, log):
        data = load_image_dataset(cfg.data, jax.random.key(cfg.split_seed), cfg.data_dir)
        s = data.splits
        self.train, self.class_names = s.train, data.class_names
        held = np.concatenate([s.val.x, s.test.x])
        self.eval_samples = cfg.eval_samples or len(held)
        h, w, c = data.image_shape
        ups = doublings(min(h, w))
        self.generator = DCGANGenerator((h, w, c), tuple(cfg.width * 2 ** i
                                                         for i in range(ups, -1, -1)),
                                        **cfg.model_dtypes)
        self.discriminator = DCGANDiscriminator(tuple(cfg.width * 2 ** i
                                                      for i in range(ups + 1)),
                                                **cfg.model_dtypes)
        self.classifier, self.classifier_report = _train_eval_classifier(cfg, run, log,
                                                                        data)
        self.reference = feature_stats(self.classifier.embed(held))
        pick = np.asarray(jax.random.choice(jax.random.key(cfg.split_seed + 1), len(s.train),
                                            (min(self.eval_samples, len(s.train)),),
                                            replace=False))
        self.fid_real = frechet_distance(*feature_stats(self.classifier.embed(s.train.x[pick])),
                                         *self.reference)

    def score(self, samples: np.ndarray) -> list[dict]:
        return image_scores(samples, self.classifier, self.reference)

    def snapshot(self, run, epoch: int, samples: np.ndarray) -> None:
        path = run.file(f"samples/epoch_{epoch:04d}.png")
        path.parent.mkdir(exist_ok=True)
        plot_sample_grid(samples[:100], path, title=f"epoch {epoch} (fixed noise)")

    def final_plots(self, run, state, sampler, z, final: list[dict]) -> dict:
        samples = sampler(state.gen, z)[0]  # seed member 0
        plot_sample_grid(samples[:100], run.file("samples.png"),
                         title="generated (fixed noise, seed member 0)")
        plot_sample_grid(self.train.x[:100], run.file("real_samples.png"), title="real")
        ends = sample_latent(jax.random.key(7), 16, z.shape[1])
        strip = interpolate_latents(ends[:8], ends[8:], 10)
        images = sampler(state.gen, strip.reshape(80, -1))[0]
        images = images.reshape((8, 10) + samples.shape[1:])  # (pairs, steps, H, W, C)
        plot_interpolation(images, run.file("interpolation.png"),
                           title="latent interpolation (slerp), one pair per row")
        shares = np.array([f["class_shares"] for f in final])  # (K, classes)
        plot_per_class({f"seed member {k}": v for k, v in enumerate(shares)}, self.class_names,
                       run.file("class_shares.png"),
                       title="predicted class of generated images (the final samples)")
        return dict(class_shares=shares.round(4).tolist())


def _train_eval_classifier(cfg: Config, run, log, data):
    """The evaluation CNN, trained with dlfun on the same training split. Its checkpoints
    live in this run's folder, so a resumed run restores it instead of training again. It is
    float32 whatever --precision says: a measuring instrument, its FID and class shares must
    compare across runs of either precision."""
    clf_cfg = TrainConfig(seed=cfg.split_seed, epochs=max(cfg.classifier_epochs, 1),
                          batch_size=32 if cfg.data == "digits" else 128, learning_rate=1e-3,
                          keep_checkpoints=1)
    model = SmallCNN(num_classes=data.num_classes)
    trained = train_classifier(clf_cfg, run, model, data.splits, data.class_names,
                               name="classifier")
    report = {k: trained.report[k] for k in ("test_accuracy", "test_loss", "num_params")}
    return FeatureClassifier(model, trained.fit.state, SmallCNN.embed), report


# ---------------------------------------------------------------- training and monitoring

class EpochMonitor:
    """``fit``'s ``on_epoch`` hook: scores samples from fixed noise, saves snapshots, prints
    one line per epoch, and watches for mode collapse."""

    def __init__(self, cfg: Config, task, run, log, sampler, z):
        self.cfg, self.task, self.run, self.log = cfg, task, run, log
        self.sampler, self.z = sampler, z
        self.watch = CollapseWatch(cfg.collapse_threshold, cfg.collapse_patience,
                                   cfg.collapse_warmup)
        self.warnings: list[str] = []

    def scores(self, state) -> tuple[dict, np.ndarray]:
        samples = self.sampler(state.gen, self.z)  # (K, n, ...)
        return per_model(self.task.score(samples), self.cfg.num_models), samples

    def __call__(self, state, epoch: int) -> dict:
        figures, samples = self.scores(state)
        if epoch == 1 or epoch % self.cfg.sample_every == 0 or epoch == self.cfg.epochs:
            self.task.snapshot(self.run, epoch, samples[0])
        history = coverage_history(self.log.select(model=NAME), self.cfg.num_models)
        now = np.atleast_1d(figures["coverage"])
        collapsed = []
        for k, past in enumerate(history):
            coverage = past + [float(now[k])]
            msg = self.watch.message(coverage, k if self.cfg.num_models else None,
                                     self.task.coverage_what)
            if msg:
                print(msg, flush=True)
                self.warnings.append(f"epoch {epoch}: {msg}")
            collapsed.append(float(self.watch.collapsed_now(coverage)))
        figures["collapsed"] = collapsed[0] if self.cfg.num_models is None else np.array(
            collapsed)
        print(f"epoch {epoch}/{self.cfg.epochs}  " + "  ".join(
            f"{k} {np.mean(v):.4g}" for k, v in figures.items() if k != "collapsed"), flush=True)
        return figures


def _players_and_step(cfg: Config, task, steps_per_epoch: int):
    """The initial (stacked) GAN state and the undecorated step."""
    tx = make_optimizer("adam", cfg.learning_rate, betas=(cfg.beta1, 0.999),
                        schedule=cfg.lr_schedule, total_steps=cfg.epochs * steps_per_epoch)
    sample = jnp.asarray(task.train.x[:1])
    keys = run_keys(cfg.seed, cfg.num_models)
    state = init_states(lambda k: create_gan_state(task.generator, task.discriminator, tx, tx,
                                                   k, cfg.latent_dim, sample),
                        keys[0], cfg.num_models)
    step = make_gan_step(task.generator, task.discriminator, latent_dim=cfg.latent_dim,
                         loss=cfg.loss, d_steps=cfg.d_steps, r1_gamma=cfg.r1_gamma,
                         nonfinite="skip" if cfg.skip_nonfinite else "stop")
    return state, step, keys


def _sampler(cfg: Config, task, state, z):
    """Samples of every seed member; the K-model strategy is chosen like fit chooses it."""
    if cfg.num_models is None:
        return make_sampler(task.generator, None)
    strategy = choose_ensemble_strategy(
        cfg.ensemble, lambda g, x: generate(task.generator, g, x), member(state.gen, 0), z)
    return make_sampler(task.generator, cfg.num_models, strategy)


def train_gan(cfg: Config, run, log) -> dict:
    """Build the task, train the GAN(s) with :func:`fit`, and return the summary figures."""
    task = RingTask(cfg) if cfg.data == "gaussians8" else ImageTask(cfg, run, log)
    batch = cfg.batch_size * cfg.d_steps  # real examples per GAN step
    if batch > len(task.train):
        raise ConfigError(f"--batch-size {cfg.batch_size} x --d-steps {cfg.d_steps} is more "
                          f"than the {len(task.train)} training examples; lower them")
    state, step, keys = _players_and_step(cfg, task, len(task.train) // batch)
    z = sample_latent(jax.random.key(cfg.split_seed + 2), task.eval_samples, cfg.latent_dim)
    sampler = _sampler(cfg, task, state, z)
    monitor = EpochMonitor(cfg, task, run, log, sampler, z)
    untrained, _ = monitor.scores(state)
    opts = FitOptions(epochs=cfg.epochs, batch_size=batch, name=NAME, num_models=cfg.num_models,
                      epoch_mode=cfg.epoch_mode, ensemble=cfg.ensemble, loss_key="d_loss")
    result = fit(state, step, None, task.train, None, keys, opts, run, on_epoch=monitor)
    z_final = sample_latent(jax.random.key(cfg.split_seed + 3), cfg.final_samples,
                            cfg.latent_dim)
    final = task.score(sampler(result.state.gen, z_final))
    extra = task.final_plots(run, result.state, sampler, z, final)
    _plot_curves(run, log, cfg, getattr(task, "fid_real", None))
    return _summary(cfg, task, log, monitor, untrained, final, result) | extra


def _plot_curves(run, log, cfg: Config, fid_real: float | None) -> None:
    records = log.select(model=NAME)
    panels = [("train_d_loss", "train_g_loss"), ("train_d_real", "train_d_fake")]
    panels += ([("modes_covered",), ("high_quality",)] if cfg.data == "gaussians8" else
               [("fid",), ("min_class_share", "confidence")])
    baseline = "" if fid_real is None else f" (FID real vs real: {fid_real:.3g})"
    plot_curves(records, run.file("curves.png"), panels, title=f"GAN on {cfg.data}{baseline}")


def _summary(cfg: Config, task, log, monitor: EpochMonitor, untrained: dict,
             final: list[dict], result) -> dict:
    """Final figures (mean over seed members and each), untrained figures, collapse report.

    Coverage and quality come from ``--final-samples`` samples (the minimum class share of a
    few hundred samples is noisy); FID from the last epoch's ``--eval-samples``, the size of
    its real-vs-real baseline (FID's bias depends on the sample size).
    """
    records = log.select(model=NAME)
    last, final = records[-1], per_model(final, cfg.num_models)
    names = (("modes_covered", "high_quality") if cfg.data == "gaussians8" else
             ("fid", "min_class_share", "classes_covered", "confidence"))
    out = dict(data=cfg.data, loss=cfg.loss, hyperparameters={k: getattr(cfg, k) for k in HYPERPARAMETERS},
               epochs=len(records), steps=int(np.max(np.asarray(result.state.step))),
               epoch_mode=result.epoch_mode)
    for n in names:
        value = last[n] if n == "fid" else float(np.mean(final[n]))
        out[n] = value
        if cfg.num_models is not None:
            out[f"{n}_each"] = last[f"{n}_each"] if n == "fid" else final[n].tolist()
        out[f"{n}_untrained"] = float(np.mean(untrained[n]))
    if result.ensemble is not None:
        out["ensemble_strategy"] = result.ensemble
    if isinstance(task, ImageTask):
        out.update(fid_real_vs_real=task.fid_real, fid_samples=task.eval_samples,
                   classifier=task.classifier_report)
    out["final_samples"] = cfg.final_samples
    out.update(_collapse_report(cfg, task, records, monitor))
    return out


def _collapse_report(cfg: Config, task, records, monitor: EpochMonitor) -> dict:
    """Collapse episodes per seed member, from the whole history (so a resumed run reports
    the episodes of the epochs before the interruption too)."""
    watch = monitor.watch
    episodes = [watch.episodes(h) for h in coverage_history(records, cfg.num_models)]
    found = any(episodes)
    if found:
        print(f"WARNING: mode collapse: the generator covered too little of the data "
              f"({task.coverage_what} below {cfg.collapse_threshold:.0%}) for at least "
              f"{cfg.collapse_patience} epochs in a row (epochs after the first "
              f"{watch.warmup}); (first, last) epoch of each such stretch, per seed member: "
              f"{episodes}. Try --loss lsgan, a larger --r1-gamma or a lower --learning-rate",
              flush=True)
    return dict(mode_collapse=found, mode_collapse_episodes=episodes,
                mode_collapse_at_end=any(bool(e) and e[-1][1] == len(records)
                                         for e in episodes),
                warnings=monitor.warnings)


def main(cfg: Config) -> dict:
    """Train the GAN(s) and return the summary (also written to summary.json)."""
    return run_experiment(NAME, cfg, lambda run, log: train_gan(cfg, run, log))


if __name__ == "__main__":
    run_cli(main, Config, PRESETS, prog="python -m experiments.gan", description=__doc__)
