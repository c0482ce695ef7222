"""DQN pieces: TD targets (truncation vs termination, double DQN), loss, target updates,
exploration, Q-networks."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dlfun.errors import ConfigError
from dlfun.rl import (CartPole, ConvQNetwork, DQNConfig, MLPQNetwork, Transition, create_learner,
                      dqn_loss, dqn_update, epsilon_greedy, linear_epsilon, make_train,
                      minatar_q_network, nature_q_network, q_targets, update_target)


def test_q_targets_stop_only_at_termination():
    next_q = jnp.asarray([[1.0, 3.0], [2.0, -1.0], [0.5, 0.25]])
    reward = jnp.asarray([1.0, 1.0, 0.0])
    terminated = jnp.asarray([False, True, False])
    got = q_targets(next_q, reward, terminated, gamma=0.9)
    np.testing.assert_allclose(np.asarray(got), [1.0 + 0.9 * 3.0, 1.0, 0.9 * 0.5], rtol=1e-6)


def test_double_dqn_target_uses_online_argmax_and_target_value():
    next_q_target = jnp.asarray([[1.0, 3.0, 2.0], [5.0, 4.0, 0.0]])
    next_q_online = jnp.asarray([[9.0, 0.0, 1.0], [0.0, 0.0, 7.0]])  # picks actions 0 and 2
    got = q_targets(next_q_target, jnp.zeros(2), jnp.zeros(2, bool), 0.5, next_q_online)
    np.testing.assert_allclose(np.asarray(got), [0.5 * 1.0, 0.5 * 0.0])
    plain = q_targets(next_q_target, jnp.zeros(2), jnp.zeros(2, bool), 0.5)
    np.testing.assert_allclose(np.asarray(plain), [0.5 * 3.0, 0.5 * 5.0])


def test_loop_stores_truncated_steps_as_bootstrapping_with_true_final_obs():
    # CartPole cut at 3 steps: every 3rd transition of an env is a truncation. It must be
    # stored with terminated=False (so the target bootstraps) and next_obs = the state the
    # step reached, not the observation after the automatic reset.
    env = CartPole(max_steps=3)
    cfg = DQNConfig(num_envs=2, learning_starts=12, buffer_size=64, batch_size=4, num_evals=1,
                    iterations_per_eval=1, eval_episodes=1)
    carry = jax.jit(make_train(cfg, env, MLPQNetwork(2)).init)(jax.random.key(0))
    st = jax.tree.map(np.asarray, carry.buffer.storage)
    obs, nxt = st.obs[:12].reshape(6, 2, 4), st.next_obs[:12].reshape(6, 2, 4)  # (iter, env, 4)
    assert not st.terminated[:12].any()  # no pole fell in 3 steps
    for t in range(5):
        if t % 3 == 2:  # truncation: the next iteration starts from a reset state instead
            assert np.abs(obs[t + 1]).max() < 0.05 and not np.allclose(nxt[t], obs[t + 1])
            stepped = jax.jit(jax.vmap(env._euler))(jnp.asarray(obs[t]),
                                                    jnp.asarray(st.action[2 * t:2 * t + 2]))
            np.testing.assert_allclose(nxt[t], np.asarray(stepped), rtol=1e-6, atol=1e-7)
        else:
            np.testing.assert_array_equal(nxt[t], obs[t + 1])


def numpy_mlp(params, x):
    layers = [params["params"][f"Dense_{i}"] for i in range(len(params["params"]))]
    for i, layer in enumerate(layers):
        x = x @ np.asarray(layer["kernel"]) + np.asarray(layer["bias"])
        x = np.maximum(x, 0) if i < len(layers) - 1 else x
    return x


@pytest.mark.parametrize("double", [False, True])
def test_dqn_loss_matches_numpy_huber(double):
    cfg = DQNConfig(double_dqn=double, gamma=0.9, huber_delta=1.0)
    net = MLPQNetwork(2, (8,))
    rng = np.random.default_rng(0)
    params = net.init(jax.random.key(0), jnp.zeros((1, 4)))
    target = net.init(jax.random.key(1), jnp.zeros((1, 4)))
    batch = Transition(obs=rng.normal(size=(16, 4)).astype(np.float32) * 3,
                       action=rng.integers(0, 2, 16).astype(np.int32),
                       reward=rng.normal(size=16).astype(np.float32) * 5,
                       next_obs=rng.normal(size=(16, 4)).astype(np.float32) * 3,
                       terminated=rng.random(16) < 0.3)
    loss, aux = dqn_loss(params, target, net.apply, jax.tree.map(jnp.asarray, batch), cfg)
    q = numpy_mlp(params, batch.obs)[np.arange(16), batch.action]
    next_t, next_o = numpy_mlp(target, batch.next_obs), numpy_mlp(params, batch.next_obs)
    chosen = (next_o if double else next_t).argmax(1)
    y = batch.reward + 0.9 * (1 - batch.terminated) * next_t[np.arange(16), chosen]
    err = np.abs(q - y)
    huber = np.where(err <= 1.0, 0.5 * err ** 2, err - 0.5)
    assert err.max() > 1.0 and err.min() < 1.0  # both branches of the Huber loss are used
    np.testing.assert_allclose(float(loss), huber.mean(), rtol=1e-5)
    np.testing.assert_allclose(float(aux["q"]), q.mean(), rtol=1e-5, atol=1e-6)


def test_target_network_hard_copy_every_interval():
    cfg = DQNConfig(target_update_interval=3, target_tau=1.0)
    target, online = {"w": jnp.zeros(2)}, {"w": jnp.ones(2)}
    for count, expected in [(1, 0.0), (2, 0.0), (3, 1.0), (6, 1.0)]:
        got = update_target(target, online, jnp.asarray(count), cfg)
        np.testing.assert_array_equal(np.asarray(got["w"]), expected)


def test_target_network_polyak():
    cfg = DQNConfig(target_update_interval=1, target_tau=0.25)
    got = update_target({"w": jnp.asarray([4.0])}, {"w": jnp.asarray([8.0])}, jnp.asarray(5), cfg)
    np.testing.assert_allclose(np.asarray(got["w"]), [5.0])


def test_dqn_update_changes_params_and_counts_steps():
    cfg = DQNConfig(target_update_interval=2)
    net = MLPQNetwork(2, (8,))
    state, target = create_learner(net, cfg, jax.random.key(0), jnp.zeros((1, 4)))
    batch = Transition(jnp.ones((4, 4)), jnp.zeros(4, jnp.int32), jnp.ones(4), jnp.ones((4, 4)),
                       jnp.zeros(4, bool))
    # a strongly typed int32 counter, as a checkpoint restores it (no second compile on resume)
    assert state.step.dtype == jnp.int32 and not state.step.weak_type
    update = jax.jit(lambda s, t: dqn_update(s, t, batch, cfg))
    state1, target1, metrics = update(state, target)
    assert int(state1.step) == 1 and np.isfinite(float(metrics["loss"]))
    assert jax.tree.all(jax.tree.map(lambda a, b: bool((a == b).all()), target1, target))
    state2, target2, _ = update(state1, target1)  # 2nd update: the target copies the online net
    assert jax.tree.all(jax.tree.map(lambda a, b: bool((a == b).all()), target2, state2.params))


def test_gradient_clipping_bounds_the_step():
    cfg = DQNConfig(max_grad_norm=1e-3, learning_rate=1.0)
    net = MLPQNetwork(2, (8,))
    state, target = create_learner(net, cfg, jax.random.key(0), jnp.zeros((1, 4)))
    batch = Transition(jnp.ones((4, 4)), jnp.zeros(4, jnp.int32), jnp.full(4, 1e6),
                       jnp.ones((4, 4)), jnp.zeros(4, bool))
    grads = jax.jit(jax.grad(lambda p: dqn_loss(p, target, net.apply, batch, cfg)[0]))(
        state.params)
    assert float(optax.tree.norm(grads)) > 1.0
    clipped, _ = optax.clip_by_global_norm(cfg.max_grad_norm).update(grads, None)
    np.testing.assert_allclose(float(optax.tree.norm(clipped)), 1e-3, rtol=1e-4)


def test_linear_epsilon_schedule():
    got = [float(linear_epsilon(jnp.asarray(s), 1.0, 0.1, 100)) for s in (0, 50, 100, 1000)]
    np.testing.assert_allclose(got, [1.0, 0.55, 0.1, 0.1], rtol=1e-6)


def test_epsilon_greedy_frequencies():
    q = jnp.tile(jnp.asarray([[0.0, 1.0, 0.0, 0.0]]), (20_000, 1))
    for eps in (0.0, 0.3, 1.0):
        actions = np.asarray(epsilon_greedy(jax.random.key(0), q, jnp.asarray(eps)))
        freq = np.bincount(actions, minlength=4) / actions.size
        expected = np.full(4, eps / 4) + np.asarray([0, 1 - eps, 0, 0])
        np.testing.assert_allclose(freq, expected, atol=0.015)


def test_config_errors_name_the_fix():
    with pytest.raises(ConfigError, match="target_tau=0.0 must be in"):
        DQNConfig(target_tau=0.0)
    with pytest.raises(ConfigError, match="num_envs=0 must be >= 1"):
        DQNConfig(num_envs=0)
    cfg = DQNConfig(num_envs=8, learning_starts=1001, iterations_per_eval=10, num_evals=3)
    assert cfg.prefill_iterations == 126 and cfg.total_env_steps == (126 + 30) * 8
    assert dataclasses.replace(cfg, num_envs=4).env_steps_per_period == 40


def count_params(params):
    return sum(x.size for x in jax.tree.leaves(params))


def test_q_network_shapes_and_parameter_counts():
    # Shapes only, so traced abstractly (jax.eval_shape): initialising the 1.7M-parameter
    # Nature network eagerly compiles every initializer, several seconds for no check.
    def shapes(net, x_shape, dtype=jnp.float32, batch=5):
        p = jax.eval_shape(net.init, jax.random.key(0), jax.ShapeDtypeStruct(x_shape, dtype))
        out = jax.eval_shape(net.apply, p, jax.ShapeDtypeStruct((batch, *x_shape[1:]), dtype))
        return count_params(p), out.shape

    assert shapes(MLPQNetwork(2), (1, 4)) == (
        (4 * 120 + 120) + (120 * 84 + 84) + (84 * 2 + 2), (5, 2))
    # 84 -> 20 -> 9 -> 7 spatial; 7 * 7 * 64 = 3136 features into the 512-unit layer
    expected = (8 * 8 * 4 * 32 + 32) + (4 * 4 * 32 * 64 + 64) + (3 * 3 * 64 * 64 + 64) + (
        3136 * 512 + 512) + (512 * 6 + 6)
    assert expected == 1_687_206
    assert shapes(nature_q_network(6), (1, 84, 84, 4), jnp.uint8, 2) == (expected, (2, 6))
    assert shapes(minatar_q_network(3), (1, 10, 10, 4), jnp.uint8, 2) == (
        (3 * 3 * 4 * 16 + 16) + (8 * 8 * 16 * 128 + 128) + (128 * 3 + 3), (2, 3))
    # and the small network's numbers, computed for real
    p = MLPQNetwork(2).init(jax.random.key(0), jnp.zeros((1, 4)))
    q = MLPQNetwork(2).apply(p, jnp.ones((5, 4)))
    assert q.shape == (5, 2) and bool(jnp.all(jnp.isfinite(q)))


def test_conv_q_network_matches_torch():
    torch = pytest.importorskip("torch", reason="torch not installed (pip install 'dlfun[bench]')")
    net = ConvQNetwork(5, convs=((8, 4, 2), (6, 3, 1)), dense=32, input_scale=0.5)
    x = np.random.default_rng(0).integers(0, 3, size=(3, 16, 16, 2)).astype(np.uint8)
    params = jax.jit(net.init)(jax.random.key(0), jnp.asarray(x))["params"]  # eager: seconds
    ref = torch.nn.Sequential(
        torch.nn.Conv2d(2, 8, 4, 2), torch.nn.ReLU(), torch.nn.Conv2d(8, 6, 3, 1),
        torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(5 * 5 * 6, 32), torch.nn.ReLU(),
        torch.nn.Linear(32, 5))
    with torch.no_grad():
        for i, name in [(0, "Conv_0"), (2, "Conv_1")]:  # HWIO -> OIHW
            kernel = np.asarray(params[name]["kernel"]).transpose(3, 2, 0, 1)
            ref[i].weight.copy_(torch.tensor(kernel))
            ref[i].bias.copy_(torch.tensor(np.asarray(params[name]["bias"])))
        # Flax flattens (h, w, c); torch flattens (c, h, w): permute the dense rows to match.
        k = np.asarray(params["Dense_0"]["kernel"]).reshape(5, 5, 6, 32).transpose(2, 0, 1, 3)
        ref[5].weight.copy_(torch.tensor(k.reshape(150, 32).T))
        ref[5].bias.copy_(torch.tensor(np.asarray(params["Dense_0"]["bias"])))
        ref[7].weight.copy_(torch.tensor(np.asarray(params["Dense_1"]["kernel"]).T))
        ref[7].bias.copy_(torch.tensor(np.asarray(params["Dense_1"]["bias"])))
        expected = ref(torch.tensor(x.transpose(0, 3, 1, 2), dtype=torch.float32) * 0.5).numpy()
    got = jax.jit(net.apply)({"params": params}, jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-4, atol=1e-5)
