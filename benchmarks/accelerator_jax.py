"""The JAX worker of ``benchmarks.accelerator``: dlfun's fit epoch and step, a bare JAX step and
(on request) plain Flax, for one model, every batch size and precision asked for.

Prints one ``RESULT {json}`` line per measurement (a row); a failing
measurement gives a row with ``error`` and the worker goes on. JAX runs on the platform that
``JAX_PLATFORMS`` names (the driver sets it from ``--device``).
"""

from __future__ import annotations

import dataclasses
import inspect
import time
from typing import Any, Callable

from benchmarks import harness
from benchmarks.accelerator import (LABELS, model_spec, resolve_batches, transformer_heads)
from benchmarks.baselines.specs import ModelSpec

NUM_BATCHES = 4  # distinct batches cycled through by the single-step contenders


@dataclasses.dataclass
class Setup:
    """One (model, batch, precision): the dlfun model, its data and the loss, all on device."""

    spec: ModelSpec
    batch: int
    precision: str
    model: Any
    loss: Callable
    xs: list
    ys: list
    note: str
    initial: Any = None  # the dlfun TrainState every contender starts from (copied)


# ----------------------------------------------------------------------------- models
def field_names(cls) -> set[str]:
    """The dataclass fields of a Flax module class (its constructor's keywords)."""
    return {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else \
        set(inspect.signature(cls).parameters)


def transformer_kwargs(cls, d_model: int, heads: int) -> dict:
    """Keywords for a transformer block of width ``d_model``, ``heads`` heads and a 4x MLP,
    under whichever of the usual names the class uses."""
    fields, out = field_names(cls), {}
    wanted = ((("d_model", "features", "dim", "embed_dim", "hidden_size"), d_model),
              (("num_heads", "heads", "n_heads"), heads),
              (("mlp_dim", "d_ff", "ff_dim", "mlp_features", "hidden_dim"), 4 * d_model))
    for names, value in wanted:
        name = next((n for n in names if n in fields), None)
        if name is not None:
            out[name] = value
    return out


def dlfun_model_class(name: str):
    """``(class, keywords)`` of dlfun's model for a benchmark model name."""
    from benchmarks import cnn_models
    from dlfun import nn as dnn

    if name == "mlp":
        return dnn.MLP, dict(hidden=(512, 512), out=10)
    if name in ("lenet", "cnn"):  # on dlfun's conv ops, as benchmarks.cnn_step measures them
        return (cnn_models.LeNet if name == "lenet" else cnn_models.SmallCNN), {}
    if name == "resnet20":
        return dnn.ResNet20, dict(num_classes=10)
    if name == "lstm":
        from benchmarks.lstm_step import LSTMRegressor

        return LSTMRegressor, dict(variant="fused")
    raise ValueError(name)


def dlfun_model(name: str, precision: str, smoke: bool) -> tuple[Any, str]:
    """The dlfun model, built with ``dtype=bfloat16`` for bf16 where its class has that field;
    returns ``(model, note)``."""
    import jax.numpy as jnp

    if name == "transformer":
        spec = model_spec(name, smoke)
        from dlfun.nn import TransformerBlock as cls
        kwargs = transformer_kwargs(cls, spec.shape[1], transformer_heads(smoke))
    else:
        cls, kwargs = dlfun_model_class(name)
    if precision == "f32":
        return cls(**kwargs), ""
    if "dtype" in field_names(cls):
        return cls(**kwargs, dtype=jnp.bfloat16), "dtype=bf16, bf16 inputs"
    return cls(**kwargs), "bf16 inputs (no dtype field; layers follow the inputs)"


def float32_loss(kind: str) -> Callable:
    """dlfun's loss on float32 outputs (bf16 logits are cast first, as mixed precision does)."""
    import jax.numpy as jnp

    from dlfun import losses

    base = losses.softmax_cross_entropy if kind == "ce" else losses.mse

    def loss(out, y):
        out = jnp.asarray(out[0] if isinstance(out, tuple) else out, jnp.float32)
        if kind != "ce" and out.shape != y.shape:  # one target per example, e.g. a sequence
            y = jnp.broadcast_to(y.reshape(y.shape[:1] + (1,) * (out.ndim - 1)), out.shape)
        return base(out, y)

    return loss


# ----------------------------------------------------------------------------- setup
def make_setup(spec: ModelSpec, batch: int, precision: str, smoke: bool) -> Setup:
    """Model, loss and ``NUM_BATCHES`` device batches (inputs cast to bf16 for bf16)."""
    import jax
    import jax.numpy as jnp

    from benchmarks.baselines.specs import make_data

    from dlfun.train import create_train_state

    model, note = dlfun_model(spec.name, precision, smoke)
    x, y = make_data(spec, batch, NUM_BATCHES)
    dtype = jnp.bfloat16 if precision == "bf16" else jnp.float32
    xs = [jax.device_put(a).astype(dtype) for a in x]
    ys = [jax.device_put(a) for a in y]
    tx = optimizer(spec)
    # jitted: initialising op by op costs seconds on a GPU (each op compiled on its own)
    init = jax.jit(lambda key, x: create_train_state(model, tx, key, x))
    return Setup(spec, batch, precision, model, float32_loss(spec.loss), xs, ys, note,
                 init(jax.random.key(0), xs[0][:1]))


def optimizer(spec: ModelSpec):
    """The spec's Optax optimizer (the same for every JAX contender)."""
    from benchmarks.baselines.flax_models import make_optimizer

    return make_optimizer(spec.optimizer)


def low_precision_share(fn: Callable, *args) -> tuple[int, int]:
    """``(bf16, all)``: how many matrix products and convolutions in ``fn``'s jaxpr (sub-jaxprs
    of scans, conds and custom derivatives included) take bfloat16 operands."""
    import jax

    counts = [0, 0]

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name in ("dot_general", "conv_general_dilated"):
                counts[1] += 1
                counts[0] += str(eqn.invars[0].aval.dtype) == "bfloat16"
            for v in eqn.params.values():
                for sub in v if isinstance(v, (tuple, list)) else (v,):
                    inner = getattr(sub, "jaxpr", sub)
                    if hasattr(inner, "eqns"):
                        walk(inner)

    walk(jax.make_jaxpr(fn)(*args).jaxpr)
    return counts[0], counts[1]


# ----------------------------------------------------------------------------- contenders
def dlfun_state(s: Setup):
    """A fresh copy of the setup's initial dlfun ``TrainState`` (each contender donates its
    own)."""
    import jax
    import jax.numpy as jnp

    return jax.tree.map(jnp.copy, s.initial)


def dlfun_step_runner(s: Setup) -> tuple[Callable, int, str]:
    """dlfun's step, one jitted call per step: ``(run_n, steps per call, note)``."""
    import jax

    from dlfun.train import make_train_step

    step = make_train_step(s.model, s.loss)
    box = dict(state=dlfun_state(s), i=0)
    keys = list(jax.random.split(jax.random.key(1), NUM_BATCHES))
    note = ""
    if s.precision == "bf16":
        low, total = low_precision_share(step, box["state"], (s.xs[0], s.ys[0]), keys[0])
        note = f"bf16 dots/convs {low}/{total}"
    jstep = jax.jit(step, donate_argnums=0)

    def run_n(n):
        st, i = box["state"], box["i"]
        for _ in range(n):
            st, _ = jstep(st, (s.xs[i % NUM_BATCHES], s.ys[i % NUM_BATCHES]), keys[i % NUM_BATCHES])
            i += 1
        jax.block_until_ready(st)
        box.update(state=st, i=i)

    return run_n, 1, note


def dlfun_epoch_runner(s: Setup, scan_steps: int) -> tuple[Callable, int, str]:
    """dlfun's step scanned ``scan_steps`` times per dispatch over a device-resident dataset of
    ``scan_steps * batch`` examples (``make_scan_epoch``, as ``fit``'s scan epochs run)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from dlfun.train import make_scan_epoch, make_train_step

    data = (jnp.concatenate([s.xs[i % NUM_BATCHES] for i in range(scan_steps)]),
            jnp.concatenate([s.ys[i % NUM_BATCHES] for i in range(scan_steps)]))
    epoch_fn = jax.jit(make_scan_epoch(make_train_step(s.model, s.loss), s.batch),
                       donate_argnums=0)
    box = dict(state=dlfun_state(s), i=0)
    data_key, step_key = jax.random.key(2), jax.random.key(3)

    def run_n(n):
        st, i = box["state"], box["i"]
        for _ in range(n):
            st, _ = epoch_fn(st, data, data_key, step_key, np.int32(i))
            i += 1
        jax.block_until_ready(st)
        box.update(state=st, i=i)

    return run_n, scan_steps, f"{scan_steps} steps per dispatch"


def bare_step_fn(model, tx, loss: Callable, has_stats: bool, train_kw: dict) -> Callable:
    """``step(params, stats, opt_state, x, y)``: ``value_and_grad`` + Optax, nothing else."""
    import jax
    import optax

    def loss_fn(params, stats, x, y):
        if has_stats:
            out, upd = model.apply({"params": params, "batch_stats": stats}, x,
                                   mutable=["batch_stats"], **train_kw)
            return loss(out, y), upd["batch_stats"]
        return loss(model.apply({"params": params}, x, **train_kw), y), stats

    def step(params, stats, opt_state, x, y):
        (value, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, stats, x, y)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), stats, opt_state, value

    return step


def bare_jax_runner(s: Setup) -> tuple[Callable, int, str]:
    """The same dlfun model in a bare jitted step (no gradient norm, no NaN guard)."""
    import jax

    from dlfun.nn.checks import takes_train

    state, tx = dlfun_state(s), optimizer(s.spec)
    has_stats = bool(state.batch_stats)
    train_kw = {"train": True} if takes_train(s.model) else {}
    step = jax.jit(bare_step_fn(s.model, tx, s.loss, has_stats, train_kw),
                   donate_argnums=(0, 1, 2))
    box = dict(p=state.params, b=state.batch_stats, o=state.opt_state, i=0)

    def run_n(n):
        p, b, o, i = box["p"], box["b"], box["o"], box["i"]
        for _ in range(n):
            p, b, o, _ = step(p, b, o, s.xs[i % NUM_BATCHES], s.ys[i % NUM_BATCHES])
            i += 1
        jax.block_until_ready((p, b, o))
        box.update(p=p, b=b, o=o, i=i)

    return run_n, 1, ""


def plain_flax_runner(s: Setup) -> tuple[Callable, int, str]:
    """The plain-Flax reference (``benchmarks.baselines.flax_models``) in the same precision."""
    import jax
    import jax.numpy as jnp

    from benchmarks.baselines import flax_models

    if s.spec.name not in flax_models.MODULES:
        raise NotImplementedError(f"no plain-Flax reference for {s.spec.name}")
    dtype = jnp.bfloat16 if s.precision == "bf16" else jnp.float32
    module, tx, step = flax_models.build(s.spec, dtype)
    variables = dict(module.init(jax.random.key(0), s.xs[0][:1], train=False))
    jstep = jax.jit(step, donate_argnums=(0, 1))
    box = dict(v=variables, o=tx.init(variables["params"]), i=0)

    def run_n(n):
        v, o, i = box["v"], box["o"], box["i"]
        for _ in range(n):
            v, o, _ = jstep(v, o, s.xs[i % NUM_BATCHES], s.ys[i % NUM_BATCHES])
            i += 1
        jax.block_until_ready((v, o))
        box.update(v=v, o=o, i=i)

    return run_n, 1, "dtype=bf16" if s.precision == "bf16" else ""


# ----------------------------------------------------------------------------- timing
def timed(run_n: Callable, per_call: int, seconds: float) -> dict:
    """Time ``run_n`` (its first call compiles): steps/s and compile seconds."""
    t0 = time.perf_counter()
    run_n(1)
    first = time.perf_counter() - t0
    r = harness.time_steps(run_n, seconds=seconds / 3, repeats=3,
                           warmup_seconds=min(1.0, seconds / 3), min_steps=1)
    calls = r["steps_per_s"]
    return dict(steps_per_s=calls * per_call, compile_s=max(0.0, first - 1.0 / calls),
                all_steps_per_s=[c * per_call for c in r["all_steps_per_s"]])


def row(s: Setup, contender: str, **fields) -> dict:
    """A result row with the setup's identity and, if timed, the derived figures."""
    import jax

    out = dict(kind="row", model=s.spec.name, batch=s.batch, precision=s.precision,
               contender=contender, label=LABELS[contender], unit=s.spec.unit,
               device_kind=jax.devices()[0].device_kind, backend=jax.default_backend(),
               **fields)
    if "steps_per_s" in out:
        out["items_per_s"] = out["steps_per_s"] * s.batch * s.spec.items_per_example
        out["tflops"] = s.spec.train_flops(s.batch) * out["steps_per_s"] / 1e12
    return out


def measure(s: Setup, contender: str, args) -> dict:
    """One contender on one setup, as a row (with ``error`` if it failed)."""
    runners = {"dlfun_step": dlfun_step_runner, "bare_jax": bare_jax_runner,
               "plain_flax": plain_flax_runner,
               "dlfun_epoch": lambda s: dlfun_epoch_runner(s, args.scan_steps)}
    try:
        run_n, per_call, note = runners[contender](s)
        r = timed(run_n, per_call, args.seconds)
    except Exception as e:  # noqa: BLE001 -- one failing contender must not end the run
        first = (str(e).splitlines() or [""])[0][:160]
        return row(s, contender, error=f"{type(e).__name__}: {first}", note=s.note)
    own = contender != "plain_flax"  # the setup's note is about dlfun's model
    return row(s, contender, note="; ".join(n for n in (s.note if own else "", note) if n), **r)


def setups(spec: ModelSpec, args):
    """Yield a :class:`Setup` per batch size and precision; bf16 that cannot even be set up
    (a layer refusing bf16 inputs) falls back to f32 with a note."""
    for batch in resolve_batches(spec, args.batch_sizes.split(","), args.smoke):
        for precision in [p for p in args.precisions.split(",") if p]:
            try:
                s = make_setup(spec, batch, precision, args.smoke)
            except Exception as e:  # noqa: BLE001
                if precision != "bf16":
                    raise
                s = make_setup(spec, batch, "f32", args.smoke)
                s.precision = "bf16"
                s.note = f"bf16 failed ({type(e).__name__}): ran f32"
            yield s


def main(args) -> None:
    """Worker entry: measure every (batch, precision, contender) of ``args.model``."""
    from dlfun import platform

    platform.configure_cpu()  # before JAX starts (CPU flags; nothing on a GPU)
    spec = model_spec(args.model, args.smoke)
    contenders = [c for c in args.contenders.split(",") if c]
    for s in setups(spec, args):
        for contender in contenders:
            harness.emit_result(measure(s, contender, args))
        del s
