"""Transformer block and decoder-only language model: parameter counts, a float64 numpy
reference, KV-cache decoding equal to the causal pass, the compiled sampler, bf16, learning."""

import flax.linen as nn
import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import attention_reference as ref
from dlfun import losses
from dlfun.errors import ConfigError, ShapeError
from dlfun.nn import FeedForward, TransformerBlock, TransformerLM, sample_language_model

V, E, H, L, M, MAX = 7, 16, 2, 2, 24, 12


def count(params):
    return sum(a.size for a in jax.tree.leaves(params))


def shapes_of(module, *args, **kw):
    """Variables and output of ``module`` as shapes only (``jax.eval_shape``: no compiling)."""
    variables = jax.eval_shape(module.init, jax.random.key(0), *args, **kw)
    return variables, jax.eval_shape(lambda v: module.apply(v, *args, **kw), variables)


def lm(**kw):
    return TransformerLM(V, E, H, L, M, MAX, **kw)


def tokens(B=2, T=9, seed=0):
    return jax.random.randint(jax.random.key(seed), (B, T), 0, V)


# ------------------------------------------------------------------ shapes and counts
@pytest.mark.parametrize("shape", [(5, E), (2, 5, E), (2, 3, 5, E)])
def test_block_and_mlp_shapes_and_parameter_counts(shape):
    x = jnp.ones(shape)
    variables, out = shapes_of(FeedForward(M), x)
    assert count(variables) == 2 * E * M + M + E and out.shape == shape
    for norm, n in (("layer", 4 * E * E + 2 * E * M + 9 * E + M),
                    ("rms", 4 * E * E + 2 * E * M + 7 * E + M)):
        variables, out = shapes_of(TransformerBlock(H, M, norm=norm), x)
        assert count(variables) == n and out.shape == shape


@pytest.mark.parametrize("kw,extra", [({}, 0), ({"position": "learned"}, MAX * E),
                                      ({"position": "sinusoidal", "norm": "rms"},
                                       -(2 * L + 1) * E),
                                      ({"tie_embeddings": True}, -(E * V + V)),
                                      ({"token_shift": True}, E * E)])
def test_language_model_shapes_and_parameter_counts(kw, extra):
    variables, logits = shapes_of(lm(**kw), tokens())
    block = 4 * E * E + 2 * E * M + 9 * E + M
    assert count(variables["params"]) == V * E + L * block + 2 * E + E * V + V + extra
    assert logits.shape == (2, 9, V) and logits.dtype == jnp.float32


def test_language_model_rejects_bad_input_and_configuration():
    model = lm()
    params = jax.eval_shape(model.init, jax.random.key(0), tokens())
    with pytest.raises(ShapeError, match="batch, time"):
        model.apply(params, tokens()[0])
    with pytest.raises(ShapeError, match="max_len"):
        model.apply(params, tokens(T=MAX + 1))
    with pytest.raises(ConfigError, match="position"):
        lm(position="alibi").init(jax.random.key(0), tokens())
    with pytest.raises(ConfigError, match="heads"):
        TransformerLM(V, 10, 3, 1, M, MAX).init(jax.random.key(0), tokens())
    with pytest.raises(ConfigError, match="norm"):
        lm(norm="batch").init(jax.random.key(0), tokens())


# --------------------------------------------------------------- float64 reference
@pytest.mark.parametrize("rope", [False, True])
def test_block_matches_float64_numpy(rope):
    T = 6
    x = np.random.default_rng(0).normal(size=(2, T, E))
    with jax.enable_x64(True):
        block = TransformerBlock(H, M, causal=True, rope_base=100.0 if rope else None,
                                 param_dtype=jnp.float64)
        params = nn.meta.unbox(jax.jit(block.init)(jax.random.key(0), x)["params"])
        # non-trivial norms and biases, so every parameter shows in the output
        rng = np.random.default_rng(1)
        params = jax.tree.map(lambda a: a + 0.3 * rng.normal(size=a.shape), params)
        out = jax.jit(block.apply)({"params": params}, x)
        want = ref.block(params, x, visible=ref.causal(T), positions=np.arange(T),
                         rope_base=100.0 if rope else None)
        assert out.dtype == jnp.float64
        np.testing.assert_allclose(out, want, rtol=0, atol=1e-10)


# ------------------------------------------------------------------- decoding
@pytest.mark.parametrize("position", ["rope", "learned", "sinusoidal"])
def test_kv_cache_decoding_equals_the_causal_pass_position_by_position(position):
    model = lm(position=position)
    x = tokens(T=MAX)
    variables = jax.jit(model.init)(jax.random.key(0), x)
    full = jax.jit(model.apply)(variables, x)
    step = jax.jit(lambda t, c: model.apply(variables, t, c, method="with_carry"))
    carry, first = step(x[:, :4], None)  # a prompt
    np.testing.assert_allclose(first, full[:, :4], rtol=1e-5, atol=1e-5)
    for t in range(4, MAX):
        carry, logits = step(x[:, t:t + 1], carry)
        np.testing.assert_allclose(logits[:, 0], full[:, t], rtol=1e-5, atol=1e-5)


def shifted_variables(x):
    """A token-shift model's variables with a random (non-zero) shift matrix."""
    model = lm(token_shift=True)
    variables = jax.jit(model.init)(jax.random.key(0), x)
    kernel = jax.random.normal(jax.random.key(1), (E, E))
    return model, {"params": {**variables["params"], "shift_kernel": kernel}}


def test_token_shift_starts_as_the_plain_model_and_decodes_like_its_causal_pass():
    x = tokens(T=MAX)
    plain = lm()
    variables = jax.jit(plain.init)(jax.random.key(0), x)
    shifted = lm(token_shift=True)
    zero = {"params": {**variables["params"], "shift_kernel": jnp.zeros((E, E))}}
    init = nn.unbox(jax.jit(shifted.init)(jax.random.key(0), x))["params"]["shift_kernel"]
    assert not np.asarray(init).any()  # zero at init: the plain model's function
    at_zero = jax.jit(shifted.apply)(zero, x)  # jitted: the eager passes cost seconds
    np.testing.assert_array_equal(at_zero, jax.jit(plain.apply)(variables, x))
    model, variables = shifted_variables(x)
    full = jax.jit(model.apply)(variables, x)
    assert not np.allclose(full, at_zero, atol=1e-3)  # the shift acts
    step = jax.jit(lambda t, c: model.apply(variables, t, c, method="with_carry"))
    carry, first = step(x[:, :3], None)
    np.testing.assert_allclose(first, full[:, :3], rtol=1e-5, atol=1e-5)
    for t in range(3, MAX):  # the carried last embedding feeds the next chunk's first position
        carry, logits = step(x[:, t:t + 1], carry)
        np.testing.assert_allclose(logits[:, 0], full[:, t], rtol=1e-5, atol=1e-5)


def test_token_shift_keeps_the_model_causal():
    x = tokens()
    model, variables = shifted_variables(x)
    changed = x.at[:, 5:].set((x[:, 5:] + 1) % V)
    forward = jax.jit(model.apply)  # eager passes cost seconds
    a, b = forward(variables, x), forward(variables, changed)
    np.testing.assert_array_equal(a[:, :5], b[:, :5])
    assert not np.allclose(a[:, 5:], b[:, 5:])


def test_the_future_does_not_change_the_past():
    model = lm()
    x = tokens()
    variables = jax.jit(model.init)(jax.random.key(0), x)
    changed = x.at[:, 5:].set((x[:, 5:] + 1) % V)
    forward = jax.jit(model.apply)
    a, b = forward(variables, x), forward(variables, changed)
    np.testing.assert_array_equal(a[:, :5], b[:, :5])
    assert not np.allclose(a[:, 5:], b[:, 5:])


def test_sampler_compiles_once_for_all_temperatures_and_greedy_equals_argmax_decoding():
    model = lm()
    prompt = tokens(T=3, seed=4)
    variables = jax.jit(model.init)(jax.random.key(0), prompt)
    # a fresh function: jit's cache is shared by every jit of the same function object
    sample = jax.jit(lambda v, k, p, t: sample_language_model(model, v, k, p, 8, t))
    drawn = [sample(variables, jax.random.key(1), prompt, t) for t in (1.0, 0.5, 2.0, 0.0)]
    assert sample._cache_size() == 1
    assert drawn[0].shape == (2, 8) and int(drawn[0].max()) < V
    # greedy decoding by re-reading the whole text each step (no cache), zero-padded to one
    # shape: causal, so the padding does not reach the position read
    forward = jax.jit(model.apply)
    text = np.zeros((2, MAX), np.int32)
    text[:, :3] = prompt
    for t in range(3, 3 + 8):
        text[:, t] = np.argmax(np.asarray(forward(variables, jnp.asarray(text)))[:, t - 1], -1)
    np.testing.assert_array_equal(drawn[3], text[:, 3:11])
    with pytest.raises(ShapeError, match="max_len"):
        sample_language_model(model, variables, jax.random.key(1), prompt, MAX - 1, 1.0)


# ---------------------------------------------------------------------- dtypes
def primitive_input_dtypes(fn, name, *args):
    """Input dtypes of every ``name`` primitive in the jaxpr of ``fn(*args)``."""
    found = []

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == name:
                found.append(eqn.invars[0].aval.dtype)
            for sub in jax.extend.core.jaxprs_in_params(eqn.params):
                walk(sub)

    walk(jax.make_jaxpr(fn)(*args).jaxpr)
    return set(found)


def test_bfloat16_model_keeps_float32_params_softmax_norms_and_logits():
    model = lm(dtype=jnp.bfloat16, impl="reference")
    x = tokens()
    variables = jax.jit(model.init)(jax.random.key(0), x)
    assert {a.dtype for a in jax.tree.leaves(nn.meta.unbox(variables))} == {jnp.dtype("float32")}
    logits = jax.jit(model.apply)(variables, x)
    assert logits.dtype == jnp.float32
    fn = lambda v, x: model.apply(v, x)  # noqa: E731
    assert primitive_input_dtypes(fn, "exp", variables, x) == {jnp.dtype("float32")}
    assert primitive_input_dtypes(fn, "rsqrt", variables, x) == {jnp.dtype("float32")}
    f32 = jax.jit(lm().apply)(variables, x)
    np.testing.assert_allclose(logits, f32, atol=0.1)  # bf16 rounding only


# ---------------------------------------------------------------------- training
def test_dropout_acts_in_training_only():
    model = TransformerLM(V, E, H, 1, M, MAX, dropout_rate=0.3, attention_dropout_rate=0.3)
    x = tokens()
    variables = jax.jit(model.init)(jax.random.key(0), x)
    forward = jax.jit(model.apply, static_argnames="train")
    eval_a, eval_b = forward(variables, x), forward(variables, x, train=False)
    np.testing.assert_array_equal(eval_a, eval_b)
    train = forward(variables, x, train=True, rngs={"dropout": jax.random.key(1)})
    assert not np.allclose(train, eval_a)


def test_tiny_transformer_learns_a_repeated_sequence():
    """Next-token loss on a period-5 sequence: from about log(7) = 1.95 nats to < 0.1 (each
    token is determined by the previous one, so a causal model can get it exactly)."""
    seq = jnp.array([3, 1, 4, 0, 5] * 3)[None, :MAX + 1]
    x, y = jnp.tile(seq[:, :-1], (4, 1)), jnp.tile(seq[:, 1:], (4, 1))
    model = TransformerLM(V, E, H, 1, M, MAX)
    params = nn.meta.unbox(jax.jit(model.init)(jax.random.key(0), x)["params"])
    tx = optax.adam(1e-2)

    def loss_fn(p):
        return losses.softmax_cross_entropy(model.apply({"params": p}, x), y)

    @jax.jit
    def train(params):
        def step(carry, _):
            p, s = carry
            loss, g = jax.value_and_grad(loss_fn)(p)
            u, s = tx.update(g, s, p)
            return (optax.apply_updates(p, u), s), loss
        return jax.lax.scan(step, (params, tx.init(params)), length=60)[1]

    history = train(params)
    assert history[0] > 1.5 and history[-1] < 0.1, (history[0], history[-1])
