"""Losses against their textbook formulas; optimizer recipes and their errors."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dlfun import losses
from dlfun.errors import ConfigError, ShapeError
from dlfun.optim import make_optimizer, make_schedule

RNG = np.random.default_rng(0)


def test_mse_and_huber():
    a, b = RNG.standard_normal((4, 3)), RNG.standard_normal((4, 3))
    np.testing.assert_allclose(losses.mse(a, b), ((a - b) ** 2).mean(), rtol=1e-6)
    d = np.abs(a - b)
    ref = np.where(d <= 0.5, 0.5 * d ** 2, 0.5 * (d - 0.25)).mean()
    np.testing.assert_allclose(losses.huber(a, b, delta=0.5), ref, rtol=1e-6)


def test_mse_refuses_silent_broadcasting():
    with pytest.raises(ShapeError, match=r"\(8, 1\).*\(8,\).*reshape the targets"):
        losses.mse(jnp.ones((8, 1)), jnp.ones((8,)))


def test_cross_entropy_int_and_one_hot_match_formula():
    logits = RNG.standard_normal((5, 4)).astype(np.float32)
    labels = np.array([0, 3, 1, 1, 2])
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    ref = -logp[np.arange(5), labels].mean()
    np.testing.assert_allclose(losses.softmax_cross_entropy(logits, labels), ref, rtol=1e-5)
    one_hot = np.eye(4, dtype=np.float32)[labels]
    np.testing.assert_allclose(losses.softmax_cross_entropy(logits, one_hot), ref, rtol=1e-5)


def test_cross_entropy_label_shape_error():
    with pytest.raises(ShapeError, match="integer labels of shape"):
        losses.softmax_cross_entropy(jnp.ones((5, 4)), jnp.ones((5, 3)))


def test_binary_cross_entropy_formula():
    z = RNG.standard_normal((6, 1)).astype(np.float32)
    t = np.array([[0], [1], [1], [0], [1], [0]], np.float32)
    p = 1 / (1 + np.exp(-z))
    ref = -(t * np.log(p) + (1 - t) * np.log(1 - p)).mean()
    np.testing.assert_allclose(losses.binary_cross_entropy(z, t), ref, rtol=1e-5)


@pytest.mark.parametrize("name", ["sgd", "momentum", "nesterov", "adam", "adamw", "rmsprop"])
def test_each_optimizer_descends_a_quadratic(name):
    tx = make_optimizer(name, 0.05, weight_decay=1e-4, clip_norm=10.0)
    w = jnp.array([3.0, -2.0])
    state = tx.init(w)
    for _ in range(100):
        g = jax.grad(lambda v: jnp.sum(v ** 2))(w)
        upd, state = tx.update(g, state, w)
        w = optax.apply_updates(w, upd)
    assert float(jnp.sum(w ** 2)) < 0.5 * 13.0


def test_plain_sgd_is_exactly_w_minus_lr_grad():
    tx = make_optimizer("sgd", 0.1)
    w = jnp.array([1.0, 2.0])
    upd, _ = tx.update(jnp.array([0.5, -1.0]), tx.init(w), w)
    np.testing.assert_allclose(optax.apply_updates(w, upd), [0.95, 2.1], rtol=1e-6)


def test_clipping_bounds_the_update():
    tx = make_optimizer("sgd", 1.0, clip_norm=1.0)
    w = jnp.zeros(2)
    upd, _ = tx.update(jnp.array([30.0, 40.0]), tx.init(w), w)
    np.testing.assert_allclose(jnp.linalg.norm(upd), 1.0, rtol=1e-6)


def test_schedules():
    assert float(make_schedule(0.1, "cosine", 100)(100)) == pytest.approx(0.0, abs=1e-7)
    assert float(make_schedule(0.1, "warmup_cosine", 100, 10)(10)) == pytest.approx(0.1)
    step = make_schedule(0.1, "step", 100)
    assert float(step(10)) == pytest.approx(0.1) and float(step(80)) == pytest.approx(1e-3)


@pytest.mark.parametrize("kwargs,match", [
    (dict(name="adagradx"), "unknown optimizer 'adagradx'"),
    (dict(learning_rate=-1.0), "learning rate must be positive"),
    (dict(schedule="cosine"), "needs total_steps"),
    (dict(schedule="linear", total_steps=5), "unknown schedule"),
])
def test_optimizer_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        make_optimizer(**kwargs)


def test_freeze_keeps_frozen_parameters_bitwise_and_trains_the_rest_as_plain_sgd():
    from dlfun.nn import MLP
    from dlfun.optim import freeze
    from dlfun.train import create_train_state, make_train_step

    model = MLP((8,), 3)
    x = jnp.asarray(RNG.standard_normal((16, 4)), jnp.float32)
    y = jnp.asarray(RNG.integers(0, 3, 16))
    tx = freeze(make_optimizer("adam", 0.05, weight_decay=0.1), {"Dense_1"})
    state = create_train_state(model, tx, jax.random.key(0), x[:1])
    before = jax.tree.map(np.array, state.params)
    step = jax.jit(make_train_step(model, losses.softmax_cross_entropy))
    for i in range(5):
        state, _ = step(state, (x, y), jax.random.key(i))
    for name in ("kernel", "bias"):  # frozen: the very same bits
        assert np.asarray(state.params["Dense_0"][name]).tobytes() == \
            before["Dense_0"][name].tobytes()
        assert not np.allclose(state.params["Dense_1"][name], before["Dense_1"][name])
    # the trainable part moves as plain SGD would with the frozen part's gradient dropped
    sgd = freeze(optax.sgd(0.1), lambda path: path[0] == "Dense_1")
    s0 = create_train_state(model, sgd, jax.random.key(0), x[:1])
    s1, _ = step(s0, (x, y), jax.random.key(0))
    grads = jax.grad(lambda p: losses.softmax_cross_entropy(model.apply({"params": p}, x), y))(
        s0.params)
    np.testing.assert_allclose(s1.params["Dense_1"]["kernel"],
                               s0.params["Dense_1"]["kernel"] - 0.1 * grads["Dense_1"]["kernel"],
                               rtol=1e-5, atol=1e-7)
