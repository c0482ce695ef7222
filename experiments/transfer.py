"""Transfer learning: LeNet-5 features of digits 0-4 reused for 5-9 with few labels.

Pretrains LeNet-5 on digits 0-4 (the embedded 8x8 digits upsampled to 32x32), then learns
digits 5-9 from ``--labels-per-class`` labelled examples per class (0: all of them) four
ways (across datasets with ``--target``: every class of ``--source``, e.g. MNIST, pretrains
and every class of the target, e.g. Fashion-MNIST, is the new task; their IDX files are read
from ``--data-dir``, nothing is downloaded): from scratch; a linear probe (only a new output layer trains; the rest frozen through
:func:`dlfun.optim.freeze`, i.e. ``optax.multi_transform`` with ``set_to_zero``); fine-tuning
the last block (the three dense layers, convolutions frozen); and fine-tuning everything.
``--num-seeds K`` repeats each (pretraining included) with K seeds in one program. Every
method gets the same number of update steps (``--steps``), whatever the budget. The frozen
parameters are checked to be bitwise those of the pretrained net.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from dlfun import losses
from dlfun.data.image_prep import prepare_splits
from dlfun.data.images import check_data_dir_used, load_image_dataset
from dlfun.data.split import Splits
from dlfun.data.tasks import check_per_class, class_task, few_labels
from dlfun.errors import ConfigError
from dlfun.nn import LeNet5
from dlfun.optim import freeze, make_optimizer
from dlfun.plots import plot_series
from dlfun.runs.classifier import predict_probs, train_classifier
from dlfun.runs.cli import run_cli
from dlfun.runs.config import TrainConfig, check_choice, check_distinct, check_subset
from dlfun.runs.experiment import run_experiment
from dlfun.runs.run import Run
from dlfun.runs.training import fit_options
from dlfun.train import (create_train_state, fit, init_states, make_eval_step,
                         make_train_step, run_keys)
from dlfun.train.metrics import classification_metrics

NAME = "transfer"
METHODS = ("scratch", "linear_probe", "finetune_last", "finetune_all")
TRAINABLE = {"linear_probe": {"fc3"}, "finetune_last": {"fc1", "fc2", "fc3"}}
TASK_A, TASK_B = (0, 1, 2, 3, 4), (5, 6, 7, 8, 9)
GRAY = ("digits", "mnist", "fashion_mnist")
"""Datasets of one channel: any of them can pretrain the features of another."""
DATASETS = (*GRAY, "cifar10")


@dataclasses.dataclass(frozen=True)
class Config(TrainConfig):
    source: str = "digits"
    """Dataset of the pretraining (task A): digits (embedded), mnist, fashion_mnist or cifar10
    (files in --data-dir)."""
    target: str | None = None
    """Dataset of the new task B (None: the source). The same dataset: classes 0-4 are task A,
    5-9 task B; another one (e.g. --source mnist --target fashion_mnist): every class of the
    source is task A and every class of the target task B."""
    data_dir: str | None = None
    """Folder of the MNIST / Fashion-MNIST / CIFAR-10 files (default: $DLFUN_DATA)."""
    pretrain_examples: int = 10_000
    """Task A trains on at most this many examples (the first of its training split; 0: all):
    MNIST's 54,000 would make the pretraining the run's longest part."""
    labels_per_class: tuple[int, ...] = (10, 50, 0)
    """Labelled examples per class of task B (e.g. digits 5-9); 0: all the training split
    has."""
    methods: tuple[str, ...] = METHODS
    """scratch, linear_probe, finetune_last, finetune_all."""
    steps: int = 300
    """Update steps of each task-B training (epochs follow from the budget)."""
    split_seed: int = 0
    """Seed of the train/validation/test split (fixed across --seed so runs compare)."""
    num_seeds: int = 3
    """Seeds of every training (pretraining included), run together in one program."""

    hidden_flags: ClassVar[frozenset] = frozenset({"sweep"})
    sweepable: ClassVar[tuple[str, ...]] = ()  # its fine-tuning builds its own optimizers
    ranges: ClassVar[dict[str, tuple]] = {"labels_per_class": (0, 100_000),
                                          "steps": (1, 1_000_000),
                                          "pretrain_examples": (0, 10_000_000)}

    def __post_init__(self):
        super().__post_init__()
        check_subset(self, "methods", METHODS)
        check_distinct(self, "labels_per_class")
        check_choice(self, "source", DATASETS)
        if self.target is not None:
            check_choice(self, "target", DATASETS)
        check_data_dir_used(self, "source", "target")
        if self.cross_dataset and not {self.source, self.target} <= set(GRAY):
            raise ConfigError(f"--source {self.source} and --target {self.target} differ in "
                              f"channels; pair {', '.join(GRAY)} with each other, or use "
                              f"cifar10 as both (classes 0-4, then 5-9)")
        if not self.labels_per_class:
            raise ConfigError("--labels-per-class needs one or more budgets, e.g. "
                              "--labels-per-class 10 50 0")

    @property
    def cross_dataset(self) -> bool:
        """Task B is another dataset than task A's."""
        return self.target not in (None, self.source)


PRESETS = {
    "default": Config(epochs=20, batch_size=32, learning_rate=1e-3, checkpoint_every_epochs=20),
    "smoke": Config(preset="smoke", epochs=3, batch_size=32, learning_rate=5e-3,
                    labels_per_class=(10,), methods=("scratch", "linear_probe"), steps=20,
                    num_seeds=1, checkpoint_every_epochs=3),
}


def start_state(cfg: Config, model, method: str, pretrained, sample, steps: int):
    """The task-B state: fresh (scratch), or the pretrained parameters with a fresh output
    layer; the optimizer trains what ``method`` trains."""
    tx = make_optimizer(cfg.optimizer, cfg.learning_rate, momentum=cfg.momentum,
                        weight_decay=cfg.weight_decay)
    if method in TRAINABLE:
        tx = freeze(tx, TRAINABLE[method])
    keys = run_keys(cfg.seed + 1000, cfg.num_models)  # the new head's init differs from A's
    state = init_states(lambda k: create_train_state(model, tx, k, sample), keys[0],
                        cfg.num_models)
    if method == "scratch":
        return state
    params = dict(pretrained, fc3=state.params["fc3"])
    init = tx.init if cfg.num_models is None else jax.vmap(tx.init)
    return state.replace(params=params, opt_state=init(params))


def frozen_unchanged(pretrained, params, method: str) -> bool:
    """Whether every parameter ``method`` freezes has exactly the pretrained bits."""
    frozen = [k for k in pretrained if method in TRAINABLE and k not in TRAINABLE[method]]
    return all(np.asarray(a).tobytes() == np.asarray(b).tobytes()
               for k in frozen for a, b in zip(jax.tree.leaves(pretrained[k]),
                                               jax.tree.leaves(params[k])))


def train_b(cfg: Config, run: Run, model, method: str, per_class: int, data_b: Splits,
            pretrained) -> tuple[list[float], bool]:
    """One method at one budget: per-seed test accuracy, and whether frozen parts held."""
    train = few_labels(data_b.train, per_class)
    batch = min(cfg.batch_size, len(train))
    epochs = max(1, -(-cfg.steps // (len(train) // batch)))
    opts = fit_options(cfg, f"{method}_{per_class or 'all'}", epochs=epochs, batch_size=batch)
    state = start_state(cfg, model, method, pretrained, jnp.asarray(train.x[:1]),
                        epochs * (len(train) // batch))
    loss = losses.softmax_cross_entropy
    result = fit(state, make_train_step(model, loss, metrics_fn=classification_metrics),
                 make_eval_step(model, loss, metrics_fn=classification_metrics), train,
                 data_b.val, run_keys(cfg.seed + 2000, cfg.num_models), opts, run)
    probs = predict_probs(model, result.state, data_b.test.x, result.ensemble)
    probs = probs if probs.ndim == 3 else probs[None]
    acc = [float((p.argmax(-1) == data_b.test.y).mean()) for p in probs]
    return acc, frozen_unchanged(pretrained, result.state.params, method)


@dataclasses.dataclass(frozen=True)
class Tasks:
    """Task A (pretraining) and task B (the transfer), each with its class names."""

    a: Splits
    b: Splits
    names_a: tuple[str, ...]
    names_b: tuple[str, ...]
    title_b: str
    """Task B in words, for the plot (e.g. "digits 5-9")."""


def load_tasks(cfg: Config) -> Tasks:
    """Both tasks at LeNet-5's design size, 32x32 (the 8x8 digits upsampled, MNIST padded)."""
    key = jax.random.key(cfg.split_seed)
    source = load_image_dataset(cfg.source, key, cfg.data_dir)
    splits = prepare_splits(source.splits, 32)
    if cfg.cross_dataset:
        target = load_image_dataset(cfg.target, key, cfg.data_dir)
        a, b = splits, prepare_splits(target.splits, 32)
        names_a, names_b, title = source.class_names, target.class_names, cfg.target
    else:
        a, b = class_task(splits, TASK_A), class_task(splits, TASK_B)
        names_a = tuple(source.class_names[c] for c in TASK_A)
        names_b = tuple(source.class_names[c] for c in TASK_B)
        title = f"{cfg.source} classes 5-9"
    if cfg.pretrain_examples and len(a.train) > cfg.pretrain_examples:
        a = Splits(a.train.take(np.arange(cfg.pretrain_examples)), a.val, a.test)
    check_per_class(b.train, max(cfg.labels_per_class), "--labels-per-class",
                    "task B's training split", also=", or 0 for all")
    return Tasks(a, b, names_a, names_b, title)


def main(cfg: Config) -> dict:
    """Pretrain on A, transfer to B; returns the summary (also written to summary.json)."""
    def body(run, log):
        tasks = load_tasks(cfg)
        model_a = LeNet5(num_classes=len(tasks.names_a), **cfg.model_dtypes)
        model_b = LeNet5(num_classes=len(tasks.names_b), **cfg.model_dtypes)
        pre = train_classifier(cfg, run, model_a, tasks.a, tasks.names_a, name="pretrain",
                               plots=False)
        pretrained = pre.fit.state.params
        acc, frozen = {}, {}
        for method in cfg.methods:
            acc[method], frozen[method] = {}, {}
            for n in cfg.labels_per_class:
                each, held = train_b(cfg, run, model_b, method, n, tasks.b, pretrained)
                acc[method][str(n or "all")] = dict(mean=float(np.mean(each)), each=each)
                frozen[method] = frozen.get(method) is not False and held
        return report(cfg, run, pre.report["test_accuracy"], acc, frozen, tasks.title_b)

    return run_experiment(NAME, cfg, body)


def report(cfg: Config, run: Run, task_a_accuracy: float, acc: dict, frozen: dict,
           title_b: str) -> dict:
    """Summary figures and the accuracy-against-labels plot."""
    budgets = [str(n or "all") for n in cfg.labels_per_class]
    xs = [n or max(cfg.labels_per_class) * 2 for n in cfg.labels_per_class]
    plot_series({f"task B ({title_b}) test accuracy": {
        m: (xs, [acc[m][b]["mean"] for b in budgets]) for m in acc}},
        run.file("accuracy_vs_labels.png"), "labels per class ('all' drawn at the right)",
        "test accuracy", title=f"transfer from {cfg.source}"
        f"{'' if cfg.cross_dataset else ' classes 0-4'}, mean of {cfg.num_seeds} seeds")
    out = dict(source=cfg.source, target=cfg.target or cfg.source,
               task_a_test_accuracy=task_a_accuracy, labels_per_class=budgets,
               test_accuracy={m: {b: v["mean"] for b, v in r.items()} for m, r in acc.items()},
               test_accuracy_each={m: {b: v["each"] for b, v in r.items()} for m, r in acc.items()},
               frozen_parameters_unchanged={m: v for m, v in frozen.items() if m in TRAINABLE},
               pictures=["accuracy_vs_labels.png"])
    if "scratch" in acc:
        low = budgets[0]
        out["gain_over_scratch"] = {m: acc[m][low]["mean"] - acc["scratch"][low]["mean"]
                                    for m in acc if m != "scratch"}
        out["gain_over_scratch_at"] = low
    return out


if __name__ == "__main__":
    run_cli(main, Config, PRESETS, prog="python -m experiments.transfer", description=__doc__)
