"""GPipe over a ``stage`` axis: the schedule, its bubble, and gradients equal to the
unpipelined network's (MLP and CNN, stages of different shapes)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from dlfun import losses
from dlfun.errors import ConfigError, ShapeError
from dlfun.nn import Conv, Dense, max_pool
from dlfun.parallel import find_collectives, make_mesh
from dlfun.parallel import pipeline as pp


def test_schedule_runs_each_microbatch_once_per_stage_in_order():
    sched = pp.gpipe_schedule(3, 4)
    assert sched.shape == (6, 3)
    for s in range(3):
        assert list(sched[:, s][sched[:, s] >= 0]) == [0, 1, 2, 3]
        assert list(np.flatnonzero(sched[:, s] >= 0)) == [s, s + 1, s + 2, s + 3]


@pytest.mark.parametrize("S,M", [(1, 4), (2, 1), (4, 4), (8, 4), (4, 16)])
def test_bubble_fraction_is_s_minus_1_over_m_plus_s_minus_1(S, M):
    assert pp.bubble_fraction(S, M) == pytest.approx((S - 1) / (M + S - 1))


def test_split_layers_balances_and_refuses_too_many_stages():
    layers = [Dense(4) for _ in range(5)]
    assert [len(s.layers) for s in pp.split_layers(layers, 3)] == [2, 2, 1]
    with pytest.raises(ConfigError, match="between 1 and 5"):
        pp.split_layers(layers, 6)


def flatten(x):
    return x.reshape(x.shape[0], -1)


def pool(x):
    return max_pool(x, 2)


MLP = [flatten, Dense(32), nn.relu, Dense(24), nn.relu, Dense(32), nn.relu, Dense(10)]
CNN = [Conv(4, 3, padding="SAME"), nn.relu, pool, Conv(8, 3, padding="SAME"), nn.relu, pool,
       flatten, Dense(16), nn.relu, Dense(10)]


@pytest.mark.devices(4)
@pytest.mark.parametrize("layers,S,M", [(MLP, 4, 4), (MLP, 2, 3), (CNN, 4, 2)],
                         ids=["mlp-S4-M4", "mlp-S2-M3", "cnn-S4-M2"])
def test_pipelined_gradients_equal_unpipelined(layers, S, M):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((12, 8, 8, 1)), jnp.float32)
    y = jnp.asarray(rng.integers(0, 10, 12), jnp.int32)
    params, plan = pp.init_stages(pp.split_layers(layers, S), jax.random.key(0), x[:1])
    ref_loss, ref_grads = jax.jit(jax.value_and_grad(  # jitted: eager costs seconds here
        lambda p: losses.softmax_cross_entropy(pp.sequential_apply(plan, p, x), y)))(params)
    mesh = make_mesh((S,), ("stage",))
    stacked = jax.device_put(pp.stack_params(plan, params), NamedSharding(mesh, P("stage")))
    loss = pp.make_pipeline_loss(plan, losses.softmax_cross_entropy, mesh, M)
    value, grads = jax.jit(jax.value_and_grad(loss))(stacked, x, y)
    assert float(value) == pytest.approx(float(ref_loss), rel=1e-6)
    for a, b in zip(jax.tree.leaves(ref_grads), jax.tree.leaves(pp.unstack_params(plan, grads))):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=1e-6, rtol=0)
    assert grads.sharding.spec == P("stage")  # each device keeps only its stage's gradient


@pytest.mark.devices(4)
def test_pipeline_passes_activations_with_ppermute_each_tick():
    S, M = 4, 4
    x = jnp.zeros((8, 64))
    params, plan = pp.init_stages(pp.split_layers(MLP[1:], S), jax.random.key(0), x[:1])
    mesh = make_mesh((S,), ("stage",))
    loss = pp.make_pipeline_loss(plan, losses.softmax_cross_entropy, mesh, M)
    f = jax.jit(jax.grad(loss))
    found = find_collectives(f.lower(pp.stack_params(plan, params), x,
                                     jnp.zeros(8, jnp.int32)).compile(), S)
    permutes = [c for c in found if c.kind == "collective-permute"]
    # forward and backward: one permute of a (micro-batch, width) block per tick, M+S-1 ticks
    assert sum(c.executions for c in permutes) == 2 * (M + S - 1)
    assert {c.result_bytes for c in permutes} == {(8 // M) * plan.width * 4}


@pytest.mark.devices(2)
def test_uneven_microbatches_are_refused():
    params, plan = pp.init_stages(pp.split_layers(MLP[1:], 2), jax.random.key(0),
                                  jnp.zeros((1, 64)))
    loss = pp.make_pipeline_loss(plan, losses.softmax_cross_entropy,
                                 make_mesh((2,), ("stage",)), 3)
    with pytest.raises(ShapeError, match="multiple of 3"):
        loss(pp.stack_params(plan, params), jnp.zeros((8, 64)), jnp.zeros(8, jnp.int32))
