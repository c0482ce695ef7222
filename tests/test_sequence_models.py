"""Sequence models, the hidden-state gradient tool and the compiled sampler."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dlfun import losses
from dlfun.errors import ConfigError, ShapeError
from dlfun.nn import (CharLM, LSTMCell, LSTMState, RNNCell, SequenceToOne,
                      gradient_norms_over_time, hidden_state_gradients, lstm_bias_init,
                      sample_language_model, sample_tokens, sequence_hidden_gradients)
from dlfun.nn.hidden_gradients import add_to_hidden, cell_step
from dlfun.nn.sampling import pick_token
from dlfun.nn.sequence_models import make_cell


# ----------------------------------------------------------------------- models
@pytest.mark.parametrize("cell,gates", [("rnn", 1), ("lstm", 4), ("gru", 3)])
def test_sequence_to_one_shapes_and_parameter_count(cell, gates):
    I, H, out = 3, 5, 2
    model = SequenceToOne(cell, H, out)
    x = jnp.ones((4, 7, I))
    params = model.init(jax.random.key(0), x)["params"]
    assert model.apply({"params": params}, x).shape == (4, out)
    n = sum(a.size for a in jax.tree.leaves(params))
    assert n == gates * H * (I + H) + gates * H + H * out + out
    with pytest.raises(ShapeError, match="batch, time, features"):
        model.apply({"params": params}, x[0])


def test_lstm_forget_bias_init_sets_only_the_forget_gate():
    b = lstm_bias_init(1.5)(jax.random.key(0), (12,))
    np.testing.assert_array_equal(b, [0] * 3 + [1.5] * 3 + [0] * 6)
    params = SequenceToOne("lstm", 3, 1, forget_bias=1.0).init(
        jax.random.key(0), jnp.ones((1, 2, 2)))["params"]
    np.testing.assert_array_equal(params["rnn"]["layers_0"]["cell"]["b"][3:6], 1.0)


def test_char_lm_logits_and_carry_continues_the_text():
    model = CharLM(11, "gru", 8, num_layers=2, embed_dim=4)
    tokens = jax.random.randint(jax.random.key(1), (3, 10), 0, 11)
    variables = jax.jit(model.init)(jax.random.key(0), tokens)  # jitted: eager costs seconds
    full = jax.jit(model.apply)(variables, tokens)
    assert full.shape == (3, 10, 11)
    chunk = jax.jit(lambda t, c: model.apply(variables, t, c, method="with_carry"))
    carry, first = chunk(tokens[:, :6], None)
    _, rest = chunk(tokens[:, 6:], carry)
    np.testing.assert_allclose(jnp.concatenate([first, rest], 1), full, rtol=1e-5, atol=1e-6)
    with pytest.raises(ShapeError, match="batch, time"):
        model.apply(variables, tokens[0])


# ------------------------------------------------------------ hidden-state gradients
@pytest.mark.parametrize("a", [0.8, 1.25])
def test_hidden_gradients_of_a_linear_recurrence_are_powers_of_its_weight(a):
    """h_t = a h_{t-1} + x_t and L = w . h_T give dL/dh_t = w a^(T-1-t) exactly."""
    T, N, H = 12, 2, 3
    xs = jax.random.normal(jax.random.key(0), (T, N, H))
    w = jnp.array([1.0, -2.0, 0.5])
    loss, grads = hidden_state_gradients(lambda h, x: a * h + x, jnp.zeros((N, H)), xs,
                                         lambda h: jnp.sum(h @ w))
    expected = w[None, None, :] * (a ** (T - 1 - np.arange(T)))[:, None, None]
    np.testing.assert_allclose(grads, np.broadcast_to(expected, (T, N, H)), rtol=1e-5)
    norms = gradient_norms_over_time(grads)
    np.testing.assert_allclose(norms, np.linalg.norm(w) * a ** (T - 1 - np.arange(T)),
                               rtol=1e-5)
    h = np.zeros((N, H))
    for t in range(T):
        h = a * h + np.asarray(xs[t])
    np.testing.assert_allclose(loss, np.sum(h @ np.asarray(w)), rtol=1e-5)


def test_hidden_gradients_with_an_orthogonal_matrix_scale_as_its_gain():
    T, H, gain = 9, 4, 0.7
    q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(H, H)))
    A = jnp.asarray(gain * q, jnp.float32)
    _, grads = hidden_state_gradients(lambda h, x: h @ A + x, jnp.zeros((1, H)),
                                      jnp.ones((T, 1, H)), lambda h: jnp.sum(h[:, 0]))
    np.testing.assert_allclose(gradient_norms_over_time(grads), gain ** (T - 1 - np.arange(T)),
                               rtol=1e-4)


def _reference_gradient(cell, w, xs, loss_of_carry, t):
    """dL/dh_t by splitting the sequence at t and differentiating the tail in a Python loop."""
    step = cell_step(cell, w)
    carry = cell.initialize_carry((xs.shape[1],))
    for s in range(t + 1):
        carry = step(carry, xs[s])

    def tail(h):
        c = carry._replace(h=h) if isinstance(carry, LSTMState) else h
        for s in range(t + 1, xs.shape[0]):
            c = step(c, xs[s])
        return loss_of_carry(c)

    return jax.grad(tail)(carry.h if isinstance(carry, LSTMState) else carry)


@pytest.mark.parametrize("name", ["rnn", "lstm", "gru"])
def test_hidden_gradients_of_cells_match_splitting_the_sequence(name):
    T, N, I, H = 8, 3, 2, 4
    cell = make_cell(name, H)
    xs = jax.random.normal(jax.random.key(1), (T, N, I))
    w = cell.init(jax.random.key(0), cell.initialize_carry((N,)), xs[0])["params"]

    def loss_of_carry(carry):
        h = carry.h if isinstance(carry, LSTMState) else carry
        return jnp.sum(jnp.sin(h) * jnp.arange(1.0, H + 1)[None, :])

    _, grads = hidden_state_gradients(cell_step(cell, w), cell.initialize_carry((N,)), xs,
                                      loss_of_carry)
    for t in (0, 3, T - 1):
        np.testing.assert_allclose(grads[t], _reference_gradient(cell, w, xs, loss_of_carry, t),
                                   rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", ["rnn", "lstm", "gru"])
def test_sequence_hidden_gradients_loss_equals_the_models_loss(name):
    model = SequenceToOne(name, 6, 1)
    x = jax.random.uniform(jax.random.key(2), (5, 9, 2))
    y = jnp.ones((5, 1))
    params = model.init(jax.random.key(0), x)["params"]
    loss, grads = sequence_hidden_gradients(model, params, x, y, losses.mse)
    assert grads.shape == (9, 5, 6)
    np.testing.assert_allclose(loss, losses.mse(model.apply({"params": params}, x), y),
                               rtol=1e-5)
    # the last hidden state's gradient is the readout's: 2/N (out - y) * kernel^T per example
    out = model.apply({"params": params}, x)
    expected = 2.0 / 5 * (out - y) * params["head"]["kernel"][:, 0][None, :]
    np.testing.assert_allclose(grads[-1], expected, rtol=1e-5, atol=1e-7)
    with pytest.raises(ConfigError, match="one recurrent layer"):
        two = SequenceToOne(name, 6, 1, num_layers=2)
        sequence_hidden_gradients(two, two.init(jax.random.key(0), x)["params"], x, y,
                                  losses.mse)


def test_add_to_hidden_leaves_the_lstm_cell_state_alone():
    carry = LSTMState(jnp.ones((2, 3)), jnp.full((2, 3), 5.0))
    out = add_to_hidden(carry, jnp.full((2, 3), 0.5))
    np.testing.assert_array_equal(out.h, 1.5)
    np.testing.assert_array_equal(out.c, 5.0)
    assert isinstance(make_cell("lstm", 3), LSTMCell) and isinstance(make_cell("rnn", 3), RNNCell)


# ------------------------------------------------------------------------ sampling
def test_pick_token_temperature_zero_and_tiny_are_the_argmax():
    logits = jax.random.normal(jax.random.key(0), (64, 13))
    greedy = np.argmax(np.asarray(logits), -1)
    for t in (0.0, 1e-4):
        np.testing.assert_array_equal(pick_token(jax.random.key(1), logits, t), greedy)


@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_sampled_frequencies_follow_softmax_of_logits_over_temperature(temperature):
    logits = jnp.array([1.0, 0.0, -1.0, 0.5])

    def step(carry, token):  # a memoryless "model": the same logits every step
        return carry, jnp.broadcast_to(logits, (token.shape[0], 4))

    tokens = sample_tokens(step, (), jnp.broadcast_to(logits, (2000, 4)), jax.random.key(0), 5,
                           temperature)
    assert tokens.shape == (2000, 5) and tokens.dtype == jnp.int32
    freq = np.bincount(np.asarray(tokens).ravel(), minlength=4) / tokens.size
    expected = np.asarray(jax.nn.softmax(logits / temperature))
    np.testing.assert_allclose(freq, expected, atol=0.015)  # 10,000 draws: std err <= 0.005


def test_greedy_sampling_equals_argmax_decoding_from_scratch():
    """Temperature 0 with the carried state equals re-reading the whole text each step."""
    model = CharLM(7, "lstm", 16, num_layers=2, embed_dim=4)
    prompt = jnp.array([[1, 2, 3], [4, 4, 0]])
    variables = model.init(jax.random.key(0), prompt)
    sampled = sample_language_model(model, variables, jax.random.key(5), prompt, 6, 0.0)
    # Re-read the text so far each step: a causal model's logits at position t do not depend
    # on what follows, so one fixed-length buffer (zeros after t) needs one compile, not six.
    text = np.zeros((2, 9), np.int32)
    text[:, :3] = np.asarray(prompt)
    apply = jax.jit(model.apply)
    for t in range(3, 9):
        text[:, t] = np.argmax(np.asarray(apply(variables, jnp.asarray(text)))[:, t - 1], -1)
    np.testing.assert_array_equal(sampled, text[:, 3:])


def test_sampler_compiles_once_for_all_temperatures_and_keys():
    model = CharLM(5, "gru", 8, num_layers=1, embed_dim=3)
    prompt = jnp.zeros((2, 2), jnp.int32)
    variables = model.init(jax.random.key(0), prompt)
    # a fresh function: jit's cache is shared by every jit of the same function object
    sample = jax.jit(lambda v, k, p, t: sample_language_model(model, v, k, p, 9, t))
    a = sample(variables, jax.random.key(1), prompt, 1.0)
    b = sample(variables, jax.random.key(2), prompt, 0.3)
    assert sample._cache_size() == 1
    assert a.shape == b.shape == (2, 9) and int(a.max()) < 5
    c = sample(variables, jax.random.key(1), prompt, 1.0)
    np.testing.assert_array_equal(a, c)
