"""Windows of an encoded text and the language-model steps built on them."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dlfun import losses
from dlfun.data.windows import (covered_targets, evaluation_windows, random_windows,
                                split_window, training_blocks)
from dlfun.errors import DataError
from dlfun.nn.hidden_gradients import gradient_reach
from dlfun.train.language_model import (LN2, char_lm_metrics, make_window_eval_step,
                                        make_window_train_step, text_splits)


def test_training_blocks_overlap_by_half_and_cover_the_text():
    ids = np.arange(50)
    blocks = training_blocks(ids, 8)
    assert blocks.shape == (5, 16)  # (50 - 16) // 8 + 1
    np.testing.assert_array_equal(blocks[:, 0], [0, 8, 16, 24, 32])
    np.testing.assert_array_equal(blocks[2], np.arange(16, 32))
    assert blocks.flags["C_CONTIGUOUS"] and blocks.dtype == ids.dtype
    with pytest.raises(DataError, match="shorter than one training block"):
        training_blocks(np.arange(15), 8)


def test_evaluation_windows_score_each_target_once():
    n, L = 103, 10
    windows = evaluation_windows(np.arange(n), L)
    x, y = split_window(jnp.asarray(windows))
    np.testing.assert_array_equal(np.asarray(y), np.asarray(x) + 1)
    targets = np.asarray(y).ravel()
    assert len(set(targets)) == len(targets) == covered_targets(n, L) == 100
    np.testing.assert_array_equal(np.sort(targets), np.arange(1, 101))
    assert evaluation_windows(np.arange(9), 8).shape == (1, 9)
    with pytest.raises(DataError, match="shorter than one window"):
        evaluation_windows(np.arange(8), 8)


def test_random_windows_lie_inside_their_block_and_follow_the_key():
    L = 16
    blocks = jnp.asarray(training_blocks(np.arange(1000), L))
    x0, y0 = random_windows(jax.random.key(0), blocks, L)
    x1, _ = jax.jit(random_windows, static_argnums=2)(jax.random.key(0), blocks, L)
    x2, _ = random_windows(jax.random.key(1), blocks, L)
    assert x0.shape == y0.shape == (len(blocks), L)
    offset = np.asarray(x0[:, 0] - blocks[:, 0])
    assert ((offset >= 0) & (offset < L)).all() and len(set(offset.tolist())) > 5
    np.testing.assert_array_equal(np.asarray(x0), np.asarray(x0[:, :1]) + np.arange(L))
    np.testing.assert_array_equal(np.asarray(y0), np.asarray(x0) + 1)  # ids[i] = i
    np.testing.assert_array_equal(x0, x1)  # same key, same windows
    assert not np.array_equal(x0, x2)


def test_window_steps_hand_windows_to_the_wrapped_steps():
    L, seen = 8, []

    def record(state, batch, key):
        seen.append(batch)
        return state, {}

    train, held = text_splits(np.arange(100), np.arange(200, 260), L)
    assert train.x.shape == (11, 2 * L) and held.x.shape == (7, L + 1)
    make_window_train_step(record, L)(None, (jnp.asarray(train.x[:4]), None), jax.random.key(0))
    x, y = seen[0]
    assert x.shape == y.shape == (4, L) and ((x[:, 0] - train.x[:4, 0]) < L).all()

    def eval_step(state, batch):
        x, y = batch
        logits = jnp.zeros((*x.shape, 5))  # a uniform model: log2(5) bits per char
        return dict(loss=losses.softmax_cross_entropy(logits, y % 5),
                    **char_lm_metrics(logits, y % 5))

    m = make_window_eval_step(eval_step)(None, (jnp.asarray(held.x), None))
    np.testing.assert_allclose(m["bits_per_char"], np.log2(5), rtol=1e-6)
    np.testing.assert_allclose(m["loss"] / LN2, m["bits_per_char"], rtol=1e-6)


def test_gradient_reach_of_a_geometric_decay():
    T = 30
    norms = 0.5 ** (T - 1 - np.arange(T))  # halves every step back from T
    assert gradient_reach(norms, 1e-3) == 10  # 0.5**9 >= 1e-3 > 0.5**10
    assert gradient_reach(np.ones(T)) == T
    assert gradient_reach(np.r_[np.zeros(5), np.ones(3)]) == 3
