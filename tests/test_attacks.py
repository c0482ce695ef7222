"""FGSM and PGD against their equations (numpy float64 reference for a linear softmax model),
their budgets and pixel range, that they raise the loss, and adversarial training's step."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from dlfun import losses
from dlfun.attacks import fgsm, pgd, project_linf
from dlfun.nn import MLP
from dlfun.train import create_train_state, make_adversarial_train_step, make_train_step

RNG = np.random.default_rng(0)
D, C, N = 16, 4, 32


def linear_loss(params, x, y):
    return losses.softmax_cross_entropy(x @ params["w"] + params["b"][None], y)


def linear_problem():
    params = {"w": RNG.standard_normal((D, C)).astype(np.float32),
              "b": RNG.standard_normal(C).astype(np.float32)}
    # Grey levels k/16 like the digits: x +- 2/16 is exact in float32, so |delta| == eps exactly.
    x = (RNG.integers(0, 17, (N, D)) / 16).astype(np.float32)
    return params, x, RNG.integers(0, C, N).astype(np.int32)


def mlp_problem(seed):
    model = MLP((32,), C)
    params = model.init(jax.random.key(seed), jnp.zeros((1, D)))["params"]
    loss = lambda p, x, y: losses.softmax_cross_entropy(model.apply({"params": p}, x), y)
    rng = np.random.default_rng(seed)
    return loss, params, rng.random((N, D)).astype(np.float32), rng.integers(0, C, N)


def test_fgsm_matches_the_sign_of_the_numpy_input_gradient():
    params, x, y = linear_problem()
    w, b = (np.float64(params[k]) for k in ("w", "b"))
    z = x @ w + b
    p = np.exp(z - z.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    grad = (p - np.eye(C)[y]) @ w.T / N  # d(mean CE)/dx for logits x W + b
    eps = 0.125
    expected = x + eps * np.sign(grad)
    got = jax.jit(functools.partial(fgsm, linear_loss, pixel_range=None))(params, x, y, eps)
    np.testing.assert_array_equal(np.asarray(got), expected.astype(np.float32))
    # unclipped: every element moved by exactly eps, so the infinity norm is exactly eps
    assert np.all(np.abs(np.asarray(got) - x) == eps)


def test_fgsm_clipped_stays_in_the_pixel_range_and_moves_eps_where_it_can():
    params, x, y = linear_problem()
    eps = 0.125
    free = np.asarray(fgsm(linear_loss, params, x, y, eps, pixel_range=None))
    got = np.asarray(fgsm(linear_loss, params, x, y, eps))
    assert got.min() >= 0.0 and got.max() <= 1.0
    inside = (free >= 0.0) & (free <= 1.0)
    assert inside.mean() > 0.5 and (~inside).any()  # both cases occur
    np.testing.assert_array_equal(got[inside], free[inside])
    np.testing.assert_array_equal(got[~inside], np.clip(free[~inside], 0.0, 1.0))
    assert np.abs(got - x).max() == eps


def test_attacks_raise_the_loss_and_pgd_at_least_as_much_as_fgsm_on_average():
    eps = 0.1
    gains_fgsm, gains_pgd = [], []
    loss = jax.jit(mlp_problem(0)[0])  # the same model (and compiled programs) for every seed
    attack_fgsm = jax.jit(functools.partial(fgsm, loss))
    attack_pgd = jax.jit(functools.partial(pgd, loss, step_size=2.5 * eps / 10, steps=10))
    for seed in range(4):
        _, params, x, y = mlp_problem(seed)
        clean = float(loss(params, x, y))
        x_f = attack_fgsm(params, x, y, eps)
        x_p = attack_pgd(params, x, y, eps, key=jax.random.key(seed))
        assert np.abs(np.asarray(x_p) - x).max() <= eps + 1e-6  # in the ball
        assert 0.0 <= float(x_p.min()) and float(x_p.max()) <= 1.0  # and in the range
        gains_fgsm.append(float(loss(params, x_f, y)) - clean)
        gains_pgd.append(float(loss(params, x_p, y)) - clean)
    assert min(gains_fgsm) > 0 and min(gains_pgd) > 0
    assert np.mean(gains_pgd) >= np.mean(gains_fgsm)


def test_pgd_one_step_from_the_clean_input_is_fgsm():
    loss, params, x, y = mlp_problem(0)
    one = jax.jit(functools.partial(pgd, loss, step_size=0.1, steps=1, key=None))
    np.testing.assert_array_equal(np.asarray(one(params, x, y, 0.1)),
                                  np.asarray(jax.jit(functools.partial(fgsm, loss))(params, x, y, 0.1)))


def test_projection_is_the_nearest_point_of_ball_and_range():
    x = np.array([0.0, 0.5, 0.95, 0.5], np.float32)
    far = np.array([-1.0, 0.9, 2.0, 0.45], np.float32)
    np.testing.assert_allclose(project_linf(far, x, 0.1, (0.0, 1.0)), [0.0, 0.6, 1.0, 0.45])


def test_eps_sweep_under_vmap_equals_separate_calls():
    loss, params, x, y = mlp_problem(1)
    eps = jnp.array([0.0, 0.05, 0.2])
    swept = jax.jit(jax.vmap(lambda e: pgd(loss, params, x, y, e, step_size=e / 4, steps=5,
                                           key=jax.random.key(3))))(eps)
    one_eps = jax.jit(lambda e: pgd(loss, params, x, y, e, step_size=e / 4, steps=5,
                                    key=jax.random.key(3)))
    for i, e in enumerate(eps):
        one = one_eps(e)
        np.testing.assert_allclose(swept[i], one, atol=1e-6)
    np.testing.assert_array_equal(swept[0], x)  # eps 0 changes nothing


def test_adversarial_step_trains_on_the_attacked_batch_and_not_through_the_attack():
    model = MLP((32,), C)
    state = create_train_state(model, optax.sgd(0.1), jax.random.key(0), jnp.zeros((1, D)))
    _, _, x, y = mlp_problem(2)
    attack = lambda loss, p, xb, yb, key: fgsm(loss, p, xb, yb, 0.1)
    adv_step = make_adversarial_train_step(model, losses.softmax_cross_entropy, attack)
    plain_step = make_train_step(model, losses.softmax_cross_entropy)
    new, metrics = jax.jit(adv_step)(state, (x, y), jax.random.key(1))
    loss = lambda p, xb, yb: losses.softmax_cross_entropy(model.apply({"params": p}, xb), yb)
    x_adv = jax.jit(functools.partial(fgsm, loss))(state.params, x, y, 0.1)
    ref, ref_metrics = jax.jit(plain_step)(state, (x_adv, y), jax.random.key(2))  # no dropout: key unused
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
                 new.params, ref.params)
    clean_loss = float(loss(state.params, x, y))
    assert float(metrics["loss"]) == float(ref_metrics["loss"]) > clean_loss
