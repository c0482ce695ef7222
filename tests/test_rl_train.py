"""The compiled DQN loop: seeds differ under vmap, chunked == unchunked, checkpoint resume,
streamed metrics, no recompilation, and (slow) learning on CartPole."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dlfun.rl import CartPole, DQNConfig, MLPQNetwork, evaluate_episodes, greedy_rollout, make_train

SMALL = DQNConfig(num_envs=4, buffer_size=512, batch_size=32, learning_starts=64,
                  iterations_per_eval=20, num_evals=3, eval_episodes=2, target_update_interval=7)


def tree_equal(a, b) -> bool:
    def leaf_equal(x, y):
        if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        return bool(jnp.array_equal(x, y, equal_nan=True))
    return all(jax.tree.leaves(jax.tree.map(leaf_equal, a, b)))


class Small:
    """One small trainer whose jitted functions all tests share (compiling is the slow part)."""

    def __init__(self):
        self.seen = []
        tr = make_train(SMALL, CartPole(), MLPQNetwork(2, (16,)), on_period=self.record)
        self.trainer = tr
        self.init = jax.jit(tr.init)
        self.run = jax.jit(tr.run, static_argnums=1)
        self.vinit = jax.jit(jax.vmap(tr.init))
        self.vrun2 = jax.jit(jax.vmap(lambda c: tr.run(c, 2)))

    def record(self, metrics):
        self.seen.append(jax.tree.map(np.asarray, metrics))


@pytest.fixture(scope="module")
def small():
    return Small()


def test_vmapped_seeds_train_differently_and_stream_metrics(small):
    small.seen.clear()
    keys = jax.vmap(jax.random.key)(jnp.arange(3))
    carry, metrics = small.vrun2(small.vinit(keys, jnp.arange(3)))
    jax.effects_barrier()
    kernels = np.asarray(carry.train_state.params["params"]["Dense_0"]["kernel"])
    assert kernels.shape == (3, 4, 16)
    for i in range(3):
        for j in range(i):
            assert not np.allclose(kernels[i], kernels[j])
    obs = np.asarray(carry.buffer.storage.obs)
    assert not np.array_equal(obs[0], obs[1])  # different experience, not only different init
    assert metrics["loss"].shape == (3, 2)
    assert len({tuple(np.asarray(metrics["loss"][i])) for i in range(3)}) == 3
    # The metrics streamed out of the compiled, vmapped run: one call per seed and period.
    assert len(small.seen) == 3 * 2
    for run_id in range(3):
        streamed = [float(m["loss"]) for m in small.seen if int(m["run_id"]) == run_id]
        np.testing.assert_allclose(streamed, np.asarray(metrics["loss"][run_id]), rtol=1e-6)
    np.testing.assert_array_equal(np.diff(np.asarray(metrics["env_steps"][0])),
                                  SMALL.env_steps_per_period)
    # each vmapped seed equals the same seed trained alone
    _, single = small.run(small.init(jax.random.key(1), 1), 2)
    np.testing.assert_allclose(np.asarray(single["loss"]), np.asarray(metrics["loss"][1]),
                               rtol=2e-5)


def test_two_chunks_equal_one_long_chunk_bitwise(small):
    carry0 = small.init(jax.random.key(3))
    long_carry, long_metrics = small.run(carry0, 4)
    mid, first = small.run(carry0, 2)
    chunked_carry, second = small.run(mid, 2)
    assert tree_equal(long_carry, chunked_carry)
    assert tree_equal(long_metrics, jax.tree.map(lambda a, b: jnp.concatenate([a, b]), first,
                                                 second))


def test_checkpoint_resume_equals_uninterrupted(small, tmp_path):
    ocp = pytest.importorskip("orbax.checkpoint")
    mid, _ = small.run(small.init(jax.random.key(4)), 2)
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(tmp_path / "carry", mid)
    checkpointer.wait_until_finished()
    restored = checkpointer.restore(tmp_path / "carry", mid)
    assert tree_equal(mid, restored)
    assert tree_equal(small.run(mid, 2), small.run(restored, 2))


def test_run_does_not_recompile(small):
    carry, _ = small.run(small.init(jax.random.key(0)), 2)
    before = small.run._cache_size()
    for _ in range(3):
        carry, _ = small.run(carry, 2)
    assert small.run._cache_size() == before


def test_greedy_rollout_and_evaluation_agree(small):
    carry = small.init(jax.random.key(0))
    net_apply, params = carry.train_state.apply_fn, carry.train_state.params
    env = CartPole()
    rollout = jax.jit(lambda k: greedy_rollout(env, net_apply, params, k))(jax.random.key(5))
    assert rollout.obs.shape == (501, 4) and rollout.actions.shape == (500,)
    length = int(rollout.length)
    assert 0 < length <= 500 and float(rollout.episode_return) == length
    assert float(jnp.abs(rollout.rewards[length:]).sum()) == 0.0
    returns = jax.jit(lambda k: evaluate_episodes(env, net_apply, params, k, 6))(
        jax.random.key(6))
    assert returns.shape == (6,) and float(returns.min()) >= 1.0


@pytest.mark.slow
def test_dqn_learns_cartpole():
    # A short run (40k environment steps, one seed): the greedy policy must rise well above
    # a random policy's ~20 per episode.
    cfg = dataclasses.replace(DQNConfig(), num_evals=8, iterations_per_eval=625)
    carry, metrics = jax.jit(make_train(cfg, CartPole(), MLPQNetwork(2)).train)(jax.random.key(0))
    random_returns = evaluate_episodes(CartPole(), carry.train_state.apply_fn,
                                       carry.train_state.params, jax.random.key(1), 100,
                                       epsilon=1.0)
    assert float(random_returns.mean()) < 40
    assert float(metrics["eval_return"].max()) > 150
    assert float(carry.best_eval_return) == float(metrics["eval_return"].max())
