"""Models built from the recurrent layers: sequence-to-one (regression or classification) and a
character-level language model.

Both take batch-major inputs ``(batch, time, ...)`` and use :func:`dlfun.nn.make_rnn`, so the
cell is chosen by name (``"rnn"``, ``"lstm"``, ``"gru"``) and the LSTM runs its fused path.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ..errors import ConfigError, ShapeError
from .dense import Dense
from .hidden_gradients import cell_step, hidden_of, hidden_state_gradients
from .precision import Dtype
from .recurrent import CELLS, make_rnn

Array = jax.Array


def lstm_bias_init(forget_bias: float = 1.0) -> nn.initializers.Initializer:
    """An initializer for the LSTM bias ``(4H,)`` (gate order i, f, g, o): zeros, except
    ``forget_bias`` in the forget gate, so the cell starts out remembering (Gers et al. 2000;
    Jozefowicz et al. 2015)."""
    def init(key, shape, dtype=jnp.float32):
        del key
        (width,) = shape
        hidden = width // 4
        return jnp.zeros(shape, dtype).at[hidden:2 * hidden].set(forget_bias)

    return init


def cell_options(cell: str, forget_bias: float) -> dict[str, Any]:
    """Cell keyword arguments: the forget-gate bias for an LSTM, nothing for the others."""
    if cell not in CELLS:
        raise ConfigError(f"unknown cell {cell!r}; use one of {sorted(CELLS)}")
    return {"bias_init": lstm_bias_init(forget_bias)} if cell == "lstm" else {}


def make_cell(cell: str, features: int, forget_bias: float = 1.0, dtype: Dtype | None = None,
              param_dtype: Dtype = jnp.float32) -> nn.Module:
    """The (unbound) cell module that :func:`make_rnn` builds for these arguments: the same
    equations, for running one layer step by step with its trained parameters."""
    return CELLS[cell](features, dtype=dtype, param_dtype=param_dtype,
                       **cell_options(cell, forget_bias))


class SequenceToOne(nn.Module):
    """A recurrent network read out at the last step: ``(B, T, I) -> (B, outputs)``.

    ``make_rnn(cell, features, num_layers)`` runs over the sequence and a dense layer maps the
    last step's hidden state to the outputs (a regression target, or class logits).

    Attributes:
      cell: ``"rnn"``, ``"lstm"`` or ``"gru"``.
      features: hidden size ``H`` of every layer.
      outputs: output size.
      num_layers: stacked recurrent layers.
      forget_bias: initial forget-gate bias of an LSTM (ignored for the other cells).
      dtype, param_dtype: computation and parameter dtypes of every layer (see
        :mod:`dlfun.nn.precision`); the outputs are in the computation dtype.

    Parameters: ``rnn/layers_k/cell/{w_ih, w_hh, b}`` and ``head/{kernel, bias}``.
    """

    cell: str
    features: int
    outputs: int
    num_layers: int = 1
    forget_bias: float = 1.0
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    def setup(self):
        precision = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        self.rnn = make_rnn(self.cell, self.features, num_layers=self.num_layers,
                            **cell_options(self.cell, self.forget_bias), **precision)
        self.head = Dense(self.outputs, **precision)

    def __call__(self, x: Array) -> Array:
        """``x (B, T, I)`` -> outputs ``(B, outputs)``."""
        if x.ndim != 3:
            raise ShapeError(f"SequenceToOne expected inputs (batch, time, features), got shape "
                             f"{tuple(x.shape)}")
        _, hs = self.rnn(x)
        return self.head(hs[:, -1])

    def readout(self, h: Array) -> Array:
        """The output layer alone: last hidden state ``(B, H)`` -> ``(B, outputs)``."""
        return self.head(h)


class CharLM(nn.Module):
    """Character-level language model: embedding, stacked RNN, logits over the vocabulary.

    Attributes:
      vocab_size: number of distinct characters ``V``.
      cell: ``"rnn"``, ``"lstm"`` or ``"gru"``.
      features: hidden size ``H`` of every layer.
      num_layers: stacked recurrent layers.
      embed_dim: size of the character embedding.
      forget_bias: initial forget-gate bias of an LSTM (ignored for the other cells).
      dtype, param_dtype: computation and parameter dtypes of every layer (see
        :mod:`dlfun.nn.precision`); the logits are in the computation dtype.

    ``model.apply(variables, tokens)`` maps ids ``(B, T)`` to next-character logits
    ``(B, T, V)``; ``method=CharLM.with_carry`` also takes and returns the recurrent state, to
    continue a text (sampling, streaming evaluation).
    """

    vocab_size: int
    cell: str = "lstm"
    features: int = 256
    num_layers: int = 2
    embed_dim: int = 64
    forget_bias: float = 1.0
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    def setup(self):
        precision = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        self.embed = nn.Embed(self.vocab_size, self.embed_dim, **precision)
        self.rnn = make_rnn(self.cell, self.features, num_layers=self.num_layers,
                            **cell_options(self.cell, self.forget_bias), **precision)
        self.head = Dense(self.vocab_size, **precision)

    def __call__(self, tokens: Array) -> Array:
        """Ids ``(B, T)`` -> logits ``(B, T, V)``, starting from the zero state."""
        return self.with_carry(tokens, None)[1]

    def with_carry(self, tokens: Array, carry: Any = None) -> tuple[Any, Array]:
        """Ids ``(B, T)`` and the state after the preceding text (None: zeros) ->
        ``(state after tokens, logits (B, T, V))``."""
        if tokens.ndim != 2:
            raise ShapeError(f"CharLM expected token ids of shape (batch, time), got shape "
                             f"{tuple(tokens.shape)}")
        carry, hs = self.rnn(self.embed(tokens), carry)
        return carry, self.head(hs)


def sequence_hidden_gradients(model: SequenceToOne, params: Any, x: Array, y: Array,
                              loss_fn) -> tuple[Array, Array]:
    """``∂L/∂h_t`` of a one-layer :class:`SequenceToOne` at every step (see
    :mod:`dlfun.nn.hidden_gradients`).

    Args:
      model: the model (``num_layers == 1``).
      params: its ``params`` collection.
      x: inputs ``(N, T, I)``; y: targets for ``loss_fn``.
      loss_fn: ``(outputs (N, outputs), y) -> scalar``.

    Returns:
      ``(loss, grads)`` with ``grads (T, N, H)``; ``loss`` equals the model's loss on ``(x, y)``
      (to float rounding: the cell equations are run step by step, not the fused kernel).
    """
    if model.num_layers != 1:
        raise ConfigError(f"hidden-state gradients are measured for one recurrent layer; the "
                          f"model has num_layers={model.num_layers}")
    cell = make_cell(model.cell, model.features, model.forget_bias, model.dtype,
                     model.param_dtype)
    weights = params["rnn"]["layers_0"]["cell"]
    step = cell_step(cell, weights)

    def loss_of_carry(carry):
        out = model.apply({"params": params}, hidden_of(carry), method=SequenceToOne.readout)
        return loss_fn(out, y)

    carry0 = cell.initialize_carry((x.shape[0],), weights["w_hh"].dtype)  # as Recurrent's
    return hidden_state_gradients(step, carry0, jnp.moveaxis(x, 1, 0), loss_of_carry)
