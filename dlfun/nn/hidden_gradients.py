"""How much the loss depends on each hidden state: ``∂L/∂h_t`` for every step ``t``.

The vanishing-gradient problem made visible: for a plain RNN, ``‖∂L/∂h_t‖`` of a loss read at
the last step shrinks roughly geometrically as ``t`` moves back from ``T``; a trained LSTM's
additive cell state and a trained GRU's interpolation keep it alive over long lags.

Method: run the recurrence with a perturbation ``e_t`` added to the hidden state right after
step ``t`` and differentiate the loss with respect to ``e`` at ``e = 0``. That derivative is the
total derivative ``∂L/∂h_t`` (through all later steps), for any cell and any loss. For an LSTM
only ``h`` is perturbed (the cell state ``c`` is a separate part of the carry).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from .recurrent_cells import LSTMState

Array = jax.Array


def add_to_hidden(carry: Any, e: Array) -> Any:
    """``carry`` with ``e`` added to its hidden state ``h`` (an array, or an LSTMState's ``h``)."""
    if isinstance(carry, LSTMState):
        return carry._replace(h=carry.h + e)
    return carry + e


def hidden_of(carry: Any) -> Array:
    """The hidden state ``h`` of a carry."""
    return carry.h if isinstance(carry, LSTMState) else carry


def hidden_state_gradients(step: Callable[[Any, Array], Any], carry0: Any, xs: Array,
                           loss_of_carry: Callable[[Any], Array]) -> tuple[Array, Array]:
    """``∂L/∂h_t`` of a recurrence ``carry_t = step(carry_{t-1}, x_t)``, for every ``t``.

    Args:
      step: one step, ``step(carry, x_t) -> carry`` with ``x_t (N, I)``.
      carry0: the initial carry (hidden state ``(N, H)``, or an LSTMState of two).
      xs: inputs, time-major ``(T, N, I)``.
      loss_of_carry: the scalar loss of the final carry.

    Returns:
      ``(loss, grads)``: the loss, and ``grads (T, N, H)`` where ``grads[t]`` is the gradient of
      the loss with respect to the hidden state after step ``t`` (0-based).
    """
    h0 = hidden_of(carry0)
    eps = jnp.zeros((xs.shape[0], *h0.shape), h0.dtype)

    def loss_of(eps):
        def body(carry, inputs):
            x_t, e_t = inputs
            return add_to_hidden(step(carry, x_t), e_t), None

        final, _ = lax.scan(body, carry0, (xs, eps))
        return loss_of_carry(final)

    return jax.value_and_grad(loss_of)(eps)


def gradient_norms_over_time(grads: Array) -> Array:
    """``grads (T, N, H)`` -> ``(T,)``: the L2 norm over ``H``, averaged over the batch."""
    return jnp.mean(jnp.linalg.norm(grads, axis=-1), axis=-1)


def cell_step(cell, weights: dict[str, Array]) -> Callable[[Any, Array], Any]:
    """One step of a recurrent cell with fixed parameters (as :class:`dlfun.nn.Recurrent`'s
    ``"scan"`` implementation runs it): ``step(carry, x_t) -> carry``.

    Args:
      cell: an (unbound) :class:`RNNCell`, :class:`LSTMCell` or :class:`GRUCell`.
      weights: its parameters ``{'w_ih', 'w_hh', 'b', ...}`` (cast to the cell's ``dtype``).
    """
    weights = cell.for_compute(weights)

    def step(carry, x):
        return cell.step_projected(weights, carry, cell.project_inputs(weights, x))

    return step


def gradient_reach(norms, factor: float = 1e-3) -> int:
    """How far back the gradient reaches: the number of final steps, counting back from
    ``t = T``, whose norm is at least ``factor`` times the norm at ``T`` (``norms (T,)``).
    ``T`` means it never falls that far; 1 means it falls below at ``t = T - 1`` already."""
    norms = np.asarray(norms, np.float64)
    strong = (norms >= factor * norms[-1])[::-1]
    return int(len(strong) if strong.all() else np.argmin(strong))
