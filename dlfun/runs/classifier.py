"""Train and report a classifier (one model or an ensemble of seeds): shared by the MLP, CNN
and sequence-classification experiments."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from .. import losses
from ..data.split import Splits
from ..plots import plot_confusion, plot_curves, plot_per_class
from ..train.epoch import compiled_over_models
from ..train.fit import FitResult
from ..train.metrics import (classification_metrics, confusion_matrix, precision_recall,
                             predictive_entropy)
from ..train.state import count_params
from ..train.step import make_predict
from ..train.sweep import best_member
from .config import TrainConfig
from .run import Run
from .training import train_supervised


@dataclass
class TrainedClassifier:
    """The fit result, test-set class probabilities and the report."""

    fit: FitResult
    probs: np.ndarray  # (N, C), or (K, N, C) for K models
    report: dict


def train_classifier(cfg: TrainConfig, run: Run, model: nn.Module,
                     splits: Splits, class_names: tuple[str, ...], *, name: str = "model",
                     augment_fn: Callable | None = None, schedule: str = "constant",
                     clip_norm: float | None = None, plots: bool = True) -> TrainedClassifier:
    """Train ``model`` on ``splits`` with the config's optimizer, report on the test split.

    Args:
      model: a Linen module producing logits ``(batch, num_classes)``.
      splits: train/val/test with inputs ``(N, ...)`` and int labels ``(N,)``.
      augment_fn: optional ``(key, inputs) -> inputs`` inside the training step.
      schedule: learning-rate schedule (see :func:`dlfun.optim.make_schedule`).
      clip_norm: clip the global gradient norm to this value before each update (None: no).

    Returns:
      a :class:`TrainedClassifier`; its report has ``test_accuracy``, ``test_loss``,
      ``num_params``, per-class precision/recall, the confusion matrix, and for ensembles each
      member's accuracy, the ensemble's, and predictive entropy on correct vs wrong examples;
      for a sweep (``--sweep``) each member's test accuracy and loss and the full report of
      the point with the lowest validation loss (see :func:`sweep_member_report`).
    """
    K = cfg.num_models
    result = train_supervised(cfg, run, model, losses.softmax_cross_entropy, splits.train,
                              splits.val, name=name, metrics_fn=classification_metrics,
                              augment_fn=augment_fn, schedule=schedule, clip_norm=clip_norm)
    probs = predict_probs(model, result.state, splits.test.x, result.ensemble)
    if cfg.sweep:  # members differ in hyperparameters: no ensemble, the best one reported
        report = sweep_member_report(cfg, probs, splits.test.y, class_names, result.history)
    else:
        report = classification_report(probs, splits.test.y, class_names)
    one = result.state.params if K is None else jax.tree.map(lambda a: a[0], result.state.params)
    report.update(num_params=count_params(one), epoch_mode=result.epoch_mode,
                  steps=int(np.max(np.asarray(result.state.step))))
    if K is not None:
        report["ensemble_strategy"] = result.ensemble
    if plots:
        plot_classifier(run, report, class_names, name)
    return TrainedClassifier(result, probs, report)


def predict_probs(model: nn.Module, state: Any, x: np.ndarray, strategy: str | None,
                  batch_size: int = 1024) -> np.ndarray:
    """Softmax class probabilities ``(N, C)`` (``(K, N, C)`` for K stacked models)."""
    return predict_outputs(model, state, x, strategy, batch_size,
                           transform=lambda out: jax.nn.softmax(out, axis=-1))


def predict_outputs(model: nn.Module, state: Any, x: np.ndarray, strategy: str | None,
                    batch_size: int = 1024,
                    transform: Callable[[jax.Array], jax.Array] | None = None) -> np.ndarray:
    """Eval-mode outputs of ``model`` on ``x (N, ...)`` in batches: ``(N, ...)``, or
    ``(K, N, ...)`` for K stacked models run by ``strategy`` (None: one model); ``transform``
    is applied to each batch's outputs inside the compiled call."""
    predict = make_predict(model)

    def outputs(s, xb):
        out = predict(s, xb)
        return out if transform is None else transform(out)

    num_models = None if strategy is None else int(np.shape(state.step)[0])
    jitted = (jax.jit(outputs) if strategy is None else
              compiled_over_models(outputs, (0, None), strategy, num_models))
    parts = [np.asarray(jitted(state, jnp.asarray(x[i:i + batch_size])))
             for i in range(0, len(x), batch_size)]
    return np.concatenate(parts, axis=0 if strategy is None else 1)


def make_accuracy(model: nn.Module, num_models: int | None = None
                  ) -> Callable[[Any, np.ndarray, np.ndarray], np.ndarray]:
    """``accuracy(state, x, y)``: eval-mode top-1 accuracy of ``model`` on the whole of ``x``
    against integer labels ``y (N,)`` (one compiled call; ``(K,)`` per model for K stacked
    models), as a numpy value."""
    predict = make_predict(model)

    def accuracy(state, x, y):
        return jnp.mean(jnp.argmax(predict(state, x), -1) == y)

    if num_models is not None:
        accuracy = jax.vmap(accuracy, in_axes=(0, None, None))
    jitted = jax.jit(accuracy)

    def run(state, x, y):
        # only the parameters and statistics matter: without the optimizer (a static field
        # of the state) one compiled function serves states of any optimizer
        weights = state.replace(tx=None, apply_fn=None, opt_state=None)
        return np.asarray(jitted(weights, jnp.asarray(x), jnp.asarray(y)))

    return run


def classification_report(probs: np.ndarray, labels: np.ndarray,
                          class_names: tuple[str, ...]) -> dict:
    """Test figures from class probabilities ``(N, C)`` or ``(K, N, C)`` (ensemble)."""
    report: dict[str, Any] = {}
    if probs.ndim == 3:
        member_acc = (probs.argmax(-1) == labels[None]).mean(axis=1)
        report["member_test_accuracy"] = member_acc.tolist()
        report["member_test_accuracy_mean"] = float(member_acc.mean())
        probs = probs.mean(axis=0)  # the ensemble averages the members' probabilities
        report.update(_entropy_split(probs, labels))
    pred = probs.argmax(-1)
    cm = confusion_matrix(labels, pred, len(class_names))
    precision, recall = precision_recall(cm)
    report.update(test_accuracy=float((pred == labels).mean()), test_loss=_nll(probs, labels),
                  test_examples=int(len(labels)), confusion_matrix=cm.tolist(),
                  precision={c: float(p) for c, p in zip(class_names, precision)},
                  recall={c: float(r) for c, r in zip(class_names, recall)})
    return report


def sweep_member_report(cfg: TrainConfig, probs: np.ndarray, labels: np.ndarray,
                        class_names: tuple[str, ...], history: list[dict]) -> dict:
    """Test figures of a sweep's members ``(K, N, C)``: each member's accuracy and loss
    (``member_test_*``, which the sweep's records take up), and the full report of the member
    with the lowest final validation loss (chosen without the test set), named by
    ``reported_point``."""
    K = probs.shape[0]
    best = best_member(history[-1], K)
    report = {"member_test_accuracy": (probs.argmax(-1) == labels[None]).mean(axis=1).tolist(),
              "member_test_loss": [_nll(p, labels) for p in probs],
              "reported_point": dict(cfg.sweep_points[best // cfg.num_seeds],
                                     seed=cfg.seed + best % cfg.num_seeds)}
    report.update(classification_report(probs[best], labels, class_names))
    return report


def _nll(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-likelihood of the labels, probabilities ``(N, C)``."""
    return float(-np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, 1.0)).mean())


def _entropy_split(probs: np.ndarray, labels: np.ndarray) -> dict:
    """Mean predictive entropy of the ensemble on correctly vs wrongly classified examples."""
    ent = predictive_entropy(probs)
    wrong = probs.argmax(-1) != labels
    return dict(entropy_correct=float(ent[~wrong].mean()) if (~wrong).any() else None,
                entropy_misclassified=float(ent[wrong].mean()) if wrong.any() else None)


def plot_classifier(run: Run, report: dict, class_names, name: str) -> None:
    """Loss/accuracy curves, confusion matrix, per-class precision and recall."""
    records = run.records(model=name)
    plot_curves(records, run.file(f"{name}_curves.png"),
                [("train_loss", "val_loss"), ("train_accuracy", "val_accuracy")],
                title=f"{name}: loss and accuracy")
    plot_confusion(np.asarray(report["confusion_matrix"]), class_names,
                   run.file(f"{name}_confusion.png"),
                   title=f"{name}: test accuracy {report['test_accuracy']:.4f}")
    plot_per_class({"precision": np.array(list(report["precision"].values())),
                    "recall": np.array(list(report["recall"].values()))}, class_names,
                   run.file(f"{name}_precision_recall.png"), title=f"{name}: per class")
