"""Windows of an encoded text and the language-model steps built on them."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dlfun import losses
from dlfun.data.windows import covered_targets, gather_windows, window_starts
from dlfun.errors import DataError
from dlfun.nn.hidden_gradients import gradient_reach
from dlfun.train.language_model import (LN2, char_lm_metrics, make_window_eval_step,
                                        make_window_train_step, starts_split)


def test_window_starts_keep_every_jittered_window_inside_the_text():
    starts = window_starts(50, seq_len=8, stride=8, jitter=8)
    np.testing.assert_array_equal(starts, [0, 8, 16, 24, 32])
    assert starts[-1] + 7 + 8 + 1 <= 50  # largest jitter, seq_len inputs and one target
    assert window_starts(9, 8, 8).tolist() == [0]  # exactly one window of 9 ids
    with pytest.raises(DataError, match="shorter than one window"):
        window_starts(8, 8, 8)


def test_gather_windows_shifts_targets_by_one():
    text = jnp.arange(100, 130)
    x, y = gather_windows(text, jnp.array([0, 5, 20]), 4)
    np.testing.assert_array_equal(x, [[100, 101, 102, 103], [105, 106, 107, 108],
                                      [120, 121, 122, 123]])
    np.testing.assert_array_equal(y, np.asarray(x) + 1)


def test_evaluation_windows_score_each_target_once():
    n, L = 103, 10
    starts = starts_split(n, L, train=False).x
    targets = np.concatenate([np.arange(s + 1, s + L + 1) for s in starts])
    assert len(set(targets)) == len(targets) == covered_targets(n, L) == 100
    np.testing.assert_array_equal(np.sort(targets), np.arange(1, 101))


def test_window_train_step_draws_windows_by_key_within_their_block():
    text = jnp.arange(1000, dtype=jnp.int32)
    L = 16
    seen = []

    def record(state, batch, key):
        seen.append(batch)
        return state, {}

    step = make_window_train_step(record, text, L)
    starts = jnp.asarray(starts_split(1000, L, train=True).x)
    step(None, (starts, starts), jax.random.key(0))
    step(None, (starts, starts), jax.random.key(0))
    step(None, (starts, starts), jax.random.key(1))
    (x0, y0), (x1, _), (x2, _) = seen
    shift = np.asarray(x0[:, 0]) - np.asarray(starts)
    assert ((shift >= 0) & (shift < L)).all() and len(set(shift.tolist())) > 5
    np.testing.assert_array_equal(np.asarray(y0), np.asarray(x0) + 1)  # text[i] = i
    np.testing.assert_array_equal(x0, x1)  # same key, same windows
    assert not np.array_equal(x0, x2)
    assert int(np.max(y0)) < 1000


def test_window_eval_step_and_bits_per_char():
    text = jnp.asarray(np.random.default_rng(0).integers(0, 5, 41), jnp.int32)

    def eval_step(state, batch):
        x, y = batch
        logits = jnp.zeros((*x.shape, 5))  # a uniform model: log2(5) bits per char
        return dict(loss=losses.softmax_cross_entropy(logits, y), **char_lm_metrics(logits, y))

    starts = jnp.asarray(starts_split(41, 8, train=False).x)
    m = make_window_eval_step(eval_step, text, 8)(None, (starts, starts))
    np.testing.assert_allclose(m["bits_per_char"], np.log2(5), rtol=1e-6)
    np.testing.assert_allclose(m["loss"] / LN2, m["bits_per_char"], rtol=1e-6)


def test_gradient_reach_of_a_geometric_decay():
    T = 30
    norms = 0.5 ** (T - 1 - np.arange(T))  # halves every step back from T
    assert gradient_reach(norms, 1e-3) == 10  # 0.5**9 >= 1e-3 > 0.5**10
    assert gradient_reach(np.ones(T)) == T
    assert gradient_reach(np.r_[np.zeros(5), np.ones(3)]) == 3
