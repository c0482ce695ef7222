"""Continual-learning pieces: the EWC penalty and Fisher diagonal against float64 formulas and
per-example gradients, a penalty inside the training step, and task subsets of a dataset."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dlfun.data import Split, Splits, class_task, concat_splits, few_labels
from dlfun.data.tasks import check_per_class
from dlfun.errors import ConfigError, ShapeError
from dlfun.nn import MLP
from dlfun.runs.training import replace_params
from dlfun.train import (create_train_state, ewc_penalty, fisher_diagonal, make_ewc_penalty,
                         make_train_step)

RNG = np.random.default_rng(0)


def _tree(*shapes):
    return {f"w{i}": RNG.standard_normal(s).astype(np.float32) for i, s in enumerate(shapes)}


def test_ewc_penalty_is_zero_at_the_anchor_and_its_gradient_is_lambda_f_times_offset():
    anchor, offset = _tree((3, 4), (4,)), _tree((3, 4), (4,))
    fisher = {k: np.abs(v) for k, v in _tree((3, 4), (4,)).items()}
    params = {k: anchor[k] + offset[k] for k in anchor}
    lam = 7.5
    penalty = jax.jit(ewc_penalty)
    assert float(penalty(anchor, anchor, fisher, lam)) == 0.0
    ref = 0.5 * lam * sum((fisher[k].astype(np.float64) * offset[k].astype(np.float64) ** 2).sum()
                          for k in anchor)
    np.testing.assert_allclose(float(penalty(params, anchor, fisher, lam)), ref, rtol=1e-5)
    grads = jax.jit(jax.grad(make_ewc_penalty(anchor, fisher, lam)))(params)
    for k in anchor:
        np.testing.assert_allclose(grads[k], lam * fisher[k] * (params[k] - anchor[k]),
                                   rtol=1e-5, atol=1e-6)
    zero = jax.jit(jax.grad(ewc_penalty))(anchor, anchor, fisher, lam)
    assert all(not np.any(np.asarray(g)) for g in jax.tree.leaves(zero))


def _softmax64(z):
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def test_fisher_diagonal_of_a_linear_softmax_matches_the_float64_formula():
    """log p(y|x) of logits x W + b has gradient x (e_y - p)^T for W and e_y - p for b."""
    n, d, c = 11, 3, 4
    x = RNG.standard_normal((n, d))
    y = RNG.integers(0, c, n)
    params = {"W": RNG.standard_normal((d, c)), "b": RNG.standard_normal(c)}
    p = _softmax64(x @ params["W"] + params["b"])  # (N, C)
    eye = np.eye(c)

    def score_sq(e):  # e: (N, C) one-hot rows -> squared gradients, averaged over N
        r = e - p
        return {"W": (x[:, :, None] * r[:, None, :]) ** 2, "b": r ** 2}

    empirical = {k: v.mean(0) for k, v in score_sq(eye[y]).items()}
    expected = {"W": np.zeros((d, c)), "b": np.zeros(c)}
    for j in range(c):
        sq = score_sq(eye[np.full(n, j)])
        expected["W"] += (p[:, j, None, None] * sq["W"]).mean(0)
        expected["b"] += (p[:, j, None] * sq["b"]).mean(0)

    def logits(prm, xb):
        return xb @ prm["W"] + prm["b"][None]

    p32 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), params)
    x32 = x.astype(np.float32)
    got_emp = fisher_diagonal(logits, p32, x32, y, batch_size=4)  # 3 batches, the last padded
    got_exp = fisher_diagonal(logits, p32, x32, batch_size=16)
    for k in ("W", "b"):
        np.testing.assert_allclose(got_emp[k], empirical[k], rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(got_exp[k], expected[k], rtol=1e-4, atol=1e-6)
    # the Fisher is the expected squared score, not the square of the mean score
    mean_sq = {"b": ((eye[y] - p).mean(0)) ** 2}
    assert not np.allclose(got_emp["b"], mean_sq["b"], rtol=0.1)


def test_fisher_diagonal_of_an_mlp_matches_a_loop_over_examples():
    """Each example's own gradient (grad of one log-probability at a time), squared and
    averaged: empirical and expected (every class weighted by the model's probability)."""
    model = MLP((5,), 3, activation="tanh")
    x = RNG.standard_normal((6, 4)).astype(np.float32)
    y = np.array([0, 2, 1, 1, 0, 2])
    params = jax.jit(model.init)(jax.random.key(0), x[:1])["params"]

    def logits(p, xb):
        return model.apply({"params": p}, xb)

    # one example at a time: the gradient of its own log-probability (compiled once)
    one = jax.jit(jax.grad(lambda p, xi, c: jax.nn.log_softmax(logits(p, xi[None])[0])[c]))

    def score(i, label):
        return one(params, x[i], label)

    probs = np.asarray(jax.jit(lambda p: jax.nn.softmax(logits(p, x)))(params))
    empirical = jax.tree.map(lambda *g: np.mean(np.square(g), axis=0),
                             *[score(i, y[i]) for i in range(len(x))])
    per_class = [[score(i, c) for c in range(3)] for i in range(len(x))]
    expected = jax.tree.map(
        lambda *g: np.mean([sum(probs[i, c] * np.square(g[3 * i + c]) for c in range(3))
                            for i in range(len(x))], axis=0),
        *[g for row in per_class for g in row])
    got_emp = fisher_diagonal(logits, params, x, y, batch_size=4)
    got_exp = fisher_diagonal(logits, params, x, batch_size=4)
    for a, b in zip(jax.tree.leaves(got_emp), jax.tree.leaves(empirical)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)
    for a, b in zip(jax.tree.leaves(got_exp), jax.tree.leaves(expected)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)


def test_fisher_diagonal_bad_input_is_one_line():
    params = {"W": jnp.ones((2, 3))}
    fn = lambda p, xb: xb @ p["W"]  # noqa: E731
    with pytest.raises(ShapeError, match=r"labels must have shape \(4,\)"):
        fisher_diagonal(fn, params, np.ones((4, 2), np.float32), np.zeros(3, np.int32))
    with pytest.raises(ShapeError, match="at least one example"):
        fisher_diagonal(fn, params, np.ones((0, 2), np.float32))
    with pytest.raises(ConfigError, match="strength must be >= 0"):
        make_ewc_penalty(params, params, -1.0)


def test_train_step_adds_the_penalty_gradient_to_the_update():
    """With plain SGD at rate eta, the EWC penalty moves every parameter by an extra
    -eta * lambda * F * (theta - theta*) and is reported as its own metric."""
    model = MLP((4,), 3)
    x = RNG.standard_normal((8, 5)).astype(np.float32)
    y = RNG.integers(0, 3, 8).astype(np.int32)
    state = jax.jit(lambda k: create_train_state(model, optax.sgd(0.1), k, x[:1]))(
        jax.random.key(1))
    anchor = jax.tree.map(lambda p: np.asarray(p) + np.float32(0.3), state.params)
    fisher = jax.tree.map(lambda p: np.full(p.shape, 2.0, np.float32), state.params)
    loss = lambda out, t: optax.softmax_cross_entropy_with_integer_labels(out, t).mean()  # noqa
    plain = make_train_step(model, loss)
    ewc = make_train_step(model, loss, penalty_fn=make_ewc_penalty(anchor, fisher, 5.0))
    key = jax.random.key(2)
    s_plain, m_plain = jax.jit(plain)(state, (x, y), key)
    s_ewc, m_ewc = jax.jit(ewc)(state, (x, y), key)
    assert float(m_ewc["loss"]) == float(m_plain["loss"])  # the data loss alone
    np.testing.assert_allclose(m_ewc["penalty"], 0.5 * 5.0 * 2.0 * 0.09 * sum(
        p.size for p in jax.tree.leaves(state.params)), rtol=1e-5)
    for a, b in zip(jax.tree.leaves(s_ewc.params), jax.tree.leaves(s_plain.params)):
        np.testing.assert_allclose(np.asarray(a) - np.asarray(b), 0.1 * 5.0 * 2.0 * 0.3,
                                   rtol=1e-4)


def test_replace_params_checks_names_and_shapes():
    fresh = {"encoder": {"k": np.zeros((2, 3))}, "head": {"k": np.zeros(3)}}
    out = replace_params(fresh, {"encoder": {"k": np.ones((2, 3))}})
    assert float(out["encoder"]["k"].sum()) == 6.0 and out["head"] is fresh["head"]
    with pytest.raises(ShapeError, match="decoder, which the model does not have"):
        replace_params(fresh, {"decoder": {"k": np.ones(3)}})
    with pytest.raises(ShapeError, match="'encoder' have shapes"):
        replace_params(fresh, {"encoder": {"k": np.ones((3, 2))}})


def _splits(y):
    s = Split(np.arange(len(y))[:, None].astype(np.float32), np.asarray(y, np.int32))
    return Splits(s, s, s)


def test_class_task_keeps_the_classes_and_renumbers_them():
    splits = _splits([5, 0, 7, 3, 9, 5, 1])
    b = class_task(splits, (5, 6, 7, 8, 9))
    np.testing.assert_array_equal(b.train.x[:, 0], [0, 2, 4, 5])
    np.testing.assert_array_equal(b.train.y, [0, 2, 4, 0])
    kept = class_task(splits, (5, 6, 7, 8, 9), renumber=False)
    np.testing.assert_array_equal(kept.test.y, [5, 7, 9, 5])
    with pytest.raises(ConfigError, match="distinct classes"):
        class_task(splits, (1, 1))


def test_few_labels_takes_the_first_examples_of_each_class():
    train = Split(np.arange(10)[:, None], np.array([0, 1, 0, 1, 0, 1, 2, 2, 2, 0]))
    np.testing.assert_array_equal(few_labels(train, 2).x[:, 0], [0, 1, 2, 3, 6, 7])
    assert few_labels(train, 0) is train
    check_per_class(train, 3, "--n", "the split")  # class 1 has exactly 3
    with pytest.raises(ConfigError, match=r"--n 4 is more than the smallest class of the split "
                                          r"holds \(3\); use at most 3"):
        check_per_class(train, 4, "--n", "the split")


def test_concat_splits_joins_in_order_and_refuses_other_shapes():
    a, b = Split(np.zeros((2, 3)), np.zeros(2)), Split(np.ones((1, 3)), np.ones(1))
    joined = concat_splits(a, b)
    np.testing.assert_array_equal(joined.y, [0, 0, 1])
    with pytest.raises(ConfigError, match="differ in shape"):
        concat_splits(a, Split(np.ones((1, 4)), np.ones(1)))
