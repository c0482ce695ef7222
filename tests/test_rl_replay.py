"""Replay buffer: circular writes, wrap-around, uniform sampling from the filled part, vmap."""

import jax
import jax.numpy as jnp
import numpy as np

from dlfun.rl import Transition, replay_add, replay_init, replay_sample


def items(start, n):
    """n items whose fields all carry their serial number."""
    ids = jnp.arange(start, start + n)
    return Transition(obs=jnp.stack([ids, -ids], axis=1).astype(jnp.float32),
                      action=ids.astype(jnp.int32), reward=ids.astype(jnp.float32),
                      next_obs=jnp.stack([ids, ids], axis=1).astype(jnp.uint8),
                      terminated=ids % 2 == 0)


def example():
    return jax.tree.map(lambda x: x[0], items(0, 1))


def test_init_shapes_and_dtypes():
    buf = replay_init(example(), 7)
    assert buf.capacity == 7 and int(buf.size) == 0 and int(buf.position) == 0
    assert buf.storage.obs.shape == (7, 2) and buf.storage.next_obs.dtype == jnp.uint8
    assert buf.storage.terminated.dtype == jnp.bool_


def test_wrap_around_overwrites_oldest():
    buf = replay_init(example(), 5)
    add = jax.jit(replay_add)
    buf = add(buf, items(0, 3))
    assert (int(buf.position), int(buf.size)) == (3, 3)
    buf = add(buf, items(3, 3))  # 3, 4 fill the end, 5 wraps to slot 0
    assert (int(buf.position), int(buf.size)) == (1, 5)
    np.testing.assert_array_equal(np.asarray(buf.storage.action), [5, 1, 2, 3, 4])
    buf = add(buf, items(6, 4))
    np.testing.assert_array_equal(np.asarray(buf.storage.action), [5, 6, 7, 8, 9])
    assert (int(buf.position), int(buf.size)) == (0, 5)
    # every field of a slot belongs to the same item
    np.testing.assert_array_equal(np.asarray(buf.storage.obs[:, 1]), -np.arange(5, 10))
    np.testing.assert_array_equal(np.asarray(buf.storage.terminated), np.arange(5, 10) % 2 == 0)


def test_sampling_is_uniform_over_filled_part():
    buf = replay_add(replay_init(example(), 100), items(0, 10))
    batch = jax.jit(replay_sample, static_argnums=2)(buf, jax.random.key(0), 20_000)
    counts = np.bincount(np.asarray(batch.action), minlength=100)
    assert counts[10:].sum() == 0  # never the empty slots
    # 2000 expected per item; 5 standard deviations is about 4.7%
    assert np.abs(counts[:10] - 2000).max() < 0.05 * 2000
    chi2 = ((counts[:10] - 2000) ** 2 / 2000).sum()
    assert chi2 < 30  # 9 degrees of freedom: p < 0.001 above 27.9
    np.testing.assert_array_equal(np.asarray(batch.reward), np.asarray(batch.action))


def test_sampling_depends_on_key_only():
    buf = replay_add(replay_init(example(), 50), items(0, 50))
    a = replay_sample(buf, jax.random.key(1), 32).action
    b = replay_sample(buf, jax.random.key(1), 32).action
    c = replay_sample(buf, jax.random.key(2), 32).action
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(a), np.asarray(c))


def test_vmapped_buffers_are_independent():
    bufs = jax.vmap(lambda _: replay_init(example(), 4))(jnp.arange(3))
    batches = jax.tree.map(lambda x: jnp.stack([x, x + 10, x + 20]), items(0, 2))
    bufs = jax.vmap(replay_add)(bufs, batches)
    np.testing.assert_array_equal(np.asarray(bufs.storage.action[:, :2]),
                                  [[0, 1], [10, 11], [20, 21]])
    assert np.asarray(bufs.size).tolist() == [2, 2, 2]
