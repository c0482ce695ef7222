"""Recurrent cells and sequence layers against numpy of the gate equations and PyTorch."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dlfun.errors import ConfigError, ShapeError
from dlfun.nn import (Bidirectional, GRUCell, LSTMCell, LSTMState, Recurrent, RNNCell,
                      StackedRNN, make_rnn)
from dlfun.nn.recurrent_torch import (cell_params_from_torch, cell_params_to_torch,
                                      params_from_torch, params_to_torch)

I, H, B, T = 3, 5, 4, 6
LENGTHS = np.array([6, 3, 1, 0])
F32 = dict(rtol=2e-5, atol=2e-6)  # float32 results vs float64 numpy


# ----------------------------------------------------------------- numpy of the equations
def sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def gate_matrices(p, gates):
    """Per-gate ``W (H, H+I)`` acting on ``[h; x]`` and ``b (H,)``, float64, as in the slides."""
    w = np.concatenate([np.asarray(p["w_hh"]), np.asarray(p["w_ih"])], 0).astype(np.float64)
    b = np.asarray(p["b"], np.float64) if "b" in p else np.zeros(w.shape[1])
    return {g: (w[:, k * H:(k + 1) * H].T, b[k * H:(k + 1) * H]) for k, g in enumerate(gates)}


def np_rnn_step(p, h, x):
    (w, b), = gate_matrices(p, ["z"]).values()
    return np.tanh(np.concatenate([h, x]) @ w.T + b)


def np_lstm_step(p, carry, x):
    h, c = carry
    m = gate_matrices(p, ["i", "f", "C", "o"])
    hx = np.concatenate([h, x])
    f = sigmoid(m["f"][0] @ hx + m["f"][1])
    i = sigmoid(m["i"][0] @ hx + m["i"][1])
    c_tilde = np.tanh(m["C"][0] @ hx + m["C"][1])
    c = f * c + i * c_tilde
    o = sigmoid(m["o"][0] @ hx + m["o"][1])
    return o * np.tanh(c), c


def np_gru_step(p, h, x, reset_after):
    m = gate_matrices(p, ["r", "z", "h"])
    hx = np.concatenate([h, x])
    z = sigmoid(m["z"][0] @ hx + m["z"][1])
    r = sigmoid(m["r"][0] @ hx + m["r"][1])
    w, b = m["h"]
    if reset_after:  # PyTorch's form: r multiplies W_h h + b_hn
        b_hn = np.asarray(p.get("b_hn", np.zeros(H)), np.float64)
        h_tilde = np.tanh(w[:, H:] @ x + b + r * (w[:, :H] @ h + b_hn))
    else:  # the slides' form: W·[r*h, x]
        h_tilde = np.tanh(w @ np.concatenate([r * h, x]) + b)
    return (1 - z) * h + z * h_tilde


def np_step(kind, p, carry, x):
    """One step of cell ``kind`` ('rnn', 'lstm', 'gru', 'gru_after') on one example."""
    if kind == "rnn":
        return np_rnn_step(p, carry, x)
    if kind == "lstm":
        return np_lstm_step(p, carry, x)
    return np_gru_step(p, carry, x, reset_after=kind == "gru_after")


def np_sequence(kind, p, xs, carry, length=None, reverse=False):
    """One sequence ``xs (T, I)``: returns final carry and outputs ``(T, H)`` (zeros if padded)."""
    steps = len(xs) if length is None else length
    outs = np.zeros((len(xs), H))
    order = range(steps - 1, -1, -1) if reverse else range(steps)
    for t in order:
        carry = np_step(kind, p, carry, xs[t])
        outs[t] = carry[0] if kind == "lstm" else carry
    return carry, outs


# ----------------------------------------------------------------- helpers
CELLS = {
    "rnn": lambda **kw: RNNCell(H, **kw),
    "lstm": lambda **kw: LSTMCell(H, **kw),
    "gru": lambda **kw: GRUCell(H, **kw),
    "gru_after": lambda **kw: GRUCell(H, reset_after=True, **kw),
}
BIAS = jax.nn.initializers.normal(0.5)  # non-zero biases, so the tests see them


def data(seed=0, shape=(B, T, I)):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def random_carry(kind, seed=1, batch=(B,)):
    rng = np.random.default_rng(seed)
    z = lambda: jnp.asarray(rng.standard_normal((*batch, H)).astype(np.float32) * 0.5)  # noqa
    return LSTMState(z(), z()) if kind == "lstm" else z()


def np_carry(kind, carry, n):
    if kind == "lstm":
        return np.asarray(carry.h[n], np.float64), np.asarray(carry.c[n], np.float64)
    return np.asarray(carry[n], np.float64)


def assert_carry_close(kind, got, want, **tol):
    if kind == "lstm":
        np.testing.assert_allclose(got.h, want[0], **tol)
        np.testing.assert_allclose(got.c, want[1], **tol)
    else:
        np.testing.assert_allclose(got, want, **tol)


def layer_params(variables):
    return variables["params"]["cell"]


# ----------------------------------------------------------------- cells
@pytest.mark.parametrize("kind", list(CELLS))
@pytest.mark.parametrize("use_bias", [True, False])
def test_cell_step_matches_numpy_equations(kind, use_bias):
    cell = CELLS[kind](use_bias=use_bias, bias_init=BIAS)
    x, carry = data(shape=(B, I)), random_carry(kind)
    variables = cell.init(jax.random.key(0), carry, x)
    new, h = cell.apply(variables, carry, x)
    for n in range(B):
        want = np_step(kind, variables["params"], np_carry(kind, carry, n), x[n].astype(float))
        assert_carry_close(kind, jax.tree.map(lambda a: a[n], new), want, **F32)
        np.testing.assert_allclose(h[n], want[0] if kind == "lstm" else want, **F32)


@pytest.mark.parametrize("kind,use_bias,count", [
    ("rnn", True, H * (I + H) + H), ("rnn", False, H * (I + H)),
    ("lstm", True, 4 * H * (I + H) + 4 * H), ("lstm", False, 4 * H * (I + H)),
    ("gru", True, 3 * H * (I + H) + 3 * H), ("gru", False, 3 * H * (I + H)),
    ("gru_after", True, 3 * H * (I + H) + 4 * H), ("gru_after", False, 3 * H * (I + H)),
])
def test_cell_parameter_count(kind, use_bias, count):
    cell = CELLS[kind](use_bias=use_bias)
    variables = cell.init(jax.random.key(0), random_carry(kind), data(shape=(B, I)))
    assert sum(a.size for a in jax.tree.leaves(variables)) == count


@pytest.mark.parametrize("kind", list(CELLS))
@pytest.mark.parametrize("batch", [(), (B,), (2, 3)])
def test_cell_shapes_and_initialize_carry(kind, batch):
    cell = CELLS[kind]()
    carry = cell.initialize_carry(batch)
    x = jnp.ones((*batch, I))
    variables = cell.init(jax.random.key(0), carry, x)
    new, h = cell.apply(variables, carry, x)
    assert h.shape == (*batch, H)
    assert jax.tree.map(jnp.shape, new) == jax.tree.map(jnp.shape, carry)
    if kind == "lstm":
        assert isinstance(carry, LSTMState) and carry.h.shape == carry.c.shape == (*batch, H)


# ----------------------------------------------------------------- sequence layers
@pytest.mark.parametrize("kind", list(CELLS))
@pytest.mark.parametrize("implementation", ["fused", "scan"])
@pytest.mark.parametrize("reverse", [False, True])
def test_recurrent_matches_numpy_with_lengths(kind, implementation, reverse):
    layer = Recurrent(CELLS[kind](bias_init=BIAS), reverse=reverse, implementation=implementation)
    x, carry0 = data(), random_carry(kind)
    variables = layer.init(jax.random.key(0), x)
    carry, ys = jax.jit(lambda v, x, c: layer.apply(v, x, c, lengths=LENGTHS))(variables, x,
                                                                               carry0)
    assert ys.shape == (B, T, H)
    for n in range(B):
        want_carry, want_ys = np_sequence(kind, layer_params(variables), x[n].astype(float),
                                          np_carry(kind, carry0, n), LENGTHS[n], reverse)
        np.testing.assert_allclose(ys[n], want_ys, **F32)
        assert_carry_close(kind, jax.tree.map(lambda a: a[n], carry), want_carry, **F32)


@pytest.mark.parametrize("kind", ["lstm"])
def test_padded_steps_keep_state_and_output_zeros(kind):
    layer = Recurrent(CELLS[kind]())
    x = data()
    variables = layer.init(jax.random.key(0), x)
    carry, ys = layer.apply(variables, x, lengths=LENGTHS)
    for n, length in enumerate(LENGTHS):
        ref_carry, ref_ys = layer.apply(variables, x[n:n + 1, :length]) if length else (
            CELLS[kind]().initialize_carry((1,)), jnp.zeros((1, 0, H)))
        assert_carry_close(kind, jax.tree.map(lambda a: a[n], carry),
                           jax.tree.map(lambda a: a[0], ref_carry), rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(ys[n, :length], ref_ys[0], rtol=1e-6, atol=1e-7)
        assert np.all(np.asarray(ys[n, length:]) == 0.0)


def test_mask_with_holes_skips_steps_and_equals_lengths_for_right_padding():
    layer = Recurrent(LSTMCell(H))
    x = data()
    variables = layer.init(jax.random.key(0), x)
    mask = np.arange(T)[None, :] < LENGTHS[:, None]
    a = layer.apply(variables, x, mask=mask)
    b = layer.apply(variables, x, lengths=LENGTHS)
    jax.tree.map(lambda u, v: np.testing.assert_array_equal(u, v), a, b)
    holes = np.ones((B, T), bool)
    holes[:, 2] = False  # step 2 skipped: same as deleting it
    carry, ys = layer.apply(variables, x, mask=holes)
    ref_carry, ref_ys = layer.apply(variables, np.delete(x, 2, axis=1))
    jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, rtol=1e-6, atol=1e-7),
                 carry, ref_carry)
    np.testing.assert_allclose(np.delete(np.asarray(ys), 2, axis=1), ref_ys, rtol=1e-6,
                               atol=1e-7)
    assert np.all(np.asarray(ys[:, 2]) == 0.0)


@pytest.mark.parametrize("shape,time_major", [
    ((T, I), False), ((B, T, I), False), ((2, 3, T, I), False), ((T, B, I), True),
    ((T, 2, 3, I), True),
])
def test_recurrent_shapes(shape, time_major):
    layer = Recurrent(LSTMCell(H), time_major=time_major)
    x = jax.ShapeDtypeStruct(shape, jnp.float32)
    carry, ys = jax.eval_shape(layer.init_with_output, jax.random.key(0), x)[0]
    batch = shape[1:-1] if time_major else shape[:-2]
    assert ys.shape == shape[:-1] + (H,)
    assert carry.h.shape == carry.c.shape == (*batch, H)


def test_time_major_equals_batch_major():
    x = data()
    bm, tm = Recurrent(GRUCell(H)), Recurrent(GRUCell(H), time_major=True)
    variables = bm.init(jax.random.key(0), x)
    mask = np.arange(T)[None, :] < LENGTHS[:, None]
    c1, y1 = bm.apply(variables, x, mask=mask)
    c2, y2 = tm.apply(variables, np.swapaxes(x, 0, 1), mask=mask.T)
    np.testing.assert_allclose(c1, c2, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(y1, np.swapaxes(y2, 0, 1), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("kind", list(CELLS))
@pytest.mark.parametrize("implementation", ["fused", "scan"])
def test_carry_out_then_in_equals_one_run(kind, implementation):
    layer = Recurrent(CELLS[kind](), implementation=implementation)
    x = data()
    variables = layer.init(jax.random.key(0), x)
    full_carry, full_ys = layer.apply(variables, x)
    mid_carry, ys1 = layer.apply(variables, x[:, :T // 2])
    end_carry, ys2 = layer.apply(variables, x[:, T // 2:], jax.lax.stop_gradient(mid_carry))
    jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, rtol=1e-6, atol=1e-7),
                 end_carry, full_carry)
    np.testing.assert_allclose(np.concatenate([ys1, ys2], 1), full_ys, rtol=1e-6, atol=1e-7)


def test_bidirectional_matches_numpy():
    layer = Bidirectional(Recurrent(LSTMCell(H, bias_init=BIAS)),
                          Recurrent(LSTMCell(H, bias_init=BIAS), reverse=True))
    x = data()
    variables = layer.init(jax.random.key(0), x)
    (carry_f, carry_b), ys = layer.apply(variables, x, lengths=LENGTHS)
    assert ys.shape == (B, T, 2 * H)
    pf, pb = (variables["params"][k]["cell"] for k in ("forward_layer", "backward_layer"))
    zero = (np.zeros(H), np.zeros(H))
    for n in range(B):
        cf, yf = np_sequence("lstm", pf, x[n].astype(float), zero, LENGTHS[n])
        cb, yb = np_sequence("lstm", pb, x[n].astype(float), zero, LENGTHS[n], reverse=True)
        np.testing.assert_allclose(ys[n], np.concatenate([yf, yb], -1), **F32)
        np.testing.assert_allclose(carry_f.h[n], cf[0], **F32)
        np.testing.assert_allclose(carry_b.h[n], cb[0], **F32)


def test_stacked_matches_numpy_layer_by_layer():
    model = make_rnn("gru", H, num_layers=2, bias_init=BIAS)
    x = data()
    variables = model.init(jax.random.key(0), x)
    (c0, c1), ys = model.apply(variables, x)
    p0, p1 = (variables["params"][f"layers_{k}"]["cell"] for k in range(2))
    assert p1["w_ih"].shape == (H, 3 * H)
    for n in range(B):
        h0, y0 = np_sequence("gru", p0, x[n].astype(float), np.zeros(H))
        h1, y1 = np_sequence("gru", p1, y0, np.zeros(H))
        np.testing.assert_allclose(ys[n], y1, **F32)
        np.testing.assert_allclose(c0[n], h0, **F32)
        np.testing.assert_allclose(c1[n], h1, **F32)


def test_stacked_bidirectional_shapes_and_parameter_count():
    model = make_rnn("lstm", H, num_layers=3, bidirectional=True)
    x = jax.ShapeDtypeStruct((B, T, I), jnp.float32)
    variables = jax.eval_shape(model.init, jax.random.key(0), x)
    carries, ys = jax.eval_shape(model.apply, variables, x)
    assert ys.shape == (B, T, 2 * H) and len(carries) == 3
    per_direction = [4 * H * (I + H) + 4 * H] + 2 * [4 * H * (2 * H + H) + 4 * H]
    assert sum(a.size for a in jax.tree.leaves(variables)) == 2 * sum(per_direction)


# ----------------------------------------------------------------- fused path == plain cell
def python_loop_of_cell(cell, variables, x, carry, lengths, reverse):
    """The straightforward reference: the cell's one-step call in a Python loop over time."""
    mask = jnp.arange(T)[None, :] < jnp.asarray(lengths)[:, None]
    ys = [None] * T
    for t in (range(T - 1, -1, -1) if reverse else range(T)):
        new, h = cell.apply(variables, carry, x[:, t])
        m = mask[:, t:t + 1]
        carry = jax.tree.map(lambda a, b: jnp.where(m, a, b), new, carry)
        ys[t] = jnp.where(m, h, 0.0)
    return carry, jnp.stack(ys, 1)


@pytest.mark.parametrize("kind,reverse", [("rnn", False), ("lstm", False), ("lstm", True),
                                          ("gru", False), ("gru_after", True)])
def test_fused_equals_cell_loop_values_and_gradients(kind, reverse):
    layer = Recurrent(CELLS[kind](bias_init=BIAS), reverse=reverse)
    x, carry0 = jnp.asarray(data()), random_carry(kind)
    variables = layer.init(jax.random.key(0), x)
    weights = jnp.asarray(data(seed=3, shape=(B, T, H)))

    def loss(run):
        def f(params, x, carry0):
            carry, ys = run(params, x, carry0)
            return jnp.sum(ys * weights) + sum(jnp.sum(a * 0.5) for a in jax.tree.leaves(carry))
        return jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2)))

    fused = loss(lambda p, x, c: layer.apply(p, x, c, lengths=LENGTHS))
    cell_vars = lambda p: {"params": p["params"]["cell"]}  # noqa: E731
    loop = loss(lambda p, x, c: python_loop_of_cell(layer.cell, cell_vars(p), x, c, LENGTHS,
                                                    reverse))
    got, want = fused(variables, x, carry0), loop(variables, x, carry0)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)


def test_fused_lstm_gradients_without_bias_and_without_mask():
    layer = Recurrent(LSTMCell(H, use_bias=False))
    x = jnp.asarray(data())
    variables = layer.init(jax.random.key(0), x)

    def f(layer):
        return jax.jit(jax.grad(lambda v, x: jnp.sum(layer.apply(v, x)[1] ** 2), argnums=(0, 1)))

    got = f(layer)(variables, x)
    want = f(layer.clone(implementation="scan"))(variables, x)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------- errors
def test_wrong_feature_count_raises_shape_error():
    layer = Recurrent(LSTMCell(H))
    variables = layer.init(jax.random.key(0), jnp.ones((B, T, I)))
    with pytest.raises(ShapeError, match=r"expected inputs of shape \(\.\.\., 3\)"):
        layer.apply(variables, jnp.ones((B, T, I + 1)))


def test_cell_wrong_feature_count_raises_shape_error():
    cell = GRUCell(H)
    variables = cell.init(jax.random.key(0), cell.initialize_carry((B,)), jnp.ones((B, I)))
    with pytest.raises(ShapeError, match=r"\(\.\.\., 3\)"):
        cell.apply(variables, cell.initialize_carry((B,)), jnp.ones((B, 7)))


def test_missing_time_axis_or_empty_sequence_raises_shape_error():
    with pytest.raises(ShapeError, match=r"\(\*batch, time, features\)"):
        Recurrent(RNNCell(H)).init(jax.random.key(0), jnp.ones((I,)))
    with pytest.raises(ShapeError, match="0 time steps"):
        Recurrent(RNNCell(H)).init(jax.random.key(0), jnp.ones((B, 0, I)))


@pytest.mark.parametrize("kwargs,match", [
    (dict(mask=np.ones((B, T + 1), bool)), r"mask of shape \(4, 6\)"),
    (dict(lengths=np.ones((B + 1,), int)), r"lengths of shape \(4,\)"),
])
def test_wrong_mask_or_lengths_shape_raises_shape_error(kwargs, match):
    layer = Recurrent(LSTMCell(H))
    variables = layer.init(jax.random.key(0), jnp.ones((B, T, I)))
    with pytest.raises(ShapeError, match=match):
        layer.apply(variables, jnp.ones((B, T, I)), **kwargs)


def test_wrong_initial_carry_shape_raises_shape_error():
    layer = Recurrent(GRUCell(H))
    variables = layer.init(jax.random.key(0), jnp.ones((B, T, I)))
    with pytest.raises(ShapeError, match=r"shape \(4, 5\)"):
        layer.apply(variables, jnp.ones((B, T, I)), jnp.zeros((B, H + 1)))


def test_configuration_errors():
    x = jnp.ones((B, T, I))
    with pytest.raises(ConfigError, match="reverse=True"):
        Bidirectional(Recurrent(LSTMCell(H)), Recurrent(LSTMCell(H))).init(jax.random.key(0), x)
    with pytest.raises(ConfigError, match="implementation"):
        Recurrent(LSTMCell(H), implementation="cudnn").init(jax.random.key(0), x)
    with pytest.raises(ConfigError, match="unknown cell"):
        make_rnn("transformer", H)
    with pytest.raises(ConfigError, match="mask and lengths"):
        Recurrent(LSTMCell(H)).init(jax.random.key(0), x, mask=np.ones((B, T), bool),
                                    lengths=LENGTHS)
    with pytest.raises(ConfigError, match="one carry"):
        StackedRNN([Recurrent(LSTMCell(H))]).init(jax.random.key(0), x, (None, None))


# ----------------------------------------------------------------- PyTorch
def torch_run(module, x):
    """Outputs, final (h, c) or h, and d(sum of outputs * weights)/dx of a PyTorch module."""
    torch = pytest.importorskip("torch")
    xt = torch.tensor(x, requires_grad=True)
    out, state = module(xt)
    (out * torch.tensor(data(seed=5, shape=out.shape))).sum().backward()
    state = tuple(s.detach().numpy() for s in state) if isinstance(state, tuple) else \
        state.detach().numpy()
    return out.detach().numpy(), state, xt.grad.numpy()


def dlfun_run(model, params, x):
    def f(x):
        carries, ys = model.apply({"params": params}, x)
        return jnp.sum(ys * data(seed=5, shape=ys.shape)), (carries, ys)
    (_, (carries, ys)), dx = jax.jit(jax.value_and_grad(f, has_aux=True))(jnp.asarray(x))
    return ys, carries, dx


@pytest.mark.parametrize("bidirectional", [False, True])
def test_lstm_matches_torch_with_copied_weights(bidirectional):
    torch = pytest.importorskip("torch", reason="PyTorch cross-check needs torch installed")
    torch.manual_seed(0)
    module = torch.nn.LSTM(I, H, num_layers=2, batch_first=True, bidirectional=bidirectional)
    model = make_rnn("lstm", H, num_layers=2, bidirectional=bidirectional)
    params = params_from_torch(model, module.state_dict())
    x = data()
    out, (h_n, c_n), dx_torch = torch_run(module, x)
    ys, carries, dx = dlfun_run(model, params, x)
    np.testing.assert_allclose(ys, out, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dx, dx_torch, rtol=1e-4, atol=1e-6)
    last = carries[-1]
    finals = [last[0], last[1]] if bidirectional else [last]
    for k, carry in enumerate(finals):  # torch orders h_n as (layer, direction)
        np.testing.assert_allclose(carry.h, h_n[2 + k if bidirectional else 1], rtol=1e-5,
                                   atol=1e-6)
        np.testing.assert_allclose(carry.c, c_n[2 + k if bidirectional else 1], rtol=1e-5,
                                   atol=1e-6)


@pytest.mark.parametrize("kind", ["gru", "rnn"])
def test_gru_and_rnn_match_torch_with_copied_weights(kind):
    torch = pytest.importorskip("torch", reason="PyTorch cross-check needs torch installed")
    torch.manual_seed(1)
    module = (torch.nn.GRU if kind == "gru" else torch.nn.RNN)(I, H, num_layers=2,
                                                                 batch_first=True)
    extra = dict(reset_after=True) if kind == "gru" else {}
    model = make_rnn(kind, H, num_layers=2, **extra)
    params = params_from_torch(model, module.state_dict())
    x = data()
    out, h_n, dx_torch = torch_run(module, x)
    ys, carries, dx = dlfun_run(model, params, x)
    np.testing.assert_allclose(ys, out, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(carries[1], h_n[1], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dx, dx_torch, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
def test_weights_round_trip_to_torch(kind):
    torch = pytest.importorskip("torch", reason="PyTorch cross-check needs torch installed")
    extra = dict(reset_after=True) if kind == "gru" else {}
    model = make_rnn(kind, H, bidirectional=True, bias_init=BIAS, **extra)
    params = model.init(jax.random.key(0), jnp.ones((B, T, I)))["params"]
    state = params_to_torch(model, params)
    module = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[kind](
        I, H, batch_first=True, bidirectional=True)
    module.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    back = params_from_torch(model, module.state_dict())
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
                 back, jax.tree.map(np.asarray, params))
    x = data()
    ys = model.apply({"params": params}, x)[1]
    np.testing.assert_allclose(ys, torch_run(module, x)[0], rtol=1e-5, atol=1e-6)


def test_cell_converters_without_torch_and_gru_convention_errors():
    rng = np.random.default_rng(0)
    w_ih, w_hh = rng.standard_normal((3 * H, I)), rng.standard_normal((3 * H, H))
    b_ih, b_hh = rng.standard_normal(3 * H), rng.standard_normal(3 * H)
    p = cell_params_from_torch("gru", w_ih, w_hh, b_ih, b_hh)
    np.testing.assert_array_equal(p["w_ih"][:, H:2 * H], -w_ih[H:2 * H].T.astype(np.float32))
    np.testing.assert_allclose(p["b"][:H], b_ih[:H] + b_hh[:H], rtol=1e-6)
    np.testing.assert_allclose(p["b_hn"], b_hh[2 * H:], rtol=1e-6)
    back = cell_params_to_torch("gru", p)
    np.testing.assert_allclose(back["weight_hh"], w_hh, rtol=1e-6)
    np.testing.assert_allclose(back["bias_ih"] + back["bias_hh"], b_ih + b_hh, rtol=1e-5)
    with pytest.raises(ConfigError, match="reset_after"):
        params_to_torch(make_rnn("gru", H), {"layers_0": {"cell": p}})
    with pytest.raises(ConfigError, match="bias_ih and bias_hh"):
        cell_params_from_torch("gru", w_ih, w_hh, b_ih, None)
    with pytest.raises(ShapeError, match=r"weight_ih \(20, I\)"):
        cell_params_from_torch("lstm", w_ih, w_hh)


def test_fused_lstm_under_vmap_over_parameter_sets():
    """Ensembles vmap the step over seeds: the custom backward pass must batch correctly."""
    layer = Recurrent(LSTMCell(H))
    x = jnp.asarray(data())
    stacked = jax.jit(jax.vmap(lambda k: layer.init(k, x)))(
        jax.random.split(jax.random.key(0), 2))

    def loss(v):
        return jnp.sum(layer.apply(v, x, lengths=LENGTHS)[1] ** 2)

    got = jax.jit(jax.vmap(jax.value_and_grad(loss)))(stacked)
    single = jax.jit(jax.value_and_grad(loss))  # one compile for both members
    for k in range(2):
        want = single(jax.tree.map(lambda a: a[k], stacked))
        jax.tree.map(lambda g, w: np.testing.assert_allclose(g[k], w, rtol=1e-5, atol=1e-6),
                     got, want)
