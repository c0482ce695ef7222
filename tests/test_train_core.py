"""The training core: no recompilation, scan == loop, K seeds == K single runs, non-finite
losses, checkpoints and exact resume."""

import dataclasses
import os
from pathlib import Path

import flax.linen as fnn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dlfun import losses, nn
from dlfun.data import Split
from dlfun.errors import CheckpointError, NonFiniteError
from dlfun.optim import make_optimizer
from dlfun.train.checkpoint import Checkpointer
from dlfun.train.epoch import choose_ensemble_strategy, choose_epoch_mode, make_indexed_step
from dlfun.train.fit import FitOptions, fit, init_states, run_keys, run_once
from dlfun.train.metrics import classification_metrics
from dlfun.runs import Run, RunConfig, RunDir
from dlfun.train.state import create_train_state
from dlfun.train.step import make_eval_step, make_train_step


def toy_data(n=96, d=6, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 2, (classes, d))
    y = rng.integers(0, classes, n).astype(np.int32)
    x = (centers[y] + rng.normal(0, 1, (n, d))).astype(np.float32)
    return Split(x, y)


class TinyCNN(fnn.Module):
    @fnn.compact
    def __call__(self, x, train=False):
        x = fnn.relu(nn.Conv(4, 3, padding=1)(x))
        x = nn.max_pool(x, 2).reshape(x.shape[0], -1)
        return nn.Dense(3)(x)


def setup(model=None, num_models=None, seed=0, nonfinite="stop", lr=0.05, sample=None):
    model = model or nn.MLP((16,), 3, dropout_rate=0.1)
    tx = make_optimizer("adam", lr)
    keys = run_keys(seed, num_models)
    sample = jnp.zeros((1, 6)) if sample is None else sample
    state = init_states(lambda k: create_train_state(model, tx, k, sample), keys[0], num_models)
    step = make_train_step(model, losses.softmax_cross_entropy,
                           metrics_fn=classification_metrics, nonfinite=nonfinite)
    eval_step = make_eval_step(model, losses.softmax_cross_entropy,
                               metrics_fn=classification_metrics)
    return state, step, eval_step, keys


def params_of(state, k=None):
    p = state.params if k is None else jax.tree.map(lambda a: a[k], state.params)
    return [np.asarray(a) for a in jax.tree.leaves(p)]


def max_diff(a, b):
    return max(float(np.max(np.abs(x - y))) for x, y in zip(a, b))


class TinyBNCNN(fnn.Module):
    @fnn.compact
    def __call__(self, x, train=False):
        x = nn.BatchNorm()(nn.Conv(4, 3, padding=1)(x), train=train)
        return nn.Dense(3)(fnn.relu(x).reshape(x.shape[0], -1))


@pytest.mark.parametrize("name", ["mlp", "cnn_bn", "charlm", "transformer"])
def test_initialisation_compiled_for_one_call_equals_the_default_program(name):
    """``run_once`` (CPU: XLA optimisation level 1, for speed) initialises the same values as
    the default ``jax.jit`` (the MLP also vmapped over keys): bitwise on JAX 0.10; JAX 0.12's
    optimisation levels round one product of a dense initialiser differently (2 ulps, seen in
    ``cnn_bn``), so the check allows 4 ulps: any real difference in what is drawn is far
    larger."""
    from dlfun.nn.sequence_models import CharLM

    model, sample = {
        "mlp": (nn.MLP((32, 32), 10), jnp.zeros((1, 64))),
        "cnn_bn": (TinyBNCNN(), jnp.zeros((1, 8, 8, 3))),
        "charlm": (CharLM(vocab_size=20, features=16), jnp.zeros((1, 8), jnp.int32)),
        "transformer": (nn.TransformerLM(vocab_size=20, d_model=32, num_heads=4, num_layers=2,
                                         mlp_dim=64, max_len=16), jnp.zeros((1, 8), jnp.int32)),
    }[name]
    tx = make_optimizer("adam", 1e-3)

    def create(k):
        return create_train_state(model, tx, k, sample)

    cases = [(create, jax.random.key(3))]
    if name == "mlp":
        cases.append((jax.vmap(create), run_keys(3, 2)[0]))
    for fn, key in cases:
        once, default = run_once(fn, key), jax.jit(fn)(key)
        leaves = jax.tree.leaves((once.params, once.batch_stats, once.opt_state))
        assert len(leaves) > 3
        for a, b in zip(leaves, jax.tree.leaves((default.params, default.batch_stats,
                                                 default.opt_state))):
            if jnp.issubdtype(a.dtype, jnp.floating):
                np.testing.assert_array_max_ulp(np.asarray(a), np.asarray(b), maxulp=4)
            else:
                np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_jitted_step_does_not_recompile_on_second_call():
    state, step, _, keys = setup()
    traces = []

    def counted(*args):
        traces.append(1)
        return make_indexed_step(step)(*args)

    jitted = jax.jit(counted, donate_argnums=0)
    data = toy_data()
    data = (jnp.asarray(data.x), jnp.asarray(data.y))
    for t in range(3):
        rows = np.arange(16 * t, 16 * t + 16, dtype=np.int32)
        state, metrics = jitted(state, data, rows, keys[2], np.int32(t))
    assert len(traces) == 1
    assert state.step.dtype == jnp.int32 and int(state.step) == 3


def test_fit_loop_does_not_recompile_across_epochs(monkeypatch):
    state, step, eval_step, keys = setup()
    traces = []

    def counted(s, b, k):
        traces.append(1)
        return step(s, b, k)

    fit(state, counted, eval_step, toy_data(), toy_data(seed=1), keys,
        FitOptions(epochs=3, batch_size=16, epoch_mode="loop"))
    # at most one trace for the loop/scan choice (make_jaxpr) and one for the compiled step;
    # a recompiling loop would trace once per epoch
    assert len(traces) in (1, 2)


@pytest.mark.parametrize("model_name", ["mlp", "cnn"])
def test_scan_epoch_equals_loop_epoch(model_name):
    if model_name == "cnn":
        model, data = TinyCNN(), toy_image_data()
        sample = jnp.zeros((1, 6, 6, 1))
    else:
        model, data, sample = None, toy_data(), None
    out = {}
    for mode in ("scan", "loop"):
        state, step, eval_step, keys = setup(model, sample=sample)
        r = fit(state, step, eval_step, data, None, keys,
                FitOptions(epochs=3, batch_size=16, epoch_mode=mode))
        assert r.epoch_mode == mode
        out[mode] = params_of(r.state)
    assert max_diff(out["scan"], out["loop"]) < 1e-5


def toy_image_data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n).astype(np.int32)
    x = rng.normal(0, 1, (n, 6, 6, 1)).astype(np.float32)
    x[np.arange(n), y, y, 0] += 3.0  # a class-dependent bright pixel
    return Split(x, y)


@pytest.mark.parametrize("strategy,mode", [("vmap", "loop"), ("map", "loop"),
                                           ("sequential", "loop"), ("vmap", "scan")])
def test_k_seeds_differ_and_each_equals_its_single_run(strategy, mode):
    K, data = 3, toy_data()
    opts = FitOptions(epochs=2, batch_size=16, num_models=K, ensemble=strategy,
                      epoch_mode=mode)
    state, step, eval_step, keys = setup(num_models=K, seed=10)
    ens = fit(state, step, eval_step, data, data, keys, opts)
    assert ens.ensemble == strategy
    members = [params_of(ens.state, k) for k in range(K)]
    assert max_diff(members[0], members[1]) > 1e-3 and max_diff(members[1], members[2]) > 1e-3
    for k in range(K):
        s1, step1, ev1, keys1 = setup(seed=10 + k)
        single = fit(s1, step1, ev1, data, data, keys1,
                     dataclasses.replace(opts, num_models=None))
        assert max_diff(params_of(single.state), members[k]) < 1e-5
        # the per-model figures of the ensemble's record are member k's own
        for name in ("train_loss", "val_loss"):
            np.testing.assert_allclose(ens.history[-1][f"{name}_each"][k],
                                       single.history[-1][name], rtol=1e-4)
    rec = ens.history[-1]
    assert len(rec["train_loss_each"]) == K and len(rec["val_accuracy_each"]) == K


def test_auto_strategies_follow_layer_types():
    dense_state, dense_step, _, keys = setup()
    cnn_state, cnn_step, _, _ = setup(TinyCNN(), sample=jnp.zeros((1, 6, 6, 1)))
    idx = make_indexed_step(dense_step), make_indexed_step(cnn_step)
    rows, t = jnp.zeros((4,), jnp.int32), jnp.int32(0)
    dense_args = (dense_state, (jnp.zeros((8, 6)), jnp.zeros((8,), jnp.int32)), rows, keys[2], t)
    cnn_args = (cnn_state, (jnp.zeros((8, 6, 6, 1)), jnp.zeros((8,), jnp.int32)), rows,
                keys[2], t)
    assert choose_ensemble_strategy("auto", idx[0], *dense_args) == "vmap"
    assert choose_ensemble_strategy("auto", idx[1], *cnn_args) == "sequential"
    assert choose_epoch_mode("auto", idx[0], *dense_args) == "scan"
    assert choose_epoch_mode("auto", idx[1], *cnn_args) == "loop"


def data_with_nan(at=5):
    d = toy_data()
    x = d.x.copy()
    x[at, 0] = np.nan
    return Split(x, d.y)


def open_run(path, resume=False) -> Run:
    """A run directory driving fit, as an experiment opens it."""
    cfg = RunConfig(run_dir=str(path), resume=resume)
    return Run(RunDir.open(cfg, "test"), cfg)


def close_run(run: Run) -> None:
    run.close()
    run.rundir.release()


def test_nonfinite_loss_stops_at_that_step_and_keeps_last_checkpoint(tmp_path):
    run = open_run(tmp_path / "run")
    state, step, eval_step, keys = setup()
    clean = fit(state, step, eval_step, toy_data(), None, keys,
                FitOptions(epochs=2, batch_size=16), run)
    close_run(run)
    good = params_of(clean.state)
    run2 = open_run(tmp_path / "run", resume=True)
    with pytest.raises(NonFiniteError, match=r"non-finite \(loss nan\) at step (1[2-7]) in "
                                             r"epoch 3") as err:
        fit(clean.state, step, eval_step, data_with_nan(), None, keys,
            FitOptions(epochs=4, batch_size=16), run2)
    close_run(run2)
    assert 12 <= err.value.step < 18
    restored = Checkpointer(tmp_path / "run" / "checkpoints" / "model").restore_latest(state)
    assert restored[1] == {"epoch": 2, "batch": 0} and restored[2] == 12
    assert max_diff(params_of(restored[0]), good) == 0.0


def test_stop_policy_freezes_state_at_the_last_good_step():
    state, step, _, keys = setup()
    d = data_with_nan()
    batch = (jnp.asarray(d.x[:16]), jnp.asarray(d.y[:16]))
    new, m = jax.jit(step)(state, batch, keys[2])
    assert float(m["nonfinite"]) == 1.0 and int(new.bad_step) == 0 and int(new.step) == 0
    assert max_diff(params_of(new), params_of(state)) == 0.0
    ok = (jnp.asarray(d.x[16:32]), jnp.asarray(d.y[16:32]))
    after, _ = jax.jit(step)(new, ok, keys[2])  # frozen even for a good batch
    assert max_diff(params_of(after), params_of(state)) == 0.0


def test_skip_policy_drops_bad_updates_and_trains_on():
    state, step, eval_step, keys = setup(nonfinite="skip")
    r = fit(state, step, eval_step, data_with_nan(), toy_data(), keys,
            FitOptions(epochs=4, batch_size=16))
    assert all(np.isfinite(p).all() for p in params_of(r.state))
    assert int(r.state.bad_step) == -1 and int(r.state.step) == 4 * 6
    skipped = sum(rec["train_nonfinite"] * 6 for rec in r.history)
    assert skipped == pytest.approx(4)  # the NaN example is in one batch per epoch
    assert r.history[-1]["val_accuracy"] > 0.6


def test_checkpoints_keep_n_and_skip_a_corrupted_newest(tmp_path, caplog):
    state, *_ = setup()
    ck = Checkpointer(tmp_path / "ck", keep=2)
    states = [state.replace(step=jnp.int32(s)) for s in range(1, 4)]
    for s, st in enumerate(states, 1):
        ck.save(s, st, {"epoch": s})
    ck.wait()
    assert ck.steps() == [2, 3]
    newest = tmp_path / "ck" / "3" / "state"
    for f in sorted(p for p in newest.rglob("*") if p.is_file() and p.stat().st_size > 8):
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])  # truncate every data file
    restored, meta, step = Checkpointer(tmp_path / "ck", keep=2).restore_latest(state)
    assert step == 2 and meta == {"epoch": 2} and int(restored.step) == 2
    assert "unreadable" in caplog.text


def test_a_restored_state_runs_the_compiled_step_without_compiling_again(tmp_path):
    # orbax hands back arrays committed to a device; a state placed unlike the fresh one would
    # make a resumed run trace and compile its training step a second time
    state, step, _, keys = setup()
    data = toy_data()
    data = (jnp.asarray(data.x), jnp.asarray(data.y))
    rows = np.arange(16, dtype=np.int32)
    jitted = jax.jit(make_indexed_step(step))
    jitted(state, data, rows, keys[2], np.int32(0))
    ck = Checkpointer(tmp_path / "ck")
    ck.save(1, state, {"epoch": 1})
    ck.wait()
    restored, _ = ck.restore(1, state)
    ck.close()
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(state)):
        assert a.committed == b.committed and a.dtype == b.dtype
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    before = jitted._cache_size()
    jitted(restored, data, rows, keys[2], np.int32(0))
    assert jitted._cache_size() == before


def test_checkpoint_from_another_config_is_refused(tmp_path):
    state, *_ = setup()
    ck = Checkpointer(tmp_path / "ck")
    ck.save(1, state, {"epoch": 1})
    ck.close()
    other, *_ = setup(nn.MLP((32,), 3))
    with pytest.raises(CheckpointError, match=r"different configuration: params/Dense_0/bias "
                                              r"has shape \(16,\) there but \(32,\) here"):
        Checkpointer(tmp_path / "ck").restore_latest(other)


def test_resume_reaches_the_uninterrupted_parameters_bitwise(tmp_path):
    data, opts = toy_data(), FitOptions(epochs=4, batch_size=16)
    state, step, eval_step, keys = setup()
    full = fit(state, step, eval_step, data, data, keys, opts)
    run = open_run(tmp_path / "r")
    state, step, eval_step, keys = setup()
    fit(state, step, eval_step, data, data, keys, dataclasses.replace(opts, epochs=2), run)
    close_run(run)
    run = open_run(tmp_path / "r", resume=True)
    state, step, eval_step, keys = setup()  # a fresh process would start from scratch
    resumed = fit(state, step, eval_step, data, data, keys, opts, run)
    close_run(run)
    assert resumed.start_epoch == 2
    assert max_diff(params_of(resumed.state), params_of(full.state)) == 0.0
    assert int(resumed.state.step) == int(full.state.step)


def test_off_policy_reports_a_nonfinite_step_and_applies_it():
    state, step, _, keys = setup(nonfinite="off")
    d = data_with_nan()
    good = (jnp.asarray(d.x[16:32]), jnp.asarray(d.y[16:32]))
    _, m = jax.jit(step)(state, good, keys[2])
    assert float(m["nonfinite"]) == 0.0
    bad = (jnp.asarray(d.x[:16]), jnp.asarray(d.y[:16]))
    new, m = jax.jit(step)(state, bad, keys[2])
    assert float(m["nonfinite"]) == 1.0 and int(new.step) == 1 and int(new.bad_step) == -1
    assert not all(np.isfinite(p).all() for p in params_of(new))  # nothing guarded it
