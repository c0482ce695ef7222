"""Synthetic memory tasks: the adding problem and copy memory, against their definitions."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dlfun.data import ADDING_BASELINE_MSE, adding_problem, copy_memory
from dlfun.data.synthetic import copy_memory_baseline
from dlfun.errors import ConfigError


def test_adding_problem_layout_and_target_is_sum_of_marked_values():
    x, y = (np.asarray(a) for a in adding_problem(jax.random.key(0), 64, 11))
    assert x.shape == (64, 11, 2) and y.shape == (64, 1)
    assert x.dtype == np.float32 and y.dtype == np.float32
    values, marks = x[..., 0], x[..., 1]
    assert set(np.unique(marks)) == {0.0, 1.0}
    assert (marks.sum(1) == 2).all()
    assert (marks[:, :5].sum(1) == 1).all() and (marks[:, 5:].sum(1) == 1).all()  # T//2 = 5
    assert ((values >= 0) & (values < 1)).all()
    expected = np.array([values[i][marks[i] == 1].sum() for i in range(64)])
    np.testing.assert_allclose(y[:, 0], expected, rtol=1e-6)


def test_adding_problem_marks_cover_both_halves_and_mean_predictor_gives_one_sixth():
    x, y = (np.asarray(a) for a in adding_problem(jax.random.key(1), 20000, 8))
    first = x[..., 1][:, :4].argmax(1)
    second = x[..., 1][:, 4:].argmax(1) + 4
    assert set(first) == {0, 1, 2, 3} and set(second) == {4, 5, 6, 7}
    # Var(U1 + U2) = 2/12; standard error of the mean of 20000 squares is ~0.0015
    assert abs(np.mean((y - 1.0) ** 2) - ADDING_BASELINE_MSE) < 0.006


def test_adding_problem_is_deterministic_per_key_and_vmaps_over_keys():
    a = adding_problem(jax.random.key(3), 4, 6)
    b = adding_problem(jax.random.key(3), 4, 6)
    c = adding_problem(jax.random.key(4), 4, 6)
    assert all(np.array_equal(u, v) for u, v in zip(a, b))
    assert not np.array_equal(a[0], c[0])
    keys = jax.random.split(jax.random.key(3), 3)
    xs, ys = jax.vmap(lambda k: adding_problem(k, 4, 6))(keys)
    assert xs.shape == (3, 4, 6, 2) and ys.shape == (3, 4, 1)
    np.testing.assert_array_equal(xs[1], adding_problem(keys[1], 4, 6)[0])
    jitted = jax.jit(adding_problem, static_argnums=(1, 2))
    np.testing.assert_array_equal(jitted(jax.random.key(3), 4, 6)[1], a[1])


def test_adding_problem_rejects_too_short_sequences():
    with pytest.raises(ConfigError, match="at least 2"):
        adding_problem(jax.random.key(0), 4, 1)


def test_copy_memory_layout():
    T, L, S = 7, 3, 5
    x, y = (np.asarray(a) for a in copy_memory(jax.random.key(0), 16, T, L, S))
    assert x.shape == y.shape == (16, T + 2 * L) and x.dtype == np.int32
    symbols = x[:, :L]
    assert ((symbols >= 1) & (symbols <= S)).all()
    assert (x[:, L:L + T - 1] == 0).all()
    assert (x[:, L + T - 1] == S + 1).all()  # the delimiter
    assert (x[:, L + T:] == 0).all()
    assert (y[:, :T + L] == 0).all()
    np.testing.assert_array_equal(y[:, T + L:], symbols)
    again = np.asarray(copy_memory(jax.random.key(0), 16, T, L, S)[0])
    np.testing.assert_array_equal(x, again)


def test_copy_memory_baseline_is_cross_entropy_of_the_memoryless_strategy():
    T, L, S = 20, 4, 8
    _, y = copy_memory(jax.random.key(0), 8, T, L, S)
    # blanks for sure while the string is pending, then a uniform guess over the S symbols
    probs = np.zeros((8, T + 2 * L, S + 2))
    probs[:, :T + L, 0] = 1.0
    probs[:, T + L:, 1:S + 1] = 1.0 / S
    nll = -np.log(np.take_along_axis(probs, np.asarray(y)[..., None], -1))
    assert math.isclose(nll.mean(), copy_memory_baseline(T, L, S), rel_tol=1e-9)


def test_copy_memory_rejects_bad_sizes():
    with pytest.raises(ConfigError):
        copy_memory(jax.random.key(0), 2, 0)
    with pytest.raises(ConfigError, match="length"):
        copy_memory(jax.random.key(0), 2, 5, length=0)
    assert jnp.asarray(copy_memory(jax.random.key(0), 2, 1, 1, 1)[0]).shape == (2, 3)
