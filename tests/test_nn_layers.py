"""Layers against independent numpy references, exact parameter counts, clear shape errors."""

import functools

import flax.linen as fnn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dlfun import nn
from dlfun.errors import ConfigError, ShapeError
from dlfun.train.state import count_params

KEY = jax.random.key(0)


def init_apply(module, x, **kw):
    """Initialise and apply, each as one compiled program (eagerly, every initializer and
    operation compiles on its own: seconds for a 784-512-512-10 MLP)."""
    variables = jax.jit(functools.partial(module.init, **kw))(KEY, x)
    return variables, jax.jit(functools.partial(module.apply, **kw))(variables, x)


def np_conv2d(x, w, stride, pad):
    """Textbook cross-correlation, NHWC x HWIO, symmetric zero padding ``pad``."""
    x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    kh, kw, _, co = w.shape
    ho = (x.shape[1] - kh) // stride + 1
    wo = (x.shape[2] - kw) // stride + 1
    out = np.zeros((x.shape[0], ho, wo, co))
    for i in range(ho):
        for j in range(wo):
            patch = x[:, i * stride:i * stride + kh, j * stride:j * stride + kw, :]
            out[:, i, j, :] = np.einsum("bhwc,hwco->bo", patch, w)
    return out


class TestDense:
    def test_matches_numpy_and_counts_params(self):
        x = np.random.default_rng(0).standard_normal((5, 7)).astype(np.float32)
        v, y = init_apply(nn.Dense(3), x)
        p = jax.tree.map(np.asarray, v["params"])
        np.testing.assert_allclose(y, x @ p["kernel"] + p["bias"], rtol=1e-5, atol=1e-6)
        assert count_params(p) == 7 * 3 + 3

    @pytest.mark.parametrize("shape", [(7,), (2, 7), (2, 4, 7)])
    def test_shapes_for_leading_axes(self, shape):
        _, y = init_apply(nn.Dense(3), jnp.ones(shape))
        assert y.shape == shape[:-1] + (3,)

    def test_wrong_feature_count_is_a_clear_error(self):
        v, _ = init_apply(nn.Dense(3), jnp.ones((2, 4)))
        with pytest.raises(ShapeError, match=r"initialised for inputs with 4 features.*\(2, 5\)"):
            nn.Dense(3).apply(v, jnp.ones((2, 5)))


class TestMLP:
    @pytest.mark.parametrize("act,ref", [
        ("relu", lambda z: np.maximum(z, 0)), ("sigmoid", lambda z: 1 / (1 + np.exp(-z))),
        ("tanh", np.tanh), ("softplus", lambda z: np.log1p(np.exp(z))),
        ("identity", lambda z: z)])
    def test_forward_matches_numpy(self, act, ref):
        x = np.random.default_rng(1).standard_normal((4, 6)).astype(np.float32)
        v, y = init_apply(nn.MLP((5, 3), 2, activation=act), x)
        p = v["params"]
        h = x
        for name in ("Dense_0", "Dense_1"):
            h = ref(h @ np.asarray(p[name]["kernel"]) + np.asarray(p[name]["bias"]))
        out = h @ np.asarray(p["Dense_2"]["kernel"]) + np.asarray(p["Dense_2"]["bias"])
        np.testing.assert_allclose(y, out, rtol=1e-5, atol=1e-5)

    def test_parameter_count(self):
        v, _ = init_apply(nn.MLP((512, 512), 10), jnp.ones((1, 784)))
        assert count_params(v["params"]) == 784 * 512 + 512 + 512 * 512 + 512 + 512 * 10 + 10

    def test_unknown_activation(self):
        with pytest.raises(ConfigError, match="unknown activation 'swishy'.*relu"):
            init_apply(nn.MLP((3,), 1, activation="swishy"), jnp.ones((1, 2)))

    def test_dropout_only_in_training(self):
        m = nn.MLP((64,), 4, dropout_rate=0.5)
        v = m.init(KEY, jnp.ones((3, 8)))
        x = jnp.ones((3, 8))
        assert jnp.array_equal(m.apply(v, x), m.apply(v, x, train=False))
        a = m.apply(v, x, train=True, rngs={"dropout": jax.random.key(1)})
        b = m.apply(v, x, train=True, rngs={"dropout": jax.random.key(2)})
        assert not jnp.allclose(a, b)

    def test_batch_norm_between_affine_and_activation(self):
        x = np.random.default_rng(2).standard_normal((16, 6)).astype(np.float32)
        m = nn.MLP((5, 3), 2, activation="tanh", batch_norm=True)
        v = m.init(KEY, x)
        assert count_params(v["params"]) == (6 * 5 + 2 * 5) + (5 * 3 + 2 * 3) + (3 * 2 + 2)
        y, updates = m.apply(v, x, train=True, mutable=["batch_stats"])
        p, h = v["params"], x
        for i, name in enumerate(("Dense_0", "Dense_1")):
            z = h @ np.asarray(p[name]["kernel"], np.float64)
            z = (z - z.mean(0)) / np.sqrt(z.var(0) + 1e-5)  # scale 1, shift 0 at init
            h = np.tanh(z)
        out = h @ np.asarray(p["Dense_2"]["kernel"]) + np.asarray(p["Dense_2"]["bias"])
        np.testing.assert_allclose(y, out, rtol=1e-4, atol=1e-4)
        assert set(updates["batch_stats"]) == {"BatchNorm_0", "BatchNorm_1"}

    def test_kernel_init_and_sown_hidden_activations(self):
        x = jnp.ones((2, 400))
        m = nn.MLP((300, 300), 10, activation="relu",
                   kernel_init=fnn.initializers.he_normal())
        v = m.init(KEY, x)
        std = float(np.std(np.asarray(v["params"]["Dense_1"]["kernel"])))
        assert std == pytest.approx(np.sqrt(2 / 300), rel=0.05)  # He: var 2 / fan_in
        y, state = m.apply(v, x, mutable=["intermediates"])
        hidden = state["intermediates"]
        assert [hidden[f"hidden_{i}"][0].shape for i in (0, 1)] == [(2, 300), (2, 300)]
        np.testing.assert_array_equal(m.apply(v, x), y)


class TestConvOutputSize:
    @pytest.mark.parametrize("W,F,S,P,out", [(7, 3, 1, 0, 5), (7, 3, 2, 0, 3), (7, 3, 1, 1, 7),
                                             (32, 5, 1, 0, 28), (7, 3, 1, "VALID", 5),
                                             (7, 3, 2, "SAME", 4)])
    def test_slides_cases(self, W, F, S, P, out):
        assert nn.conv_output_size(W, F, S, P) == out

    def test_filter_that_does_not_tile_is_an_error(self):
        with pytest.raises(ConfigError, match=r"does not tile an input of size 7.*2\.33"):
            nn.conv_output_size(7, 3, 3, 0)

    def test_filter_larger_than_input(self):
        with pytest.raises(ConfigError, match="larger than the padded input"):
            nn.conv_output_size(3, 5, 1, 0)


class TestConv:
    @pytest.mark.parametrize("stride,pad", [(1, 0), (2, 0), (1, 1), (2, 2), (3, 1)])
    def test_matches_numpy_convolution(self, stride, pad):
        x = np.random.default_rng(2).standard_normal((2, 9, 9, 3)).astype(np.float32)
        conv = nn.Conv(4, 3, strides=stride, padding=pad)
        v, y = init_apply(conv, x)
        k, b = np.asarray(v["params"]["kernel"]), np.asarray(v["params"]["bias"])
        np.testing.assert_allclose(y, np_conv2d(x, k, stride, pad) + b, rtol=1e-4, atol=1e-4)
        assert y.shape[1] == (9 - 3 + 2 * pad) // stride + 1

    def test_same_padding_keeps_size_and_counts_params(self):
        v, y = init_apply(nn.Conv(6, 5, padding="SAME"), jnp.ones((2, 28, 28, 1)))
        assert y.shape == (2, 28, 28, 6)
        assert count_params(v["params"]) == 5 * 5 * 1 * 6 + 6

    def test_rectangular_kernel_and_explicit_pads(self):
        conv = nn.Conv(2, (3, 1), strides=(1, 2), padding=((1, 1), (0, 0)))
        _, y = init_apply(conv, jnp.ones((1, 5, 6, 1)))
        assert y.shape == (1, 5, 3, 2)

    def test_single_image_without_batch_axis(self):
        x = jnp.ones((7, 7, 3))
        v, y = init_apply(nn.Conv(4, 3), x)
        assert y.shape == (5, 5, 4)
        np.testing.assert_allclose(nn.Conv(4, 3).apply(v, x[None])[0], y)

    def test_wrong_rank_and_channels_are_clear_errors(self):
        with pytest.raises(ShapeError, match=r"\(batch, height, width, channels\).*\(28, 28\)"):
            init_apply(nn.Conv(4, 3), jnp.ones((28, 28)))
        v, _ = init_apply(nn.Conv(4, 3), jnp.ones((1, 8, 8, 3)))
        with pytest.raises(ShapeError, match="initialised for inputs with 3 features"):
            nn.Conv(4, 3).apply(v, jnp.ones((1, 8, 8, 1)))

    def test_bad_padding_spec(self):
        with pytest.raises(ConfigError, match="padding"):
            init_apply(nn.Conv(4, 3, padding="FULL"), jnp.ones((1, 8, 8, 1)))


SLIDES_MAP = np.array([[2, 3, 2, 0], [5, -2, 2, 8], [-1, -6, 7, 3], [-4, -5, 4, 2]], np.float32)


def np_pool(x, k, s, reduce):
    """Reference pooling over (H, W) of a 2-D map."""
    ho, wo = (x.shape[0] - k) // s + 1, (x.shape[1] - k) // s + 1
    return np.array([[reduce(x[i * s:i * s + k, j * s:j * s + k]) for j in range(wo)]
                     for i in range(ho)])


class TestPooling:
    def test_slides_example(self):
        x = SLIDES_MAP[None, :, :, None]
        np.testing.assert_array_equal(nn.max_pool(x, 2)[0, :, :, 0], [[5, 8], [-1, 7]])
        np.testing.assert_array_equal(nn.avg_pool(x, 2)[0, :, :, 0], [[2, 3], [-4, 4]])
        np.testing.assert_array_equal(nn.min_pool(x, 2)[0, :, :, 0], [[-2, 0], [-6, 2]])
        np.testing.assert_allclose(nn.l2_pool(x, 2)[0, :, :, 0],
                                   np_pool(SLIDES_MAP, 2, 2, lambda w: np.sqrt((w * w).sum())))

    @pytest.mark.parametrize("k,s", [(2, 1), (3, 2), (3, 3)])
    @pytest.mark.parametrize("name,ref", [("max_pool", np.max), ("min_pool", np.min),
                                          ("avg_pool", np.mean),
                                          ("l2_pool", lambda w: np.sqrt((w * w).sum()))])
    def test_matches_numpy(self, name, ref, k, s):
        x = np.random.default_rng(3).standard_normal((9, 9)).astype(np.float32)
        out = getattr(nn, name)(x[None, :, :, None], k, s)[0, :, :, 0]
        np.testing.assert_allclose(out, np_pool(x, k, s, ref), rtol=1e-5, atol=1e-6)

    def test_channels_pooled_independently_and_unbatched_input(self):
        x = np.random.default_rng(4).standard_normal((6, 6, 3)).astype(np.float32)
        out = nn.max_pool(x, 2)
        assert out.shape == (3, 3, 3)
        for c in range(3):
            np.testing.assert_allclose(out[..., c], np_pool(x[..., c], 2, 2, np.max))

    def test_same_padding_max_ignores_padding(self):
        x = -np.ones((1, 3, 3, 1), np.float32)
        assert nn.max_pool(x, 2, 2, "SAME").shape == (1, 2, 2, 1)
        assert float(nn.max_pool(x, 2, 2, "SAME").max()) == -1.0

    def test_global_avg_pool(self):
        x = np.random.default_rng(5).standard_normal((2, 4, 4, 3)).astype(np.float32)
        np.testing.assert_allclose(nn.global_avg_pool(x), x.mean(axis=(1, 2)), rtol=1e-6)


class TestBatchNorm:
    def test_train_mode_normalises_and_updates_running_stats(self):
        x = np.random.default_rng(6).normal(3.0, 2.0, (64, 5)).astype(np.float32)
        bn = nn.BatchNorm(momentum=0.9)
        v = bn.init(KEY, x)
        assert count_params(v["params"]) == 10
        y, upd = bn.apply(v, x, train=True, mutable=["batch_stats"])
        ref = (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-5)
        np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(upd["batch_stats"]["mean"], 0.1 * x.mean(0), rtol=1e-5)
        np.testing.assert_allclose(upd["batch_stats"]["var"], 0.9 + 0.1 * x.var(0), rtol=1e-5)

    def test_eval_mode_uses_running_stats(self):
        x = np.random.default_rng(7).normal(0.0, 1.0, (8, 2, 2, 3)).astype(np.float32)
        bn = nn.BatchNorm()
        v = bn.init(KEY, x)
        stats = {"mean": jnp.array([1.0, 2.0, 3.0]), "var": jnp.array([4.0, 1.0, 0.25])}
        y = bn.apply({"params": v["params"], "batch_stats": stats}, x, train=False)
        ref = (x - np.array([1, 2, 3])) / np.sqrt(np.array([4.0, 1.0, 0.25]) + 1e-5)
        np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)

    def test_conv_features_are_the_last_axis(self):
        x = np.random.default_rng(8).standard_normal((4, 3, 3, 2)).astype(np.float32)
        bn = nn.BatchNorm()
        y, _ = bn.apply(bn.init(KEY, x), x, train=True, mutable=["batch_stats"])
        np.testing.assert_allclose(np.asarray(y).mean(axis=(0, 1, 2)), 0, atol=1e-5)


class TestDropout:
    def test_rate_and_scaling(self):
        x = jnp.ones((20000,))
        y = np.asarray(nn.dropout(jax.random.key(3), x, 0.3))
        assert abs((y == 0).mean() - 0.3) < 0.02
        np.testing.assert_allclose(y[y != 0], 1 / 0.7, rtol=1e-6)

    def test_same_key_same_mask_and_bad_rate(self):
        x = jnp.arange(100.0)
        assert jnp.array_equal(nn.dropout(jax.random.key(1), x, 0.5),
                               nn.dropout(jax.random.key(1), x, 0.5))
        with pytest.raises(ConfigError, match=r"\[0, 1\)"):
            nn.dropout(jax.random.key(1), x, 1.0)


class TestResidual:
    def test_is_g_of_z_plus_f_of_z(self):
        x = np.random.default_rng(9).standard_normal((3, 4)).astype(np.float32)
        block = nn.Residual(nn.Dense(4), activation="relu")
        v, y = init_apply(block, x)
        p = jax.tree.map(np.asarray, v["params"]["f"])
        np.testing.assert_allclose(y, np.maximum(x + x @ p["kernel"] + p["bias"], 0),
                                   rtol=1e-5, atol=1e-6)

    def test_projection_shortcut_and_mismatch_error(self):
        x = jnp.ones((2, 8, 8, 3))
        block = nn.Residual(nn.Conv(6, 3, strides=2, padding=1),
                            shortcut=nn.Conv(6, 1, strides=2))
        _, y = init_apply(block, x)
        assert y.shape == (2, 4, 4, 6)
        with pytest.raises(ShapeError, match="shortcut projection"):
            init_apply(nn.Residual(nn.Conv(6, 3, padding=1)), x)

    def test_train_flag_reaches_the_branch(self):
        class Branch(fnn.Module):
            @fnn.compact
            def __call__(self, z, train=False):
                return nn.BatchNorm()(z, train=train)

        block = nn.Residual(Branch(), activation="identity")
        x = np.random.default_rng(10).normal(5.0, 1.0, (16, 3)).astype(np.float32)
        v = block.init(KEY, x)
        _, upd = block.apply(v, x, train=True, mutable=["batch_stats"])
        stats = jax.tree.leaves(upd)
        assert any(float(jnp.abs(s - 1).max()) > 0.01 for s in stats)
