"""CNN models: exact parameter counts from the designs' formulas, shapes for several input
sizes, where the projection shortcuts sit, and class activation maps against numpy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dlfun.errors import ConfigError
from dlfun.nn import BasicBlock, LeNet5, Plain20, ResNet20, VGGSmall
from dlfun.train.state import count_params
from dlfun.viz import cam, class_activation_maps, feature_maps, grad_cam, upsample_maps
from dlfun.viz.conv_report import activations, first_layer_filters

KEY = jax.random.key(0)
RNG = np.random.default_rng(0)


def shapes(model, shape):
    """Variable shapes only (``jax.eval_shape``: no compilation, no computation)."""
    return jax.eval_shape(model.init, KEY, jax.ShapeDtypeStruct(shape, jnp.float32))


def numpy_variables(model, shape, seed=0):
    """Variables filled from numpy's RNG, every value off its initial one (non-zero biases,
    non-trivial batch-norm statistics), as after training. Compiling JAX's random
    initialisers costs seconds per layer on CPU; the tests need only some valid values."""
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        name = path[-1].key
        if len(leaf.shape) > 1:  # kernels: He-scaled normal
            fan_in = int(np.prod(leaf.shape[:-1]))
            return rng.standard_normal(leaf.shape, np.float32) * np.sqrt(2.0 / fan_in)
        base = 1.0 if name in ("scale", "var") else 0.0
        return base + 0.1 * rng.random(leaf.shape, np.float32)

    return jax.tree_util.tree_map_with_path(fill, shapes(model, shape))


def conv(k, c_in, c_out, bias=True):
    return k * k * c_in * c_out + (c_out if bias else 0)


def dense(n_in, n_out):
    return n_in * n_out + n_out


# ------------------------------------------------------------------ parameter counts
@pytest.mark.parametrize("side,channels,classes", [(32, 1, 10), (32, 3, 10), (28, 1, 7)])
def test_lenet_parameter_count(side, channels, classes):
    s = ((side - 4) // 2 - 4) // 2  # two VALID 5x5 convolutions, each followed by 2x2 pooling
    expected = (conv(5, channels, 6) + conv(5, 6, 16) + dense(16 * s * s, 120)
                + dense(120, 84) + dense(84, classes))
    v = shapes(LeNet5(num_classes=classes), (1, side, side, channels))
    assert count_params(v["params"]) == expected
    assert "batch_stats" not in v


def test_lenet_is_the_classic_61706_parameters_on_32x32_grey():
    assert count_params(shapes(LeNet5(), (1, 32, 32, 1))["params"]) == 61_706


def _vgg_expected(channels, widths, per_block, side, head, hidden, classes):
    total, c_in = 0, channels
    for w in widths:
        for _ in range(per_block):
            total += conv(3, c_in, w, bias=False) + 2 * w  # conv + batch norm scale/shift
            c_in = w
    if head == "gap":
        return total + dense(widths[-1], classes)
    s = side // 2 ** len(widths)
    return total + dense(s * s * widths[-1], hidden) + dense(hidden, classes)


@pytest.mark.parametrize("head", ["fc", "gap"])
@pytest.mark.parametrize("widths,per_block,side,channels", [
    ((32, 64, 128), 2, 32, 1), ((16, 32), 1, 16, 3), ((8, 16, 32), 3, 16, 1)])
def test_vgg_parameter_count(head, widths, per_block, side, channels):
    model = VGGSmall(num_classes=10, widths=widths, convs_per_block=per_block, head=head,
                     hidden=64)
    v = shapes(model, (1, side, side, channels))
    assert count_params(v["params"]) == _vgg_expected(channels, widths, per_block, side, head,
                                                      64, 10)
    # running mean and variance per batch-norm channel
    assert count_params(v["batch_stats"]) == 2 * per_block * sum(widths)


def _resnet_expected(channels, classes, n, shortcut):
    total = conv(3, channels, 16, bias=False) + 2 * 16
    c_in = 16
    for stage, w in enumerate((16, 32, 64)):
        for b in range(n):
            total += conv(3, c_in, w, bias=False) + 2 * w + conv(3, w, w, bias=False) + 2 * w
            if shortcut and c_in != w:
                total += conv(1, c_in, w, bias=False) + 2 * w  # projection + its batch norm
            c_in = w
    return total + dense(64, classes)


@pytest.mark.parametrize("cls,shortcut", [(ResNet20, True), (Plain20, False)])
@pytest.mark.parametrize("channels,classes,n", [(3, 10, 3), (1, 10, 3), (3, 100, 3), (3, 10, 9)])
def test_resnet_and_plain_parameter_counts(cls, shortcut, channels, classes, n):
    model = cls(num_classes=classes, blocks_per_stage=n)
    v = shapes(model, (1, 32, 32, channels))
    assert count_params(v["params"]) == _resnet_expected(channels, classes, n, shortcut)
    assert model.depth == 6 * n + 2


def test_resnet20_is_the_papers_0_27m():
    assert count_params(shapes(ResNet20(), (1, 32, 32, 3))["params"]) == 272_474


@pytest.mark.parametrize("model,depth", [
    (ResNet20(), 20), (ResNet20(blocks_per_stage=9), 56), (Plain20(), 20), (LeNet5(), 5),
    (VGGSmall(), 8), (VGGSmall(head="gap", widths=(8, 16)), 5)])
def test_depth_counts_weighted_layers(model, depth):
    params = shapes(model, (1, 32, 32, 1))["params"]
    # every kernel but the 1x1 projections (shortcuts are not counted as layers)
    kernels = [p for path, p in jax.tree_util.tree_flatten_with_path(params)[0]
               if path[-1].key == "kernel" and (p.ndim == 2 or p.shape[0] > 1)]
    assert model.depth == len(kernels) == depth


# ------------------------------------------------------------------ shapes
def run_parts(model, x):
    """Logits, features, and classify(features), in one compiled program."""
    def parts(v, x):
        feats = model.apply(v, x, method="features")
        return model.apply(v, x), feats, model.apply(v, feats, method="classify")

    return jax.jit(parts)(numpy_variables(model, x.shape), x)


@pytest.mark.parametrize("model,shape,feat_shape", [
    (LeNet5(), (2, 32, 32, 1), (2, 10, 10, 16)),
    (LeNet5(num_classes=4), (3, 28, 28, 3), (3, 8, 8, 16)),
    (VGGSmall(widths=(8, 16, 32)), (2, 32, 32, 1), (2, 8, 8, 32)),
    (VGGSmall(widths=(8, 16), head="gap"), (2, 28, 28, 3), (2, 14, 14, 16)),
    (ResNet20(), (2, 32, 32, 3), (2, 8, 8, 64)),
    # one block per stage: the same stages and strides, cheaper to compile
    (ResNet20(blocks_per_stage=1), (2, 8, 8, 1), (2, 2, 2, 64)),
    (Plain20(num_classes=4, blocks_per_stage=1), (2, 28, 28, 1), (2, 7, 7, 64)),
    (ResNet20(blocks_per_stage=1), (1, 7, 7, 1), (1, 2, 2, 64)),  # odd sizes: ceil(7/4) = 2
])
def test_output_and_feature_shapes(model, shape, feat_shape):
    logits, feats, again = run_parts(model, RNG.standard_normal(shape, np.float32))
    assert logits.shape == (shape[0], model.num_classes)
    assert feats.shape == feat_shape
    np.testing.assert_allclose(again, logits, rtol=1e-5, atol=1e-6)


def test_training_mode_updates_batch_stats_and_vgg_dropout_uses_its_key():
    model = VGGSmall(widths=(8, 16), hidden=32)
    x = RNG.standard_normal((4, 16, 16, 1), np.float32)
    v = numpy_variables(model, x.shape)
    train = jax.jit(lambda v, x, k: model.apply(v, x, train=True, mutable=["batch_stats"],
                                                rngs={"dropout": k}))
    out1, upd = train(v, x, jax.random.key(1))
    out2, _ = train(v, x, jax.random.key(2))
    assert not np.allclose(out1, out2)  # different dropout masks
    changed = jax.tree.map(lambda a, b: not np.allclose(a, b), v["batch_stats"],
                           upd["batch_stats"])
    assert all(jax.tree.leaves(changed))
    evaluate = jax.jit(model.apply)
    np.testing.assert_array_equal(evaluate(v, x), evaluate(v, x))  # eval: deterministic


def test_bad_options_are_config_errors():
    with pytest.raises(ConfigError, match="pooling"):
        shapes(LeNet5(pooling="median"), (1, 32, 32, 1))
    with pytest.raises(ConfigError, match="head"):
        shapes(VGGSmall(head="dense"), (1, 32, 32, 1))


# ------------------------------------------------------------------ shortcuts
def _blocks_with_projection(params):
    return sorted(int(k.split("_")[1]) for k, v in params.items()
                  if k.startswith("blocks_") and "projection" in v)


@pytest.mark.parametrize("n", [3, 5])
def test_projection_exactly_where_the_shape_changes(n):
    params = shapes(ResNet20(blocks_per_stage=n), (1, 16, 16, 3))["params"]
    assert _blocks_with_projection(params) == [n, 2 * n]  # first block of stages 2 and 3
    plain = shapes(Plain20(blocks_per_stage=n), (1, 16, 16, 3))["params"]
    assert _blocks_with_projection(plain) == []
    assert params["blocks_3" if n == 3 else "blocks_5"]["projection"]["conv"]["kernel"].shape \
        == (1, 1, 16, 32)


def _silence_branch(v):
    """Zero the last batch norm of the branch: the branch then outputs exactly 0."""
    v = jax.tree.map(jnp.asarray, v)
    bn = v["params"]["branch"]["b"]["bn"]
    bn["scale"], bn["bias"] = jnp.zeros_like(bn["scale"]), jnp.zeros_like(bn["bias"])
    return v


def test_identity_shortcut_passes_the_input_through():
    x = RNG.standard_normal((2, 8, 8, 16), np.float32)
    v = _silence_branch(numpy_variables(BasicBlock(16), x.shape))
    assert "projection" not in v["params"]
    np.testing.assert_allclose(BasicBlock(16).apply(v, x), np.maximum(x, 0), atol=1e-6)
    plain = _silence_branch(numpy_variables(BasicBlock(16, shortcut=False), x.shape))
    np.testing.assert_allclose(BasicBlock(16, shortcut=False).apply(plain, x), 0.0, atol=1e-6)


def test_projection_shortcut_is_a_strided_1x1_conv_with_batch_norm():
    x = RNG.standard_normal((2, 8, 8, 16), np.float32)
    block = BasicBlock(32, strides=2)
    v = _silence_branch(numpy_variables(block, x.shape))
    w = np.asarray(v["params"]["projection"]["conv"]["kernel"])[0, 0]  # (16, 32)
    bn = jax.tree.map(np.asarray, v["params"]["projection"]["bn"])
    stats = jax.tree.map(np.asarray, v["batch_stats"]["projection"]["bn"])
    z = x[:, ::2, ::2, :] @ w  # a 1x1 convolution with stride 2
    z = (z - stats["mean"]) / np.sqrt(stats["var"] + 1e-5) * bn["scale"] + bn["bias"]
    np.testing.assert_allclose(block.apply(v, x), np.maximum(z, 0), rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------ class activation maps
def _trained_like(model, shape):
    """Images in [0, 1) and :func:`numpy_variables`."""
    return np.random.default_rng(1).random(shape, np.float32), numpy_variables(model, shape)


def _maps_and_features(model, v, x):
    fn = jax.jit(lambda v, x: (class_activation_maps(model, v, x), feature_maps(model, v, x)))
    return tuple(np.asarray(a, np.float64) for a in fn(v, x))


@pytest.mark.parametrize("model,path", [(ResNet20(blocks_per_stage=1), "fc"),
                                        (Plain20(num_classes=5, blocks_per_stage=1), "fc"),
                                        (VGGSmall(widths=(8, 16), head="gap"), "out")])
def test_cam_is_class_weights_times_feature_maps(model, path):
    x, v = _trained_like(model, (3, 16, 16, 1))
    maps, feats = _maps_and_features(model, v, x)
    w = np.asarray(v["params"][path]["kernel"], np.float64)
    b = np.asarray(v["params"][path]["bias"], np.float64)
    expected = np.zeros(feats.shape[:3] + (w.shape[1],))
    for c in range(w.shape[1]):  # M_c(x, y) = sum_k w_k^c f_k(x, y)
        for k in range(w.shape[0]):
            expected[..., c] += w[k, c] * feats[..., k]
    np.testing.assert_allclose(maps, expected, rtol=1e-4, atol=1e-4)
    # the map's mean over positions plus the bias is the logit (what makes it a CAM)
    logits = np.asarray(jax.jit(model.apply)(v, x))
    np.testing.assert_allclose(expected.mean(axis=(1, 2)) + b, logits, rtol=1e-4, atol=1e-4)


def test_grad_cam_equals_cam_over_positions_on_a_gap_head():
    model = ResNet20(num_classes=4, blocks_per_stage=1)
    x, v = _trained_like(model, (2, 16, 16, 1))

    def both(v, x):
        feats = feature_maps(model, v, x)
        return grad_cam(model, v, feats), cam(feats, v["params"]["fc"]["kernel"])

    gcam, plain_cam = jax.jit(both)(v, x)
    h, w = gcam.shape[1:3]
    np.testing.assert_allclose(gcam, plain_cam / (h * w), rtol=1e-4, atol=1e-6)


def test_grad_cam_of_lenet_matches_per_example_gradients():
    model = LeNet5(num_classes=3)
    x, v = _trained_like(model, (2, 32, 32, 1))
    maps, feats = _maps_and_features(model, v, x)  # no GAP head: Grad-CAM
    assert maps.shape == (2, 10, 10, 3)
    # d logits / d features of one example at a time: (classes, h, w, k)
    jac = jax.jit(jax.jacrev(lambda f: model.apply(v, f[None], method="classify")[0]))
    for b in range(2):
        alpha = np.asarray(jac(feats[b].astype(np.float32))).mean(axis=(1, 2))  # (classes, k)
        for c in range(3):
            np.testing.assert_allclose(maps[b, ..., c], feats[b] @ alpha[c], rtol=1e-4,
                                       atol=1e-6)


def test_upsampled_maps_keep_constant_maps_constant():
    maps = jnp.ones((2, 4, 4, 3)) * jnp.arange(3.0)[None, None, None, :]
    big = upsample_maps(maps, 16, 16)
    assert big.shape == (2, 16, 16, 3)
    np.testing.assert_allclose(big[..., 2], 2.0, rtol=1e-6)


# ------------------------------------------------------------------ pictures' inputs
@pytest.mark.parametrize("model,side,expected", [
    (LeNet5(), 32, {"relu1": (28, 28, 6), "relu2": (10, 10, 16)}),
    (ResNet20(blocks_per_stage=1), 16, {"stem": (16, 16, 16), "stage1": (16, 16, 16),
                                        "stage2": (8, 8, 32), "stage3": (4, 4, 64)}),
])
def test_activations_come_in_the_models_order(model, side, expected):
    v = numpy_variables(model, (1, side, side, 1))
    acts = activations(model, v, RNG.random((side, side, 1), np.float32))
    assert list(acts) == list(expected)  # not jit's sorted order
    assert {k: a.shape for k, a in acts.items()} == expected


def test_first_layer_filters_are_the_first_kernel_per_output_channel():
    for model, shape in ((LeNet5(), (6, 5, 5, 1)), (ResNet20(), (16, 3, 3, 1)),
                         (VGGSmall(widths=(8, 16)), (8, 3, 3, 1))):
        v = numpy_variables(model, (1, 16, 16, 1) if shape[1] == 3 else (1, 32, 32, 1))
        filters = first_layer_filters(model, v["params"])
        assert filters.shape == shape
        kernel = v["params"][model.first_conv_path[0]]
        kernel = kernel["conv"]["kernel"] if "conv" in kernel else kernel["kernel"]
        np.testing.assert_array_equal(filters[2], np.asarray(kernel)[..., 2])
