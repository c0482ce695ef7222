"""check_scheme_fits: a scheme that would not divide its mesh is refused from the numbers
alone, with one line naming the flag and a value that works; what it refuses is exactly what
the mesh cannot split."""

import math

import flax.linen as nn
import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec

import experiments.model_parallel as model_parallel
from dlfun.errors import ConfigError
from dlfun.optim import make_optimizer
from dlfun.parallel import pixel_lm, schemes
from dlfun.parallel.nets import ShardedMLP, SmallCNN
from dlfun.parallel.rules import FSDP_RULES, HYBRID_RULES, TENSOR_PARALLEL_RULES
from dlfun.parallel.schemes import SchemeOptions, check_scheme_fits

DIGITS = np.zeros((2, 8, 8, 1), np.float32)  # the schemes' input shape (8x8 digit images)


@pytest.mark.parametrize("scheme,devices,batch,opts,message", [
    ("tensor", 6, 60, {}, "--scheme tensor splits the MLP's hidden units (256, 256) over "
                          "--devices 6, which does not divide them; use --devices 4"),
    ("tensor", 4, 60, {"mlp_blocks": (120, 50)}, "(120, 50) over --devices 4, which does "
                                                 "not divide them; use --devices 2"),
    ("tensor", 7, 70, {}, "over --devices 7, which does not divide them; use --devices 2"),
    ("fsdp", 3, 48, {}, "--scheme fsdp splits the MLP's hidden units (256, 256) over "
                        "--devices 3, which does not divide them; use --devices 2"),
    ("fsdp", 8, 64, {"mlp_width": 36}, "--scheme fsdp splits the features between the MLP's "
                                       "blocks (36) over --devices 8, which does not divide "
                                       "them; use --devices 4"),
    ("fsdp", 4, 10, {}, "--batch-size 10 cannot be split into --devices 4 equal shards; use "
                        "--batch-size 12 (a multiple of 4)"),
    ("hybrid", 4, 64, {"model_devices": 8}, "--scheme hybrid: --model-devices 8 is more than "
                                            "--devices 4; use --model-devices 4"),
    ("hybrid", 6, 60, {"model_devices": 4}, "--model-devices 4 does not divide --devices 6; "
                                            "use --model-devices 2"),
    ("hybrid", 6, 60, {"model_devices": 3}, "--model-devices 3 does not divide the CNN's 64 "
                                            "hidden units; use --model-devices 2"),
    ("hybrid", 8, 12, {"model_devices": 2}, "--batch-size 12 cannot be split into --devices 8 "
                                            "equal shards; use --batch-size 16"),
    ("pipeline", 8, 64, {"pipeline_blocks": 4}, "--scheme pipeline puts one stage on each of "
                                                "--devices 8, which needs at least 8 blocks; "
                                                "use --pipeline-blocks 8"),
    ("pipeline", 4, 60, {"microbatches": 8}, "--batch-size 60 cannot be split into "
                                             "--microbatches 8 equal micro-batches; use "
                                             "--batch-size 64 (a multiple of 8)"),
    ("dp_shard_map", 8, 100, {}, "--batch-size 100 cannot be split into --devices 8 equal "
                                 "shards; use --batch-size 104 (a multiple of 8)"),
    ("dp_jit", 0, 8, {}, "--devices 0 is out of range; use an integer >= 1"),
    ("ring", 2, 8, {}, "unknown scheme 'ring'; choose one of dp_jit"),
    ("tensor", 3, 48, {"model": "transformer"}, "--scheme tensor splits the transformer's "
                                                "heads, MLP hidden units and vocabulary (8, "
                                                "256, 32) over --devices 3, which does not "
                                                "divide them; use --devices 2"),
    ("fsdp", 8, 64, {"model": "transformer", "transformer_width": 36, "transformer_heads": 4},
     "--scheme fsdp splits the transformer's width, heads, MLP hidden units and vocabulary "
     "(36, 4, 256, 32) over --devices 8, which does not divide them; use --devices 4"),
    ("fsdp", 4, 10, {"model": "transformer"}, "--batch-size 10 cannot be split into --devices "
                                              "4 equal shards; use --batch-size 12"),
    ("hybrid", 4, 64, {"model": "transformer"}, "--scheme hybrid trains --model cnn, not "
                                                "transformer; use --scheme tensor or fsdp for "
                                                "the transformer"),
    ("pipeline", 4, 64, {"model": "cnn"}, "--scheme pipeline trains --model mlp, not cnn; "
                                          "use --scheme hybrid for the cnn"),
    ("tensor", 4, 64, {"model": "gpt"}, "unknown --model 'gpt'; choose auto, cnn, mlp, "
                                        "transformer"),
])
def test_a_scheme_that_does_not_fit_is_refused_in_one_line(scheme, devices, batch, opts,
                                                           message):
    with pytest.raises(ConfigError) as info:
        check_scheme_fits(scheme, devices, batch, SchemeOptions(**opts))
    assert message in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("scheme,devices,batch,opts", [
    ("tensor", 8, 8, {}), ("tensor", 3, 12, {"mlp_blocks": (96, 48)}), ("fsdp", 8, 64, {}),
    ("hybrid", 6, 60, {"model_devices": 2}), ("hybrid", 1, 1, {"model_devices": 1}),
    ("pipeline", 4, 60, {"microbatches": 5}), ("dp_pmap", 7, 7, {}),
    ("tensor", 8, 8, {"model": "transformer"}), ("fsdp", 8, 64, {"model": "transformer"}),
    ("hybrid", 4, 64, {"model": "cnn"}), ("tensor", 4, 64, {"model": "mlp"}),
])
def test_a_scheme_that_fits_is_accepted(scheme, devices, batch, opts):
    check_scheme_fits(scheme, devices, batch, SchemeOptions(**opts))


def test_the_suggested_value_is_itself_accepted():
    for devices in range(1, 17):
        for scheme in ("tensor", "fsdp"):
            try:
                check_scheme_fits(scheme, devices, 48)
            except ConfigError as e:
                fit = int(str(e).rsplit("--devices ", 1)[1].split()[0])
                assert fit < devices
                check_scheme_fits(scheme, fit, 48)


# What each scheme builds (as schemes.py does): mesh shape (data, model), network, rules.
def scheme_layout(scheme: str, devices: int, opts: SchemeOptions):
    mlp = ShardedMLP(opts.mlp_blocks, opts.mlp_width)
    if scheme == "tensor":
        return (1, devices), mlp, TENSOR_PARALLEL_RULES
    if scheme == "fsdp":
        return (devices, 1), mlp, FSDP_RULES
    m = opts.model_devices
    return (devices // m, m), SmallCNN(), HYBRID_RULES


def mesh_splits_every_parameter(shape, model, rules) -> bool:
    """Whether each parameter axis is divisible by the mesh axes flax's rules give it."""
    sizes = dict(zip(("data", "model"), shape))
    boxed = jax.eval_shape(lambda k: model.init(k, DIGITS[:1]), jax.random.key(0))["params"]
    logical = nn.get_partition_spec(boxed)
    shapes = nn.unbox(boxed)
    for spec, leaf in zip(jax.tree.leaves(logical, is_leaf=lambda x: isinstance(
            x, PartitionSpec)), jax.tree.leaves(shapes)):
        mesh_spec = nn.logical_to_mesh_axes(tuple(spec), rules)
        for dim, axes in zip(leaf.shape, tuple(mesh_spec) + (None,) * leaf.ndim):
            axes = () if axes is None else (axes,) if isinstance(axes, str) else axes
            if dim % math.prod(sizes[a] for a in axes):
                return False
    return True


@pytest.mark.parametrize("scheme,sizes", [
    ("tensor", {}), ("tensor", dict(mlp_blocks=(96, 48), mlp_width=36)),
    ("fsdp", {}), ("fsdp", dict(mlp_blocks=(96, 48), mlp_width=36)),
    ("fsdp", dict(mlp_blocks=(96,), mlp_width=36)), ("hybrid", {}),
])
def test_refused_exactly_where_the_mesh_cannot_split_the_parameters(scheme, sizes):
    # Every device count up to 12 (and model axis for the hybrid): the check's arithmetic
    # against flax's own logical-to-mesh resolution of the real networks' parameters.
    model_axes = range(1, 13) if scheme == "hybrid" else [1]
    outcomes = set()
    for devices in range(1, 13):
        for m in model_axes:
            opts = SchemeOptions(model_devices=m, **sizes)
            shape, model, rules = scheme_layout(scheme, devices, opts)
            expected = math.prod(shape) == devices and mesh_splits_every_parameter(
                shape, model, rules)
            try:
                check_scheme_fits(scheme, devices, None, opts)
                accepted = True
            except ConfigError:
                accepted = False
            assert accepted == expected, (scheme, devices, m)
            outcomes.add(accepted)
    assert outcomes == {True, False}  # the grid holds both kinds


@pytest.mark.parametrize("scheme,devices", [("tensor", 3), ("tensor", 6), ("tensor", 7),
                                            ("fsdp", 3), ("fsdp", 5), ("fsdp", 6)])
def test_what_is_refused_would_have_failed_in_jax(scheme, devices):
    # The scheme's builder without the check: jax's IndivisibleError (a ValueError).
    with pytest.raises(ConfigError):
        check_scheme_fits(scheme, devices)
    build = getattr(schemes, f"_{scheme}")
    with pytest.raises(ValueError, match="divisible|Indivisible|evenly"):
        build(devices, DIGITS, make_optimizer("sgd", 0.1), jax.random.key(0), SchemeOptions())


@pytest.mark.slow
def test_an_accepted_uneven_mesh_really_builds():
    # 6 devices as a 3 x 2 data x model mesh: accepted, and the scheme builds on all 6.
    opts = SchemeOptions(model_devices=2)
    check_scheme_fits("hybrid", 6, 12, opts)
    scheme = schemes.build_scheme("hybrid", 6, np.zeros((12, 8, 8, 1), np.float32),
                                  make_optimizer("sgd", 0.1), jax.random.key(0), opts)
    assert dict(scheme.mesh.shape) == {"data": 3, "model": 2}
    kernel = scheme.state.params["Dense_0"]["kernel"]
    assert kernel.sharding.spec == PartitionSpec(None, "model")
    assert {s.data.shape for s in kernel.addressable_shards} == {(kernel.shape[0], 32)}


@pytest.mark.parametrize("scheme", ["tensor", "fsdp"])
def test_transformer_refused_exactly_where_the_mesh_cannot_split_its_parameters(scheme):
    # As above, for the transformer (one set of sizes that leaves some counts fitting and
    # others not): the parameters' logical names are traced once, then resolved per count.
    opts = SchemeOptions(model="transformer", transformer_width=48, transformer_heads=4,
                         transformer_mlp=96)
    model = pixel_lm.pixel_transformer(2, 48, 4, 96)
    boxed = jax.eval_shape(lambda k: model.init(k, pixel_lm.sample_tokens()),
                           jax.random.key(0))["params"]
    leaves = list(zip(jax.tree.leaves(nn.get_partition_spec(boxed), is_leaf=lambda x:
                                      isinstance(x, PartitionSpec)),
                      jax.tree.leaves(nn.unbox(boxed))))
    rules, axis = ((TENSOR_PARALLEL_RULES, "model") if scheme == "tensor" else
                   (FSDP_RULES, "data"))
    outcomes = set()
    for devices in range(1, 13):
        expected = all(dim % devices == 0
                       for spec, leaf in leaves
                       for dim, axes in zip(leaf.shape, nn.logical_to_mesh_axes(tuple(spec),
                                                                                rules))
                       if axes == axis)
        try:
            check_scheme_fits(scheme, devices, None, opts)
            accepted = True
        except ConfigError:
            accepted = False
        assert accepted == expected, (scheme, devices)
        outcomes.add(accepted)
    assert outcomes == {True, False}


def test_model_parallel_flags_are_checked_at_parse_time():
    with pytest.raises(ConfigError, match=r"--devices 6, which does not divide them; use "
                                          r"--devices 4"):
        model_parallel.Config(scheme="tensor", devices=6, batch_size=60)
    with pytest.raises(ConfigError, match="--model-devices 8 is more than --devices 4"):
        model_parallel.Config(scheme="hybrid", devices=4, batch_size=64, model_devices=8)
    # --model-devices only matters to the hybrid scheme.
    model_parallel.Config(scheme="tensor", devices=4, batch_size=64, model_devices=8)
    with pytest.raises(ConfigError, match="--scheme pipeline trains --model mlp, not "
                                          "transformer"):
        model_parallel.Config(scheme="pipeline", model="transformer", devices=4, batch_size=64)
    with pytest.raises(ConfigError, match="--model must be one of auto, cnn, mlp, transformer"):
        model_parallel.Config(model="gpt")
    cfg = model_parallel.PRESETS["transformer"]
    assert (cfg.model, cfg.optimizer, cfg.tolerance) == ("transformer", "momentum", 1e-5)
