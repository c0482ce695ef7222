"""Time loops for the recurrent layers: a generic masked scan and a fused LSTM kernel.

All arrays here are time-major: per-step inputs ``(T, N, F)``, masks ``(T, N, 1)`` (bool,
``True`` = a real step), carries ``(N, H)``. :class:`dlfun.nn.Recurrent` does the layout
changes; these functions only loop.

What made the LSTM training step fast on XLA:CPU (measured with ``benchmarks/lstm_step.py``
on a 2-core machine; XLA runs a loop body on one core, so per-step work is what counts):

* **Per-step inputs are sliced one step ahead** (:func:`prefetch_scan`, :func:`masked_scan`).
  When the slice of a stacked array is fused into the gate arithmetic, XLA:CPU emits scalar
  code for the whole fusion (about 5x slower gates); slicing step ``t+1`` into the carry while
  step ``t`` runs makes the slice a separate copy and keeps the gate fusion vectorised.
* **One matmul per step for all gates and both inputs**: ``[h, x] @ [W_hh; W_ih]``. Hoisting
  ``x @ W_ih`` for all steps out of the loop saves little matmul time but needs a ``(T, N, 4H)``
  array (and its gradient) and a 4H-wide per-step input instead of an I-wide one: measured
  slower than the larger per-step matmul (gradient of the benchmark's layer: 51.5 vs 48.7 ms,
  with :func:`dlfun.platform.tune_malloc` in effect).
* **The LSTM backward pass is written out** (:func:`lstm_scan`). Autodiff of a scan adds the
  weight gradient ``[h, x]_t^T dA_t`` inside the loop, one thin matmul per step on one core;
  here the loop stores ``dA_t`` and the weight gradients are two large matmuls afterwards (as
  cuDNN and PyTorch do). The forward pass stores the gate activations, so the backward loop
  needs only ``tanh(c_t)``, and cotangents of unused outputs are skipped (symbolic zeros).
* ``unroll > 1`` measured slower and stays off by default.

Mixed precision in :func:`lstm_scan`: the matmuls run in the weights' dtype (bfloat16 when the
layer casts them), the carry keeps its own dtype (float32), and the backward pass returns each
gradient in its primal's dtype (bias gradients are summed in at least float32).
"""

from __future__ import annotations

from functools import partial
from typing import Callable

import jax
import jax.numpy as jnp
from jax import lax
from jax.custom_derivatives import CustomVJPPrimal, SymbolicZero

from .precision import add_bias, at_least_float32
from .recurrent_cells import LSTMState, lstm_gates
from .sharding import sum_to_type_of

Array = jax.Array


def _take(xs, t):
    """Step ``t`` of every array in the pytree ``xs`` (leading axis is time)."""
    return jax.tree.map(lambda a: lax.dynamic_index_in_dim(a, t, keepdims=False), xs)


def _shift_ahead(xs, reverse: bool):
    """``xs`` moved one step against the loop direction (the last step repeated)."""
    if reverse:
        return jax.tree.map(lambda a: jnp.concatenate([a[:1], a[:-1]]), xs)
    return jax.tree.map(lambda a: jnp.concatenate([a[1:], a[-1:]]), xs)


def masked_scan(step: Callable, hidden: Callable, init, xs: Array, mask: Array | None, *,
                reverse: bool = False, unroll: int = 1):
    """Run ``step`` over time; masked-out steps keep the carry and output zeros.

    Differentiable by JAX. The inputs reach the loop shifted by one step (so each step's slice
    is a separate copy, see the module docstring).

    Args:
      step: ``step(carry, x_t) -> carry``.
      hidden: ``hidden(carry) -> h`` of shape ``(N, H)``.
      init: initial carry (pytree of ``(N, ...)`` arrays).
      xs: inputs ``(T, N, F)``.
      mask: ``(T, N, 1)`` bool or None (all steps real).
      reverse: run from the last step to the first.
      unroll: steps per loop iteration.

    Returns:
      ``(final_carry, hs)`` with ``hs`` of shape ``(T, N, H)``, zero at masked steps.
    """
    seq = (xs,) if mask is None else (xs, mask)
    first = _take(seq, xs.shape[0] - 1 if reverse else 0)

    def body(state, nxt):
        carry, cur = state
        new = step(carry, cur[0])
        if mask is not None:
            new = jax.tree.map(lambda a, b: jnp.where(cur[1], a, b), new, carry)
            return (new, nxt), jnp.where(cur[1], hidden(new), 0)
        return (new, nxt), hidden(new)

    (carry, _), hs = lax.scan(body, (init, first), _shift_ahead(seq, reverse), reverse=reverse,
                              unroll=unroll)
    return carry, hs


def prefetch_scan(body: Callable, carry, take: Callable, length: int, *, reverse: bool = False,
                  unroll: int = 1):
    """A time loop whose per-step inputs are read one step ahead.

    Step ``t`` works on ``take(t)``, which was sliced during step ``t-1`` and passed in the
    carry. Not for JAX autodiff (the stacked inputs are closed over, so their gradient would
    be accumulated densely); the LSTM kernel supplies its own backward pass.

    Args:
      body: ``body(carry, x_t) -> (carry, y_t)``.
      carry: initial carry.
      take: ``take(t) -> x_t``, the inputs of step ``t`` (a pytree).
      length: number of steps ``T``.
      reverse: run from ``t = T-1`` down to 0 (``ys`` still stacked in time order).
      unroll: steps per loop iteration.

    Returns:
      ``(final_carry, ys)`` with ``ys`` stacked along a leading ``T`` axis.
    """
    ahead = -1 if reverse else 1

    def step(state, t):
        carry, x_t = state
        x_next = take(jnp.clip(t + ahead, 0, length - 1))
        carry, y = body(carry, x_t)
        return (carry, x_next), y

    init = (carry, take(length - 1 if reverse else 0))
    (carry, _), ys = lax.scan(step, init, jnp.arange(length), reverse=reverse, unroll=unroll)
    return carry, ys


def _lstm_forward(w_cat, b, xs, carry0, mask, reverse, unroll):
    """Forward loop: the final carry and the per-step gate activations, h and c stacks."""
    def body(carry, inputs):
        (h, c), (x_t, m_t) = carry, inputs
        hx = jnp.concatenate([h.astype(w_cat.dtype), x_t.astype(w_cat.dtype)], -1)
        a = hx @ w_cat  # W·[h_{t-1}, x_t], all four gates at once
        i, f, g, o = lstm_gates(a if b is None else add_bias(a, b))
        c_new = (f * c + i * g).astype(c.dtype)
        h_new = (o * jnp.tanh(c_new)).astype(h.dtype)
        if mask is not None:
            h_new, c_new = jnp.where(m_t, h_new, h), jnp.where(m_t, c_new, c)
        return LSTMState(h_new, c_new), (jnp.concatenate([i, f, g, o], -1), h_new, c_new)

    def take(t):
        return xs[t], (None if mask is None else mask[t])

    carry, (acts, hs, cs) = prefetch_scan(body, LSTMState(*carry0), take, xs.shape[0],
                                          reverse=reverse, unroll=unroll)
    return carry, acts, hs, cs


@partial(jax.custom_vjp, nondiff_argnums=(6, 7))
def lstm_scan(w_ih: Array, w_hh: Array, b: Array | None, xs: Array, carry0: LSTMState,
              mask: Array | None, reverse: bool, unroll: int):
    """Run an LSTM over a sequence, with a hand-written backward pass.

    Each step is one matmul ``[h_{t-1}, x_t] @ [w_hh; w_ih]`` for all four gates (the slides'
    ``W·[h_{t-1}, x_t]``). The backward pass stores the gate gradients of every step and forms
    the weight gradients afterwards as two large matmuls.

    Args:
      w_ih: input weights ``(I, 4H)``, gate order i, f, g, o.
      w_hh: recurrent weights ``(H, 4H)``.
      b: bias ``(4H,)`` or None.
      xs: inputs ``(T, N, I)``.
      carry0: initial :class:`LSTMState`, each ``(N, H)``.
      mask: ``(T, N, 1)`` bool (``True`` = real step) or None; masked steps keep the carry.
      reverse: run from the last step to the first.
      unroll: steps per loop iteration.

    Returns:
      ``(final_carry, hs)``: the final :class:`LSTMState` and the carried ``h`` after every step,
      ``(T, N, H)`` (at masked steps this is the unchanged previous ``h``), in ``carry0``'s
      dtypes; the matmuls run in the weights' dtype.
    """
    w_cat = jnp.concatenate([w_hh, w_ih])
    carry, _, hs, _ = _lstm_forward(w_cat, b, xs, carry0, mask, reverse, unroll)
    return carry, hs


def _lstm_scan_fwd(w_ih, w_hh, b, xs, carry0, mask, reverse, unroll):
    w_ih, w_hh, b, xs, carry0, mask = jax.tree.map(
        lambda p: p.value, (w_ih, w_hh, b, xs, carry0, mask),
        is_leaf=lambda p: isinstance(p, CustomVJPPrimal))
    w_cat = jnp.concatenate([w_hh, w_ih])
    carry, acts, hs, cs = _lstm_forward(w_cat, b, xs, carry0, mask, reverse, unroll)
    return (carry, hs), (w_ih, w_hh, b, xs, LSTMState(*carry0), mask, acts, hs, cs)


def _previous(stack: Array, first: Array, reverse: bool) -> Array:
    """The carry *before* each step: ``stack`` shifted by one, ``first`` at the start."""
    if reverse:
        return jnp.concatenate([stack[1:], first[None]])
    return jnp.concatenate([first[None], stack[:-1]])


def _lstm_backward_step(w_hh_t, masked):
    """Body of the backward loop: carry ``(dh, dc)``; emits the gate pre-activation grads."""
    def body(dcarry, inputs):
        (dh, dc), (acts, c, c_prev, dy, m) = dcarry, inputs
        i, f, g, o = jnp.split(acts, 4, axis=-1)
        dh = dh if dy is None else dh + dy
        tc = jnp.tanh(c)
        dc_tot = dc + dh * o * (1.0 - tc * tc)
        da = jnp.concatenate([dc_tot * g * i * (1.0 - i), dc_tot * c_prev * f * (1.0 - f),
                              dc_tot * i * (1.0 - g * g), dh * tc * o * (1.0 - o)], -1)
        da = da.astype(w_hh_t.dtype)  # the matmuls' operand, in the weights' dtype
        dh_prev = (da @ w_hh_t).astype(dh.dtype)
        dc_prev = (dc_tot * f).astype(dc.dtype)
        if masked:  # a masked step passed the carry through unchanged
            da = jnp.where(m, da, 0)
            dh_prev, dc_prev = jnp.where(m, dh_prev, dh), jnp.where(m, dc_prev, dc)
        return (dh_prev, dc_prev), da
    return body


def _backward_inputs(acts, carry0, mask, cs, dhs, reverse):
    """``take(t)`` for the backward loop: ``(acts_t, c_t, c_{t-1}, dy_t, mask_t)``."""
    length = cs.shape[0]
    first, behind = (length - 1, 1) if reverse else (0, -1)

    def take(t):
        prev = lax.dynamic_index_in_dim(cs, jnp.clip(t + behind, 0, length - 1), keepdims=False)
        return (acts[t], cs[t], jnp.where(t == first, carry0.c, prev),
                None if dhs is None else dhs[t], None if mask is None else mask[t])
    return take


def _lstm_scan_bwd(reverse, unroll, res, cts):
    w_ih, w_hh, b, xs, carry0, mask, acts, hs, cs = res
    (dh_last, dc_last), dhs = cts
    dh_last, dc_last = (_instantiate(d, hs[0]) for d in (dh_last, dc_last))
    dhs = None if isinstance(dhs, SymbolicZero) else dhs
    take = _backward_inputs(acts, carry0, mask, cs, dhs, reverse)
    (dh0, dc0), das = prefetch_scan(_lstm_backward_step(w_hh.T, mask is not None),
                                    (dh_last, dc_last), take, acts.shape[0],
                                    reverse=not reverse, unroll=unroll)
    das2d = das.reshape(-1, das.shape[-1])  # (T*N, 4H), in the weights' dtype
    h_prev = _previous(hs, carry0.h, reverse).reshape(-1, w_hh.shape[0]).astype(das.dtype)
    # Weight gradients as large matmuls over all steps, not T thin ones inside the loop.
    dw_hh = (h_prev.T @ das2d).astype(w_hh.dtype)
    dw_ih = (xs.reshape(-1, w_ih.shape[0]).astype(das.dtype).T @ das2d).astype(w_ih.dtype)
    db = None if b is None else at_least_float32(das2d).sum(0).astype(b.dtype)
    dxs = (das2d @ w_ih.T).reshape(xs.shape).astype(xs.dtype)  # removed by XLA for data inputs
    dcarry0 = LSTMState(dh0.astype(carry0.h.dtype), dc0.astype(carry0.c.dtype))
    grads = (dw_ih, dw_hh, db, dxs, dcarry0)
    # Inside shard_map, a replicated input's cotangent is the sum over the devices' shares.
    primals = (w_ih, w_hh, b, xs, carry0)  # b and db are both None without a bias
    return (*jax.tree.map(sum_to_type_of, grads, primals), None)


def _instantiate(ct, like: Array) -> Array:
    """A cotangent as an array (zeros for a symbolic zero)."""
    return jnp.zeros_like(like) if isinstance(ct, SymbolicZero) else ct


lstm_scan.defvjp(_lstm_scan_fwd, _lstm_scan_bwd, symbolic_zeros=True)
