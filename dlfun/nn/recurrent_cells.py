"""Recurrent cells written from their gate equations: plain RNN, LSTM and GRU.

Every cell is a Flax Linen module with one step ``cell(carry, x) -> (new_carry, h)`` on inputs
``x`` of shape ``(*batch, in_features)``. The carry is ``h`` (``(*batch, features)``) for
:class:`RNNCell` and :class:`GRUCell`, and an :class:`LSTMState` ``(h, c)`` for
:class:`LSTMCell`; ``cell.initialize_carry(batch_shape)`` gives the zero carry.

Parameter layout (the same in every cell, so that copying to and from PyTorch is a transpose):

* ``w_ih``: ``(in_features, G * features)``, the input weights of all G gates side by side;
* ``w_hh``: ``(features, G * features)``, the recurrent weights, same gate order;
* ``b``: ``(G * features,)``, one bias per gate unit (PyTorch's ``b_ih + b_hh``);
* ``b_hn``: ``(features,)``, only for ``GRUCell(reset_after=True)``.

Gate order: LSTM ``[i, f, g, o]`` (g is the candidate C~), GRU ``[r, z, n]`` (n the candidate
h~): PyTorch's order. ``x @ w_ih + h @ w_hh`` is the slides' ``W·[h_{t-1}, x_t]`` with ``W``
cut into its recurrent and input columns.

Besides the one-step ``__call__``, each cell offers what :class:`dlfun.nn.Recurrent` needs to
run a sequence with the parameters fetched once: ``weights(in_features)`` (creates or fetches
the parameters), ``project_inputs(w, x)`` (the input half ``x @ w_ih + b`` of the gates, for
any leading axes) and ``step_projected(w, carry, xp)`` (the recurrent half of one step).

Precision: parameters are stored in ``param_dtype``; ``dtype`` (None: the parameters' dtype)
is what the gate matmuls compute in (``for_compute(w)`` casts the parameters, and inputs and
the hidden state are cast to the weights' dtype before each product). The carry keeps its own
dtype (the parameters' dtype in :class:`dlfun.nn.Recurrent`, float32 by default): the cell
state is a running sum over time and stays float32 under bfloat16 matmuls.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import flax.linen as nn

from dlfun.errors import ShapeError

from .precision import add_bias

Array = jax.Array
Initializer = Callable[..., Array]


class LSTMState(NamedTuple):
    """The LSTM carry: hidden state ``h`` and cell state ``c``, each ``(*batch, features)``."""

    h: Array
    c: Array


def lstm_gates(a: Array) -> tuple[Array, Array, Array, Array]:
    """Gate activations from pre-activations ``a`` (``(..., 4H)``, order i, f, g, o).

    Returns ``(i, f, g, o)``: ``sigmoid`` for i, f, o and ``tanh`` for the candidate g.
    """
    i, f, g, o = jnp.split(a, 4, axis=-1)
    return jax.nn.sigmoid(i), jax.nn.sigmoid(f), jnp.tanh(g), jax.nn.sigmoid(o)


def lstm_update(a: Array, c: Array) -> LSTMState:
    """One LSTM update from pre-activations ``a`` (``(..., 4H)``) and the old cell state ``c``.

    ``C_t = f*C_{t-1} + i*C~_t`` and ``h_t = o*tanh(C_t)``.
    """
    i, f, g, o = lstm_gates(a)
    c = f * c + i * g
    return LSTMState(o * jnp.tanh(c), c)


class _GatedCell(nn.Module):
    """Shared parameters and bookkeeping of the cells (``G`` gates of ``features`` units)."""

    features: int
    use_bias: bool = True
    kernel_init: Initializer = nn.initializers.lecun_normal()
    recurrent_kernel_init: Initializer = nn.initializers.orthogonal()
    bias_init: Initializer = nn.initializers.zeros_init()
    param_dtype: Any = jnp.float32
    dtype: Any = None

    num_gates = 1  # overridden by subclasses

    @nn.compact
    def weights(self, in_features: int) -> dict[str, Array]:
        """Create (at init) or fetch the parameters for inputs with ``in_features`` features.

        Returns:
          ``{'w_ih': (in_features, G*H), 'w_hh': (H, G*H), 'b': (G*H,)}`` (``b`` only with
          ``use_bias``), plus cell-specific extras.
        """
        width = self.num_gates * self.features
        if self.has_variable("params", "w_ih"):
            known = self.get_variable("params", "w_ih").shape[0]
            if known != in_features:
                raise ShapeError(f"{type(self).__name__} expected inputs of shape (..., {known}) "
                                 f"as when it was initialised, got (..., {in_features}); pass "
                                 f"inputs with {known} features or re-initialise the parameters")
        w = {"w_ih": self.param("w_ih", self.kernel_init, (in_features, width), self.param_dtype),
             "w_hh": self.param("w_hh", self.recurrent_kernel_init, (self.features, width),
                                self.param_dtype)}
        if self.use_bias:
            w["b"] = self.param("b", self.bias_init, (width,), self.param_dtype)
        w.update(self.extra_weights())
        return w

    def extra_weights(self) -> dict[str, Array]:
        """Cell-specific parameters beyond ``w_ih``, ``w_hh`` and ``b`` (none by default)."""
        return {}

    @nn.nowrap
    def computation_dtype(self, w: dict[str, Array]) -> Any:
        """The dtype the gate matmuls run in: ``dtype``, or the parameters' when None."""
        return w["w_hh"].dtype if self.dtype is None else jnp.dtype(self.dtype)

    @nn.nowrap
    def for_compute(self, w: dict[str, Array]) -> dict[str, Array]:
        """The parameters ``w`` cast to the computation ``dtype`` (unchanged when it is None).

        The step functions compute in their weights' dtype.
        """
        if self.dtype is None:
            return w
        return {k: v.astype(self.dtype) for k, v in w.items()}

    @nn.nowrap
    def project_inputs(self, w: dict[str, Array], xs: Array) -> Array:
        """The input half of every gate: ``xs @ w_ih + b``, ``(..., I) -> (..., G*H)``, in the
        weights' dtype."""
        xp = xs.astype(w["w_ih"].dtype) @ w["w_ih"]
        return add_bias(xp, w["b"]) if "b" in w else xp

    @nn.nowrap
    def initialize_carry(self, batch_shape: tuple[int, ...] = (), dtype=jnp.float32):
        """The zero carry for inputs of shape ``(*batch_shape, in_features)``."""
        return jnp.zeros((*batch_shape, self.features), dtype)

    @nn.nowrap
    def hidden(self, carry) -> Array:
        """The hidden state ``h`` (``(*batch, features)``) held in ``carry``."""
        return carry

    def __call__(self, carry, x: Array):
        """One time step.

        Args:
          carry: the previous carry (see the cell's docstring), batch shape ``(*batch,)``.
          x: inputs ``(*batch, in_features)``.

        Returns:
          ``(new_carry, h)`` with ``h`` of shape ``(*batch, features)``.
        """
        w = self.for_compute(self.weights(x.shape[-1]))
        carry = self.step_projected(w, carry, self.project_inputs(w, x))
        return carry, self.hidden(carry)


class RNNCell(_GatedCell):
    """Plain (Elman) RNN cell: ``z_t = tanh(W_zz z_{t-1} + W_xz x_t + b)``.

    Carry: ``h`` of shape ``(*batch, features)``. Parameters: ``w_ih (I, H)`` (``W_xz``
    transposed), ``w_hh (H, H)`` (``W_zz`` transposed), ``b (H,)``; ``H*(I+H) + H`` in all.
    Same as PyTorch's ``nn.RNN(nonlinearity='tanh')`` with ``b = b_ih + b_hh``.
    """

    num_gates = 1

    @nn.nowrap
    def step_projected(self, w: dict[str, Array], carry: Array, xp: Array) -> Array:
        """Recurrent half of one step: ``tanh(xp + h @ w_hh)``; ``xp`` is ``(*batch, H)``."""
        w_hh = w["w_hh"]
        return jnp.tanh(xp + carry.astype(w_hh.dtype) @ w_hh).astype(carry.dtype)


class LSTMCell(_GatedCell):
    """Long short-term memory cell, from the equations

    ``f_t = σ(W_f·[h_{t-1}, x_t] + b_f)``, ``i_t = σ(W_i·[h_{t-1}, x_t] + b_i)``,
    ``C~_t = tanh(W_C·[h_{t-1}, x_t] + b_C)``, ``C_t = f_t*C_{t-1} + i_t*C~_t``,
    ``o_t = σ(W_o·[h_{t-1}, x_t] + b_o)``, ``h_t = o_t*tanh(C_t)``.

    Carry: :class:`LSTMState` ``(h, c)``, each ``(*batch, features)``. Parameters: ``w_ih
    (I, 4H)``, ``w_hh (H, 4H)``, ``b (4H,)`` in gate order ``[i, f, C~, o]`` (PyTorch's);
    ``4H*(I+H) + 4H`` in all (PyTorch keeps two bias vectors, so it counts ``4H`` more).
    """

    num_gates = 4

    @nn.nowrap
    def initialize_carry(self, batch_shape: tuple[int, ...] = (), dtype=jnp.float32) -> LSTMState:
        """The zero carry ``LSTMState(h, c)`` for inputs ``(*batch_shape, in_features)``."""
        z = jnp.zeros((*batch_shape, self.features), dtype)
        return LSTMState(z, z)

    @nn.nowrap
    def hidden(self, carry: LSTMState) -> Array:
        """The hidden state ``h`` of an :class:`LSTMState`."""
        return carry.h

    @nn.nowrap
    def step_projected(self, w: dict[str, Array], carry: LSTMState, xp: Array) -> LSTMState:
        """Recurrent half of one step; ``xp = x @ w_ih + b`` is ``(*batch, 4H)``."""
        h, c = carry
        w_hh = w["w_hh"]
        new = lstm_update(xp + h.astype(w_hh.dtype) @ w_hh, c)
        return LSTMState(new.h.astype(h.dtype), new.c.astype(c.dtype))


class GRUCell(_GatedCell):
    """Gated recurrent unit, from the equations (slides' convention, the default)

    ``z_t = σ(W_z·[h_{t-1}, x_t])``, ``r_t = σ(W_r·[h_{t-1}, x_t])``,
    ``h~_t = tanh(W·[r_t*h_{t-1}, x_t])``, ``h_t = (1 - z_t)*h_{t-1} + z_t*h~_t``,

    plus a bias in each gate when ``use_bias`` (the default; ``use_bias=False`` is exactly the
    slides' bias-free form).

    ``reset_after=True`` applies the reset gate *after* the recurrent matmul, as PyTorch's
    ``nn.GRU`` and cuDNN do: ``h~_t = tanh(W_x x_t + b_x + r_t*(W_h h_{t-1} + b_hn))``; it has
    one extra bias ``b_hn (H,)`` and needs one recurrent matmul per step instead of two.
    The update gate keeps the slides' meaning in both forms (``z_t = 1`` takes the candidate);
    PyTorch's ``z`` is our ``1 - z``, which the converters in :mod:`dlfun.nn.recurrent_torch`
    handle by negating that gate's weights and bias (exact in floating point).

    Carry: ``h`` of shape ``(*batch, features)``. Parameters: ``w_ih (I, 3H)``, ``w_hh (H, 3H)``
    in gate order ``[r, z, h~]`` (PyTorch's), ``b (3H,)``, and ``b_hn (H,)`` when both
    ``use_bias`` and ``reset_after``: ``3H*(I+H) + 3H (+H)``.
    """

    reset_after: bool = False
    num_gates = 3

    def extra_weights(self) -> dict[str, Array]:
        """``b_hn (H,)``, the candidate's recurrent bias, for ``reset_after`` with biases."""
        if self.reset_after and self.use_bias:
            return {"b_hn": self.param("b_hn", self.bias_init, (self.features,),
                                       self.param_dtype)}
        return {}

    @nn.nowrap
    def step_projected(self, w: dict[str, Array], carry: Array, xp: Array) -> Array:
        """Recurrent half of one step; ``xp = x @ w_ih + b`` is ``(*batch, 3H)``."""
        h, width, w_hh = carry, self.features, w["w_hh"]
        hc = h.astype(w_hh.dtype)  # the matmuls' operand in the computation dtype
        xr, xz, xn = jnp.split(xp, 3, axis=-1)
        if self.reset_after:
            hw = hc @ w_hh  # (*batch, 3H): one matmul for all three gates
            hr, hz, hn = jnp.split(hw, 3, axis=-1)
            if "b_hn" in w:
                hn = add_bias(hn, w["b_hn"])
            r, z = jax.nn.sigmoid(xr + hr), jax.nn.sigmoid(xz + hz)
            n = jnp.tanh(xn + r * hn)
        else:
            hrz = hc @ w_hh[:, : 2 * width]
            r = jax.nn.sigmoid(xr + hrz[..., :width])
            z = jax.nn.sigmoid(xz + hrz[..., width:])
            n = jnp.tanh(xn + (r * hc) @ w_hh[:, 2 * width:])
        return ((1.0 - z) * h + z * n).astype(h.dtype)
