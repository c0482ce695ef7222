"""Catastrophic forgetting: digits 0-4 (task A), then 5-9 (task B); rehearsal and EWC.

One MLP learns task A (digits 0-4), then task B (digits 5-9) starting from A's parameters,
three ways (--methods): plain (B's data only); rehearsal (a buffer of --rehearsal-per-class A
training examples per class joins B's training set, so B's shuffled batches mix them in); and
elastic weight consolidation (Kirkpatrick et al. 2017): the loss gains
``λ/2 Σ_i F_i (θ_i - θ*_i)²`` with θ* A's parameters and F the diagonal of the Fisher
information at θ* on A's training set (the expectation over the model's own predictions,
:func:`dlfun.train.fisher_diagonal`), λ = --ewc-strength. Task A's test accuracy is recorded
after every epoch of B (``forgetting_curves.png``).

--heads says which output layer the two tasks share: ``shared`` (the usual split-digits
setting: one 5-way head, A's digits 0-4 and B's digits 5-9 both labelled 0-4, so after B the
network must still answer "0" for a zero; domain-incremental) and/or ``ten_way`` (one 10-way
head with the true labels; A is scored by the argmax over all ten outputs: class-incremental,
the setting where EWC is known not to help, van de Ven & Tolias 2019). --num-seeds K repeats
everything (task A included) for seeds seed..seed+K-1, one after another (each EWC run has
its own anchor).

summary.json: ``task_a_accuracy_before_b``, ``task_a_accuracy_after_b`` and
``task_b_accuracy`` per method (means over seeds) for the first of --heads, every head under
``by_head``. The claim measured: plain training loses >= 40 points on A; rehearsal or EWC
keeps A within 15 points of its accuracy before B.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import numpy as np

from dlfun import losses
from dlfun.data import Splits, class_task, concat_splits, few_labels
from dlfun.data.tasks import check_per_class
from dlfun.data.images import flatten_splits, load_image_dataset
from dlfun.nn import MLP
from dlfun.plots import plot_series
from dlfun.runs.classifier import make_accuracy
from dlfun.runs.cli import run_cli
from dlfun.runs.config import TrainConfig, check_subset
from dlfun.runs.experiment import run_experiment
from dlfun.runs.run import Run
from dlfun.runs.training import train_supervised
from dlfun.train import fisher_diagonal, make_ewc_penalty
from dlfun.train.metrics import classification_metrics

NAME = "forgetting"
METHODS = ("plain", "rehearsal", "ewc")
HEADS = ("shared", "ten_way")
TASK_A, TASK_B = (0, 1, 2, 3, 4), (5, 6, 7, 8, 9)
FORGET_POINTS, KEEP_POINTS = 0.40, 0.15  # the claim's margins (accuracy, 0..1)


@dataclasses.dataclass(frozen=True)
class Config(TrainConfig):
    ranges: ClassVar[dict[str, tuple]] = {
        "hidden": (1, 65_536), "epochs_b": (1, 1_000_000), "rehearsal_per_class": (1, 10_000),
        "ewc_strength": (0.0, 1e12)}

    heads: tuple[str, ...] = ("shared", "ten_way")
    """Output layers shared by the tasks: shared (one 5-way head) and/or ten_way."""
    methods: tuple[str, ...] = METHODS
    """How task B trains: plain, rehearsal, ewc."""
    hidden: tuple[int, ...] = (256, 256)
    """Hidden layer sizes of the MLP."""
    epochs_b: int = 20
    """Epochs of task B (--epochs is task A's)."""
    rehearsal_per_class: int = 20
    """Task-A training examples per class kept in the rehearsal buffer."""
    ewc_strength: float = 1e6
    """λ of the EWC penalty λ/2 Σ F_i (θ_i - θ*_i)² (the default from a scan: see the README)."""
    split_seed: int = 0
    """Seed of the digits' train/validation/test split (fixed across --seed)."""

    def unused_because(self, name: str) -> str | None:
        needs = {"ewc_strength": "ewc", "rehearsal_per_class": "rehearsal"}.get(name)
        if needs and needs not in self.methods:
            return f"without {needs} in --methods"
        return super().unused_because(name)

    def __post_init__(self):
        super().__post_init__()
        check_subset(self, "methods", METHODS)
        check_subset(self, "heads", HEADS)


PRESETS = {
    "default": Config(epochs=20, epochs_b=20, batch_size=32, learning_rate=1e-3, num_seeds=3,
                      checkpoint_every_epochs=20),
    "smoke": Config(preset="smoke", heads=("shared",), hidden=(64,), epochs=4, epochs_b=8,
                    batch_size=32, learning_rate=3e-3, ewc_strength=1e3,
                    checkpoint_every_epochs=8),
}


@dataclasses.dataclass(frozen=True)
class Tasks:
    """Task A and task B as one head sees them, and how to score A."""

    a: Splits
    b: Splits
    outputs: int


def make_tasks(splits: Splits, head: str) -> Tasks:
    """``shared``: both tasks labelled 0-4 (5 outputs); ``ten_way``: true labels (10)."""
    renumber = head == "shared"
    return Tasks(class_task(splits, TASK_A, renumber), class_task(splits, TASK_B, renumber),
                 5 if renumber else 10)


def model_name(head: str, part: str, seed: int, cfg: Config) -> str:
    """``shared_ewc`` (``shared_ewc_seed1`` with several seeds): a model's records and
    checkpoint folder."""
    return f"{head}_{part}" + (f"_seed{seed}" if cfg.num_seeds > 1 else "")


def train_task_b(cfg: Config, run: Run, model, tasks: Tasks, method: str, trained_a, name: str,
                 accuracy) -> dict:
    """Task B from A's parameters by ``method``; A's and B's test accuracy after each epoch
    (``accuracy`` from :func:`dlfun.runs.classifier.make_accuracy`)."""
    train, penalty = tasks.b.train, None
    if method == "rehearsal":
        train = concat_splits(train, few_labels(tasks.a.train, cfg.rehearsal_per_class))
    elif method == "ewc":
        fisher = fisher_diagonal(lambda p, x: model.apply({"params": p}, x), trained_a.params,
                                 tasks.a.train.x)
        penalty = make_ewc_penalty(trained_a.params, fisher, cfg.ewc_strength)

    def on_epoch(state, epoch):
        return dict(task_a_accuracy=accuracy(state, tasks.a.test.x, tasks.a.test.y),
                    task_b_accuracy=accuracy(state, tasks.b.test.x, tasks.b.test.y))

    result = train_supervised(cfg, run, model, losses.softmax_cross_entropy, train,
                              tasks.b.val, name=name, metrics_fn=classification_metrics,
                              on_epoch=on_epoch, penalty_fn=penalty,
                              start_params=trained_a.params, epochs=cfg.epochs_b)
    curve = [float(r["task_a_accuracy"]) for r in result.history]
    return dict(task_a=curve[-1], task_b=float(result.history[-1]["task_b_accuracy"]),
                curve=curve, train_examples=len(train))


def run_head(cfg: Config, run: Run, splits: Splits, head: str, seed: int) -> dict:
    """Task A, then every method of task B, for one head and one seed."""
    tasks = make_tasks(splits, head)
    model = MLP(cfg.hidden, tasks.outputs, **cfg.model_dtypes)
    seed_cfg = dataclasses.replace(cfg, seed=seed, num_seeds=1)
    a = train_supervised(seed_cfg, run, model, losses.softmax_cross_entropy, tasks.a.train,
                         tasks.a.val, name=model_name(head, "task_a", seed, cfg),
                         metrics_fn=classification_metrics)
    accuracy = make_accuracy(model)  # one compiled function for every method
    out = dict(before=float(accuracy(a.state, tasks.a.test.x, tasks.a.test.y)), methods={})
    for method in cfg.methods:
        out["methods"][method] = train_task_b(seed_cfg, run, model, tasks, method, a.state,
                                              model_name(head, method, seed, cfg), accuracy)
    return out


def main(cfg: Config) -> dict:
    """Task A then task B per head, method and seed; returns the summary."""
    def body(run, log):
        splits = flatten_splits(load_image_dataset("digits", jax.random.key(cfg.split_seed)).splits)
        check_per_class(splits.train, cfg.rehearsal_per_class, "--rehearsal-per-class",
                        "the digits' training split")
        seeds = range(cfg.seed, cfg.seed + cfg.num_seeds)
        results = {head: [run_head(cfg, run, splits, head, s) for s in seeds]
                   for head in cfg.heads}
        plot_forgetting(cfg, run, results)
        return summarize(cfg, results)

    return run_experiment(NAME, cfg, body)


def head_figures(cfg: Config, per_seed: list[dict]) -> dict:
    """Means over seeds (and each seed's value) of one head's figures."""
    def mean_each(values):
        return float(np.mean(values)), [float(v) for v in values]

    before, before_each = mean_each([r["before"] for r in per_seed])
    out = dict(task_a_accuracy_before_b=before, task_a_accuracy_after_b={},
               task_b_accuracy={}, task_a_drop={}, each_seed={"before": before_each})
    for m in cfg.methods:
        after, after_each = mean_each([r["methods"][m]["task_a"] for r in per_seed])
        b, b_each = mean_each([r["methods"][m]["task_b"] for r in per_seed])
        out["task_a_accuracy_after_b"][m] = after
        out["task_b_accuracy"][m] = b
        out["task_a_drop"][m] = before - after
        out["each_seed"][m] = dict(task_a_after_b=after_each, task_b=b_each)
    drops = out["task_a_drop"]
    if "plain" in drops:
        out["plain_forgets"] = bool(drops["plain"] >= FORGET_POINTS)
    kept = [m for m in ("rehearsal", "ewc") if m in drops and drops[m] <= KEEP_POINTS]
    out["kept_within_15_points"] = kept
    if "plain" in drops and any(m in drops for m in ("rehearsal", "ewc")):
        out["claim_holds"] = bool(out["plain_forgets"] and kept)
    return out


def summarize(cfg: Config, results: dict) -> dict:
    """The first head's figures at the top, every head under ``by_head``."""
    by_head = {head: head_figures(cfg, per_seed) for head, per_seed in results.items()}
    first = by_head[cfg.heads[0]]
    return dict(head=cfg.heads[0], **{k: v for k, v in first.items() if k != "each_seed"},
                by_head=by_head, seeds=cfg.num_seeds, ewc_strength=cfg.ewc_strength,
                rehearsal_buffer=cfg.rehearsal_per_class * len(TASK_A),
                claim_margins=dict(plain_loses_at_least=FORGET_POINTS,
                                   mitigation_within=KEEP_POINTS),
                pictures=["forgetting_curves.png"])


def plot_forgetting(cfg: Config, run: Run, results: dict) -> None:
    """Task A's test accuracy over B's epochs (epoch 0: before B), one panel per head."""
    panels = {}
    for head, per_seed in results.items():
        before = np.mean([r["before"] for r in per_seed])
        series = {}
        for m in cfg.methods:
            curve = np.mean([r["methods"][m]["curve"] for r in per_seed], axis=0)
            series[m] = (list(range(len(curve) + 1)), [before, *curve.tolist()])
        panels[f"{head} head: task A (digits 0-4) test accuracy"] = series
    plot_series(panels, run.file("forgetting_curves.png"), xlabel="epoch of task B (5-9)",
                ylabel="task A accuracy", title=f"forgetting while learning task B "
                f"(mean of {cfg.num_seeds} seed{'s' * (cfg.num_seeds > 1)})")


if __name__ == "__main__":
    run_cli(main, Config, PRESETS, prog="python -m experiments.forgetting", description=__doc__)
