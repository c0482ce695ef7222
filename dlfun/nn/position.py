"""Position encodings: sinusoidal (Vaswani et al. 2017), learned, rotary (RoPE, Su et al. 2021).

Self-attention alone is blind to order; these give it positions. Sinusoidal and learned
encodings are added to the token embeddings ``(B, T, E)``; rotary encodings rotate the queries
and keys of every head by angles proportional to their positions, so that ``q·k`` depends on the
positions only through their difference.

Positions are integer arrays (traced is fine), e.g. ``offset + arange(T)`` when decoding with a
cache that already holds ``offset`` positions. Angles are computed in float32 (float64 for
float64 inputs) whatever the input dtype.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ..errors import ConfigError, ShapeError
from .axis_names import EMBED, POSITION
from .sharding import maybe_partitioned

Array = jax.Array


def sinusoidal_encoding(positions: Array, features: int, base: float = 10000.0,
                        dtype: Any = jnp.float32) -> Array:
    """``PE[p, 2i] = sin(p / base^(2i/E))``, ``PE[p, 2i+1] = cos(p / base^(2i/E))``.

    Args:
      positions: int array ``(...)``, e.g. ``arange(T)``.
      features: ``E``; an odd ``E`` drops the last cosine.
      base: the longest wavelength is ``2π·base``.
      dtype: of the result (and of the angles, at least float32).

    Returns:
      ``(..., features)``.
    """
    calc = jnp.promote_types(dtype, jnp.float32)
    half = (features + 1) // 2
    inv_freq = base ** (-2.0 * jnp.arange(half, dtype=calc) / features)
    positions = jnp.asarray(positions, calc)[..., None]
    angles = positions * inv_freq.reshape((1,) * (positions.ndim - 1) + (half,))  # (..., half)
    pe = jnp.stack([jnp.sin(angles), jnp.cos(angles)], axis=-1)  # (..., half, 2): interleave
    return pe.reshape(pe.shape[:-2] + (2 * half,))[..., :features].astype(dtype)


def rope_frequencies(head_dim: int, base: float = 10000.0, dtype: Any = jnp.float32) -> Array:
    """Rotary frequencies ``base^(-2i/D)`` for ``i < D/2``: ``(D/2,)``."""
    if head_dim % 2:
        raise ConfigError(f"rotary position encoding rotates pairs of features; head_dim must "
                          f"be even, got {head_dim}")
    return base ** (-2.0 * jnp.arange(head_dim // 2, dtype=dtype) / head_dim)


def apply_rope(x: Array, positions: Array, base: float = 10000.0) -> Array:
    """Rotate queries or keys by their positions (rotary position encoding).

    Feature ``i`` of the first half pairs with feature ``i + D/2`` (the "rotate half" layout of
    GPT-NeoX and LLaMA), rotated by the angle ``p · base^(-2i/D)``:
    ``(x1, x2) -> (x1 cos - x2 sin, x2 cos + x1 sin)``.

    Args:
      x: ``(*batch, T, H, D)`` with ``D`` even.
      positions: int ``(T,)`` or ``(*batch, T)``.
      base: frequency base.

    Returns:
      ``x``'s shape and dtype.
    """
    if x.ndim < 3:
        raise ShapeError(f"apply_rope expected (*batch, T, heads, head_dim), got {tuple(x.shape)}")
    calc = jnp.promote_types(x.dtype, jnp.float32)
    positions = jnp.asarray(positions)
    if positions.shape[-1] != x.shape[-3]:
        raise ShapeError(f"apply_rope: {positions.shape[-1]} positions for {x.shape[-3]} steps "
                         f"(x {tuple(x.shape)}); pass one position per step")
    positions = positions.astype(calc)[..., None]
    freqs = rope_frequencies(x.shape[-1], base, calc)
    angles = positions * freqs.reshape((1,) * (positions.ndim - 1) + freqs.shape)
    angles = angles.reshape((1,) * (x.ndim - 1 - angles.ndim) + angles.shape[:-1] + (1,)
                            + angles.shape[-1:])  # (..., T, 1, D/2): shared by every head
    cos, sin = jnp.cos(angles), jnp.sin(angles)
    x1, x2 = jnp.split(x.astype(calc), 2, axis=-1)
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1).astype(x.dtype)


class LearnedPositions(nn.Module):
    """A learned table of position embeddings ``(max_len, features)``: row ``p`` for position p.

    Attributes:
      max_len: number of positions.
      features: embedding size ``E``.
      embedding_init: initializer of the table (normal, std 0.02, as GPT-2).
      dtype: of the output (None: ``param_dtype``).
      param_dtype: of the table.
      partitioned: logical axis names ``("position", "embed")`` on the table.

    Call: int positions ``(...)`` -> ``(..., features)``; positions outside ``[0, max_len)``
    give NaN rows (so an overrun is visible, not silently clamped).
    Parameters: ``max_len * features``.
    """

    max_len: int
    features: int
    embedding_init: nn.initializers.Initializer = nn.initializers.normal(0.02)
    dtype: Any = None
    param_dtype: Any = jnp.float32
    partitioned: bool = True

    @nn.compact
    def __call__(self, positions: Array) -> Array:
        axes = (POSITION, EMBED) if self.partitioned else None
        table = self.param("embedding", maybe_partitioned(self.embedding_init, axes),
                           (self.max_len, self.features), self.param_dtype)
        out = jnp.take(table, jnp.asarray(positions), axis=0, mode="fill", fill_value=jnp.nan)
        return out.astype(self.dtype or self.param_dtype)
