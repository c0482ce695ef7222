"""Per-layer views of a deep MLP on one batch: each layer's gradient norm (vanishing or
exploding gradients) and the share of its hidden activations that are exactly zero (dead or
sparse ReLU units)."""

from __future__ import annotations

from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from .state import TrainState


def make_layer_probe(model: nn.Module, loss_fn: Callable, num_hidden: int) -> Callable:
    """``probe(state, x, y) -> (grad_norms, zero_share)`` for a :class:`dlfun.nn.MLP`.

    The model runs as the training step runs it (``train=True``: batch norm uses the batch's
    statistics, which are not written back; no dropout rng, so build the probed model without
    dropout).

    Args:
      model: an MLP whose layers are ``Dense_0 .. Dense_{num_hidden}`` (the last is the output
        layer) and which sows its hidden activations as ``intermediates/hidden_<i>``.
      loss_fn: ``(outputs, targets) -> scalar``.
      num_hidden: its number of hidden layers.

    Returns:
      an undecorated function; ``grad_norms (num_hidden + 1,)`` is the Frobenius norm of
      ``d loss / d kernel`` of each layer, first hidden layer first and the output layer last;
      ``zero_share (num_hidden,)`` the share of each hidden layer's activations on ``x`` that
      are exactly 0.
    """
    def probe(state: TrainState, x: jax.Array, y: jax.Array):
        def loss_of(params):
            variables = {"params": params}
            if state.batch_stats:
                variables["batch_stats"] = state.batch_stats
            out, cols = model.apply(variables, x, train=True,
                                    mutable=["intermediates", "batch_stats"])
            return loss_fn(out, y), cols["intermediates"]

        grads, hidden = jax.grad(loss_of, has_aux=True)(state.params)
        norms = jnp.stack([jnp.linalg.norm(grads[f"Dense_{i}"]["kernel"])
                           for i in range(num_hidden + 1)])
        zero = jnp.stack([jnp.mean(hidden[f"hidden_{i}"][0] == 0) for i in range(num_hidden)])
        return norms, zero

    return probe
