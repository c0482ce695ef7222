"""The pre-norm transformer block and a decoder-only language model built from it.

Block (pre-norm, as GPT-2 and most models since): ``x + attention(norm(x))`` then
``x + mlp(norm(x))``, dropout on each branch before the residual sum. The language model embeds
token ids, adds (or rotates in) positions, runs ``num_layers`` causal blocks, normalises and
maps to next-token logits. Its ``with_carry`` method continues a text with a KV cache per
layer, the same interface as :class:`dlfun.nn.CharLM`, so :func:`dlfun.nn.sample_language_model`
samples from either with one compiled ``lax.scan``.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ..errors import ConfigError, ShapeError
from .activations import Activation, get_activation
from .axis_names import EMBED, MLP_HIDDEN, VOCAB
from .dropout import Dropout
from .layer_norm import LayerNorm, RMSNorm
from .multi_head_attention import KVCache, MultiHeadAttention, init_kv_cache
from .position import LearnedPositions, sinusoidal_encoding
from .sharding import constrain_activation, maybe_partitioned

Array = jax.Array

NORMS = {"layer": LayerNorm, "rms": RMSNorm}
POSITIONS = ("rope", "learned", "sinusoidal", "none")


def make_norm(norm: str, dtype: Any, param_dtype: Any, partitioned: bool,
              name: str | None = None) -> nn.Module:
    """``LayerNorm`` (``"layer"``) or ``RMSNorm`` (``"rms"``) with these dtypes."""
    if norm not in NORMS:
        raise ConfigError(f"unknown norm {norm!r}; use one of {sorted(NORMS)}")
    return NORMS[norm](dtype=dtype, param_dtype=param_dtype, partitioned=partitioned,
                       name=name)


class FeedForward(nn.Module):
    """Position-wise MLP ``activation(x W1 + b1) W2 + b2`` of a transformer block.

    Attributes:
      mlp_dim: hidden size ``M``.
      activation: name (see :data:`dlfun.nn.ACTIVATIONS`) or function; ``"gelu"`` is the tanh
        approximation (``jax.nn.gelu``).
      use_bias: learn ``b1`` and ``b2``.
      dtype: computation dtype; None: the input's.
      param_dtype: of the parameters.
      kernel_init, bias_init: initializers.
      partitioned: logical axis names: ``hidden_kernel (E, M)`` [embed, mlp], ``hidden_bias
        (M,)`` [mlp], ``output_kernel (M, E)`` [mlp, embed], ``output_bias (E,)`` [embed]; the
        hidden activations ``(..., M)`` [batch, ..., mlp].

    Input ``(..., E)`` -> ``(..., E)``. Parameters: ``2·E·M + M + E`` (``2·E·M`` without bias).
    """

    mlp_dim: int
    activation: str | Activation = "gelu"
    use_bias: bool = True
    dtype: Any = None
    param_dtype: Any = jnp.float32
    kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()
    bias_init: nn.initializers.Initializer = nn.initializers.zeros_init()
    partitioned: bool = True

    @nn.compact
    def __call__(self, x: Array) -> Array:
        dtype = self.dtype or jnp.result_type(x)
        x = jnp.asarray(x, dtype)
        h = get_activation(self.activation)(
            self._affine("hidden", x, self.mlp_dim, (EMBED, MLP_HIDDEN), dtype))
        if self.partitioned:
            h = constrain_activation(h, (MLP_HIDDEN,))
        return self._affine("output", h, x.shape[-1], (MLP_HIDDEN, EMBED), dtype)

    def _affine(self, name: str, x: Array, features: int, axes, dtype) -> Array:
        axes = axes if self.partitioned else None
        kernel = self.param(f"{name}_kernel", maybe_partitioned(self.kernel_init, axes),
                            (x.shape[-1], features), self.param_dtype)
        y = jnp.matmul(x, kernel.astype(dtype))
        if not self.use_bias:
            return y
        bias = self.param(f"{name}_bias", maybe_partitioned(self.bias_init, axes and axes[1:]),
                          (features,), self.param_dtype)
        return y + bias.astype(dtype).reshape((1,) * (y.ndim - 1) + (features,))


class TransformerBlock(nn.Module):
    """Pre-norm transformer block: ``x += drop(attn(norm(x)))``; ``x += drop(mlp(norm(x)))``.

    Attributes:
      num_heads: attention heads ``H`` (head size ``E // H``).
      mlp_dim: hidden size ``M`` of the MLP.
      dropout_rate: dropout on each branch before its residual sum.
      attention_dropout_rate: dropout on the attention weights.
      causal: causal self-attention (decoder blocks).
      norm: ``"layer"`` (LayerNorm) or ``"rms"`` (RMSNorm).
      activation: of the MLP.
      rope_base: rotary position encoding inside attention (None: none).
      impl: attention implementation (see :func:`dlfun.nn.dot_product_attention`).
      dtype: computation dtype; None: the input's. Norm and softmax statistics stay float32.
      param_dtype: of the parameters.
      partitioned: logical axis names on every parameter, and on the activations (the
        block's input and output ``(*batch, T, E)`` [batch, ..., None, None], the heads and
        the MLP's hidden units inside).
      sow_weights: store the attention weights ``(*batch, H, T, S)`` in the
        ``"intermediates"`` collection (see :class:`MultiHeadAttention`).

    Call: ``block(x, *, mask=None, cache=None, train=False)``, ``x (*batch, T, E)`` ->
    ``(*batch, T, E)``; with a :class:`KVCache` (``x (B, T, E)``) returns ``(y, new_cache)``.
    Submodules ``attention_norm``, ``attention`` (:class:`MultiHeadAttention`), ``mlp_norm``,
    ``mlp`` (:class:`FeedForward`). Parameters, with LayerNorm: ``4E² + 2EM + 9E + M``
    (attention ``4E² + 4E``, MLP ``2EM + M + E``, norms ``4E``); with RMSNorm ``2E`` fewer.
    """

    num_heads: int
    mlp_dim: int
    dropout_rate: float = 0.0
    attention_dropout_rate: float = 0.0
    causal: bool = False
    norm: str = "layer"
    activation: str | Activation = "gelu"
    rope_base: float | None = None
    impl: str = "auto"
    dtype: Any = None
    param_dtype: Any = jnp.float32
    partitioned: bool = True
    sow_weights: bool = False

    @nn.compact
    def __call__(self, x: Array, *, mask: Array | None = None, cache: KVCache | None = None,
                 train: bool = False):
        dtype = self.dtype or jnp.result_type(x)
        x = self._layout(jnp.asarray(x, dtype))
        kinds = dict(dtype=dtype, param_dtype=self.param_dtype, partitioned=self.partitioned)
        h = make_norm(self.norm, **kinds, name="attention_norm")(x)
        attention = MultiHeadAttention(self.num_heads, causal=self.causal,
                                       dropout_rate=self.attention_dropout_rate,
                                       rope_base=self.rope_base, impl=self.impl,
                                       sow_weights=self.sow_weights, name="attention",
                                       **kinds)
        if cache is None:
            a = attention(h, mask=mask, train=train)
        else:
            a, cache = attention(h, mask=mask, cache=cache, train=train)
        x = x + Dropout(self.dropout_rate)(a, train=train)
        h = make_norm(self.norm, **kinds, name="mlp_norm")(x)
        m = FeedForward(self.mlp_dim, self.activation, name="mlp", **kinds)(h)
        x = self._layout(x + Dropout(self.dropout_rate)(m, train=train))
        return x if cache is None else (x, cache)

    def _layout(self, x: Array) -> Array:
        """The residual stream split by example only (FSDP gathers weights, not features)."""
        return constrain_activation(x, (None, None)) if self.partitioned else x


class TransformerLM(nn.Module):
    """Decoder-only transformer language model: ids ``(B, T)`` -> next-token logits ``(B, T, V)``.

    Attributes:
      vocab_size: ``V``.
      d_model: width ``E`` of the residual stream.
      num_heads: attention heads per block (``E`` divisible by it).
      num_layers: blocks ``L``.
      mlp_dim: MLP hidden size ``M``.
      max_len: the longest text: rows of a learned position table, slots of the KV cache.
      dropout_rate: dropout on the embeddings and on every residual branch.
      attention_dropout_rate: dropout on the attention weights.
      position: ``"rope"`` (rotary, inside attention), ``"learned"``, ``"sinusoidal"``
        (added to the embeddings) or ``"none"``.
      norm: ``"layer"`` or ``"rms"``.
      activation: of the MLPs.
      tie_embeddings: the output layer is the transposed embedding table (no head parameters).
      rope_base: base of the rotary frequencies.
      impl: attention implementation.
      dtype: computation dtype; logits are float32 (at least).
      param_dtype: of the parameters.
      partitioned: logical axis names on every parameter (``embedding (V, E)`` [vocab, embed],
        ``head_kernel (E, V)`` [embed, vocab], ``head_bias (V,)`` [vocab], and the blocks');
        the logits ``(B, T, V)`` [batch, None, vocab].
      sow_weights: every block stores its attention weights (see :func:`attention_maps`).
      token_shift: add the previous token's embedding, through a learned ``(E, E)`` matrix
        ``shift_kernel`` (zero at init, so the model starts as the plain one), to each
        position's embedding: ``x_t + x_{t-1} W`` (``x_{-1} = 0``). The "smeared key" of Olsson
        et al. (2022) and the short causal mixing of Canon layers (Allen-Zhu, 2025): position
        ``t`` knows its predecessor without a previous-token attention head, so an
        induction/recall circuit needs one attention layer instead of two composed ones.

    Parameters: ``V·E`` (embedding) ``+ L·(4E² + 2EM + 9E + M)`` (blocks, LayerNorm)
    ``+ 2E`` (final LayerNorm) ``+ E·V + V`` (head, untied) ``+ max_len·E`` (learned positions
    only) ``+ E²`` (token shift only). RMSNorm: ``(2L + 1)·E`` fewer.

    ``model.apply(variables, tokens, train=False)`` gives the logits of a causal pass;
    ``method="with_carry"`` takes and returns the KV caches (and, with ``token_shift``, the
    last token's embedding), to continue a text (sampling with
    :func:`dlfun.nn.sample_language_model`, which needs ``prompt + length <= max_len``).
    """

    vocab_size: int
    d_model: int
    num_heads: int
    num_layers: int
    mlp_dim: int
    max_len: int
    dropout_rate: float = 0.0
    attention_dropout_rate: float = 0.0
    position: str = "rope"
    norm: str = "layer"
    activation: str | Activation = "gelu"
    tie_embeddings: bool = False
    rope_base: float = 10000.0
    impl: str = "auto"
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    partitioned: bool = True
    sow_weights: bool = False
    token_shift: bool = False

    def setup(self):
        if self.position not in POSITIONS:
            raise ConfigError(f"unknown position encoding {self.position!r}; use one of "
                              f"{POSITIONS}")
        if self.d_model % self.num_heads:
            raise ConfigError(f"d_model={self.d_model} does not split into {self.num_heads} "
                              f"heads; choose num_heads dividing d_model")
        named = (lambda axes: axes) if self.partitioned else (lambda axes: None)
        self.embed = nn.Embed(self.vocab_size, self.d_model, dtype=self.dtype,
                              param_dtype=self.param_dtype,
                              embedding_init=maybe_partitioned(nn.initializers.normal(0.02),
                                                               named((VOCAB, EMBED))))
        if self.position == "learned":
            self.positions = LearnedPositions(self.max_len, self.d_model, dtype=self.dtype,
                                              param_dtype=self.param_dtype,
                                              partitioned=self.partitioned)
        if self.token_shift:
            self.shift_kernel = self.param(
                "shift_kernel", maybe_partitioned(nn.initializers.zeros_init(),
                                                  named((None, EMBED))),
                (self.d_model, self.d_model), self.param_dtype)
        self.embed_dropout = Dropout(self.dropout_rate)
        self.blocks = [self._block(i) for i in range(self.num_layers)]
        self.final_norm = make_norm(self.norm, self.dtype, self.param_dtype, self.partitioned)
        if not self.tie_embeddings:
            self.head_kernel = self.param(
                "head_kernel", maybe_partitioned(nn.initializers.lecun_normal(),
                                                 named((EMBED, VOCAB))),
                (self.d_model, self.vocab_size), self.param_dtype)
            self.head_bias = self.param(
                "head_bias", maybe_partitioned(nn.initializers.zeros_init(), named((VOCAB,))),
                (self.vocab_size,), self.param_dtype)

    def _block(self, i: int) -> TransformerBlock:
        return TransformerBlock(
            self.num_heads, self.mlp_dim, dropout_rate=self.dropout_rate,
            attention_dropout_rate=self.attention_dropout_rate, causal=True, norm=self.norm,
            activation=self.activation,
            rope_base=self.rope_base if self.position == "rope" else None, impl=self.impl,
            dtype=self.dtype, param_dtype=self.param_dtype, partitioned=self.partitioned,
            sow_weights=self.sow_weights, name=f"block_{i}")

    def __call__(self, tokens: Array, train: bool = False) -> Array:
        """Ids ``(B, T)`` -> logits ``(B, T, V)`` (position ``t`` sees ids ``<= t``)."""
        self._check_tokens(tokens)
        x, _ = self._embed(tokens, 0, None, train)
        for block in self.blocks:
            x = block(x, train=train)
        return self._logits(x)

    def with_carry(self, tokens: Array, carry: tuple | None = None) -> tuple[tuple, Array]:
        """Ids ``(B, T)`` and the carry after the preceding text (None: an empty text) ->
        ``(carry after tokens, logits (B, T, V))``. Equal to the causal pass over the whole
        text, position by position. The carry is one KV cache per block, then (with
        ``token_shift``) the last token's embedding ``(B, E)``."""
        self._check_tokens(tokens)
        if carry is None:
            carry = self.init_carry(tokens.shape[0])
        previous = carry[self.num_layers] if self.token_shift else None
        x, last = self._embed(tokens, carry[0].length, previous, False)
        caches = []
        for block, cache in zip(self.blocks, carry):
            x, cache = block(x, cache=cache)
            caches.append(cache)
        return tuple(caches) + ((last,) if self.token_shift else ()), self._logits(x)

    @nn.nowrap
    def init_carry(self, batch: int) -> tuple:
        """The carry of an empty text, for ``batch`` texts of up to ``max_len`` positions: one
        empty KV cache per block, ``(batch, max_len, num_heads, d_model // num_heads)`` in
        ``dtype``; with ``token_shift`` then zeros ``(batch, d_model)`` (no previous token)."""
        head_dim = self.d_model // self.num_heads
        caches = tuple(init_kv_cache(batch, self.max_len, self.num_heads, head_dim, self.dtype)
                       for _ in range(self.num_layers))
        if not self.token_shift:
            return caches
        return caches + (jnp.zeros((batch, self.d_model), self.dtype or jnp.float32),)

    def _check_tokens(self, tokens: Array) -> None:
        if tokens.ndim != 2:
            raise ShapeError(f"TransformerLM expected token ids of shape (batch, time), got "
                             f"shape {tuple(tokens.shape)}")
        if tokens.shape[1] > self.max_len:
            raise ShapeError(f"TransformerLM got {tokens.shape[1]} positions but max_len="
                             f"{self.max_len}; pass shorter windows or raise max_len")

    def _embed(self, tokens: Array, offset, previous: Array | None, train: bool
               ) -> tuple[Array, Array | None]:
        """Token embeddings (with ``token_shift``, plus the previous token's through
        ``shift_kernel``; ``previous (B, E)``: the embedding before ``tokens``, None: zeros) plus
        additive positions (positions ``offset + t``), dropout; and the last token's embedding
        (None without ``token_shift``)."""
        x = self.embed(tokens)
        last = None
        if self.token_shift:
            first = jnp.zeros_like(x[:, :1]) if previous is None else previous[:, None]
            last = x[:, -1]
            shifted = jnp.concatenate([first.astype(x.dtype), x[:, :-1]], axis=1)
            x = x + jnp.matmul(shifted, self.shift_kernel.astype(x.dtype))
        positions = offset + jnp.arange(tokens.shape[1])
        if self.position == "learned":
            x = x + self.positions(positions)[None]
        elif self.position == "sinusoidal":
            x = x + sinusoidal_encoding(positions, self.d_model, dtype=x.dtype)[None]
        return self.embed_dropout(x, train=train), last

    def _logits(self, x: Array) -> Array:
        """Final norm and output layer; logits in float32 (at least)."""
        x = self.final_norm(x)
        out = jnp.promote_types(x.dtype, jnp.float32)
        if self.tie_embeddings:
            logits = self.embed.attend(x).astype(out)
        else:
            logits = jnp.matmul(x, self.head_kernel.astype(x.dtype), preferred_element_type=out)
            logits = logits + self.head_bias.astype(out)[None, None, :]
        return constrain_activation(logits, (None, VOCAB)) if self.partitioned else logits


def attention_maps(model: TransformerLM, variables: Any, tokens: Array) -> Array:
    """The attention weights of every block of ``model`` on ``tokens`` (a causal pass).

    Args:
      model: a :class:`TransformerLM` (its ``sow_weights`` is switched on for this call).
      variables: its variables (``{"params": ...}``).
      tokens: ids ``(B, T)``.

    Returns:
      float32 ``(L, B, H, T, T)``: ``[l, b, h, i, j]`` is how much position ``i`` of text
      ``b`` attends position ``j`` in head ``h`` of block ``l`` (0 for ``j > i``).
    """
    _, state = model.clone(sow_weights=True).apply(variables, tokens,
                                                   mutable=["intermediates"])
    blocks = state["intermediates"]
    return jnp.stack([blocks[f"block_{i}"]["attention"]["attention_weights"][0]
                      for i in range(model.num_layers)])
