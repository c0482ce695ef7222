"""Adversarial examples: FGSM and PGD against an MLP and LeNet-5, and adversarial training.

Trains each net (``--models``: mlp, lenet) twice on the digits (or MNIST / Fashion-MNIST
files with ``--dataset`` and ``--data-dir``): normally, and adversarially (Madry et al. 2018:
every step trains on PGD examples of its batch at ``--train-eps``). Then sweeps the attack
budget: test accuracy against FGSM (Goodfellow et al. 2015) and PGD at every ``--eps`` value,
all budgets in one compiled program (the attack is vmapped over eps). Writes the accuracy
curves, perturbed test digits with each net's prediction, and the clean-vs-robust trade-off.

Pixel scale: every dataset's inputs are in [0, 1] (the digits' 17 grey levels k/16, so one
grey level is 0.0625; MNIST's 0..255 / 255). eps is the L-infinity budget per pixel of the
dataset's own image (8x8 for the digits): both nets are attacked in that space; LeNet's
upsampling to its 32x32 design size is part of the model. Adversarial images are clipped to
[0, 1].
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from dlfun import losses
from dlfun.attacks import fgsm, pgd
from dlfun.data.images import IMAGE_DATASETS, check_data_dir_used, ImageData, load_image_dataset
from dlfun.data.split import Split, Splits
from dlfun.errors import ConfigError
from dlfun.nn import MLP, LeNet5
from dlfun.nn.checks import takes_train
from dlfun.optim import make_optimizer
from dlfun.plots import plot_bars, plot_image_grid, plot_series
from dlfun.runs.classifier import train_classifier
from dlfun.runs.cli import run_cli
from dlfun.runs.config import TrainConfig, check_choice, check_distinct, check_subset
from dlfun.runs.experiment import run_experiment
from dlfun.runs.run import Run
from dlfun.runs.training import fit_options
from dlfun.train import (create_train_state, fit, init_states, make_adversarial_train_step,
                         make_eval_step, make_input_loss, make_predict, run_keys)
from dlfun.train.metrics import classification_metrics

NAME = "adversarial"
MODELS = ("mlp", "lenet")
ATTACKS = ("fgsm", "pgd")
PIXEL_RANGE = (0.0, 1.0)


@dataclasses.dataclass(frozen=True)
class Config(TrainConfig):
    dataset: str = "digits"
    """digits (embedded 8x8), mnist or fashion_mnist (IDX files in --data-dir)."""
    data_dir: str | None = None
    """Folder with the dataset files (default: $DLFUN_DATA)."""
    models: tuple[str, ...] = MODELS
    """Nets to train and attack: mlp, lenet."""
    hidden: tuple[int, ...] = (256, 128)
    """Hidden layer sizes of the MLP."""
    eps: tuple[float, ...] = (0.0, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3)
    """Attack budgets (L-infinity, pixels in [0, 1]) of the accuracy sweep."""
    train_eps: float = 0.15
    """Budget of adversarial training, and the eps at which the clean-vs-robust trade-off is
    reported (added to the sweep). 0.15 is 2.4 of the digits' 16 grey levels."""
    train_attack: str = "pgd"
    """Attack that makes the training examples of adversarial training: pgd or fgsm."""
    pgd_steps: int = 20
    """PGD iterations when evaluating."""
    pgd_train_steps: int = 7
    """PGD iterations inside each adversarial training step."""
    pgd_step_scale: float = 2.5
    """PGD step size in units of eps / steps (Madry et al.: 2.5, so a walk can cross the
    ball)."""
    examples: int = 8
    """Test images shown clean and perturbed, with each net's prediction."""
    split_seed: int = 0
    """Seed of the train/validation/test split (fixed across --seed so runs compare)."""

    hidden_flags: ClassVar[frozenset] = frozenset({"sweep"})
    sweepable: ClassVar[tuple[str, ...]] = ()  # its adversarial training builds its own optimizer
    ranges: ClassVar[dict[str, tuple]] = {"eps": (0.0, 1.0), "train_eps": (0.0, 1.0),
                                          "pgd_steps": (1, 1000), "pgd_train_steps": (1, 1000),
                                          "pgd_step_scale": (0.01, 100.0),
                                          "examples": (1, 32)}

    def unused_because(self, name: str) -> str | None:
        if name == "pgd_train_steps" and self.train_attack != "pgd":
            return "with --train-attack fgsm (PGD makes no training examples then)"
        return super().unused_because(name)

    def __post_init__(self):
        super().__post_init__()
        check_choice(self, "dataset", [d for d in IMAGE_DATASETS if d != "cifar10"])
        check_data_dir_used(self, "dataset")
        check_subset(self, "models", MODELS)
        check_distinct(self, "eps")
        check_choice(self, "train_attack", ATTACKS)
        if not self.eps:
            raise ConfigError("--eps needs one or more budgets, e.g. --eps 0 0.05 0.1")
        if not self.hidden or min(self.hidden) < 1:
            raise ConfigError("--hidden needs one or more positive layer sizes, e.g. "
                              "--hidden 256 128")
        if self.num_seeds != 1:
            raise ConfigError(f"--num-seeds {self.num_seeds}: this experiment attacks one "
                              f"model per net; pass --num-seeds 1")

    @property
    def sweep_eps(self) -> tuple[float, ...]:
        """The sweep's budgets: ``--eps``, ``--train-eps`` and 0 (clean), sorted."""
        return tuple(sorted(set(self.eps) | {0.0, self.train_eps}))


PRESETS = {
    "default": Config(epochs=30, batch_size=64, learning_rate=1e-3, checkpoint_every_epochs=10),
    "smoke": Config(preset="smoke", epochs=6, batch_size=64, learning_rate=3e-3,
                    models=("mlp",), hidden=(64,), eps=(0.0, 0.1, 0.2), train_eps=0.1,
                    pgd_steps=5, pgd_train_steps=3, examples=4, checkpoint_every_epochs=3),
}


class ImageInput(nn.Module):
    """``net`` fed images ``(batch, H, W, C)`` in [0, 1]: flattened for a dense net
    (``size`` 0), else brought to ``size x size`` (bilinear upsampling by a whole factor,
    otherwise zero padding around the centre, as :func:`dlfun.data.image_prep.fit_to_size`).
    Inside the model, so an attack perturbs the dataset's own pixels."""

    net: nn.Module
    size: int = 0

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        n, h, w, c = x.shape
        if self.size == 0:
            x = x.reshape(n, h * w * c)  # (B, H*W*C)
        elif self.size % h == 0:
            x = jax.image.resize(x, (n, self.size, self.size, c), "bilinear")
        else:
            lo = (self.size - h) // 2
            x = jnp.pad(x, ((0, 0), (lo, self.size - h - lo), (lo, self.size - h - lo), (0, 0)))
        return self.net(x, train=train) if takes_train(self.net) else self.net(x)


def build_model(cfg: Config, name: str, num_classes: int) -> nn.Module:
    """The net ``name`` wrapped to take the dataset's images (LeNet at its 32x32 size)."""
    if name == "mlp":
        return ImageInput(MLP(cfg.hidden, num_classes, **cfg.model_dtypes))
    return ImageInput(LeNet5(num_classes=num_classes, **cfg.model_dtypes), size=32)


def make_attack(name: str, eps, steps: int, step_scale: float):
    """``attack(input_loss, params, x, y, key) -> x_adv`` at budget ``eps`` (may be traced)."""
    if name == "fgsm":
        return lambda loss, p, x, y, key: fgsm(loss, p, x, y, eps, pixel_range=PIXEL_RANGE)
    return lambda loss, p, x, y, key: pgd(loss, p, x, y, eps, step_size=step_scale * eps / steps,
                                          steps=steps, key=key, pixel_range=PIXEL_RANGE)


def train_robust(cfg: Config, run: Run, model: nn.Module, splits: Splits, name: str):
    """Adversarial training: :func:`dlfun.train.fit` with the adversarial step, wired as
    :func:`dlfun.runs.training.train_supervised` wires the plain one (that helper builds its
    own step, so the wiring is repeated here)."""
    opts = fit_options(cfg, name)
    keys = run_keys(cfg.seed, None)
    tx = make_optimizer(cfg.optimizer, cfg.learning_rate, momentum=cfg.momentum,
                        weight_decay=cfg.weight_decay)
    sample = jnp.asarray(splits.train.x[:1])
    state = init_states(lambda k: create_train_state(model, tx, k, sample), keys[0], None)
    attack = make_attack(cfg.train_attack, cfg.train_eps, cfg.pgd_train_steps,
                         cfg.pgd_step_scale)
    loss = losses.softmax_cross_entropy
    step = make_adversarial_train_step(model, loss, attack, metrics_fn=classification_metrics,
                                       nonfinite=cfg.nonfinite_policy)
    eval_step = make_eval_step(model, loss, metrics_fn=classification_metrics)
    return fit(state, step, eval_step, splits.train, splits.val, keys, opts, run).state


def make_sweep(model: nn.Module, attack: str, steps: int, step_scale: float):
    """``sweep(state, x, y, eps_values, key) -> (E,)`` correct predictions on ``(x, y)``
    attacked at each budget: one compiled program for every budget (vmap over eps)."""
    predict = make_predict(model)

    def sweep(state, x, y, eps_values, key):
        loss = make_input_loss(model, losses.softmax_cross_entropy, state)

        def correct_at(eps):
            x_adv = make_attack(attack, eps, steps, step_scale)(loss, state.params, x, y, key)
            return (predict(state, x_adv).argmax(-1) == y).sum()

        return jax.vmap(correct_at)(eps_values)

    return jax.jit(sweep)


def accuracy_vs_eps(cfg: Config, model: nn.Module, state, test: Split,
                    batch_size: int = 1000) -> dict[str, list[float]]:
    """Test accuracy under each attack at each of ``cfg.sweep_eps``."""
    eps = jnp.asarray(cfg.sweep_eps, jnp.float32)
    out = {}
    for attack in ATTACKS:
        sweep = make_sweep(model, attack, cfg.pgd_steps, cfg.pgd_step_scale)
        key = jax.random.key(cfg.seed + 1)
        correct = sum(np.asarray(sweep(state, jnp.asarray(test.x[i:i + batch_size]),
                                       jnp.asarray(test.y[i:i + batch_size]), eps,
                                       jax.random.fold_in(key, i)))
                      for i in range(0, len(test), batch_size))
        out[attack] = [float(c) / len(test) for c in correct]
    return out


def perturbed_examples(cfg: Config, model: nn.Module, state, x: np.ndarray, y: np.ndarray):
    """PGD images at ``--train-eps`` against this net and its predictions on them."""
    loss = make_input_loss(model, losses.softmax_cross_entropy, state)
    attack = make_attack("pgd", cfg.train_eps, cfg.pgd_steps, cfg.pgd_step_scale)
    x_adv = jax.jit(attack, static_argnums=0)(loss, state.params, jnp.asarray(x),
                                              jnp.asarray(y), jax.random.key(cfg.seed + 2))
    return np.asarray(x_adv), np.asarray(make_predict(model)(state, x_adv).argmax(-1))


def draw_examples(cfg: Config, run: Run, models: dict, test: Split,
                  class_names: tuple[str, ...]) -> str:
    """One row of clean test images, then one row of PGD images per trained net."""
    x, y = test.x[:cfg.examples], test.y[:cfg.examples]
    images, titles = [x], [f"clean: {class_names[t]}" for t in y]
    for name, (model, state) in models.items():
        clean_pred = np.asarray(make_predict(model)(state, jnp.asarray(x)).argmax(-1))
        x_adv, pred = perturbed_examples(cfg, model, state, x, y)
        images.append(x_adv)
        titles += [f"{name}: {class_names[c]}->{class_names[p]}" for c, p in zip(clean_pred, pred)]
    file = "adversarial_examples.png"
    plot_image_grid(np.concatenate(images), run.file(file), titles, cols=cfg.examples,
                    value_range=PIXEL_RANGE,
                    title=f"PGD at eps={cfg.train_eps} (pixels in [0, 1]): prediction clean->attacked")
    return file


def trade_off(cfg: Config, curves: dict, name: str) -> dict:
    """Clean and robust (at ``--train-eps``) accuracy of the standard and adversarial net."""
    clean, j = cfg.sweep_eps.index(0.0), cfg.sweep_eps.index(cfg.train_eps)
    out = dict(eps=cfg.train_eps, trained_with=cfg.train_attack)
    for label, c in (("standard", curves[name]), ("adversarial", curves[f"{name}_adv"])):
        out[f"clean_accuracy_{label}"] = c["pgd"][clean]
        for attack in ATTACKS:
            out[f"{attack}_accuracy_{label}"] = c[attack][j]
    return out


def draw_curves(cfg: Config, run: Run, curves: dict) -> list[str]:
    """Accuracy against eps (one panel per attack) and the trade-off bars."""
    panels = {attack: {name: (list(cfg.sweep_eps), c[attack]) for name, c in curves.items()}
              for attack in ATTACKS}
    plot_series(panels, run.file("accuracy_vs_eps.png"), "eps (L-inf, pixels in [0, 1])",
                "test accuracy", hlines={"chance": 0.1},
                title="accuracy under attack (*_adv: adversarially trained)")
    j = cfg.sweep_eps.index(cfg.train_eps)
    plot_bars({name: c["pgd"][j] for name, c in curves.items()}, run.file("robust_accuracy.png"),
              "test accuracy", title=f"PGD-{cfg.pgd_steps} at eps={cfg.train_eps}")
    return ["accuracy_vs_eps.png", "robust_accuracy.png"]


def main(cfg: Config) -> dict:
    """Train, attack and report; returns the summary (also written to summary.json)."""
    def body(run, log):
        data = load_image_dataset(cfg.dataset, jax.random.key(cfg.split_seed), cfg.data_dir)
        return attack_models(cfg, run, data)

    return run_experiment(NAME, cfg, body)


def attack_models(cfg: Config, run: Run, data: ImageData) -> dict:
    """Both trainings of every net, the sweeps, pictures and summary figures."""
    trained, curves = {}, {}
    for name in cfg.models:
        model = build_model(cfg, name, data.num_classes)
        result = train_classifier(cfg, run, model, data.splits, data.class_names, name=name)
        trained[name] = (model, result.fit.state)
        trained[f"{name}_adv"] = (model, train_robust(cfg, run, model, data.splits, f"{name}_adv"))
    for name, (model, state) in trained.items():
        curves[name] = accuracy_vs_eps(cfg, model, state, data.splits.test)
    pictures = draw_curves(cfg, run, curves) + [draw_examples(cfg, run, trained,
                                                              data.splits.test,
                                                              data.class_names)]
    robust = {name: trade_off(cfg, curves, name) for name in cfg.models}
    claim = {name: dict(eps=cfg.train_eps,
                        standard_pgd_below_30=r["pgd_accuracy_standard"] < 0.3,
                        adversarial_pgd_above_70=r["pgd_accuracy_adversarial"] > 0.7)
             for name, r in robust.items()}
    return dict(dataset=cfg.dataset, pixel_range=list(PIXEL_RANGE),
                pixel_scale=("inputs in [0, 1]; digits: grey level k/16, one level = 0.0625; "
                             "eps is the L-inf budget per pixel of the dataset's image"),
                eps=list(cfg.sweep_eps), pgd_steps=cfg.pgd_steps,
                accuracy_vs_eps=curves, adversarial_training=robust, claim=claim,
                pictures=pictures,
                test_examples=len(data.splits.test))


if __name__ == "__main__":
    run_cli(main, Config, PRESETS, prog="python -m experiments.adversarial", description=__doc__)
