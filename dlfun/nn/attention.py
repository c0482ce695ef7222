"""Scaled dot-product attention written from its equation, its masks, and JAX's fused kernels.

Per head, ``attention(Q, K, V) = softmax(Q Kᵀ / √d) V`` (Vaswani et al. 2017). The layout is
JAX's and cuDNN's: queries ``q (*batch, T, H, D)``, keys ``k (*batch, S, H, D)``, values
``v (*batch, S, H, Dv)`` (``T`` queries, ``S`` keys, ``H`` heads), output ``(*batch, T, H, Dv)``,
weights ``(*batch, H, T, S)``. ``*batch`` is any number of axes, none included.

A mask is boolean, ``True`` where a query may attend a key, broadcastable to
``(*batch, H, T, S)``: :func:`causal_mask` ``(T, S)`` and :func:`padding_mask` ``(B, 1, 1, S)``
combine with :func:`combine_masks` or ``&``.

Masked positions get a weight of exactly 0 and a gradient of exactly 0: the reference selects
the logits with ``where`` instead of adding a large negative number. A query that may attend no
key at all (a fully masked row) gets all-zero weights and a zero output, with zero gradients:
neither NaN (the softmax of ``-inf`` everywhere) nor the uniform average of the values that a
large negative bias gives. The fused implementations are corrected to the same result.

The logits, the softmax and its statistics are computed in float32 (float64 for float64 inputs)
whatever the input dtype; the weighted sum of the values runs in the values' dtype with float32
accumulation.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ..errors import ConfigError, ShapeError

Array = jax.Array

IMPLEMENTATIONS = ("auto", "reference", "xla", "cudnn")
"""``"reference"``: the equation above. ``"xla"``/``"cudnn"``: ``jax.nn.dot_product_attention``
with that implementation (cuDNN's flash attention needs an NVIDIA GPU and float16/bfloat16).
``"auto"``: cuDNN where it applies (GPU, half-precision inputs, shapes it supports), else the
reference."""

_FUSED_DTYPES = (jnp.bfloat16, jnp.float16)


def causal_mask(q_len: int, kv_len: int | None = None, offset: int | Array = 0) -> Array:
    """Causal mask ``(q_len, kv_len)``: query ``i`` sees key ``j`` iff ``j <= i + offset``.

    ``offset`` (may be traced) is the position of the first query in the key sequence, as when
    new queries attend a cache that already holds ``offset`` keys; 0 aligns the first query with
    the first key (JAX's ``is_causal``). ``kv_len`` defaults to ``q_len``.
    """
    kv_len = q_len if kv_len is None else kv_len
    return jnp.arange(kv_len)[None, :] <= (jnp.arange(q_len) + offset)[:, None]


def padding_mask(lengths: Array, kv_len: int) -> Array:
    """Mask ``(B, 1, 1, kv_len)`` of right-padded key sequences: key ``j`` of row ``b`` is real
    iff ``j < lengths[b]``. ``lengths``: int ``(B,)``."""
    lengths = jnp.asarray(lengths)
    if lengths.ndim != 1:
        raise ShapeError(f"padding_mask expected lengths of shape (batch,), got "
                         f"{tuple(lengths.shape)}")
    return (jnp.arange(kv_len)[None, :] < lengths[:, None])[:, None, None, :]


def combine_masks(*masks: Array | None) -> Array | None:
    """Logical AND of the masks that are not ``None`` (``None`` if all are), broadcast."""
    present = [jnp.asarray(m, bool) for m in masks if m is not None]
    if not present:
        return None
    ndim = max(m.ndim for m in present)
    out = _lift(present[0], ndim)
    for m in present[1:]:
        out = out & _lift(m, ndim)
    return out


def _lift(a: Array, ndim: int) -> Array:
    """``a`` with leading unit axes up to ``ndim`` axes (explicit rank promotion)."""
    return a.reshape((1,) * (ndim - a.ndim) + a.shape)


def _check_qkv(q: Array, k: Array, v: Array) -> None:
    """ShapeError unless ``q (*b, T, H, D)``, ``k (*b, S, H, D)``, ``v (*b, S, H, Dv)``."""
    if q.ndim < 3 or k.ndim != q.ndim or v.ndim != q.ndim:
        raise ShapeError(f"attention expected q (*batch, T, heads, head_dim) and k, v (*batch, "
                         f"S, heads, head_dim) with the same number of axes, got q "
                         f"{tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}")
    if q.shape[:-3] != k.shape[:-3] or q.shape[-2:] != k.shape[-2:] or v.shape[:-1] != k.shape[:-1]:
        raise ShapeError(f"attention: q {tuple(q.shape)}, k {tuple(k.shape)} and v "
                         f"{tuple(v.shape)} disagree; q and k need the same batch, heads and "
                         f"head_dim, k and v the same batch, length and heads")


def _visible(mask: Array | None, causal: bool, q: Array, k: Array) -> Array | None:
    """The full boolean mask (user mask AND causal) with ``q.ndim`` axes, or None."""
    T, S = q.shape[-3], k.shape[-3]
    if mask is not None:
        mask = jnp.asarray(mask)
        want = (*q.shape[:-3], q.shape[-2], T, S)
        if mask.dtype != bool:
            raise ShapeError(f"attention masks are boolean (True = may attend), got dtype "
                             f"{mask.dtype}; pass mask > 0 or an explicit boolean array")
        try:
            if mask.ndim > len(want) or np.broadcast_shapes(mask.shape, want) != want:
                raise ValueError
        except ValueError:
            raise ShapeError(f"attention mask {tuple(mask.shape)} does not broadcast to "
                             f"(*batch, heads, T, S) = {want}") from None
    visible = combine_masks(mask, causal_mask(T, S) if causal else None)
    return None if visible is None else _lift(visible, q.ndim)


def _stat_dtype(*arrays: Array):
    """The dtype of the logits and softmax: float32, or float64 for float64 inputs."""
    return jnp.promote_types(jnp.result_type(*arrays), jnp.float32)


def _default_scale(q: Array, scale: float | None) -> float:
    return 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale


def masked_softmax(logits: Array, visible: Array | None) -> Array:
    """Softmax over the last axis restricted to ``visible`` entries (zero weight elsewhere).

    Masked entries are selected away (``where``), so their weight and gradient are exactly 0;
    a row with no visible entry is all zeros. ``visible`` must have ``logits.ndim`` axes.
    """
    if visible is None:
        return jax.nn.softmax(logits, axis=-1)
    row_max = jnp.max(jnp.where(visible, logits, -jnp.inf), axis=-1, keepdims=True)
    # The softmax does not depend on the shift; a fully masked row's -inf becomes 0.
    row_max = lax.stop_gradient(jnp.where(jnp.isfinite(row_max), row_max, 0))
    # The inner where keeps exp finite at masked entries, so their gradient is 0, not NaN.
    e = jnp.where(visible, jnp.exp(jnp.where(visible, logits, row_max) - row_max), 0)
    total = jnp.sum(e, axis=-1, keepdims=True)
    return e / jnp.where(total > 0, total, 1)


def attention_weights(q: Array, k: Array, mask: Array | None = None, *, causal: bool = False,
                      scale: float | None = None) -> Array:
    """``softmax(q kᵀ · scale)`` over the visible keys: ``(*batch, H, T, S)``.

    Args:
      q: queries ``(*batch, T, H, D)``.
      k: keys ``(*batch, S, H, D)``.
      mask: bool, broadcastable to ``(*batch, H, T, S)``; True where a query may attend a key.
      causal: also apply :func:`causal_mask` ``(T, S)``.
      scale: multiplies the logits; default ``1 / sqrt(D)``.

    Returns:
      weights in float32 (float64 for float64 inputs), rows summing to 1 (0 for fully masked
      rows), exactly 0 at masked positions.
    """
    _check_qkv(q, k, k)
    logits = jnp.einsum("...thd,...shd->...hts", q, k, preferred_element_type=_stat_dtype(q, k))
    return masked_softmax(logits * _default_scale(q, scale), _visible(mask, causal, q, k))


def attend(weights: Array, v: Array) -> Array:
    """The weighted sum of the values: weights ``(*batch, H, T, S)``, ``v (*batch, S, H, Dv)``
    -> ``(*batch, T, H, Dv)`` in ``v``'s dtype (float32 accumulation at least)."""
    acc = jnp.promote_types(v.dtype, jnp.float32)
    return jnp.einsum("...hts,...shd->...thd", weights.astype(v.dtype), v,
                      preferred_element_type=acc).astype(v.dtype)


def dot_product_attention(q: Array, k: Array, v: Array, mask: Array | None = None, *,
                          causal: bool = False, scale: float | None = None,
                          impl: str = "auto") -> Array:
    """Scaled dot-product attention ``softmax(q kᵀ / √D) v`` for every head.

    Args:
      q: queries ``(*batch, T, H, D)``.
      k: keys ``(*batch, S, H, D)``.
      v: values ``(*batch, S, H, Dv)``.
      mask: bool, broadcastable to ``(*batch, H, T, S)``; True where a query may attend a key.
      causal: query ``i`` attends only keys ``j <= i`` (combined with ``mask``).
      scale: multiplies the logits; default ``1 / sqrt(D)``.
      impl: one of :data:`IMPLEMENTATIONS`.

    Returns:
      ``(*batch, T, H, Dv)`` in ``v``'s dtype; zeros for queries that see no key.
    """
    if impl not in IMPLEMENTATIONS:
        raise ConfigError(f"unknown attention impl {impl!r}; use one of {IMPLEMENTATIONS}")
    q, k, v = jnp.asarray(q), jnp.asarray(k), jnp.asarray(v)
    _check_qkv(q, k, v)
    if impl == "auto" and _fused_may_apply(q, k, v):
        try:
            return fused_attention(q, k, v, mask, causal=causal, scale=scale, impl="cudnn")
        except (ValueError, NotImplementedError, RuntimeError):
            pass  # shapes or a cuDNN version the kernel refuses (checked while tracing)
    if impl in ("xla", "cudnn"):
        return fused_attention(q, k, v, mask, causal=causal, scale=scale, impl=impl)
    return attend(attention_weights(q, k, mask, causal=causal, scale=scale), v)


def _fused_may_apply(q: Array, k: Array, v: Array) -> bool:
    """Whether ``"auto"`` should try cuDNN: a GPU backend and half-precision inputs."""
    same = q.dtype == k.dtype == v.dtype
    return jax.default_backend() == "gpu" and same and q.dtype in _FUSED_DTYPES


def fused_attention(q: Array, k: Array, v: Array, mask: Array | None = None, *,
                    causal: bool = False, scale: float | None = None,
                    impl: str = "xla") -> Array:
    """:func:`dot_product_attention` through ``jax.nn.dot_product_attention(implementation=
    impl)``, with this module's semantics for fully masked rows (zeros). Same shapes."""
    T, S = q.shape[-3], k.shape[-3]
    batch = q.shape[:-3]
    if causal and T != S:  # keep the top-left-aligned meaning whatever the kernel assumes
        mask, causal = combine_masks(mask, causal_mask(T, S)), False
    visible = _visible(mask, False, q, k)
    flat_mask = None if visible is None else _flatten_batch_of_mask(visible, batch)

    def flat(a):  # (*batch, L, H, D) -> (N, L, H, D)
        return a.reshape((-1,) + a.shape[-3:])

    out = jax.nn.dot_product_attention(flat(q), flat(k), flat(v), mask=flat_mask,
                                       scale=_default_scale(q, scale), is_causal=causal,
                                       implementation=impl)
    out = out.reshape(q.shape[:-1] + v.shape[-1:])
    if visible is None:
        return out
    # Rows with no visible key: the kernels' large negative bias averages the values instead.
    seen = jnp.swapaxes(jnp.any(visible, axis=-1), -1, -2)[..., None]  # (*b, T, H|1, 1)
    return jnp.where(seen, out, jnp.zeros((), out.dtype))


def _flatten_batch_of_mask(visible: Array, batch: tuple[int, ...]) -> Array:
    """A mask ``(*b, H|1, T, S)`` (``b`` broadcastable to ``batch``) -> 4-D ``(N|1, ...)``."""
    tail = visible.shape[-3:]
    if all(d == 1 for d in visible.shape[:-3]):
        return visible.reshape((1,) + tail)
    return jnp.broadcast_to(visible, batch + tail).reshape((-1,) + tail)
