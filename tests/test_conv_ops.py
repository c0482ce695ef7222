"""conv2d / max_pool2d: the CPU lowering equals the plain lax lowering + autodiff.

Float64 comparisons are tight (1e-12 relative); float32 ones allow float32 rounding only.
Max-pool gradients are compared exactly, on inputs without ties and, for the tie rule, on
inputs made of ties.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from dlfun.errors import ConfigError, ShapeError
from dlfun.nn.conv_ops import (conv2d, describe_conv_lowering, explicit_padding, max_pool2d,
                               plan_conv)

# (x shape NHWC, kernel shape HWIO, strides, padding): channel counts cover the patches
# forward (C_in <= 4) and the lax forward, strides 1-3, all three padding forms.
CONV_CASES = [
    ((8, 12, 12, 1), (5, 5, 1, 6), (1, 1), ((2, 2), (2, 2))),
    ((8, 11, 10, 3), (3, 3, 3, 7), (2, 2), "SAME"),
    ((4, 10, 11, 6), (5, 5, 6, 4), (1, 1), "VALID"),
    ((8, 13, 12, 5), (3, 2, 5, 3), (3, 2), ((1, 2), (0, 1))),
    ((16, 9, 9, 8), (3, 3, 8, 16), (1, 3), "SAME"),
    ((6, 7, 9, 2), (2, 4, 2, 5), (3, 3), "VALID"),
]


def _rel_err(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


@functools.partial(jax.jit, static_argnums=(2, 3, 4))
def _conv_value_and_grads(x, k, strides, padding, impl):
    """Value and (d/dx, d/dk) of a nonlinear scalar of the conv output."""
    def f(x, k):
        return jnp.sum(jnp.sin(conv2d(x, k, strides, padding, impl=impl)))

    out = conv2d(x, k, strides, padding, impl=impl)
    return (out, *jax.grad(f, argnums=(0, 1))(x, k))


@functools.partial(jax.jit, static_argnums=(2, 3))
def _reference(x, k, strides, padding):
    """Plain lax.conv_general_dilated + autodiff, independent of dlfun's code."""
    dims = ("NHWC", "HWIO", "NHWC")

    def conv(x, k):
        return lax.conv_general_dilated(x, k, strides, padding, dimension_numbers=dims)

    grads = jax.grad(lambda x, k: jnp.sum(jnp.sin(conv(x, k))), argnums=(0, 1))(x, k)
    return (conv(x, k), *grads)


def _random(shape, seed, dtype):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), dtype)


@pytest.mark.parametrize("xs,ks,strides,padding", CONV_CASES)
def test_conv2d_float64_matches_lax_autodiff(xs, ks, strides, padding):
    with jax.enable_x64(True):
        x, k = _random(xs, 0, jnp.float64), _random(ks, 1, jnp.float64)
        got = _conv_value_and_grads(x, k, strides, padding, "cpu")
        want = _reference(x, k, strides, padding)
        for name, g, w in zip(("value", "d/dx", "d/dkernel"), got, want):
            assert g.dtype == jnp.float64 and g.shape == w.shape, name
            assert _rel_err(g, w) < 1e-12, (name, _rel_err(g, w))


@pytest.mark.parametrize("xs,ks,strides,padding", CONV_CASES)
def test_conv2d_float32_within_rounding(xs, ks, strides, padding):
    x, k = _random(xs, 2, jnp.float32), _random(ks, 3, jnp.float32)
    got = _conv_value_and_grads(x, k, strides, padding, "cpu")
    want = _reference(x, k, strides, padding)
    for name, g, w in zip(("value", "d/dx", "d/dkernel"), got, want):
        assert g.dtype == jnp.float32 and g.shape == w.shape, name
        assert _rel_err(g, w) < 2e-6, (name, _rel_err(g, w))


def test_conv2d_xla_impl_is_the_plain_lowering():
    x, k = _random((2, 6, 6, 3), 4, jnp.float32), _random((3, 3, 3, 4), 5, jnp.float32)
    text = jax.jit(lambda x, k: conv2d(x, k, 1, "SAME", impl="xla")).lower(x, k).as_text()
    assert "convolution" in text and "custom_vjp" not in text
    np.testing.assert_array_equal(conv2d(x, k, 1, "SAME", impl="xla"),
                                  _reference(x, k, (1, 1), "SAME")[0])


def test_conv2d_under_jit_and_vmap_over_models():
    """vmap over 3 (kernel, batch) pairs equals the 3 separate calls, values and gradients."""
    xs, ks = _random((3, 8, 9, 9, 2), 6, jnp.float32), _random((3, 3, 3, 2, 4), 7, jnp.float32)

    def loss(x, k):
        return jnp.sum(jnp.tanh(conv2d(x, k, (2, 1), "SAME")))

    vg = jax.jit(jax.vmap(jax.value_and_grad(loss, argnums=(0, 1))))(xs, ks)
    for m in range(3):
        want = _reference(xs[m], ks[m], (2, 1), "SAME")
        sg = jax.value_and_grad(loss, argnums=(0, 1))(xs[m], ks[m])
        assert _rel_err(vg[1][1][m], sg[1][1]) < 2e-6 and _rel_err(vg[1][0][m], sg[1][0]) < 2e-6
        assert abs(float(vg[0][m] - jnp.sum(jnp.tanh(want[0])))) < 1e-4


def test_plan_uses_patches_only_for_few_input_channels_and_divides_the_batch():
    assert plan_conv((128, 28, 28, 1), (5, 5, 1, 6)).forward == "patches"
    assert plan_conv((128, 32, 32, 32), (3, 3, 32, 32)).forward == "xla"
    for shape in [(128, 32, 32, 32), (100, 14, 14, 6), (7, 5, 5, 3), (1, 4, 4, 2)]:
        chunks = plan_conv(shape, (3, 3, shape[-1], 8)).kernel_chunks
        assert shape[0] % chunks == 0 and 1 <= chunks <= 16


def test_conv2d_errors_name_the_problem():
    x, k = jnp.zeros((2, 5, 5, 3)), jnp.zeros((3, 3, 4, 2))
    with pytest.raises(ShapeError, match="equal C"):
        conv2d(x, k)
    with pytest.raises(ConfigError, match="impl="):
        conv2d(x, jnp.zeros((3, 3, 3, 2)), impl="fast")
    with pytest.raises(ConfigError, match="padding"):
        explicit_padding("FULL", (5, 5), (3, 3), (1, 1))


# ----------------------------------------------------------------------------- max pooling
POOL_CASES = [((2, 2), None, "VALID"), ((3, 3), (2, 2), "SAME"), ((2, 3), (1, 2), ((1, 0), (1, 1))),
              ((3, 2), (3, 2), "VALID")]


def _assert_pool_grads_equal(got, want, window, strides):
    """Exact for non-overlapping windows; overlapping ones sum in another order (f32 rounding)."""
    if strides is None or tuple(strides) == tuple(window):
        np.testing.assert_array_equal(got, want)
    else:
        np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-6)


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4))
def _pool_grad(x, window, strides, padding, impl):
    shape = jax.eval_shape(lambda x: max_pool2d(x, window, strides, padding, impl="xla"), x).shape
    g = jnp.asarray(np.random.default_rng(9).standard_normal(shape), x.dtype)
    return jax.vjp(lambda x: max_pool2d(x, window, strides, padding, impl=impl), x)[1](g)[0]


@pytest.mark.parametrize("window,strides,padding", POOL_CASES)
def test_max_pool_gradient_equals_autodiff_without_ties(window, strides, padding):
    x = _random((3, 9, 10, 4), 8, jnp.float32)  # continuous values: no ties
    np.testing.assert_array_equal(max_pool2d(x, window, strides, padding, impl="cpu"),
                                  max_pool2d(x, window, strides, padding, impl="xla"))
    _assert_pool_grads_equal(_pool_grad(x, window, strides, padding, "cpu"),
                             _pool_grad(x, window, strides, padding, "xla"), window, strides)


@pytest.mark.parametrize("window,strides,padding", POOL_CASES)
def test_max_pool_ties_go_to_the_first_maximum_like_autodiff(window, strides, padding):
    x = jnp.asarray(np.random.default_rng(10).integers(0, 2, (2, 8, 9, 3)), jnp.float32)
    _assert_pool_grads_equal(_pool_grad(x, window, strides, padding, "cpu"),
                             _pool_grad(x, window, strides, padding, "xla"), window, strides)


def test_max_pool_tie_rule_first_in_row_major_window_order():
    x = jnp.ones((1, 2, 2, 1))  # one window, four equal maxima
    g = jax.grad(lambda x: jnp.sum(max_pool2d(x, 2, 2, impl="cpu") * 5.0))(x)
    np.testing.assert_array_equal(g[0, :, :, 0], [[5.0, 0.0], [0.0, 0.0]])


def test_max_pool_under_vmap_and_jit():
    xs = _random((3, 2, 6, 6, 2), 11, jnp.float32)
    f = jax.jit(jax.vmap(jax.grad(lambda x: jnp.sum(max_pool2d(x, 2) ** 2))))
    want = jax.vmap(jax.grad(lambda x: jnp.sum(max_pool2d(x, 2, impl="xla") ** 2)))(xs)
    np.testing.assert_array_equal(f(xs), want)


def test_describe_conv_lowering_says_what_runs():
    assert "CPU lowering" in describe_conv_lowering("cpu")
    assert "plain lax" in describe_conv_lowering("xla")
    assert ("CPU lowering" in describe_conv_lowering()) == (jax.default_backend() == "cpu")
