"""Backpropagation by hand: the lectures' chain-rule deltas of a sigmoid network with squared
error equal jax.grad of the same dlfun MLP (float64)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dlfun.errors import ShapeError
from dlfun.nn import MLP
from dlfun.nn.backprop import sigmoid_mlp_deltas


def _sigmoid_mlp(hidden):
    return MLP(hidden, 1, activation="sigmoid", output_activation="sigmoid")


def _random_params(rng, sizes):
    """float64 MLP parameters of layer sizes ``sizes`` (e.g. (2, 2, 1)), scaled to keep the
    sigmoids off their flat tails."""
    return {f"Dense_{i}": {"kernel": rng.normal(0, 1.5, (n_in, n_out)),
                           "bias": rng.normal(0, 0.5, (n_out,))}
            for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:]))}


def _jax_grad(model, params, x, y):
    """jax.grad of 1/2 sum (y_hat - y)^2 through dlfun's MLP, all in float64."""
    def loss(p):
        y_hat = model.apply({"params": p}, x)
        return 0.5 * jnp.sum((y_hat - y) ** 2)

    value, grads = jax.value_and_grad(loss)(jax.tree.map(jnp.asarray, params))
    return float(value), jax.tree.map(np.asarray, grads)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hand_derived_deltas_of_the_2_2_1_net_equal_jax_grad(seed):
    rng = np.random.default_rng(seed)
    params = _random_params(rng, (2, 2, 1))
    x = rng.uniform(-2, 2, (5, 2))
    y = rng.uniform(0, 1, (5, 1))
    hand = sigmoid_mlp_deltas(params, x, y)
    with jax.enable_x64(True):
        value, grads = _jax_grad(_sigmoid_mlp((2,)), params, x, y)
    assert grads["Dense_0"]["kernel"].dtype == np.float64
    assert hand["loss"] == pytest.approx(value, abs=1e-12)
    for layer in ("Dense_0", "Dense_1"):
        for name in ("kernel", "bias"):
            np.testing.assert_allclose(hand["grads"][layer][name], grads[layer][name],
                                       rtol=0, atol=1e-12)
    assert abs(hand["grads"]["Dense_0"]["kernel"]).max() > 1e-4  # a real signal was compared


def test_single_example_deltas_are_the_textbook_formulas():
    """One example written out term by term: delta_out = (y_hat - y) y_hat (1 - y_hat);
    delta_hidden = (W2 delta_out) h (1 - h); dE/dW = input outer delta."""
    rng = np.random.default_rng(3)
    params = _random_params(rng, (2, 2, 1))
    x, y = np.array([[1.0, 0.0]]), np.array([[1.0]])
    w1, b1 = params["Dense_0"]["kernel"], params["Dense_0"]["bias"]
    w2, b2 = params["Dense_1"]["kernel"][:, 0], params["Dense_1"]["bias"][0]
    h = 1 / (1 + np.exp(-(x[0] @ w1 + b1)))
    y_hat = 1 / (1 + np.exp(-(h @ w2 + b2)))
    d_out = (y_hat - 1.0) * y_hat * (1 - y_hat)
    d_hid = w2 * d_out * h * (1 - h)
    hand = sigmoid_mlp_deltas(params, x, y)
    np.testing.assert_allclose(hand["deltas"][1][0], [d_out], atol=1e-15)
    np.testing.assert_allclose(hand["deltas"][0][0], d_hid, atol=1e-15)
    np.testing.assert_allclose(hand["grads"]["Dense_0"]["kernel"], np.outer(x[0], d_hid),
                               atol=1e-15)
    np.testing.assert_allclose(hand["grads"]["Dense_1"]["kernel"][:, 0], h * d_out, atol=1e-15)


def test_deeper_sigmoid_net_also_matches_jax_grad():
    rng = np.random.default_rng(4)
    params = _random_params(rng, (3, 4, 3, 2))
    x, y = rng.normal(size=(6, 3)), rng.uniform(0, 1, (6, 2))
    hand = sigmoid_mlp_deltas(params, x, y)
    with jax.enable_x64(True):
        _, grads = _jax_grad(MLP((4, 3), 2, activation="sigmoid",
                                 output_activation="sigmoid"), params, x, y)
    for layer in grads:
        for name in ("kernel", "bias"):
            np.testing.assert_allclose(hand["grads"][layer][name], grads[layer][name],
                                       rtol=0, atol=1e-12)


def test_mismatched_targets_are_one_line_errors():
    params = _random_params(np.random.default_rng(5), (2, 2, 1))
    with pytest.raises(ShapeError, match=r"y must be \(4, 1\)"):
        sigmoid_mlp_deltas(params, np.zeros((4, 2)), np.zeros((4,)))
    with pytest.raises(ShapeError, match=r"x must be \(batch, 2\)"):
        sigmoid_mlp_deltas(params, np.zeros((4, 3)), np.zeros((4, 1)))
