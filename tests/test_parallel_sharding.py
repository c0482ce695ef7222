"""Model sharding from logical axis names: tensor parallel, FSDP and the hybrid CNN give the
unsharded numbers, with parameters created sharded and per-device memory ~ 1/N."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from dlfun import losses
from dlfun.nn import TransformerLM
from dlfun.optim import make_optimizer
from dlfun.parallel import (FSDP_RULES, HYBRID_RULES, TENSOR_PARALLEL_RULES, ShardedMLP,
                            SmallCNN, create_sharded_train_state, find_collectives,
                            make_mesh, make_sharded_train_step, max_bytes_per_device,
                            pixel_lm, state_shardings)
from dlfun.parallel.collectives import tree_bytes
from dlfun.parallel.rules import logical_to_shardings
from dlfun.parallel.sharding import layout_context
from dlfun.train import create_train_state, make_train_step

N = 8
pytestmark = pytest.mark.devices(N)  # every test here lays a mesh over all 8 devices


def data(shape):
    rng = np.random.default_rng(0)
    return (rng.standard_normal((3,) + shape).astype(np.float32),
            rng.integers(0, 10, (3, shape[0])).astype(np.int32))


def train_both(model, mesh, rules, shape, batch_axes="data", tx=None):
    """(sharded final state, unsharded final state, sharded initial state's params)."""
    tx = tx or make_optimizer("adam", 1e-2)
    xs, ys = data(shape)
    ref = create_train_state(model, tx, jax.random.key(0), xs[0, :1])
    state = create_sharded_train_state(model, tx, jax.random.key(0), xs[0, :1], mesh, rules)
    initial = {"per_device": max_bytes_per_device(state.params), "specs":
               jax.tree.map(lambda a: a.sharding.spec, state.params)}
    step = make_train_step(model, losses.softmax_cross_entropy)
    sharded = make_sharded_train_step(step, mesh, state_shardings(model, tx, xs[0, :1], mesh,
                                                                  rules), rules, batch_axes)
    plain = jax.jit(step)
    for i in range(3):
        state, _ = sharded(state, (xs[i], ys[i]), jax.random.key(i))
        ref, _ = plain(ref, (xs[i], ys[i]), jax.random.key(i))
    return state, ref, initial


def assert_same(state, ref, atol=1e-5):
    for a, b in zip(jax.tree.leaves((ref.params, ref.opt_state, ref.batch_stats)),
                    jax.tree.leaves((state.params, state.opt_state, state.batch_stats))):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=atol, rtol=0)


def test_logical_names_map_through_the_rules_table():
    mesh = make_mesh((2, 4), ("data", "model"))
    specs = {"k": P("embed", "mlp"), "b": P("mlp"), "c": P("embed", "classes")}
    tp = logical_to_shardings(specs, mesh, TENSOR_PARALLEL_RULES)
    assert (tp["k"].spec, tp["b"].spec, tp["c"].spec) == (P(None, "model"), P("model"),
                                                          P(None, None))
    fsdp = logical_to_shardings(specs, mesh, FSDP_RULES)  # one mesh axis used once per array
    assert (fsdp["k"].spec, fsdp["c"].spec) == (P(None, "data"), P("data", None))


def test_tensor_parallel_matches_unsharded_and_splits_the_weights():
    mesh = make_mesh((1, N), ("data", "model"))
    state, ref, initial = train_both(ShardedMLP((256, 256), 64), mesh, TENSOR_PARALLEL_RULES,
                                     (32, 64))
    assert_same(state, ref)
    # first matrix by columns, second by rows; created that way (not gathered then split)
    assert initial["specs"]["Dense_0"]["kernel"] == P(None, "model")
    assert initial["specs"]["Dense_1"]["kernel"] == P("model", None)
    total = tree_bytes(ref.params)
    assert initial["per_device"] <= (1 / N + 0.05) * total
    assert max_bytes_per_device(state.opt_state) <= (1 / N + 0.05) * tree_bytes(ref.opt_state)


def test_tensor_parallel_needs_one_all_reduce_per_block_forward():
    mesh = make_mesh((1, N), ("data", "model"))
    model, tx = ShardedMLP((256, 256), 64), make_optimizer("sgd", 0.1)
    x = np.zeros((32, 64), np.float32)
    state = create_sharded_train_state(model, tx, jax.random.key(0), x[:1], mesh,
                                       TENSOR_PARALLEL_RULES)
    shard = state_shardings(model, tx, x[:1], mesh, TENSOR_PARALLEL_RULES)
    fwd = jax.jit(lambda s, x: model.apply({"params": s.params}, x), in_shardings=(shard, None))
    found = find_collectives(fwd.lower(state, x).compile(), N)
    # two blocks -> two all-reduces of the block outputs (32 x 64 and 32 x 10 floats)
    assert sorted(c.result_bytes for c in found if c.kind == "all-reduce") == [32 * 10 * 4,
                                                                              32 * 64 * 4]
    assert {c.kind for c in found} == {"all-reduce"}


def test_fsdp_matches_unsharded_with_params_and_optimizer_state_split():
    mesh = make_mesh((N, 1), ("data", "model"))
    state, ref, initial = train_both(ShardedMLP((256, 256), 64), mesh, FSDP_RULES, (32, 64))
    assert_same(state, ref)
    assert initial["per_device"] <= (1 / N + 0.05) * tree_bytes(ref.params)
    assert max_bytes_per_device(state.opt_state) <= (1 / N + 0.05) * tree_bytes(ref.opt_state)


def test_hybrid_cnn_matches_single_device():
    mesh = make_mesh((4, 2), ("data", "model"))
    model = SmallCNN(channels=(8, 16), hidden=32, batch_norm=True, dropout_rate=0.3)
    state, ref, initial = train_both(model, mesh, HYBRID_RULES, (16, 8, 8, 1),
                                     batch_axes=("data", "model"))
    assert_same(state, ref)
    specs = initial["specs"]
    assert specs["Conv_0"]["kernel"] == P()  # convolutions: data parallel, replicated
    assert specs["Dense_0"]["kernel"] == P(None, "model")  # fully connected: model parallel


def test_hybrid_re_lays_out_activations_between_conv_and_dense():
    mesh = make_mesh((4, 2), ("data", "model"))
    model, tx = SmallCNN(channels=(8, 16), hidden=32), make_optimizer("sgd", 0.1)
    x, y = np.zeros((16, 8, 8, 1), np.float32), np.zeros((16,), np.int32)
    state = create_sharded_train_state(model, tx, jax.random.key(0), x[:1], mesh, HYBRID_RULES)
    step = make_sharded_train_step(make_train_step(model, losses.softmax_cross_entropy), mesh,
                                   state_shardings(model, tx, x[:1], mesh, HYBRID_RULES),
                                   HYBRID_RULES, ("data", "model"))
    found = find_collectives(step.lower(state, (x, y), jax.random.key(0)).compile(), 8)
    flat_features = 2 * 2 * 16
    gathers = [c for c in found if c.kind == "all-gather"]
    # the conv output of each data shard (16/4 rows) is gathered over the 2 model devices;
    # no gather spans more than the model axis (XLA may also gather the small logits)
    assert (2, 4 * flat_features * 4) in [(c.group_size, c.result_bytes) for c in gathers]
    assert {c.group_size for c in gathers} == {2}
    # conv gradients are reduced over all 8 devices, dense ones over the 4 data replicas
    assert {c.group_size for c in found if c.kind == "all-reduce"} >= {8, 4}


@pytest.mark.parametrize("rules", [TENSOR_PARALLEL_RULES, FSDP_RULES])
def test_initial_sharded_state_equals_create_train_state(rules):
    mesh = make_mesh((2, 4), ("data", "model"))
    model, tx = ShardedMLP((64,), 32), make_optimizer("adam", 1e-3)
    x = np.zeros((1, 16), np.float32)
    a = create_train_state(model, tx, jax.random.key(5), x)
    b = create_sharded_train_state(model, tx, jax.random.key(5), x, mesh, rules)
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))


# The transformer: Megatron tensor parallelism and FSDP from the layers' own logical names.
LM = dict(vocab_size=32, d_model=32, num_heads=8, num_layers=2, mlp_dim=64, max_len=16)
LM_BATCH, LM_STEPS = 64, 2  # FSDP gathers weights when activations outweigh them
# LLVM's optimisation level only: the same HLO, collectives and float32 arithmetic, compiled
# in half the time (these compiles are most of the tests' CPU time).
FAST_COMPILE = {"xla_backend_optimization_level": 0}


@pytest.fixture(scope="module")
def lm_reference():
    """(model, tx, batches, initial state, one-device final state, its losses); plain SGD,
    since Adam divides by each gradient's size and so magnifies the rounding of near-zero
    gradients."""
    model, tx = TransformerLM(**LM), make_optimizer("sgd", 0.5)
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, LM["vocab_size"], (LM_STEPS, LM_BATCH, LM["max_len"] + 1))
    batches = [(t[:, :-1].astype(np.int32), t[:, 1:].astype(np.int32)) for t in tokens]
    init = jax.jit(lambda k: create_train_state(model, tx, k, batches[0][0][:1]))
    # host copy: the sharded steps donate their states, whose buffers may alias these
    initial = jax.device_get(init.lower(jax.random.key(0)).compile(FAST_COMPILE)(
        jax.random.key(0)))
    step = jax.jit(make_train_step(model, losses.softmax_cross_entropy))
    step = step.lower(initial, batches[0], jax.random.key(0)).compile(FAST_COMPILE)
    state, seen = initial, []
    for i, batch in enumerate(batches):
        state, metrics = step(state, batch, jax.random.key(i))
        seen.append(float(metrics["loss"]))
    return model, tx, batches, initial, state, seen


def train_lm_sharded(lm_reference, mesh, rules):
    """(final sharded state, its losses, initial parameter specs, the compiled step); the
    one-device initial state placed by the rules (creating it sharded is tested above)."""
    model, tx, batches, initial, _, _ = lm_reference
    shardings = state_shardings(model, tx, batches[0][0][:1], mesh, rules)
    state = jax.device_put(initial, shardings)
    specs = jax.tree.map(lambda a: a.sharding.spec, state.params)
    step = make_sharded_train_step(make_train_step(model, losses.softmax_cross_entropy),
                                   mesh, shardings, rules)
    step = step.lower(state, batches[0], jax.random.key(0)).compile(FAST_COMPILE)
    seen = []
    for i, batch in enumerate(batches):
        state, metrics = step(state, batch, jax.random.key(i))
        seen.append(float(metrics["loss"]))
    return state, seen, specs, step


def assert_lm_matches(lm_reference, state, seen):
    ref, ref_losses = lm_reference[4:]
    np.testing.assert_allclose(seen, ref_losses, atol=1e-5, rtol=0)
    for a, b in zip(jax.tree.leaves(ref.params), jax.tree.leaves(state.params)):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=1e-5, rtol=0)
    assert max_bytes_per_device(state.params) <= (1 / N + 0.05) * tree_bytes(ref.params)


def test_transformer_tensor_parallel_matches_one_device_and_splits_by_heads(lm_reference):
    mesh = make_mesh((1, N), ("data", "model"))
    state, seen, specs, compiled = train_lm_sharded(lm_reference, mesh, TENSOR_PARALLEL_RULES)
    assert_lm_matches(lm_reference, state, seen)
    attention, mlp = specs["block_0"]["attention"], specs["block_0"]["mlp"]
    # Q, K, V: (embed, qkv, heads, kv) split by heads; the output projection by its rows
    assert attention["qkv_kernel"] == P(None, None, "model", None)
    assert attention["out_kernel"] == P("model", None, None)
    assert (mlp["hidden_kernel"], mlp["output_kernel"]) == (P(None, "model"), P("model", None))
    assert specs["embed"]["embedding"] == P("model", None)  # vocabulary-parallel
    # the step's traffic is the Megatron ideal plus only the loss's small (B, T) reductions
    ideal = pixel_lm.ideal_traffic("tensor", N, LM_BATCH, LM["num_layers"], LM["d_model"],
                                   tree_bytes(state.params), seq_len=LM["max_len"])
    sent = sum(c.bytes_per_device for c in find_collectives(compiled, N))
    assert ideal["bytes_per_device"] <= sent <= 1.1 * ideal["bytes_per_device"]


def test_transformer_tensor_parallel_forward_has_two_all_reduces_per_block(lm_reference):
    model, tx, batches, initial, _, _ = lm_reference
    mesh = make_mesh((1, N), ("data", "model"))
    shardings = state_shardings(model, tx, batches[0][0][:1], mesh, TENSOR_PARALLEL_RULES)

    def forward(params, tokens):
        with layout_context(mesh, TENSOR_PARALLEL_RULES):
            return model.apply({"params": params}, tokens)

    params = jax.device_put(initial.params, shardings.params)
    found = find_collectives(jax.jit(forward).lower(params, batches[0][0]).compile(
        FAST_COMPILE), N)
    # one all-reduce of the (B, T, d) activations after attention and one after the MLP in
    # each block, and one for the vocabulary-split embedding lookup; nothing else
    activations = LM_BATCH * LM["max_len"] * LM["d_model"] * 4
    assert [(c.kind, c.result_bytes) for c in found] == \
        [("all-reduce", activations)] * (2 * LM["num_layers"] + 1)


def test_transformer_fsdp_matches_one_device_with_every_parameter_split(lm_reference):
    mesh = make_mesh((N, 1), ("data", "model"))
    state, seen, specs, compiled = train_lm_sharded(lm_reference, mesh, FSDP_RULES)
    assert_lm_matches(lm_reference, state, seen)
    assert all("data" in spec for spec in jax.tree.leaves(
        specs, is_leaf=lambda s: isinstance(s, P)))
    assert specs["block_0"]["attention"]["qkv_kernel"] == P("data", None, None, None)
    found = find_collectives(compiled, N)
    assert {c.kind for c in found} <= {"all-gather", "all-reduce", "reduce-scatter"}
    # at least the parameters' all-gather and the gradients' reduce-scatter; XLA:CPU
    # all-reduces the gradients instead (1.5x)
    ideal = pixel_lm.ideal_traffic("fsdp", N, LM_BATCH, LM["num_layers"], LM["d_model"],
                                   tree_bytes(state.params))
    sent = sum(c.bytes_per_device for c in found)
    assert 0.99 * ideal["bytes_per_device"] <= sent <= 1.6 * ideal["bytes_per_device"]


def test_pixel_tokens_are_the_grey_levels_after_a_start_token():
    images = np.random.default_rng(1).integers(0, 17, (3, 8, 8, 1)) / 16.0
    inputs, targets = pixel_lm.pixel_tokens(jnp.asarray(images, jnp.float32))
    levels = (images.reshape(3, 64) * 16).round().astype(np.int32)
    np.testing.assert_array_equal(np.asarray(targets), levels)
    np.testing.assert_array_equal(np.asarray(inputs)[:, 1:], levels[:, :-1])
    assert (np.asarray(inputs)[:, 0] == pixel_lm.START).all() and pixel_lm.START >= 17
