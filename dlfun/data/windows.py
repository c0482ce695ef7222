"""Windows of an encoded text for language modelling: inputs and next-character targets.

A window of ``seq_len + 1`` ids starting at ``s`` gives inputs ``text[s : s + seq_len]`` and
targets ``text[s + 1 : s + seq_len + 1]``. Training draws each window at a random offset inside
its block (the offsets come from a key, so a resumed run draws the same ones); evaluation uses
fixed, non-overlapping windows, so every target character is scored exactly once.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ..errors import DataError


def window_starts(length: int, seq_len: int, stride: int, jitter: int = 1) -> np.ndarray:
    """First offsets ``0, stride, 2*stride, ...`` of windows that stay inside a text.

    Args:
      length: number of ids in the text.
      seq_len: inputs per window (a window reads ``seq_len + 1`` ids).
      stride: distance between consecutive starts.
      jitter: each start may later move right by up to ``jitter - 1``; the window must still
        fit.

    Returns:
      int32 starts ``(K,)`` with ``K = (length - seq_len - jitter) // stride + 1``.

    Raises:
      DataError: the text is shorter than one window.
    """
    last = length - seq_len - jitter  # the largest start that fits with the largest jitter
    if last < 0:
        raise DataError(f"text of {length} characters is shorter than one window of "
                        f"{seq_len + jitter} characters; use a longer text or a smaller "
                        f"--seq-len")
    return np.arange(0, last + 1, stride, dtype=np.int32)


def gather_windows(text: jax.Array, starts: jax.Array, seq_len: int) -> tuple[jax.Array, jax.Array]:
    """Inputs and targets of the windows at ``starts``.

    Args:
      text: ids ``(length,)``.
      starts: ``(B,)`` first offsets.
      seq_len: inputs per window.

    Returns:
      ``(inputs (B, seq_len), targets (B, seq_len))``, the targets shifted by one.
    """
    idx = starts[:, None] + jnp.arange(seq_len + 1)[None, :]  # (B, seq_len + 1)
    windows = text[idx]
    return windows[:, :-1], windows[:, 1:]


def covered_targets(length: int, seq_len: int) -> int:
    """How many target characters the evaluation windows (stride ``seq_len``) score: the
    characters at positions ``1 .. K*seq_len`` of the text."""
    return len(window_starts(length, seq_len, seq_len)) * seq_len
