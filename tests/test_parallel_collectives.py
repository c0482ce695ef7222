"""Collective accounting from HLO: parsing by hand-written HLO, then real compiled steps
(data parallel = one gradient all-reduce; FSDP <= 1.5x that)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from jax.sharding import PartitionSpec as P

from dlfun import losses
from dlfun.optim import make_optimizer
from dlfun.parallel import (FSDP_RULES, ShardedMLP, SmallCNN, create_sharded_train_state,
                            make_data_parallel, make_mesh, make_sharded_train_step,
                            model_axis_name, state_shardings)
from dlfun.parallel.collectives import (Collective, array_bytes, find_collectives,
                                        group_size, ring_allreduce_bytes, summarize,
                                        tree_bytes)
from dlfun.train import create_train_state, make_train_step

HLO = """HloModule jit_step, entry_computation_layout={()->f32[]}

%add (x: f32[], y: f32[]) -> f32[] {
  %x = f32[] parameter(0)
  %y = f32[] parameter(1)
  ROOT %add.1 = f32[] add(%x, %y)
}

%body (p: (s32[], f32[8,4])) -> (s32[], f32[8,4]) {
  %p = (s32[], f32[8,4]{1,0}) parameter(0)
  %v = f32[8,4]{1,0} get-tuple-element(%p), index=1
  %cp = f32[8,4]{1,0} collective-permute(%v), channel_id=3, source_target_pairs={{0,1},{1,2}}
  ROOT %t = (s32[], f32[8,4]{1,0}) tuple(%i, %cp)
}

%cond (p: (s32[], f32[8,4])) -> pred[] {
  ROOT %c = pred[] constant(true)
}

ENTRY %main.9 (a: f32[10,32], b: f32[10]) -> f32[] {
  %ar = (f32[10,32]{1,0}, f32[10]{0}, f32[]) all-reduce(%a, %b, %s), channel_id=1, replica_groups=mesh['axis_0'=4,'axis_1'=2] {'axis_0'}, use_global_device_ids=true, to_apply=%add
  %ag = bf16[16,4]{1,0} all-gather(%q), channel_id=2, replica_groups=[2,4]<=[8], dimensions={0}
  %rs = f32[4,4]{1,0} reduce-scatter(%r), channel_id=4, replica_groups={{0,1},{2,3},{4,5},{6,7}}, dimensions={0}, to_apply=%add
  %w = (s32[], f32[8,4]{1,0}) while(%init), condition=%cond, body=%body, backend_config={"known_trip_count":{"n":"7"}}
  ROOT %r = f32[] constant(0)
}
"""


def test_array_bytes_reads_tuples_and_dtypes():
    assert array_bytes("(f32[10,32]{1,0}, f32[10]{0}, f32[])") == 4 * (320 + 10 + 1)
    assert array_bytes("bf16[16,4]{1,0}") == 2 * 64
    assert array_bytes("(s8[3], pred[2,2])") == 3 + 4


@pytest.mark.parametrize("line,n", [
    ("all-reduce(%a), replica_groups=mesh['axis_0'=4,'axis_1'=2] {'axis_0'}, x", 4),
    ("all-reduce(%a), replica_groups=mesh['axis_0'=4,'axis_1'=2] {'axis_0','axis_1'}", 8),
    ("all-gather(%q), replica_groups=[2,4]<=[8], dimensions={0}", 4),
    ("reduce-scatter(%r), replica_groups={{0,2,4,6},{1,3,5,7}}, dimensions={0}", 4),
    ("all-reduce(%a), channel_id=1, to_apply=%add", 8),  # no groups: every device
])
def test_group_size_formats(line, n):
    assert group_size(line, num_devices=8) == n


def test_find_collectives_counts_bytes_groups_and_loop_trips():
    found = find_collectives(HLO, num_devices=8)
    by_kind = {c.kind: c for c in found}
    assert by_kind["all-reduce"] == Collective("all-reduce", 4 * 331, 4, 1)
    assert by_kind["all-gather"] == Collective("all-gather", 128, 4, 1)
    assert by_kind["reduce-scatter"] == Collective("reduce-scatter", 64, 2, 1)
    assert by_kind["collective-permute"] == Collective("collective-permute", 128, 8, 7)
    # ring costs per device: 2(n-1)/n S, (n-1)/n S, (n-1) S_out, S per permute
    assert by_kind["all-reduce"].bytes_per_device == pytest.approx(1.5 * 4 * 331)
    assert by_kind["all-gather"].bytes_per_device == pytest.approx(0.75 * 128)
    assert by_kind["reduce-scatter"].bytes_per_device == pytest.approx(64)
    assert summarize(found)["collective-permute"] == dict(ops=7, result_bytes=7 * 128,
                                                          bytes_per_device=7 * 128.0)


@pytest.mark.devices(8)
def test_real_shard_map_collectives_are_all_found():
    mesh = make_mesh((4, 2), ("data", "model"))

    def f(x):
        a = lax.psum(x, "model")
        c = lax.psum_scatter(lax.all_gather(x, "data", tiled=True), "data", tiled=True)
        d = lax.all_to_all(x, "data", 0, 0, tiled=True)
        e = lax.ppermute(x, "data", [(i, (i + 1) % 4) for i in range(4)])
        return a + c + d + e

    g = jax.jit(jax.shard_map(f, mesh=mesh, in_specs=P("data", "model"),
                              out_specs=P("data", "model")))
    found = find_collectives(g.lower(jnp.ones((16, 8))).compile(), 8)
    kinds = {c.kind: c for c in found}
    assert set(kinds) == {"all-reduce", "all-gather", "reduce-scatter", "all-to-all",
                          "collective-permute"}
    block = 4 * 4 * 4  # one device's (4, 4) float32 block
    assert kinds["all-reduce"].group_size == 2 and kinds["all-reduce"].result_bytes == block
    assert kinds["all-gather"].group_size == 4 and kinds["all-gather"].result_bytes == 4 * block
    assert kinds["all-to-all"].result_bytes == block


def _dp_ratio(method, batch_norm):
    mesh = make_mesh((8,), ("data",))
    model = SmallCNN(channels=(8, 16), hidden=32, batch_norm=batch_norm,
                     axis_name=model_axis_name(method))
    x, y = np.zeros((16, 8, 8, 1), np.float32), np.zeros((16,), np.int32)
    state = create_train_state(model.clone(axis_name=None), make_optimizer("sgd", 0.1),
                               jax.random.key(0), x[:1])
    dp = make_data_parallel(model, losses.softmax_cross_entropy, mesh, method)
    compiled = dp.lower(dp.put_state(state), dp.put_batch((x, y)), jax.random.key(0)).compile()
    total = summarize(find_collectives(compiled, 8))["total"]["bytes_per_device"]
    return total / ring_allreduce_bytes(tree_bytes(state.params), 8)


@pytest.mark.devices(8)
@pytest.mark.parametrize("method", ["jit", "shard_map", "pmap"])
def test_data_parallel_sends_exactly_one_gradient_all_reduce(method):
    # No extra gathers: the only traffic is the gradient (plus a few scalars: loss, metrics).
    assert _dp_ratio(method, batch_norm=False) == pytest.approx(1.0, abs=0.002)


@pytest.mark.devices(8)
def test_batch_norm_adds_only_its_channel_statistics():
    ratio = _dp_ratio("jit", batch_norm=True)
    assert ratio > 1.0 and ratio < 1.03  # more than the gradient, by a few statistics


@pytest.mark.devices(8)
def test_fsdp_traffic_is_at_most_one_and_a_half_all_reduces():
    mesh = make_mesh((8, 1), ("data", "model"))
    model, tx = ShardedMLP((256, 256), 64), make_optimizer("adam", 1e-3)
    x, y = np.zeros((32, 64), np.float32), np.zeros((32,), np.int32)
    state = create_sharded_train_state(model, tx, jax.random.key(0), x[:1], mesh, FSDP_RULES)
    step = make_sharded_train_step(make_train_step(model, losses.softmax_cross_entropy), mesh,
                                   state_shardings(model, tx, x[:1], mesh, FSDP_RULES),
                                   FSDP_RULES)
    compiled = step.lower(state, (x, y), jax.random.key(0)).compile()
    found = summarize(find_collectives(compiled, 8))
    ratio = found["total"]["bytes_per_device"] / ring_allreduce_bytes(tree_bytes(state.params),
                                                                      8)
    assert "all-gather" in found  # parameters are gathered for compute
    assert ratio >= 1.0 and ratio <= 1.5 + 1e-3
