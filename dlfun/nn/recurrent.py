"""Sequence layers over the recurrent cells: one direction, bidirectional, stacked.

Layout: inputs are **batch-major** ``(*batch, time, features)`` by default (the layout of
PyTorch's ``batch_first=True``); with ``time_major=True`` they are ``(time, *batch, features)``.
Outputs follow the inputs' layout. Masks are ``(*batch, time)`` (or ``(time, *batch)``), ``True``
at real steps; ``lengths`` ``(*batch,)`` is shorthand for a mask of right-padded sequences.

Semantics of padding: a masked step leaves the carry unchanged and its output is zero. Hence the
final carry of a padded sequence is its carry after its last real step, and a reverse layer over
right-padded sequences starts each sequence at its own last real step (the padded tail is
skipped while the state is still the initial one).

Every layer returns ``(carry, outputs)``; pass ``carry`` back as ``initial_carry`` to continue a
sequence (truncated backpropagation through time: wrap it in ``jax.lax.stop_gradient``).

Dtypes: inputs are cast to the cell's computation dtype (its ``dtype``, else its parameters'
dtype), so float64 or bfloat16 inputs run a float32 cell; the carry and the outputs are in the
parameters' dtype (float32 by default) also when the cell computes in bfloat16.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import flax.linen as nn

from dlfun.errors import ConfigError, ShapeError

from .recurrent_cells import GRUCell, LSTMCell, RNNCell
from .recurrent_scan import lstm_scan, masked_scan
from .sharding import union_varying_axes, vary_over

Array = jax.Array

IMPLEMENTATIONS = ("fused", "scan")


def _flatten_inputs(inputs: Array, time_major: bool, name: str) -> tuple[Array, tuple[int, ...]]:
    """Inputs -> ``(T, N, F)`` time-major and the batch shape."""
    if inputs.ndim < 2:
        layout = "(time, *batch, features)" if time_major else "(*batch, time, features)"
        raise ShapeError(f"{name} expected inputs of shape {layout}, got {tuple(inputs.shape)}; "
                         "add a time axis (and a batch axis if needed)")
    if not time_major:
        inputs = jnp.moveaxis(inputs, -2, 0)  # (T, *batch, F)
    if inputs.shape[0] == 0:
        raise ShapeError(f"{name} got a sequence with 0 time steps (inputs "
                         f"{tuple(inputs.shape)} time-major); pass at least one step")
    batch = tuple(inputs.shape[1:-1])
    return inputs.reshape(inputs.shape[0], math.prod(batch), inputs.shape[-1]), batch


def _flatten_mask(mask, lengths, batch, steps, time_major, name) -> Array | None:
    """``mask`` / ``lengths`` -> ``(T, N, 1)`` bool, or None when every step is real."""
    if lengths is not None:
        if mask is not None:
            raise ConfigError(f"{name} got both mask and lengths; pass only one of them")
        lengths = jnp.asarray(lengths)
        if lengths.shape != batch:
            raise ShapeError(f"{name} expected lengths of shape {batch} (the batch shape), "
                             f"got {tuple(lengths.shape)}")
        mask = jnp.arange(steps).reshape((1,) * len(batch) + (steps,)) < lengths[..., None]
        time_major = False
    if mask is None:
        return None
    mask = jnp.asarray(mask)
    want = (steps, *batch) if time_major else (*batch, steps)
    if mask.shape != want:
        raise ShapeError(f"{name} expected a mask of shape {want} (the inputs' shape without "
                         f"features), got {tuple(mask.shape)}")
    if not time_major:
        mask = jnp.moveaxis(mask, -1, 0)
    return mask.reshape(steps, -1, 1).astype(bool)


def _flatten_carry(cell, carry, batch, dtype, name):
    """The initial carry with batch axes flattened to ``N``, in ``dtype``; zeros when ``carry``
    is None."""
    if carry is None:
        carry = cell.initialize_carry(batch, dtype)
    want = (*batch, cell.features)
    for leaf in jax.tree.leaves(carry):
        if leaf.shape != want:
            raise ShapeError(f"{name} expected each initial_carry array to have shape {want} "
                             f"(batch shape + features), got {tuple(leaf.shape)}")
    return jax.tree.map(lambda a: jnp.asarray(a).reshape(-1, a.shape[-1]).astype(dtype), carry)


class Recurrent(nn.Module):
    """Run a recurrent cell over a sequence with ``lax.scan``.

    Attributes:
      cell: an :class:`RNNCell`, :class:`LSTMCell` or :class:`GRUCell`.
      reverse: process the sequence from the last step to the first (outputs stay in time
        order).
      time_major: inputs are ``(time, *batch, features)`` instead of ``(*batch, time, features)``.
      unroll: time steps per loop iteration.
      implementation: ``"fused"`` (default): the fastest loop measured for the cell; for the
        LSTM one ``[h, x] @ [W_hh; W_ih]`` matmul per step for all gates and a hand-written
        backward pass (:func:`dlfun.nn.recurrent_scan.lstm_scan`), for the other cells the
        same as ``"scan"``. ``"scan"``: the cell's one-step equations inside ``lax.scan``,
        differentiated by JAX. Both give the same numbers to float32 rounding. (Projecting the
        inputs of all steps in one matmul before the loop measured slower on XLA:CPU: the
        ``(T, N, G*H)`` array it needs costs more in memory traffic than the matmul saves;
        see ``benchmarks/lstm_step.py --ablation``.)

    Call: ``layer(inputs, initial_carry=None, *, mask=None, lengths=None)`` with inputs
    ``(*batch, T, I)`` (see the module docstring for masks). Returns ``(carry, outputs)``:
    the final carry (the cell's carry structure, batch shape ``batch``) and the hidden state at
    every step, ``(*batch, T, H)`` (zeros at masked steps), both in the parameters' dtype.
    Inputs of any dtype are cast to the cell's computation dtype (see the module docstring).
    """

    cell: nn.Module
    reverse: bool = False
    time_major: bool = False
    unroll: int = 1
    implementation: str = "fused"

    @nn.compact
    def __call__(self, inputs: Array, initial_carry: Any = None, *, mask: Array | None = None,
                 lengths: Array | None = None):
        name = f"Recurrent({type(self.cell).__name__})"
        if self.implementation not in IMPLEMENTATIONS:
            raise ConfigError(f"{name}: unknown implementation {self.implementation!r}; use one "
                              f"of {IMPLEMENTATIONS}")
        xs, batch = _flatten_inputs(jnp.asarray(inputs), self.time_major, name)
        steps = xs.shape[0]
        mask = _flatten_mask(mask, lengths, batch, steps, self.time_major, name)
        w = self.cell.weights(xs.shape[-1])
        carry = _flatten_carry(self.cell, initial_carry, batch, w["w_hh"].dtype, name)
        # One computation dtype for inputs and weights: float64 inputs with float32 weights
        # would otherwise promote the new carry and break the scan's fixed carry type.
        xs = xs.astype(self.cell.computation_dtype(w))
        # Inside shard_map the carry becomes per-device as soon as it meets per-device inputs
        # or weights; a zero initial carry must start with that type too.
        carry = vary_over(carry, union_varying_axes(carry, xs, w, mask))
        carry, hs = self._loop(w, xs, carry, mask)  # hs: (T, N, H)
        carry = jax.tree.map(lambda a: a.reshape(*batch, a.shape[-1]), carry)
        hs = hs.reshape(steps, *batch, hs.shape[-1])
        return carry, (hs if self.time_major else jnp.moveaxis(hs, 0, -2))

    def _loop(self, w, xs, carry, mask):
        """The time loop on ``(T, N, I)`` inputs; returns ``(carry, hs (T, N, H))``."""
        cell = self.cell
        if self.implementation == "fused" and isinstance(cell, LSTMCell):
            wc = cell.for_compute(w)
            carry, hs = lstm_scan(wc["w_ih"], wc["w_hh"], wc.get("b"), xs, carry, mask,
                                  self.reverse, self.unroll)
            return carry, (hs if mask is None else jnp.where(mask, hs, 0))

        def step(c, x):
            # Cast inside the loop: autodiff then sums the weights' gradients over the steps in
            # their own dtype (float32), not in bfloat16.
            wc = cell.for_compute(w)
            return cell.step_projected(wc, c, cell.project_inputs(wc, x))

        return masked_scan(step, cell.hidden, carry, xs, mask, reverse=self.reverse,
                           unroll=self.unroll)


class Bidirectional(nn.Module):
    """Two :class:`Recurrent` layers over the same inputs, one forward and one reversed.

    Attributes:
      forward_layer: a :class:`Recurrent` with ``reverse=False``.
      backward_layer: a :class:`Recurrent` with ``reverse=True`` (same ``time_major``).
      merge: ``"concat"`` (outputs ``(..., H_f + H_b)``, forward first, as PyTorch) or ``"sum"``.

    Call as :class:`Recurrent`; ``initial_carry`` and the returned carry are pairs
    ``(forward_carry, backward_carry)``.
    """

    forward_layer: Recurrent
    backward_layer: Recurrent
    merge: str = "concat"

    @nn.compact
    def __call__(self, inputs: Array, initial_carry: Any = None, *, mask: Array | None = None,
                 lengths: Array | None = None):
        self._check()
        init_f, init_b = (None, None) if initial_carry is None else initial_carry
        carry_f, out_f = self.forward_layer(inputs, init_f, mask=mask, lengths=lengths)
        carry_b, out_b = self.backward_layer(inputs, init_b, mask=mask, lengths=lengths)
        out = jnp.concatenate([out_f, out_b], -1) if self.merge == "concat" else out_f + out_b
        return (carry_f, carry_b), out

    def _check(self) -> None:
        """ConfigError for layers that do not make a forward/backward pair."""
        f, b = self.forward_layer, self.backward_layer
        if f.reverse or not b.reverse:
            raise ConfigError("Bidirectional needs forward_layer.reverse=False and "
                              "backward_layer.reverse=True; build the backward layer with "
                              "Recurrent(cell, reverse=True)")
        if f.time_major != b.time_major:
            raise ConfigError("Bidirectional layers disagree on time_major; give both the same")
        if self.merge not in ("concat", "sum"):
            raise ConfigError(f"Bidirectional: unknown merge {self.merge!r}; use 'concat' or 'sum'")


class StackedRNN(nn.Module):
    """Recurrent layers applied one after the other (each layer's outputs feed the next).

    Attributes:
      layers: :class:`Recurrent` or :class:`Bidirectional` layers (parameters ``layers_0``,
        ``layers_1``, ...).

    Call as :class:`Recurrent`; ``initial_carry`` and the returned carry are tuples with one
    entry per layer (``None`` entries start that layer from zeros).
    """

    layers: Sequence[nn.Module]

    @nn.compact
    def __call__(self, inputs: Array, initial_carry: Sequence[Any] | None = None, *,
                 mask: Array | None = None, lengths: Array | None = None):
        if initial_carry is not None and len(initial_carry) != len(self.layers):
            raise ConfigError(f"StackedRNN has {len(self.layers)} layers but initial_carry has "
                              f"{len(initial_carry)} entries; pass one carry (or None) per layer")
        carries = []
        for k, layer in enumerate(self.layers):
            init = None if initial_carry is None else initial_carry[k]
            carry, inputs = layer(inputs, init, mask=mask, lengths=lengths)
            carries.append(carry)
        return tuple(carries), inputs


CELLS = {"rnn": RNNCell, "lstm": LSTMCell, "gru": GRUCell}


def make_rnn(cell: str, features: int, *, num_layers: int = 1, bidirectional: bool = False,
             time_major: bool = False, unroll: int = 1, implementation: str = "fused",
             **cell_kwargs) -> StackedRNN:
    """A multi-layer (optionally bidirectional) RNN, like PyTorch's ``nn.LSTM`` / ``nn.GRU``.

    Args:
      cell: ``"rnn"``, ``"lstm"`` or ``"gru"``.
      features: hidden size ``H`` of every layer (bidirectional layers output ``2H``).
      num_layers: number of stacked layers.
      bidirectional: make each layer a :class:`Bidirectional` pair.
      time_major, unroll, implementation: passed to every :class:`Recurrent`.
      **cell_kwargs: passed to every cell (e.g. ``reset_after=True`` for a GRU).

    Returns:
      a :class:`StackedRNN`: ``model.apply(params, x)`` maps ``(*batch, T, I)`` to
      ``(carries, (*batch, T, H or 2H))``.
    """
    if cell not in CELLS:
        raise ConfigError(f"unknown cell {cell!r}; use one of {sorted(CELLS)}")
    if num_layers < 1:
        raise ConfigError(f"num_layers must be >= 1, got {num_layers}")

    def layer(reverse: bool) -> Recurrent:
        return Recurrent(CELLS[cell](features, **cell_kwargs), reverse=reverse,
                         time_major=time_major, unroll=unroll, implementation=implementation)

    layers = [Bidirectional(layer(False), layer(True)) if bidirectional else layer(False)
              for _ in range(num_layers)]
    return StackedRNN(layers)
