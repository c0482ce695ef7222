"""Windows of an encoded text for language modelling: inputs and next-character targets.

A window of ``seq_len + 1`` ids gives inputs ``w[:-1]`` and targets ``w[1:]`` (each input's next
character). Training cuts the text into overlapping *blocks* of ``2 * seq_len`` ids starting
every ``seq_len`` ids, and each step reads one window from each block at a random offset in
``[0, seq_len)`` (drawn from the step's key, so a resumed run draws the same ones): about one
pass over the text per pass over the blocks, with windows that differ every epoch. Evaluation
uses fixed, non-overlapping windows, so every scored character is scored exactly once.

The blocks and windows are ordinary arrays (``(K, 2*seq_len)``, ``(K, seq_len + 1)``) that a
training loop batches like any dataset; the text is never captured as a compile-time constant.
"""

from __future__ import annotations

import jax
import numpy as np
from jax import lax

from ..errors import DataError


def _strided(ids: np.ndarray, width: int, stride: int, what: str) -> np.ndarray:
    """Rows ``ids[k*stride : k*stride + width]`` for every ``k`` that fits, ``(K, width)``."""
    if len(ids) < width:
        raise DataError(f"text of {len(ids)} characters is shorter than one {what} of {width} "
                        f"characters; use a longer text or a smaller --seq-len")
    rows = np.lib.stride_tricks.sliding_window_view(np.asarray(ids), width)[::stride]
    return np.ascontiguousarray(rows)


def training_blocks(ids: np.ndarray, seq_len: int) -> np.ndarray:
    """Blocks ``ids[k*seq_len : (k+2)*seq_len]``, ``(K, 2*seq_len)`` with
    ``K = (len(ids) - 2*seq_len) // seq_len + 1``; DataError if the text is shorter."""
    return _strided(ids, 2 * seq_len, seq_len, "training block (2 x --seq-len)")


def evaluation_windows(ids: np.ndarray, seq_len: int) -> np.ndarray:
    """Non-overlapping windows ``ids[k*seq_len : k*seq_len + seq_len + 1]``,
    ``(K, seq_len + 1)`` with ``K = (len(ids) - 1) // seq_len``; they score the characters at
    positions ``1 .. K*seq_len``."""
    return _strided(ids, seq_len + 1, seq_len, "window (--seq-len + 1)")


def covered_targets(length: int, seq_len: int) -> int:
    """How many characters of a text of ``length`` the evaluation windows score."""
    return max(0, (length - 1) // seq_len) * seq_len


def split_window(windows: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Windows ``(B, seq_len + 1)`` -> ``(inputs (B, seq_len), targets (B, seq_len))``."""
    return windows[:, :-1], windows[:, 1:]


def random_windows(key: jax.Array, blocks: jax.Array,
                   seq_len: int) -> tuple[jax.Array, jax.Array]:
    """One window of ``seq_len + 1`` ids from each block, at a random offset in
    ``[0, seq_len)``; jit-able.

    Args:
      key: PRNG key.
      blocks: ``(B, 2*seq_len)`` (see :func:`training_blocks`).
      seq_len: inputs per window.

    Returns:
      ``(inputs (B, seq_len), targets (B, seq_len))``.
    """
    offsets = jax.random.randint(key, (blocks.shape[0],), 0, seq_len)
    windows = jax.vmap(lambda b, o: lax.dynamic_slice(b, (o,), (seq_len + 1,)))(blocks, offsets)
    return split_window(windows)
