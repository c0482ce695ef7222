"""A next-character model's training pieces for :func:`fit`: random windows of an encoded text.

``fit`` shuffles and batches a fixed set of examples; here an example is a *block* of
``2 * seq_len`` characters (blocks start every ``seq_len`` characters), and the step reads one
window of ``seq_len + 1`` characters from each block at a random offset in ``[0, seq_len)``
drawn from the step's key (:func:`dlfun.data.windows.random_windows`). An epoch is therefore
one random window per block: about one pass over the training text, different every epoch, the
same again in a resumed run (keys are derived from the seed and step).

Held-out evaluation scores fixed, non-overlapping windows of ``seq_len`` characters, each run
from the zero state: the held-out characters at positions ``1 .. K*seq_len``
(:func:`dlfun.data.windows.covered_targets`); the remainder shorter than a window is not scored.
"""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from .. import losses
from ..data.split import Split
from ..data.windows import evaluation_windows, random_windows, split_window, training_blocks

LN2 = math.log(2.0)


def char_lm_metrics(logits: jax.Array, targets: jax.Array) -> dict[str, jax.Array]:
    """``bits_per_char`` (mean cross-entropy / ln 2) and next-character ``accuracy`` of
    ``logits (B, T, V)`` against ids ``(B, T)``."""
    bits = losses.softmax_cross_entropy(logits, targets) / LN2
    return {"bits_per_char": bits, "accuracy": jnp.mean(jnp.argmax(logits, -1) == targets)}


def make_window_train_step(step: Callable, seq_len: int) -> Callable:
    """``step(state, (x, y), key)`` -> a step on batches of training blocks
    ``(B, 2*seq_len)``: it reads a random window from each block (key from ``key``) first."""
    def windowed(state, batch, key):
        blocks, _ = batch
        window_key, step_key = jax.random.split(key)
        return step(state, random_windows(window_key, blocks, seq_len), step_key)

    return windowed


def make_window_eval_step(eval_step: Callable) -> Callable:
    """``eval_step(state, (x, y))`` -> an evaluation step on windows ``(B, seq_len + 1)``."""
    def windowed(state, batch):
        windows, _ = batch
        return eval_step(state, split_window(windows))

    return windowed


def text_splits(train_ids: np.ndarray, held_ids: np.ndarray,
                seq_len: int) -> tuple[Split, Split]:
    """Training blocks and held-out windows as :class:`Split` s for :func:`fit` (each row holds
    its inputs and targets; ``y`` is an unused placeholder)."""
    blocks = training_blocks(train_ids, seq_len)
    windows = evaluation_windows(held_ids, seq_len)
    return (Split(blocks, np.zeros(len(blocks), np.int32)),
            Split(windows, np.zeros(len(windows), np.int32)))
