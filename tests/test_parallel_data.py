"""Data parallelism three ways (jit + NamedSharding, shard_map + pmean, pmap) gives the
parameters one device gets on the same global batches; dropout keys differ per device."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from dlfun import losses
from dlfun.errors import ShapeError
from dlfun.nn import Dropout, dropout_per_example, make_rnn
from dlfun.optim import make_optimizer
from dlfun.parallel import (METHODS, SmallCNN, SmallMLP, make_data_parallel, make_mesh,
                            model_axis_name)
from dlfun.train import create_train_state, make_train_step

STEPS, BATCH = 3, 16


class RowRNN(nn.Module):
    """The 8x8 images read row by row by a recurrent layer, a Dense head on its last state."""

    cell: str = "lstm"
    batch_norm: bool = False  # accepted for the shared parametrisation; no such layers here
    dropout_rate: float = 0.0
    axis_name: str | None = None

    @nn.compact
    def __call__(self, x, train: bool = False):
        carries, _ = make_rnn(self.cell, 8)(x[..., 0])
        h = carries[0].h if self.cell == "lstm" else carries[0]
        return nn.Dense(10)(h)


NETS = {"cnn": functools.partial(SmallCNN, channels=(4, 8), hidden=16),
        "mlp": functools.partial(SmallMLP, hidden=(32, 16)),
        "lstm": functools.partial(RowRNN, cell="lstm"), "gru": functools.partial(RowRNN, cell="gru")}


def batches():
    rng = np.random.default_rng(0)
    xs = rng.standard_normal((STEPS, BATCH, 8, 8, 1)).astype(np.float32)
    return xs, rng.integers(0, 10, (STEPS, BATCH)).astype(np.int32)


@functools.lru_cache(maxsize=None)
def single_device_run(net, regularised):
    """(initial state, final state) of the one-device run."""
    model = NETS[net](batch_norm=regularised, dropout_rate=0.3 if regularised else 0.0)
    xs, ys = batches()
    state0 = create_train_state(model, make_optimizer("momentum", 0.1), jax.random.key(0),
                                xs[0, :1])
    step = jax.jit(make_train_step(model, losses.softmax_cross_entropy))
    state = state0
    for i in range(STEPS):
        state, _ = step(state, (xs[i], ys[i]), jax.random.key(i))
    return state0, state


@pytest.mark.devices(8)
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("regularised", [False, True], ids=["plain", "batchnorm+dropout"])
@pytest.mark.parametrize("net", ["mlp", "cnn"])
def test_eight_devices_match_one_device(net, regularised, method):
    check_eight_devices_match_one_device(net, regularised, method)


@pytest.mark.devices(8)
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("net", ["lstm", "gru"])
def test_recurrent_nets_train_data_parallel_like_one_device(net, method):
    """The zero initial carry and the fused LSTM's own backward pass inside shard_map/pmap."""
    check_eight_devices_match_one_device(net, False, method)


@pytest.mark.devices(8)
def test_fused_lstm_gradient_of_replicated_weights_inside_shard_map_is_summed():
    """Without dlfun's step (weights left replicated), the hand-written backward pass still
    returns what JAX's autodiff would: the sum of the devices' gradients."""
    rnn = make_rnn("lstm", 8)
    x = jax.random.normal(jax.random.key(1), (16, 5, 3))
    params = jax.jit(rnn.init)(jax.random.key(0), x)

    def loss(params, x):
        carries, hs = rnn.apply(params, x)
        return jnp.sum(hs ** 2) + jnp.sum(carries[0].c)

    expected = jax.jit(jax.grad(loss))(params, x)  # jitted: eager costs seconds here
    mesh = make_mesh((8,), ("data",))
    per_device = jax.shard_map(jax.grad(loss), mesh=mesh, in_specs=(P(), P("data")),
                               out_specs=P())
    got = jax.jit(per_device)(params, x)
    for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(got)):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-6)


def check_eight_devices_match_one_device(net, regularised, method):
    state0, expected = single_device_run(net, regularised)
    model = NETS[net](batch_norm=regularised, dropout_rate=0.3 if regularised else 0.0,
                      axis_name=model_axis_name(method))
    dp = make_data_parallel(model, losses.softmax_cross_entropy, make_mesh((8,), ("data",)),
                            method)
    xs, ys = batches()
    state = dp.put_state(state0)
    for i in range(STEPS):
        state, metrics = dp.step(state, dp.put_batch((xs[i], ys[i])), jax.random.key(i))
    got = dp.get_state(state)
    for a, b in zip(jax.tree.leaves((expected.params, expected.batch_stats, expected.step)),
                    jax.tree.leaves((got.params, got.batch_stats, got.step))):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=1e-5, rtol=0)
    assert np.shape(dp.get_metrics(metrics)["loss"]) == ()


@pytest.mark.devices(8)
def test_dropout_masks_differ_per_device_and_are_reproducible():
    mesh = make_mesh((8,), ("data",))
    layer = Dropout(0.5, axis_name="data")

    def masks(key, x):
        return layer.apply({}, x, train=True, rngs={"dropout": key})

    f = jax.jit(jax.shard_map(masks, mesh=mesh, in_specs=(P(), P("data")),
                              out_specs=P("data")))
    x = jnp.ones((8 * 4, 32))
    out = np.asarray(f(jax.random.key(3), x)).reshape(8, 4, 32)
    assert len({out[d].tobytes() for d in range(8)}) == 8  # every device its own masks
    np.testing.assert_array_equal(out.reshape(32, 32), np.asarray(f(jax.random.key(3), x)))
    # ... and they are exactly the masks one device draws for the whole batch
    one = Dropout(0.5, per_example=True).apply({}, x, train=True,
                                              rngs={"dropout": jax.random.key(3)})
    np.testing.assert_array_equal(out.reshape(32, 32), np.asarray(one))
    assert 0.35 < float(np.mean(out == 0)) < 0.65


def test_dropout_per_example_depends_on_global_row_only():
    key, x = jax.random.key(0), jnp.ones((6, 5))
    whole = dropout_per_example(key, x, 0.5)
    tail = dropout_per_example(key, x[4:], 0.5, first_row=4)
    np.testing.assert_array_equal(np.asarray(whole[4:]), np.asarray(tail))
    kept = np.asarray(whole)[np.asarray(whole) != 0]
    np.testing.assert_allclose(kept, 2.0)  # inverted scaling 1 / (1 - rate)


@pytest.mark.devices(4)
def test_shard_map_step_averages_gradients_with_pmean():
    # make_train_step(axis_name=...) alone: the per-device gradient of a linear model is its
    # shard's; after the step every device holds the global-batch update.
    from dlfun.nn import Dense

    mesh = make_mesh((4,), ("data",))
    model = Dense(1)
    x = np.arange(8 * 3, dtype=np.float32).reshape(8, 3) / 10
    y = np.ones((8, 1), np.float32)
    state = create_train_state(model, make_optimizer("sgd", 0.1), jax.random.key(0), x[:1])
    expected, _ = make_train_step(model, losses.mse)(state, (x, y), jax.random.key(0))
    step = jax.shard_map(make_train_step(model, losses.mse, axis_name="data"), mesh=mesh,
                         in_specs=(P(), P("data"), P()), out_specs=(P(), P()))
    got, metrics = jax.jit(step)(state, (x, y), jax.random.key(0))
    np.testing.assert_allclose(got.params["kernel"], expected.params["kernel"], atol=1e-6)
    full_loss = float(losses.mse(model.apply({"params": state.params}, x), y))
    assert float(metrics["loss"]) == pytest.approx(full_loss, rel=1e-6)


@pytest.mark.devices(8)
def test_uneven_batch_is_refused_with_the_fix():
    dp = make_data_parallel(SmallMLP(hidden=(8,)), losses.softmax_cross_entropy,
                            make_mesh((8,), ("data",)), "jit")
    with pytest.raises(ShapeError, match="multiple of 8"):
        dp.put_batch((np.zeros((12, 64), np.float32), np.zeros((12,), np.int32)))
