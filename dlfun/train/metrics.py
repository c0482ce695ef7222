"""Metrics: per-batch figures inside the step, and classification reports on the host."""

import jax
import jax.numpy as jnp
import numpy as np


def classification_metrics(logits: jax.Array, labels: jax.Array) -> dict[str, jax.Array]:
    """Accuracy of ``logits (batch, classes)`` against int ``labels (batch,)`` or one-hot."""
    if labels.ndim == logits.ndim:
        labels = jnp.argmax(labels, axis=-1)
    return {"accuracy": jnp.mean(jnp.argmax(logits, axis=-1) == labels)}


def binary_metrics(logits: jax.Array, targets: jax.Array) -> dict[str, jax.Array]:
    """Accuracy of sigmoid ``logits`` thresholded at 0 against 0/1 ``targets`` (same shape)."""
    return {"accuracy": jnp.mean((logits > 0) == (targets > 0.5))}


def no_metrics(outputs: jax.Array, targets: jax.Array) -> dict[str, jax.Array]:
    """For regression: the loss is the only figure."""
    return {}


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """``(num_classes, num_classes)`` counts; row = true class, column = predicted class."""
    cm = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(cm, (np.asarray(labels), np.asarray(predictions)), 1)
    return cm


def precision_recall(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-class precision (column-wise) and recall (row-wise) of a confusion matrix.

    A class never predicted has precision 0 (not NaN), one never present recall 0.
    """
    tp = np.diag(cm).astype(np.float64)
    predicted, actual = cm.sum(axis=0), cm.sum(axis=1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros_like(tp), where=actual > 0)
    return precision, recall


def predictive_entropy(probs: np.ndarray) -> np.ndarray:
    """Entropy (nats) of each row of class probabilities ``(N, classes)`` -> ``(N,)``."""
    p = np.clip(probs, 1e-12, 1.0)
    return -(p * np.log(p)).sum(axis=-1)
