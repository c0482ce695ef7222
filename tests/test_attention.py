"""Attention, multi-head attention, norms and position encodings against float64 numpy and
PyTorch with copied weights; masks give exactly zero weight and gradient."""

import flax.linen as nn
import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest

import attention_reference as ref
from dlfun.errors import ConfigError, ShapeError
from dlfun.nn import (KVCache, LayerNorm, LearnedPositions, MultiHeadAttention, RMSNorm,
                      apply_rope, attention_weights, causal_mask, combine_masks,
                      dot_product_attention, init_kv_cache, padding_mask, sinusoidal_encoding)


def data(*shape, seed=0, dtype=np.float64):
    return np.random.default_rng(seed).normal(size=shape).astype(dtype)


def count(params):
    return sum(a.size for a in jax.tree.leaves(params))


def shapes_of(module, *args, **kw):
    """Parameters and output of ``module`` as shapes only (``jax.eval_shape``: no compiling)."""
    variables = jax.eval_shape(module.init, jax.random.key(0), *args, **kw)
    out = jax.eval_shape(lambda v: module.apply(v, *args, **kw), variables)
    return variables["params"], out


# ------------------------------------------------------------------------------- masks
def test_causal_and_padding_masks():
    np.testing.assert_array_equal(causal_mask(3, 4), np.tril(np.ones((3, 4), bool)))
    np.testing.assert_array_equal(causal_mask(2, 5, offset=2),
                                  [[1, 1, 1, 0, 0], [1, 1, 1, 1, 0]])
    pad = padding_mask(jnp.array([2, 0]), 3)
    assert pad.shape == (2, 1, 1, 3)
    np.testing.assert_array_equal(pad[:, 0, 0], [[1, 1, 0], [0, 0, 0]])
    both = combine_masks(pad, None, causal_mask(3))
    assert both.shape == (2, 1, 3, 3) and combine_masks(None) is None
    np.testing.assert_array_equal(both[0, 0], [[1, 0, 0], [1, 1, 0], [1, 1, 0]])


# -------------------------------------------------------------- attention vs float64 numpy
@pytest.mark.parametrize("batch,T,S", [((), 4, 4), ((2,), 5, 3), ((2, 3), 4, 6)])
def test_reference_attention_matches_float64_numpy(batch, T, S):
    H, D = 2, 4
    q, k, v = data(*batch, T, H, D), data(*batch, S, H, D, seed=1), data(*batch, S, H, 3, seed=2)
    lengths = np.arange(S, S - int(np.prod(batch, dtype=int)), -1).reshape(batch) if batch \
        else np.array(S)
    pad = np.arange(S) < lengths[..., None]  # (*batch, S)
    mask = pad[..., None, None, :] & ref.causal(T, S)  # (*batch, 1, T, S)
    want_out, want_w = ref.attention(q, k, v, mask)
    with jax.enable_x64(True):
        out = dot_product_attention(q, k, v, mask, impl="reference")
        w = attention_weights(q, k, pad[..., None, None, :], causal=True)
        assert out.shape == (*batch, T, H, 3) and out.dtype == jnp.float64
        np.testing.assert_allclose(out, want_out, rtol=0, atol=1e-10)
        np.testing.assert_allclose(w, want_w, rtol=0, atol=1e-10)


def test_fully_masked_row_gives_zero_output_and_zero_gradients():
    """Row 1 of batch 1 sees no key: its weights and output are 0 (not NaN, not the mean of
    v) and no gradient flows from it."""
    q, k, v = (jnp.asarray(data(2, 3, 1, 4, seed=s), jnp.float32) for s in range(3))
    mask = jnp.ones((2, 1, 3, 3), bool).at[1, 0, 1].set(False)
    for impl in ("reference", "xla"):
        def row_loss(q, k, v):
            return jnp.sum(dot_product_attention(q, k, v, mask, impl=impl)[1, 1] ** 2 + 1.0)

        out = jax.jit(dot_product_attention, static_argnames="impl")(q, k, v, mask, impl=impl)
        np.testing.assert_array_equal(out[1, 1], 0.0)
        assert np.isfinite(out).all()
        for g in jax.jit(jax.grad(row_loss, (0, 1, 2)))(q, k, v):
            np.testing.assert_array_equal(g, 0.0)
    np.testing.assert_array_equal(attention_weights(q, k, mask)[1, 0, 1], 0.0)


@pytest.mark.parametrize("impl", ["reference", "xla", "auto"])
def test_masked_keys_get_exactly_zero_weight_and_gradient(impl):
    B, T, S, H, D = 2, 4, 5, 2, 3
    q, k, v = (jnp.asarray(data(B, n, H, D, seed=s), jnp.float32)
               for s, n in enumerate((T, S, S)))
    lengths = jnp.array([3, 5])
    mask = padding_mask(lengths, S)
    np.testing.assert_array_equal(attention_weights(q, k, mask)[0, :, :, 3:], 0.0)
    probe = jnp.asarray(data(B, T, H, D, seed=7), jnp.float32)

    def loss(k, v):
        return jnp.sum(dot_product_attention(q, k, v, mask, impl=impl) * probe)

    gk, gv = jax.jit(jax.grad(loss, (0, 1)))(k, v)
    np.testing.assert_array_equal(gk[0, 3:], 0.0)  # exactly, not merely small
    np.testing.assert_array_equal(gv[0, 3:], 0.0)
    assert np.abs(gk[0, :3]).min() > 0 and np.abs(gv[1]).min() > 0
    # changing the masked keys and values changes nothing
    k2, v2 = k.at[0, 3:].set(1e4), v.at[0, 3:].set(-1e4)
    np.testing.assert_array_equal(dot_product_attention(q, k2, v2, mask, impl=impl),
                                  dot_product_attention(q, k, v, mask, impl=impl))


@pytest.mark.parametrize("causal", [False, True])
def test_xla_and_auto_implementations_equal_the_reference(causal):
    """On CPU: jax.nn.dot_product_attention (XLA) and "auto" against the reference, values
    and gradients, with a padding mask that empties one row."""
    B, T, S, H, D = 2, 6, 6, 3, 8
    q, k, v = (jnp.asarray(data(B, T, H, D, seed=s), jnp.float32) for s in range(3))
    mask = padding_mask(jnp.array([4, 6]), S) & jnp.ones((1, H, T, S), bool).at[0, 1, 2].set(
        False)
    probe = jnp.asarray(data(B, T, H, D, seed=9), jnp.float32)
    results = {}
    for impl in ("reference", "xla", "auto"):
        def attend(q, k, v):
            return dot_product_attention(q, k, v, mask, causal=causal, impl=impl)

        @jax.jit
        def value_and_grads(q, k, v):
            return attend(q, k, v), jax.grad(lambda *a: jnp.sum(attend(*a) * probe), (0, 1, 2))(
                q, k, v)

        results[impl] = value_and_grads(q, k, v)
    for impl in ("xla", "auto"):
        for got, want in zip(jax.tree.leaves(results[impl]), jax.tree.leaves(results["reference"])):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_attention_rejects_bad_shapes_masks_and_impls():
    q = jnp.zeros((2, 3, 4, 8))
    with pytest.raises(ShapeError, match="disagree"):
        dot_product_attention(q, jnp.zeros((2, 3, 2, 8)), jnp.zeros((2, 3, 2, 8)))
    with pytest.raises(ShapeError, match="heads, head_dim"):
        dot_product_attention(q[0, 0], q[0, 0], q[0, 0])
    with pytest.raises(ShapeError, match="does not broadcast"):
        dot_product_attention(q, q, q, jnp.ones((3, 3, 3), bool))
    with pytest.raises(ShapeError, match="boolean"):
        dot_product_attention(q, q, q, jnp.ones((3, 3)))
    with pytest.raises(ConfigError, match="impl"):
        dot_product_attention(q, q, q, impl="flash")


def test_scaled_dot_product_attention_matches_torch():
    torch = pytest.importorskip("torch", reason="PyTorch cross-check needs torch installed")
    B, T, S, H, D = 2, 5, 7, 3, 4
    q, k, v = data(B, T, H, D), data(B, S, H, D, seed=1), data(B, S, H, D, seed=2)
    mask = np.asarray(padding_mask(jnp.array([7, 4]), S)) & np.ones((1, H, T, S), bool)
    tq, tk, tv = (torch.tensor(a.transpose(0, 2, 1, 3)) for a in (q, k, v))  # (B, H, L, D)
    for causal, m in ((False, mask), (True, None)):
        want = torch.nn.functional.scaled_dot_product_attention(
            tq, tk[:, :, :T] if causal else tk, tv[:, :, :T] if causal else tv,
            attn_mask=None if m is None else torch.tensor(m), is_causal=causal)
        got = dot_product_attention(*(jnp.asarray(a, jnp.float32) for a in
                                      (q, k[:, :T] if causal else k, v[:, :T] if causal else v)),
                                    None if m is None else jnp.asarray(m), causal=causal)
        np.testing.assert_allclose(got, want.numpy().transpose(0, 2, 1, 3), rtol=1e-5, atol=1e-6)


# -------------------------------------------------------------------- multi-head attention
@pytest.mark.parametrize("shape", [(5, 12), (2, 5, 12), (2, 3, 5, 12)])
def test_mha_self_attention_shapes_and_parameter_count(shape):
    E, H = 12, 3
    x = jnp.ones(shape)
    params, out = shapes_of(MultiHeadAttention(H), x)
    assert out.shape == shape and count(params) == 4 * E * E + 4 * E
    params, out = shapes_of(MultiHeadAttention(H, head_dim=5, out_features=7), x)
    assert out.shape == shape[:-1] + (7,)
    assert count(params) == 3 * E * H * 5 + 3 * H * 5 + H * 5 * 7 + 7
    params, _ = shapes_of(MultiHeadAttention(H, use_bias=False), x)
    assert count(params) == 4 * E * E


def test_mha_cross_attention_shapes_and_parameter_count():
    E, Ec, H = 8, 6, 2
    x, ctx = jnp.ones((3, 4, E)), jnp.ones((3, 9, Ec))
    params, out = shapes_of(MultiHeadAttention(H), x, ctx)
    assert out.shape == (3, 4, E)
    assert sorted(params) == ["kv_bias", "kv_kernel", "out_bias", "out_kernel", "query_bias",
                              "query_kernel"]
    assert count(params) == E * E + 2 * Ec * E + 3 * E + E * E + E


@pytest.mark.parametrize("cross,rope", [(False, False), (False, True), (True, False)])
def test_mha_matches_float64_numpy(cross, rope):
    B, T, S, E, H = 2, 5, 4, 8, 2
    x, ctx = data(B, T, E), data(B, S, E, seed=1)
    visible = ref.causal(T) if not cross else np.asarray(padding_mask(jnp.array([4, 2]), S))
    with jax.enable_x64(True):
        mha = MultiHeadAttention(H, causal=not cross, rope_base=100.0 if rope else None,
                                 param_dtype=jnp.float64, bias_init=nn.initializers.normal(1.0))
        args = (x, ctx) if cross else (x,)
        mask = jnp.asarray(visible) if cross else None
        params = nn.meta.unbox(jax.jit(mha.init)(jax.random.key(0), *args)["params"])
        out = jax.jit(lambda p, *a: mha.apply({"params": p}, *a, mask=mask))(params, *args)
        want = ref.mha(params, x, ctx if cross else None, visible=visible,
                       positions=np.arange(T), rope_base=100.0 if rope else None)
        assert out.dtype == jnp.float64
        np.testing.assert_allclose(out, want, rtol=0, atol=1e-10)


def torch_mha_with(params, E, H):
    """torch.nn.MultiheadAttention holding dlfun's fused-QKV parameters."""
    torch = pytest.importorskip("torch", reason="PyTorch cross-check needs torch installed")
    module = torch.nn.MultiheadAttention(E, H, batch_first=True, dtype=torch.float64)
    with torch.no_grad():
        module.in_proj_weight.copy_(torch.tensor(np.asarray(params["qkv_kernel"]).reshape(E, -1).T))
        module.in_proj_bias.copy_(torch.tensor(np.asarray(params["qkv_bias"]).reshape(-1)))
        out_kernel = np.asarray(params["out_kernel"]).reshape(-1, E)  # (H*D, E)
        module.out_proj.weight.copy_(torch.tensor(out_kernel.T))
        module.out_proj.bias.copy_(torch.tensor(np.asarray(params["out_bias"])))
    return module


def test_mha_matches_torch_multihead_attention_with_copied_weights():
    torch = pytest.importorskip("torch", reason="PyTorch cross-check needs torch installed")
    B, T, E, H = 2, 6, 12, 3
    x = data(B, T, E)
    lengths = np.array([6, 4])
    with jax.enable_x64(True):
        mha = MultiHeadAttention(H, causal=True, param_dtype=jnp.float64,
                                 bias_init=nn.initializers.normal(1.0))
        params = nn.meta.unbox(jax.jit(mha.init)(jax.random.key(1), x)["params"])
        got = jax.jit(mha.apply)({"params": params}, x,
                                 mask=padding_mask(jnp.asarray(lengths), T))
    module = torch_mha_with(params, E, H)
    xt = torch.tensor(x)
    want, _ = module(xt, xt, xt, attn_mask=torch.triu(torch.ones(T, T, dtype=torch.bool), 1),
                     key_padding_mask=torch.tensor(np.arange(T) >= lengths[:, None]))
    np.testing.assert_allclose(got, want.detach().numpy(), rtol=0, atol=1e-10)


def test_mha_kv_cache_decoding_equals_the_causal_pass():
    B, T, E, H = 2, 7, 8, 2
    x = jnp.asarray(data(B, T, E), jnp.float32)
    mha = MultiHeadAttention(H, causal=True, rope_base=10000.0)
    variables = jax.jit(mha.init)(jax.random.key(0), x)
    full = jax.jit(mha.apply)(variables, x)
    decode = jax.jit(lambda x, cache: mha.apply(variables, x, cache=cache))
    y, cache = decode(x[:, :3], init_kv_cache(B, T + 1, H, E // H))  # a prompt,
    outs = [y]
    for t in range(3, T):  # then one position at a time
        y, cache = decode(x[:, t:t + 1], cache)
        outs.append(y)
    assert isinstance(cache, KVCache) and int(cache.length) == T
    np.testing.assert_allclose(jnp.concatenate(outs, 1), full, rtol=1e-5, atol=1e-6)
    y, cache = decode(x[:, :1], cache)  # the last slot
    assert np.isfinite(y).all()
    y, cache = decode(x[:, :1], cache)  # one too many: NaN, not a silently clamped write
    assert np.isnan(y).all()


def test_mha_rejects_bad_inputs():
    mha = MultiHeadAttention(3)
    with pytest.raises(ConfigError, match="heads"):
        mha.init(jax.random.key(0), jnp.ones((2, 4, 8)))
    with pytest.raises(ShapeError, match="features"):
        mha.init(jax.random.key(0), jnp.ones((9,)))
    with pytest.raises(ShapeError, match="context"):
        mha.init(jax.random.key(0), jnp.ones((2, 4, 9)), jnp.ones((3, 4, 9)))


def test_mha_sows_attention_weights_and_drops_them_in_training():
    x = jnp.asarray(data(2, 5, 8), jnp.float32)
    mha = MultiHeadAttention(2, causal=True, dropout_rate=0.5, sow_weights=True)
    variables = jax.jit(mha.init)(jax.random.key(0), x)
    forward = jax.jit(mha.apply, static_argnames=("train", "mutable"))
    _, state = forward(variables, x, mutable=("intermediates",))
    (w,) = state["intermediates"]["attention_weights"]
    assert w.shape == (2, 2, 5, 5)
    np.testing.assert_allclose(w.sum(-1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(w * ~causal_mask(5)[None, None], 0.0)
    train = forward(variables, x, train=True, rngs={"dropout": jax.random.key(1)},
                    mutable=("intermediates",))[0]
    assert not np.allclose(train, forward(variables, x, mutable=("intermediates",))[0])


def test_mha_parameters_carry_logical_axis_names():
    x = jnp.ones((2, 4, 8))
    params = MultiHeadAttention(2).init(jax.random.key(0), x)["params"]
    specs = nn.get_partition_spec(params)
    assert specs["qkv_kernel"] == jax.sharding.PartitionSpec("embed", "qkv", "heads", "kv")
    assert specs["out_kernel"] == jax.sharding.PartitionSpec("heads", "kv", "embed")
    mesh_axes = nn.logical_to_mesh_axes(specs["qkv_kernel"], (("heads", "model"),))
    assert mesh_axes == jax.sharding.PartitionSpec(None, None, "model", None)
    plain = MultiHeadAttention(2, partitioned=False).init(jax.random.key(0), x)["params"]
    assert all(isinstance(a, jax.Array) for a in plain.values())


def exp_input_dtypes(fn, *args):
    """Dtypes of every ``exp`` operand in the jaxpr of ``fn(*args)`` (sub-jaxprs included)."""
    found = []

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == "exp":
                found.append(eqn.invars[0].aval.dtype)
            for sub in jax.extend.core.jaxprs_in_params(eqn.params):
                walk(sub)

    walk(jax.make_jaxpr(fn)(*args).jaxpr)
    return found


def test_bf16_attention_runs_the_softmax_in_float32_with_float32_params():
    x = jnp.asarray(data(2, 5, 8), jnp.bfloat16)
    mha = MultiHeadAttention(2, dtype=jnp.bfloat16, causal=True, impl="reference")
    variables = mha.init(jax.random.key(0), x)
    assert {a.dtype for a in jax.tree.leaves(nn.meta.unbox(variables))} == {jnp.dtype("float32")}
    out = mha.apply(variables, x)
    assert out.dtype == jnp.bfloat16
    dtypes = exp_input_dtypes(lambda v, x: mha.apply(v, x), variables, x)
    assert dtypes and set(dtypes) == {jnp.dtype("float32")}
    f32 = MultiHeadAttention(2, causal=True).apply(variables, x.astype(jnp.float32))
    np.testing.assert_allclose(out.astype(jnp.float32), f32, atol=0.05)


# ---------------------------------------------------------------------------- norms
@pytest.mark.parametrize("shape", [(6,), (3, 6), (2, 3, 6)])
def test_layer_and_rms_norm_match_float64_numpy(shape):
    x = data(*shape) * 3 + 1
    with jax.enable_x64(True):
        for norm, n_params in ((LayerNorm(param_dtype=jnp.float64), 12),
                               (RMSNorm(param_dtype=jnp.float64), 6)):
            params = nn.meta.unbox(norm.init(jax.random.key(0), x)["params"])
            params = jax.tree.map(lambda a: a + jnp.asarray(data(6, seed=3)), params)
            assert count(params) == n_params
            out = norm.apply({"params": params}, x)
            if isinstance(norm, LayerNorm):
                want = ref.layer_norm(x, params["scale"], params["bias"], 1e-5)
            else:
                want = ref.rms_norm(x, params["scale"], 1e-6)
            assert out.shape == shape and out.dtype == jnp.float64
            np.testing.assert_allclose(out, want, rtol=0, atol=1e-10)


def test_norms_match_torch_and_keep_float32_statistics_for_bf16():
    torch = pytest.importorskip("torch", reason="PyTorch cross-check needs torch installed")
    x = data(4, 10, dtype=np.float32) * 5 + 3
    for ours, theirs in ((LayerNorm(), torch.nn.LayerNorm(10)),
                         (RMSNorm(epsilon=1e-6), torch.nn.RMSNorm(10, eps=1e-6))):
        variables = ours.init(jax.random.key(0), x)
        want = theirs(torch.tensor(x)).detach().numpy()
        np.testing.assert_allclose(ours.apply(variables, x), want, rtol=1e-5, atol=1e-5)
        xb = jnp.asarray(x, jnp.bfloat16)
        jaxpr = jax.make_jaxpr(lambda v, x: ours.apply(v, x))(variables, xb)
        rsqrt = [e for e in jaxpr.jaxpr.eqns if e.primitive.name == "rsqrt"]
        assert rsqrt and all(e.invars[0].aval.dtype == jnp.float32 for e in rsqrt)
        assert ours.apply(variables, xb).dtype == jnp.bfloat16
    with pytest.raises(ShapeError, match="feature axis"):
        LayerNorm().init(jax.random.key(0), jnp.float32(1.0))


# ----------------------------------------------------------------------- positions
def test_rope_matches_complex_rotation_in_float64_and_depends_on_offsets_only():
    T, H, D = 6, 2, 8
    x = data(3, T, H, D)
    positions = np.arange(T) + 5
    with jax.enable_x64(True):
        out = apply_rope(x, positions, base=50.0)
        np.testing.assert_allclose(out, ref.rope(x, positions, 50.0), rtol=0, atol=1e-10)
        q, k = x[0], x[1]
        dots = jnp.einsum("thd,shd->hts", apply_rope(q, np.arange(T)), apply_rope(k, np.arange(T)))
        shifted = jnp.einsum("thd,shd->hts", apply_rope(q, np.arange(T) + 11),
                             apply_rope(k, np.arange(T) + 11))
        np.testing.assert_allclose(shifted, dots, rtol=0, atol=1e-10)
    with pytest.raises(ConfigError, match="even"):
        apply_rope(jnp.ones((2, 1, 3)), jnp.arange(2))
    with pytest.raises(ShapeError, match="positions"):
        apply_rope(jnp.ones((2, 1, 4)), jnp.arange(3))


def test_sinusoidal_and_learned_positions():
    with jax.enable_x64(True):
        pe = sinusoidal_encoding(jnp.arange(7), 6, dtype=jnp.float64)
        np.testing.assert_allclose(pe, ref.sinusoids(range(7), 6), rtol=0, atol=1e-10)
    assert sinusoidal_encoding(jnp.arange(4).reshape(2, 2), 5).shape == (2, 2, 5)
    table = LearnedPositions(8, 4)
    params = table.init(jax.random.key(0), jnp.arange(3))["params"]
    assert count(params) == 8 * 4
    out = table.apply({"params": params}, jnp.array([[0, 7], [2, 8]]))
    assert out.shape == (2, 2, 4)
    np.testing.assert_array_equal(out[0, 1], nn.meta.unbox(params)["embedding"][7])
    assert np.isnan(out[1, 1]).all()  # past max_len: visible, not clamped
