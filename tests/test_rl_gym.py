"""Adapters: gymnasium host loop and evaluation, Atari preprocessing, gymnax environments."""

import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dlfun.errors import ConfigError
from dlfun.rl import CartPole, CartPoleState, DQNConfig, MLPQNetwork, make_train
from dlfun.rl.gym_adapter import (evaluate_gymnasium, import_gymnasium, make_vector_env,
                                  run_host_loop, vector_step)


def needs_gymnasium():
    return pytest.importorskip("gymnasium", reason="gymnasium missing (pip install 'dlfun[rl]')")


def test_missing_gymnasium_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "gymnasium", None)  # makes `import gymnasium` fail
    with pytest.raises(ConfigError, match=r"pip install 'dlfun\[rl\]'"):
        import_gymnasium()


def test_vector_step_returns_true_final_observation():
    needs_gymnasium()
    envs = make_vector_env("CartPole-v1", 2)
    obs, _ = envs.reset(seed=0)
    for _ in range(100):
        obs_next, reward, terminated, truncated, next_obs = vector_step(envs, np.ones(2, np.int64))
        done = terminated | truncated
        if done.any():
            i = int(np.flatnonzero(done)[0])
            assert abs(next_obs[i][2]) > 0.2 or abs(next_obs[i][0]) > 2.4  # pole really fell
            assert np.abs(obs_next[i]).max() <= 0.05  # the reset observation for the next act
            break
        np.testing.assert_array_equal(obs_next, next_obs)
    assert done.any() and reward.dtype == np.float32


def linear_controller(params, obs):
    """Q-values whose argmax is a balancing controller (action 1 when obs @ w > 0)."""
    score = obs @ params
    return jnp.stack([-score, score], axis=-1)


def test_evaluate_gymnasium_runs_full_episodes():
    needs_gymnasium()
    w = jnp.asarray([0.05, 0.1, 1.0, 0.5])
    returns = evaluate_gymnasium(linear_controller, w, "CartPole-v1", episodes=3)
    np.testing.assert_array_equal(returns, [500.0, 500.0, 500.0])  # truncated at the limit
    bad = evaluate_gymnasium(linear_controller, -w, "CartPole-v1", episodes=3)
    assert bad.max() < 50


def test_host_loop_trains_with_the_same_agent_code():
    needs_gymnasium()
    cfg = DQNConfig(num_envs=2, buffer_size=256, batch_size=16, learning_starts=32,
                    iterations_per_eval=25, eval_episodes=1)
    envs = make_vector_env("CartPole-v1", 2)
    state, records = run_host_loop(cfg, envs, MLPQNetwork(2, (16,)), jax.random.key(0), 50,
                                   eval_fn=lambda p: 1.0)
    assert [r["env_steps"] for r in records] == [32 + 50, 32 + 100]
    assert int(state.train_state.step) == 50 and int(state.buffer.size) == 132
    assert all(np.isfinite(r["loss"]) for r in records) and records[-1]["eval_return"] == 1.0
    with pytest.raises(ConfigError, match="cfg.num_envs=3"):
        run_host_loop(DQNConfig(num_envs=3), envs, MLPQNetwork(2), jax.random.key(0), 1)


def test_atari_preprocessing_smoke():
    needs_gymnasium()
    pytest.importorskip("ale_py", reason="ale-py not installed (pip install 'dlfun[atari]')")
    pytest.importorskip("cv2", reason="opencv not installed (pip install 'dlfun[atari]')")
    from dlfun.rl.gym_adapter import make_atari_env

    env = make_atari_env("ALE/Pong-v5")
    obs, _ = env.reset(seed=0)
    assert obs.shape == (84, 84, 4) and obs.dtype == np.uint8
    rewards = [env.step(env.action_space.sample())[1] for _ in range(300)]
    assert set(rewards) <= {-1.0, 0.0, 1.0} and min(rewards) == -1.0  # clipped, and Pong scores


def test_gymnax_cartpole_matches_ours_and_trains():
    pytest.importorskip("gymnax", reason="gymnax not installed (optional)")
    from dlfun.rl.gymnax_adapter import from_gymnax

    genv = from_gymnax("CartPole-v1")
    assert (genv.num_actions, genv.obs_shape, genv.max_steps) == (2, (4,), 500)
    obs, gstate = genv.reset(jax.random.key(0))
    ours = CartPoleState(obs, jnp.asarray(0, jnp.int32))
    gstep, step = jax.jit(genv.step), jax.jit(CartPole().step)
    for t in range(8):
        gobs, gstate, _, gterm, gtrunc, _ = gstep(jax.random.key(t), gstate, t % 2)
        obs, ours, _, term, trunc, _ = step(jax.random.key(t), ours, t % 2)
        np.testing.assert_allclose(np.asarray(obs), np.asarray(gobs), rtol=1e-5, atol=1e-6)
        assert (bool(term), bool(trunc)) == (bool(gterm), bool(gtrunc))
    cfg = DQNConfig(num_envs=2, buffer_size=64, batch_size=8, learning_starts=8,
                    iterations_per_eval=4, num_evals=1, eval_episodes=1)
    _, metrics = jax.jit(make_train(cfg, genv, MLPQNetwork(2, (8,))).train)(jax.random.key(0))
    assert np.isfinite(np.asarray(metrics["loss"])).all()


@pytest.mark.slow
def test_atari_dqn_smoke_run():
    """A few thousand Pong frames through ale-py, the Nature Q-network and the host loop."""
    needs_gymnasium()
    pytest.importorskip("ale_py", reason="ale-py not installed (pip install 'dlfun[atari]')")
    pytest.importorskip("cv2", reason="opencv not installed (pip install 'dlfun[atari]')")
    from dlfun.rl import make_atari_env, nature_q_network

    # Few, small updates (the Nature network is slow to train on a CPU); many frames.
    cfg = DQNConfig(num_envs=4, buffer_size=2_000, batch_size=8, learning_starts=1_000,
                    iterations_per_eval=50, target_update_interval=25,
                    epsilon_decay_steps=1_000, learning_rate=1e-4)
    envs = make_vector_env(lambda: make_atari_env("ALE/Pong-v5"), 4)
    state, records = run_host_loop(cfg, envs, nature_q_network(6), jax.random.key(0), 100)
    # 1000 + 400 agent steps = 5600 emulator frames (frame skip 4)
    assert [r["env_steps"] for r in records] == [1200, 1400]
    assert int(state.train_state.step) == 100 and int(state.buffer.size) == 1400
    assert state.buffer.storage.obs.dtype == jnp.uint8  # frames stay compact in the buffer
    assert all(np.isfinite(r["loss"]) for r in records)
