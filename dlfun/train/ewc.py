"""Elastic weight consolidation (Kirkpatrick et al. 2017): the diagonal of the Fisher
information at one task's optimum, and the quadratic penalty that anchors the parameters
there while a later task trains.

The penalty ``λ/2 Σ_i F_i (θ_i - θ*_i)²`` is the Laplace approximation of the first task's
posterior: parameters the first task's likelihood is sensitive to (large ``F_i``) are held
near ``θ*``, the others stay free for the new task.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from ..errors import ConfigError, ShapeError

LogitsFn = Callable[[Any, jax.Array], jax.Array]


def _weighted_squared_grads(logits_fn: LogitsFn, params, x: jax.Array, labels: jax.Array,
                            weights: jax.Array):
    """``Σ_b weights[b] * (∂ log p(labels[b] | x[b]) / ∂θ)²`` over a batch, per parameter."""
    def log_prob(p, xi, yi):
        return jax.nn.log_softmax(logits_fn(p, xi[None])[0].astype(jnp.float32))[yi]

    grads = jax.vmap(jax.grad(log_prob), in_axes=(None, 0, 0))(params, x, labels)  # (B, ...)
    return jax.tree.map(lambda g: jnp.tensordot(weights, jnp.square(g), axes=1), grads)


def _batch_fisher(logits_fn: LogitsFn, params, x, labels, mask):
    """One batch's sum of squared score vectors: at ``labels`` (empirical Fisher), or, where
    ``labels`` is None, every class weighted by the model's probability (expected Fisher)."""
    if labels is not None:
        return _weighted_squared_grads(logits_fn, params, x, labels, mask)
    probs = jax.lax.stop_gradient(jax.nn.softmax(logits_fn(params, x).astype(jnp.float32)))

    def add_class(total, c):
        part = _weighted_squared_grads(logits_fn, params, x, jnp.full(len(x), c),
                                       probs[:, c] * mask)
        return jax.tree.map(jnp.add, total, part), None

    zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), params)
    total, _ = jax.lax.scan(add_class, zeros, jnp.arange(probs.shape[-1]))
    return total


def fisher_diagonal(logits_fn: LogitsFn, params: Any, x: np.ndarray,
                    labels: np.ndarray | None = None, *, batch_size: int = 128) -> Any:
    """The diagonal of the Fisher information of a classifier, per parameter.

    ``F_i = mean_n E_y[(∂ log p(y | x_n, θ) / ∂θ_i)²]``: with ``labels``, y is the given label
    (the "empirical" Fisher); without, the expectation runs over the model's own predictive
    distribution, computed exactly as a sum over classes (the true Fisher, of which
    Kirkpatrick et al. draw samples). Each example's gradient is taken on its own (``vmap``
    of ``grad``), never a batch mean's, which would square away the example-to-example
    spread.

    Args:
      logits_fn: ``logits_fn(params, x) -> logits (batch, classes)``, in evaluation mode
        (e.g. ``lambda p, x: model.apply({"params": p}, x)``).
      params: the parameters at which to measure (a task's optimum θ*).
      x: inputs ``(N, ...)``.
      labels: integer labels ``(N,)`` for the empirical Fisher, or None.
      batch_size: examples per compiled batch (the last is padded with zero weight).

    Returns:
      a pytree of numpy float32 arrays shaped like ``params`` (summed over batches in
      float64), every entry ``>= 0``.
    """
    n = len(x)
    if n == 0:
        raise ShapeError("fisher_diagonal needs at least one example, got none")
    if labels is not None and np.shape(labels) != (n,):
        raise ShapeError(f"fisher_diagonal: labels must have shape ({n},) for {n} inputs, got "
                         f"{np.shape(labels)}")
    if batch_size < 1:
        raise ConfigError(f"fisher_diagonal batch_size must be >= 1, got {batch_size}")
    bs = min(batch_size, n)
    batch = jax.jit(lambda p, xb, yb, m: _batch_fisher(logits_fn, p, xb, yb, m))
    total = None
    for lo in range(0, n, bs):
        idx = np.arange(lo, lo + bs) % n  # wrap the last batch; its repeats get weight 0
        mask = jnp.asarray((np.arange(lo, lo + bs) < n).astype(np.float32))
        y = None if labels is None else jnp.asarray(np.asarray(labels)[idx], jnp.int32)
        part = jax.tree.map(lambda a: np.asarray(a, np.float64),
                            batch(params, jnp.asarray(x[idx]), y, mask))
        total = part if total is None else jax.tree.map(np.add, total, part)
    return jax.tree.map(lambda t: (t / n).astype(np.float32), total)


def ewc_penalty(params: Any, anchor: Any, fisher: Any, strength: float) -> jax.Array:
    """``strength / 2 * Σ_i F_i (θ_i - θ*_i)²`` over every parameter.

    Args:
      params: the current parameters θ.
      anchor: the parameters θ* of the earlier task's optimum (same tree as ``params``).
      fisher: the Fisher diagonal at ``anchor`` (:func:`fisher_diagonal`), same tree.
      strength: λ, how strongly the earlier task is held (0: no penalty).

    Returns:
      a float32 scalar; its gradient is ``strength * F * (θ - θ*)``, zero at the anchor.
    """
    terms = jax.tree.map(lambda p, a, f: jnp.sum(f * jnp.square(p.astype(jnp.float32) - a)),
                         params, anchor, fisher)
    return 0.5 * strength * sum(jax.tree.leaves(terms))


def make_ewc_penalty(anchor: Any, fisher: Any, strength: float) -> Callable[[Any], jax.Array]:
    """``penalty(params)`` = :func:`ewc_penalty` at this ``anchor`` and ``fisher`` (for the
    ``penalty_fn`` of :func:`dlfun.train.make_train_step`)."""
    if not strength >= 0:
        raise ConfigError(f"the EWC strength must be >= 0, got {strength}")
    anchor = jax.tree.map(jnp.asarray, anchor)
    fisher = jax.tree.map(jnp.asarray, fisher)
    return lambda params: ewc_penalty(params, anchor, fisher, strength)
