"""The training state: parameters, optimizer state, batch-norm statistics, step counters."""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax.training import train_state

from ..nn.checks import takes_train


class TrainState(train_state.TrainState):
    """Flax's ``TrainState`` plus the two things dlfun's steps carry.

    Attributes (beyond ``step``, ``params``, ``opt_state``, ``apply_fn``, ``tx``):
      batch_stats: running batch-norm statistics (an empty dict for models without them).
      bad_step: int32 scalar, the step whose loss or gradients were first non-finite, or -1.
        Under the "stop" policy the state is frozen from that step on, so it still holds the
        last good parameters when the host notices.
    """

    batch_stats: Any = None
    bad_step: jax.Array = None


def create_train_state(model: nn.Module, tx: optax.GradientTransformation, key: jax.Array,
                       sample_input: jax.Array) -> TrainState:
    """Initialise ``model`` on ``sample_input`` and wrap it with optimizer state.

    Args:
      model: a Linen module; called as ``model(x, train=False)`` if it takes ``train``.
      tx: the optimizer.
      key: initialisation key (also seeds the ``"dropout"`` rng during init).
      sample_input: an example batch ``(batch, ...)``; only its shape and dtype matter.

    Returns:
      a ``TrainState`` with ``step = 0`` (int32) and ``bad_step = -1``.
    """
    kwargs = {"train": False} if takes_train(model) else {}
    p_key, d_key = jax.random.split(key)
    variables = model.init({"params": p_key, "dropout": d_key}, sample_input, **kwargs)
    variables = nn.meta.unbox(variables)
    return state_from_params(model, tx, variables["params"], variables.get("batch_stats", {}))


def state_from_params(model: nn.Module, tx: optax.GradientTransformation, params: Any,
                      batch_stats: Any = None) -> TrainState:
    """A ``TrainState`` at step 0 (``bad_step = -1``) around given ``params`` (e.g. a trained
    network's), with a fresh optimizer state and ``batch_stats`` (default: none)."""
    return TrainState(step=jnp.zeros((), jnp.int32), apply_fn=model.apply, params=params,
                      tx=tx, opt_state=tx.init(params),
                      batch_stats={} if batch_stats is None else batch_stats,
                      bad_step=jnp.full((), -1, jnp.int32))


def count_params(params: Any) -> int:
    """Number of scalars in a parameter pytree."""
    return sum(int(x.size) for x in jax.tree.leaves(params))
