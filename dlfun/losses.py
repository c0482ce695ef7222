"""Losses: pure ``(outputs, targets) -> scalar`` functions (means over the batch)."""

import jax
import jax.numpy as jnp
import optax

from .errors import ShapeError


def _same_shape(name: str, outputs: jax.Array, targets: jax.Array) -> None:
    # Silent broadcasting of (B, 1) against (B,) gives a (B, B) loss: refuse it.
    if outputs.shape != targets.shape:
        raise ShapeError(f"{name}: outputs {outputs.shape} and targets {targets.shape} differ in "
                         f"shape; reshape the targets to {outputs.shape}")


def mse(outputs: jax.Array, targets: jax.Array) -> jax.Array:
    """Mean squared error, mean over all elements. ``outputs`` and ``targets`` same shape."""
    _same_shape("mse", outputs, targets)
    return jnp.mean(jnp.square(outputs - targets))


def huber(outputs: jax.Array, targets: jax.Array, delta: float = 1.0) -> jax.Array:
    """Huber loss (quadratic within ``delta``, linear outside), mean over all elements."""
    _same_shape("huber", outputs, targets)
    return jnp.mean(optax.huber_loss(outputs, targets, delta=delta))


def softmax_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Cross-entropy of softmax(logits) against labels, mean over the batch.

    Args:
      logits: ``(..., num_classes)`` unnormalised scores.
      labels: integer class ids ``(...)`` or one-hot / probability rows ``(..., num_classes)``.
    """
    if labels.shape == logits.shape and jnp.issubdtype(labels.dtype, jnp.floating):
        return jnp.mean(optax.softmax_cross_entropy(logits, labels))
    if labels.shape == logits.shape[:-1] and jnp.issubdtype(labels.dtype, jnp.integer):
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))
    raise ShapeError(f"softmax_cross_entropy: logits {logits.shape} need integer labels of shape "
                     f"{logits.shape[:-1]} or float one-hot labels of shape {logits.shape}; got "
                     f"{labels.dtype} labels of shape {labels.shape}")


def binary_cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """Binary cross-entropy of sigmoid(logits) against targets in [0, 1], mean over elements."""
    _same_shape("binary_cross_entropy", logits, targets)
    return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, targets.astype(logits.dtype)))
