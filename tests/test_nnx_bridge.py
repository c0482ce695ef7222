"""dlfun's Linen layers inside a Flax NNX model (``nnx.bridge.ToNNX``): partition metadata kept,
training with ``nnx.Optimizer`` equal to the same Linen model trained with optax."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from dlfun import losses
from dlfun.nn import Conv, Dense, TransformerBlock, make_rnn
from dlfun.parallel.rules import TENSOR_PARALLEL_RULES

T, F = 8, 16  # image rows read as time steps; width of the sequence layers


def layers():
    """The Linen layers both models use: conv, dense (sharded names), LSTM, transformer."""
    return dict(conv=Conv(4, 3, padding="SAME"),
                dense=Dense(F, kernel_axes=("embed", "mlp")),
                lstm=make_rnn("lstm", F),
                block=TransformerBlock(2, 2 * F, causal=True),
                head=Dense(3))


def forward(m, x):
    """images (B, 8, 8, 1) -> conv -> rows as steps (B, 8, 32) -> dense -> LSTM -> block ->
    mean over steps -> logits (B, 3). ``m`` has the layers as attributes."""
    h = m.conv(x)
    h = jax.nn.relu(m.dense(h.reshape(h.shape[0], T, -1)))
    _, h = m.lstm(h)
    return m.head(m.block(h).mean(axis=1))


class NNXModel(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        for name, layer in layers().items():
            setattr(self, name, nnx.bridge.ToNNX(layer, rngs=rngs))

    def __call__(self, x):
        return forward(self, x)


class LinenModel(nn.Module):
    def setup(self):
        for name, layer in layers().items():
            setattr(self, name, layer)

    def __call__(self, x):
        return forward(self, x)


def batch(seed):
    kx, ky = jax.random.split(jax.random.key(seed))
    return jax.random.normal(kx, (6, T, 8, 1)), jax.random.randint(ky, (6,), 0, 3)


@nnx.jit  # lazy_init runs the model once: faster as one program than op by op
def create_nnx_model(x):
    return nnx.bridge.lazy_init(NNXModel(nnx.Rngs(0)), x)


def make_nnx_model(x):
    # Variables with logical names would be placed on a mesh at creation (Flax's eager
    # sharding); keep them unplaced and let dlfun's rules tables place them later.
    with nnx.use_eager_sharding(False):
        return create_nnx_model(x)


def test_nnx_model_keeps_the_logical_axis_names():
    x, _ = batch(0)
    model = make_nnx_model(x)
    state = nnx.state(model, nnx.Param)
    qkv = state["block"]["attention"]["qkv_kernel"]
    assert qkv.get_metadata()["out_sharding"] == ("embed", "qkv", "heads", "kv")
    assert state["dense"]["kernel"].get_metadata()["out_sharding"] == ("embed", "mlp")
    specs = nnx.to_pure_dict(nnx.get_partition_spec(state))  # logical PartitionSpecs
    rules = TENSOR_PARALLEL_RULES  # heads -> model: Megatron attention
    assert nn.logical_to_mesh_axes(specs["block"]["attention"]["qkv_kernel"], rules) == \
        jax.sharding.PartitionSpec(None, None, "model", None)
    assert nn.logical_to_mesh_axes(specs["block"]["mlp"]["output_kernel"], rules) == \
        jax.sharding.PartitionSpec("model", None)


def test_nnx_training_equals_linen_training():
    x, y = batch(0)
    model = make_nnx_model(x)
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    linen = LinenModel()
    linen_shapes = jax.eval_shape(linen.init, jax.random.key(0), x)["params"]
    assert jax.tree.structure(nn.meta.unbox(linen_shapes)) == jax.tree.structure(params)
    tx = optax.adam(1e-2)

    @nnx.jit
    def nnx_step(model, optimizer, x, y):
        loss, grads = nnx.value_and_grad(
            lambda m: losses.softmax_cross_entropy(m(x), y))(model)
        optimizer.update(model, grads)
        return loss

    @jax.jit
    def linen_step(params, opt_state, x, y):
        loss, grads = jax.value_and_grad(
            lambda p: losses.softmax_cross_entropy(linen.apply({"params": p}, x), y))(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    opt_state = tx.init(params)
    nnx_losses, linen_losses = [], []
    for step in range(4):
        xb, yb = batch(step)
        nnx_losses.append(float(nnx_step(model, optimizer, xb, yb)))
        params, opt_state, loss = linen_step(params, opt_state, xb, yb)
        linen_losses.append(float(loss))
    np.testing.assert_allclose(nnx_losses, linen_losses, rtol=1e-6)
    trained = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    for a, b in zip(jax.tree.leaves(trained), jax.tree.leaves(params)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    moved = jax.tree.leaves(jax.tree.map(lambda a, b: jnp.max(jnp.abs(a - b)), trained,
                                         nnx.to_pure_dict(nnx.state(make_nnx_model(x), nnx.Param))))
    assert min(moved) > 0  # every parameter trained


def test_eager_sharding_needs_the_recipe():
    """Without ``use_eager_sharding(False)`` (or a mesh and rules for every name) Flax refuses
    variables with logical names: the recipe's first line is needed."""
    x, _ = batch(0)
    with nnx.use_eager_sharding(True), pytest.raises(ValueError, match="mesh"):
        nnx.bridge.lazy_init(NNXModel(nnx.Rngs(0)), x)
