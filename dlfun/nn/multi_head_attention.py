"""Multi-head attention (Vaswani et al. 2017) with a fused QKV projection and a KV cache.

``MultiHeadAttention`` projects its input to queries, keys and values for ``H`` heads of size
``D`` with one matrix ``(E, 3, H, D)``, runs :func:`dlfun.nn.dot_product_attention` per head, and
maps the concatenated heads back with ``(H, D, E_out)``. Every weight carries logical axis names
(:mod:`dlfun.nn.axis_names`), so a rules table that sends ``"heads"`` to the ``model`` mesh axis
splits the QKV projection by columns and the output projection by rows (Megatron).

Incremental decoding passes a :class:`KVCache`: the keys and values of the positions seen so
far, in fixed-size arrays, so a decoding loop has one shape and compiles once.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from ..errors import ConfigError, ShapeError
from .attention import IMPLEMENTATIONS, attend, attention_weights, causal_mask, combine_masks
from .attention import dot_product_attention
from .axis_names import EMBED, HEAD_DIM, HEADS, QKV
from .dropout import Dropout
from .position import apply_rope
from .sharding import constrain_activation, maybe_partitioned

Array = jax.Array


class KVCache(NamedTuple):
    """Keys and values of the positions decoded so far (one attention layer).

    ``key (B, S, H, D)`` and ``value (B, S, H, D)`` hold ``S`` slots (the longest text); the
    first ``length`` (an int32 scalar) are filled. A pytree: pass it through ``lax.scan``.
    """

    key: Array
    value: Array
    length: Array


def init_kv_cache(batch: int, max_len: int, num_heads: int, head_dim: int,
                  dtype: Any = jnp.float32) -> KVCache:
    """An empty cache: zeros ``(batch, max_len, num_heads, head_dim)`` and length 0."""
    zeros = jnp.zeros((batch, max_len, num_heads, head_dim), dtype)
    return KVCache(zeros, zeros, jnp.zeros((), jnp.int32))


def matrix_init(init: nn.initializers.Initializer, in_axes: int) -> nn.initializers.Initializer:
    """``init`` of a 2-D ``(fan_in, fan_out)`` matrix, reshaped to a kernel whose first
    ``in_axes`` axes are inputs (so fan-in based scalings see the true fan-in)."""
    def reshaped(key, shape, dtype=jnp.float32):
        fan_in = math.prod(shape[:in_axes])
        return init(key, (fan_in, math.prod(shape[in_axes:])), dtype).reshape(shape)

    return reshaped


class MultiHeadAttention(nn.Module):
    """Multi-head scaled dot-product attention.

    Attributes:
      num_heads: ``H``.
      head_dim: ``D``; default ``E // H`` (``E`` the input features).
      out_features: ``E_out``; default ``E``.
      causal: position ``i`` attends only positions ``<= i`` (decoders).
      dropout_rate: dropout on the attention weights (``train=True``, ``"dropout"`` rng).
      use_bias: biases on the projections.
      rope_base: rotary position encoding of queries and keys with this base (e.g. 10000);
        None for none.
      impl: attention implementation, one of :data:`dlfun.nn.attention.IMPLEMENTATIONS`
        (the reference runs whenever the weights are needed: dropout, ``sow_weights``).
      dtype: computation dtype; None: the input's. Softmax statistics stay float32.
      param_dtype: dtype of the parameters.
      kernel_init: initializer of a ``(fan_in, fan_out)`` matrix, reshaped to each kernel.
      bias_init: initializer of the biases.
      partitioned: logical axis names on every parameter (see below) and on the heads
        ``(*batch, T, H, D)`` [batch, ..., None, heads, None]; False: plain arrays.
      sow_weights: store the weights ``(*batch, H, T, S)`` in the ``"intermediates"``
        collection as ``attention_weights`` (``apply(..., mutable=["intermediates"])``).

    Call: ``mha(x, context=None, *, mask=None, cache=None, train=False)``.

    * Self-attention: ``x (*batch, T, E)`` -> ``(*batch, T, E_out)``. Parameters
      ``qkv_kernel (E, 3, H, D)`` [embed, qkv, heads, kv], ``qkv_bias (3, H, D)``,
      ``out_kernel (H, D, E_out)`` [heads, kv, embed], ``out_bias (E_out,)``: in all
      ``3·E·H·D + 3·H·D + H·D·E_out + E_out`` (``4E² + 4E`` when ``H·D = E_out = E``).
    * Cross-attention: ``context (*batch, S, E_c)`` gives keys and values: ``query_kernel
      (E, H, D)``, ``query_bias (H, D)``, ``kv_kernel (E_c, 2, H, D)``, ``kv_bias (2, H, D)``
      instead of the fused QKV (the same count when ``E_c = E``).
    * ``mask``: bool broadcastable to ``(*batch, H, T, S)``, True where attending is allowed.
    * Decoding: ``cache`` (a :class:`KVCache`, self-attention on ``x (B, T, E)``) holds the
      keys and values of earlier positions; ``x`` is the next ``T`` positions. Returns
      ``(y, new_cache)``. Outputs are NaN if the cache overflows (``length + T > S``).
    """

    num_heads: int
    head_dim: int | None = None
    out_features: int | None = None
    causal: bool = False
    dropout_rate: float = 0.0
    use_bias: bool = True
    rope_base: float | None = None
    impl: str = "auto"
    dtype: Any = None
    param_dtype: Any = jnp.float32
    kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()
    bias_init: nn.initializers.Initializer = nn.initializers.zeros_init()
    partitioned: bool = True
    sow_weights: bool = False

    @nn.compact
    def __call__(self, x: Array, context: Array | None = None, *, mask: Array | None = None,
                 cache: KVCache | None = None, train: bool = False):
        self._check(x, context, cache)
        dtype = self.dtype or jnp.result_type(x)
        x = jnp.asarray(x, dtype)
        head_dim = self.head_dim or self._default_head_dim(x.shape[-1])
        if context is None:
            q, k, v = self._project_qkv(x, head_dim, dtype)
        else:
            q, (k, v) = self._project_query(x, head_dim, dtype), self._project_kv(
                jnp.asarray(context, dtype), head_dim, dtype)
        q, k, v = self._layout(q), self._layout(k), self._layout(v)
        offset = 0 if cache is None else cache.length
        if self.rope_base is not None:
            q = apply_rope(q, offset + jnp.arange(q.shape[-3]), self.rope_base)
            k = apply_rope(k, offset + jnp.arange(k.shape[-3]), self.rope_base)
        causal = self.causal
        if cache is not None:
            cache, k, v, visible = _update_cache(cache, k, v, self.causal)
            mask, causal = combine_masks(mask, visible), False
        heads = self._layout(self._attend(q, k, v, mask, causal, train))
        y = self._output(heads, x.shape[-1], dtype)
        if cache is None:
            return y
        overflow = cache.length > cache.key.shape[1]
        return jnp.where(overflow, jnp.full((), jnp.nan, y.dtype), y), cache

    def _check(self, x, context, cache) -> None:
        if self.impl not in IMPLEMENTATIONS:
            raise ConfigError(f"unknown attention impl {self.impl!r}; use one of "
                              f"{IMPLEMENTATIONS}")
        if x.ndim < 2:
            raise ShapeError(f"MultiHeadAttention expected inputs (*batch, T, features), got "
                             f"shape {tuple(x.shape)}")
        if context is not None and (context.ndim != x.ndim or context.shape[:-2] != x.shape[:-2]):
            raise ShapeError(f"MultiHeadAttention: context {tuple(context.shape)} must be "
                             f"(*batch, S, features) with the batch of x {tuple(x.shape)}")
        if cache is not None and (context is not None or x.ndim != 3):
            raise ShapeError(f"MultiHeadAttention decodes self-attention on x (batch, T, "
                             f"features) with a cache; got x {tuple(x.shape)}"
                             + ("" if context is None else " and a context"))

    def _layout(self, heads: Array) -> Array:
        """Heads ``(..., L, H, D)`` split by head (tensor parallelism) and by example."""
        return constrain_activation(heads, (None, HEADS, None)) if self.partitioned else heads

    def _default_head_dim(self, features: int) -> int:
        if features % self.num_heads:
            raise ConfigError(f"MultiHeadAttention: {features} features do not split into "
                              f"{self.num_heads} heads; set head_dim or change num_heads")
        return features // self.num_heads

    def _weights(self, prefix: str, shape: tuple[int, ...], in_axes: int,
                 axes: tuple[str, ...], dtype) -> tuple[Array, Array | None]:
        """Kernel ``shape`` (first ``in_axes`` axes inputs) and bias ``shape[in_axes:]``."""
        def named(names):
            return names if self.partitioned else None

        kernel = self.param(f"{prefix}_kernel",
                            maybe_partitioned(matrix_init(self.kernel_init, in_axes),
                                              named(axes)), shape, self.param_dtype)
        bias = None
        if self.use_bias:
            bias = self.param(f"{prefix}_bias",
                              maybe_partitioned(self.bias_init, named(axes[in_axes:])),
                              shape[in_axes:], self.param_dtype).astype(dtype)
        return kernel.astype(dtype), bias

    def _project(self, x, prefix, shape, axes, dtype) -> Array:
        """``x (..., L, E_in)`` @ a kernel ``(E_in, *shape)``, plus bias -> ``(..., L, *shape)``."""
        kernel, bias = self._weights(prefix, (x.shape[-1], *shape), 1, axes, dtype)
        y = jnp.tensordot(x, kernel, axes=1)
        return y if bias is None else y + bias.reshape((1,) * (y.ndim - bias.ndim) + bias.shape)

    def _project_qkv(self, x, head_dim, dtype):
        qkv = self._project(x, "qkv", (3, self.num_heads, head_dim),
                            (EMBED, QKV, HEADS, HEAD_DIM), dtype)  # (..., T, 3, H, D)
        return qkv[..., 0, :, :], qkv[..., 1, :, :], qkv[..., 2, :, :]

    def _project_query(self, x, head_dim, dtype):
        return self._project(x, "query", (self.num_heads, head_dim), (EMBED, HEADS, HEAD_DIM),
                             dtype)

    def _project_kv(self, context, head_dim, dtype):
        kv = self._project(context, "kv", (2, self.num_heads, head_dim),
                           (EMBED, QKV, HEADS, HEAD_DIM), dtype)  # (..., S, 2, H, D)
        return kv[..., 0, :, :], kv[..., 1, :, :]

    def _attend(self, q, k, v, mask, causal, train) -> Array:
        """Heads ``(..., T, H, D)``; the weights are formed explicitly only when needed."""
        dropping = train and self.dropout_rate > 0
        if not (dropping or self.sow_weights):
            return dot_product_attention(q, k, v, mask, causal=causal, impl=self.impl)
        weights = attention_weights(q, k, mask, causal=causal)
        if self.sow_weights:
            self.sow("intermediates", "attention_weights", weights)
        return attend(Dropout(self.dropout_rate)(weights, train=train), v)

    def _output(self, heads, in_features, dtype) -> Array:
        """Heads ``(..., T, H, D)`` -> ``(..., T, E_out)`` through ``out_kernel (H, D, E_out)``."""
        features = self.out_features or in_features
        kernel, bias = self._weights("out", (*heads.shape[-2:], features), 2,
                                     (HEADS, HEAD_DIM, EMBED), dtype)
        y = jnp.tensordot(heads, kernel, axes=2)
        return y if bias is None else y + bias.reshape((1,) * (y.ndim - 1) + bias.shape)


def _update_cache(cache: KVCache, k: Array, v: Array, causal: bool):
    """Write the new keys/values ``(B, T, H, D)`` at ``cache.length``; returns the new cache,
    the full keys and values ``(B, S, H, D)`` and the visibility mask ``(T, S)``."""
    B, S, H, D = cache.key.shape
    if k.shape != (B, k.shape[1], H, D) or v.shape[0] != B or v.shape[2:] != cache.value.shape[2:]:
        raise ShapeError(f"KV cache of shape {tuple(cache.key.shape)} (batch, slots, heads, "
                         f"head_dim) does not fit new keys {tuple(k.shape)}; build it with "
                         f"init_kv_cache(batch, max_len, num_heads, head_dim)")
    T, start = k.shape[1], cache.length
    keys = lax.dynamic_update_slice(cache.key, k.astype(cache.key.dtype), (0, start, 0, 0))
    values = lax.dynamic_update_slice(cache.value, v.astype(cache.value.dtype), (0, start, 0, 0))
    if causal:
        visible = causal_mask(T, S, offset=start)
    else:  # every filled slot
        visible = jnp.broadcast_to(jnp.arange(S)[None, :] < start + T, (T, S))
    new = KVCache(keys, values, start + T)
    return new, keys.astype(k.dtype), values.astype(v.dtype), visible
