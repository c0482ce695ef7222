"""Losses: pure ``(outputs, targets) -> scalar`` functions (means over the batch).

Outputs narrower than float32 (a bfloat16 model, see :mod:`dlfun.nn.precision`) are cast to
float32 first, so the softmax, logarithms and means of every loss run in float32.
"""

import jax
import jax.numpy as jnp
import optax

from .errors import ShapeError
from .nn.precision import at_least_float32 as _f32


def _same_shape(name: str, outputs: jax.Array, targets: jax.Array) -> None:
    # Silent broadcasting of (B, 1) against (B,) gives a (B, B) loss: refuse it.
    if outputs.shape != targets.shape:
        raise ShapeError(f"{name}: outputs {outputs.shape} and targets {targets.shape} differ in "
                         f"shape; reshape the targets to {outputs.shape}")


def mse(outputs: jax.Array, targets: jax.Array) -> jax.Array:
    """Mean squared error, mean over all elements. ``outputs`` and ``targets`` same shape."""
    _same_shape("mse", outputs, targets)
    return jnp.mean(jnp.square(_f32(outputs) - _f32(targets)))


def huber(outputs: jax.Array, targets: jax.Array, delta: float = 1.0) -> jax.Array:
    """Huber loss (quadratic within ``delta``, linear outside), mean over all elements."""
    _same_shape("huber", outputs, targets)
    return jnp.mean(optax.huber_loss(_f32(outputs), _f32(targets), delta=delta))


def softmax_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Cross-entropy of softmax(logits) against labels, mean over the batch.

    Args:
      logits: ``(..., num_classes)`` unnormalised scores.
      labels: integer class ids ``(...)`` or one-hot / probability rows ``(..., num_classes)``.
    """
    logits = _f32(logits)
    if labels.shape == logits.shape and jnp.issubdtype(labels.dtype, jnp.floating):
        return jnp.mean(optax.softmax_cross_entropy(logits, _f32(labels)))
    if labels.shape == logits.shape[:-1] and jnp.issubdtype(labels.dtype, jnp.integer):
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))
    raise ShapeError(f"softmax_cross_entropy: logits {logits.shape} need integer labels of shape "
                     f"{logits.shape[:-1]} or float one-hot labels of shape {logits.shape}; got "
                     f"{labels.dtype} labels of shape {labels.shape}")


def binary_cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """Binary cross-entropy of sigmoid(logits) against targets in [0, 1], mean over elements."""
    _same_shape("binary_cross_entropy", logits, targets)
    logits = _f32(logits)
    return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, targets.astype(logits.dtype)))


# GAN losses: functions of the discriminator's raw outputs (logits for the minimax and
# non-saturating losses, scores for least squares), means over the batch. D(x) = sigmoid(logit).

def gan_discriminator_loss(real_logits: jax.Array, fake_logits: jax.Array) -> jax.Array:
    """The discriminator's side of the original minimax game (both minimax and non-saturating):
    ``-E[log D(x)] - E[log(1 - D(G(z)))]`` = ``E[softplus(-real)] + E[softplus(fake)]``.

    Args:
      real_logits: ``(batch, 1)`` logits on real data.
      fake_logits: ``(batch, 1)`` logits on generated data.
    """
    real_logits, fake_logits = _f32(real_logits), _f32(fake_logits)
    return jnp.mean(jax.nn.softplus(-real_logits)) + jnp.mean(jax.nn.softplus(fake_logits))


def gan_generator_loss_minimax(fake_logits: jax.Array) -> jax.Array:
    """The generator's side of the original minimax game: ``E[log(1 - D(G(z)))]``, i.e.
    ``-E[softplus(fake)]`` (its gradient vanishes when D confidently rejects the samples)."""
    return -jnp.mean(jax.nn.softplus(_f32(fake_logits)))


def gan_generator_loss_nonsaturating(fake_logits: jax.Array) -> jax.Array:
    """The non-saturating generator loss ``-E[log D(G(z))]`` = ``E[softplus(-fake)]``."""
    return jnp.mean(jax.nn.softplus(-_f32(fake_logits)))


def lsgan_discriminator_loss(real_scores: jax.Array, fake_scores: jax.Array) -> jax.Array:
    """Least-squares GAN (Mao et al. 2017, a=0, b=c=1):
    ``0.5 E[(D(x) - 1)^2] + 0.5 E[D(G(z))^2]`` on raw scores."""
    real_scores, fake_scores = _f32(real_scores), _f32(fake_scores)
    return 0.5 * jnp.mean(jnp.square(real_scores - 1.0)) + 0.5 * jnp.mean(jnp.square(fake_scores))


def lsgan_generator_loss(fake_scores: jax.Array) -> jax.Array:
    """Least-squares GAN generator loss ``0.5 E[(D(G(z)) - 1)^2]``."""
    return 0.5 * jnp.mean(jnp.square(_f32(fake_scores) - 1.0))
