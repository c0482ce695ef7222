"""Every parallel scheme, built the same way so experiments and benchmarks can compare them.

A :class:`Scheme` bundles a scheme's mesh, its placed initial state, its step, how a batch
is placed for it, and the single-device reference it must agree with (same initial values,
same batches, same keys). The networks are the small ones of :mod:`.nets` (and an MLP cut
into stages for the pipeline) on 8x8 digit images; tensor parallelism and FSDP also train
the transformer of :mod:`.pixel_lm` on the same images read as pixel sequences.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

from .. import losses
from ..errors import ConfigError
from ..nn import Dense
from ..train.metrics import classification_metrics
from ..train.state import TrainState, create_train_state
from ..train.step import make_predict, make_train_step
from ..validate import check_int_range
from . import pipeline as pp
from . import pixel_lm
from .collectives import tree_bytes
from .data_parallel import make_data_parallel, model_axis_name
from .devices import DATA, MODEL, STAGE, make_mesh
from .distributed import global_batch, replicate, to_host
from .nets import ShardedMLP, SmallCNN
from .rules import FSDP_RULES, HYBRID_RULES, TENSOR_PARALLEL_RULES
from .sharding import create_sharded_train_state, make_sharded_train_step, state_shardings

SCHEMES = ("dp_jit", "dp_shard_map", "dp_pmap", "tensor", "fsdp", "hybrid", "pipeline")
MODELS = {"dp_jit": ("cnn",), "dp_shard_map": ("cnn",), "dp_pmap": ("cnn",),
          "tensor": ("mlp", "transformer"), "fsdp": ("mlp", "transformer"),
          "hybrid": ("cnn",), "pipeline": ("mlp",)}
"""The networks each scheme trains; the first is its default (``model="auto"``)."""


@dataclasses.dataclass(frozen=True)
class SchemeOptions:
    """The knobs shared by all schemes.

    Attributes:
      batch_norm, dropout: for the CNN (data-parallel and hybrid schemes).
      model_devices: size of the ``model`` axis in the hybrid scheme.
      microbatches: M for the pipeline.
      pipeline_blocks, pipeline_width: the pipelined MLP (blocks >= stages).
      mlp_blocks, mlp_width: the tensor-parallel / FSDP MLP (hidden sizes, width).
      model: the network: ``"auto"`` (the scheme's own, the first of :data:`MODELS`), or one
        the scheme takes (``"transformer"`` for tensor and FSDP).
      transformer_layers, transformer_width, transformer_heads, transformer_mlp: the
        transformer's blocks, residual width, heads and MLP hidden units.
    """

    batch_norm: bool = True
    dropout: float = 0.0
    model_devices: int = 2
    microbatches: int = 4
    pipeline_blocks: int = 8
    pipeline_width: int = 128
    mlp_blocks: tuple[int, ...] = (256, 256)
    mlp_width: int = 64
    model: str = "auto"
    transformer_layers: int = 2
    transformer_width: int = 64
    transformer_heads: int = 8
    transformer_mlp: int = 256

    def model_for(self, scheme: str) -> str:
        """The network ``scheme`` trains with these options."""
        return MODELS[scheme][0] if self.model == "auto" else self.model


@dataclasses.dataclass
class Scheme:
    """One scheme, ready to train, and its single-device reference.

    Attributes:
      name: one of :data:`SCHEMES`.
      mesh: its devices.
      state: the initial state in the scheme's layout.
      step: compiled ``step(state, batch, key) -> (state, metrics)`` (donates the state).
      put_batch: ``(x_rows, y_rows)`` (this process's rows, numpy) -> the step's batch.
      host_params: scheme state -> host parameter pytree shaped like the reference's.
      reference_state: the same initial values on one device, unsharded.
      reference_step: jitted single-device step computing what ``step`` should.
      accuracy: ``(scheme state, x, y) -> float``: classification accuracy of the trained
        network on host arrays (evaluated on one device).
      notes: scheme-specific figures (pipeline bubble fraction, mesh shape, ...).
      ideal_traffic: the scheme's own least collective traffic per step, where known
        (``bytes_per_device``, ``formula``; :func:`.pixel_lm.ideal_traffic`).
    """

    name: str
    mesh: jax.sharding.Mesh
    state: Any
    step: Callable
    put_batch: Callable
    host_params: Callable[[Any], Any]
    reference_state: TrainState
    reference_step: Callable
    accuracy: Callable[[Any, np.ndarray, np.ndarray], float]
    notes: dict
    ideal_traffic: dict | None = None

    @property
    def param_bytes(self) -> int:
        """Bytes of the whole (unsharded) parameter set = bytes of one gradient."""
        return tree_bytes(self.reference_state.params)


def check_scheme_fits(scheme: str, devices: int, batch_size: int | None = None,
                      options: SchemeOptions = SchemeOptions()) -> None:
    """Refuse a scheme whose mesh would not divide what it splits, from the numbers alone.

    Needs no JAX devices and compiles nothing (call it while parsing flags): it decides what
    :func:`build_scheme` and the first step would otherwise fail on with jax's
    ``IndivisibleError``, or quietly change (a hybrid ``model`` axis wider than the devices).
    What each scheme splits:

    * ``dp_*``: the batch over all devices;
    * ``tensor``: each MLP block's hidden units (``options.mlp_blocks``) over all devices;
      the transformer's heads, MLP hidden units and vocabulary;
    * ``fsdp``: the batch, the hidden units and (between blocks) the ``options.mlp_width``
      features over all devices; the transformer's width, heads, MLP hidden units and
      vocabulary, and the batch;
    * ``hybrid``: the batch over all devices, the CNN's hidden units over
      ``options.model_devices``, which must divide the devices;
    * ``pipeline``: the MLP's ``options.pipeline_blocks`` blocks into one stage per device
      (at least one block each), the batch into ``options.microbatches`` micro-batches.

    Args:
      scheme: one of :data:`SCHEMES`.
      devices: devices in all (``--devices``).
      batch_size: the global batch (``--batch-size``); None skips the batch checks.
      options: the scheme's knobs.

    Raises:
      ConfigError: one line naming the flag and a value that works, e.g. ``--scheme tensor
      splits the MLP's hidden units (256, 256) over --devices 6, which does not divide them;
      use --devices 4``; or a network the scheme does not train (``--model``).
    """
    if scheme not in SCHEMES:
        raise ConfigError(f"unknown scheme {scheme!r}; choose one of {', '.join(SCHEMES)}")
    _check_model(scheme, options.model)
    check_int_range("devices", devices, 1)
    if batch_size is not None:
        check_int_range("batch_size", batch_size, 1)
    fits = {"tensor": _fits_tensor, "fsdp": _fits_fsdp, "hybrid": _fits_hybrid,
            "pipeline": _fits_pipeline}.get(scheme, _fits_data_parallel)
    if options.model_for(scheme) == "transformer":
        fits = _fits_transformer_tensor if scheme == "tensor" else _fits_transformer_fsdp
    fits(devices, batch_size, options)


def _check_model(scheme: str, model: str) -> None:
    """ConfigError unless ``scheme`` trains ``model`` (or ``model`` is "auto")."""
    known = sorted({m for ms in MODELS.values() for m in ms})
    if model != "auto" and model not in known:
        raise ConfigError(f"unknown --model {model!r}; choose auto, {', '.join(known)}")
    if model in ("auto", *MODELS[scheme]):
        return
    takers = [s for s in SCHEMES if model in MODELS[s] and not s.startswith("dp_")]
    raise ConfigError(f"--scheme {scheme} trains --model {' or '.join(MODELS[scheme])}, not "
                      f"{model}; use --scheme {' or '.join(takers) or 'dp_jit'} for the "
                      f"{model}")


def _devices_that_fit(devices: int, batch_size: int | None, sizes: Sequence[int]) -> int:
    """The largest device count <= ``devices`` dividing every size and the batch."""
    sizes = [*sizes, *([batch_size] if batch_size else [])]
    return max(d for d in range(1, devices + 1) if all(s % d == 0 for s in sizes))


def _refuse_split(scheme: str, what: str, sizes: Sequence[int], devices: int,
                  batch_size: int | None, also: Sequence[int] = ()) -> None:
    """ConfigError unless ``devices`` divides every size (``also``: sizes split too but not
    named, which the suggested count must divide as well)."""
    if all(s % devices == 0 for s in sizes):
        return
    shown = ", ".join(map(str, sizes))
    fit = _devices_that_fit(devices, batch_size, [*sizes, *also])
    raise ConfigError(f"--scheme {scheme} splits {what} ({shown}) over --devices {devices}, "
                      f"which does not divide them; use --devices {fit}")


def _refuse_batch(batch_size: int | None, parts: int, flag: str, what: str,
                  devices: int) -> None:
    """ConfigError unless the batch splits into ``parts`` equal pieces (the suggestion is a
    multiple of ``devices`` too, as the parallel experiments need)."""
    if batch_size is None or batch_size % parts == 0:
        return
    step = math.lcm(parts, devices)
    fit = max(step, (batch_size + step // 2) // step * step)  # the nearest multiple
    raise ConfigError(f"--batch-size {batch_size} cannot be split into {flag} {parts} {what}; "
                      f"use --batch-size {fit} (a multiple of {step})")


def _fits_data_parallel(devices, batch_size, opts) -> None:
    _refuse_batch(batch_size, devices, "--devices", "equal shards", devices)


def _fits_tensor(devices, batch_size, opts) -> None:
    _refuse_split("tensor", "the MLP's hidden units", opts.mlp_blocks, devices, batch_size)


def _fits_fsdp(devices, batch_size, opts) -> None:
    # Rules give a kernel's hidden axis `data`, else its embed axis: the hidden units, and the
    # width between blocks (biases of every block but the last), are split over all devices.
    between = (opts.mlp_width,) if len(opts.mlp_blocks) > 1 else ()
    _refuse_split("fsdp", "the MLP's hidden units", opts.mlp_blocks, devices, batch_size,
                  also=between)
    _refuse_split("fsdp", "the features between the MLP's blocks", between, devices,
                  batch_size, also=opts.mlp_blocks)
    _fits_data_parallel(devices, batch_size, opts)


def _transformer_sizes(opts) -> dict[str, int]:
    return dict(width=opts.transformer_width, heads=opts.transformer_heads,
                hidden=opts.transformer_mlp, vocab=pixel_lm.VOCAB)


def _fits_transformer_tensor(devices, batch_size, opts) -> None:
    # Megatron: heads (QKV columns, output-projection rows), MLP hidden units and the
    # vocabulary (embedding rows, output columns) over all devices; the width is not split.
    t = _transformer_sizes(opts)
    _refuse_split("tensor", "the transformer's heads, MLP hidden units and vocabulary",
                  (t["heads"], t["hidden"], t["vocab"]), devices, batch_size)


def _fits_transformer_fsdp(devices, batch_size, opts) -> None:
    # Each parameter over all devices along its first of mlp, embed, heads, vocab (the
    # rules' order): kernels by width or hidden units, the QKV bias by heads, the output
    # bias by vocabulary.
    t = _transformer_sizes(opts)
    _refuse_split("fsdp", "the transformer's width, heads, MLP hidden units and vocabulary",
                  (t["width"], t["heads"], t["hidden"], t["vocab"]), devices, batch_size)
    _fits_data_parallel(devices, batch_size, opts)


def _fits_hybrid(devices, batch_size, opts) -> None:
    m, hidden = opts.model_devices, SmallCNN.hidden
    check_int_range("model_devices", m, 1)
    if m > devices or devices % m or hidden % m:
        fit = max(k for k in range(1, min(m, devices) + 1) if devices % k == 0 and hidden % k == 0)
        why = (f"is more than --devices {devices}" if m > devices else
               f"does not divide --devices {devices}" if devices % m else
               f"does not divide the CNN's {hidden} hidden units")
        raise ConfigError(f"--scheme hybrid: --model-devices {m} {why}; use --model-devices "
                          f"{fit} (it must divide both --devices and {hidden})")
    _fits_data_parallel(devices, batch_size, opts)


def _fits_pipeline(devices, batch_size, opts) -> None:
    blocks = check_int_range("pipeline_blocks", opts.pipeline_blocks, 1)
    if blocks < devices:
        raise ConfigError(f"--scheme pipeline puts one stage on each of --devices {devices}, "
                          f"which needs at least {devices} blocks; use --pipeline-blocks "
                          f"{devices} (or --devices {blocks})")
    microbatches = check_int_range("microbatches", opts.microbatches, 1)
    _refuse_batch(batch_size, microbatches, "--microbatches", "equal micro-batches", devices)


def build_scheme(name: str, num_devices: int, sample_x: np.ndarray,
                 tx: optax.GradientTransformation, key: jax.Array,
                 opts: SchemeOptions = SchemeOptions()) -> Scheme:
    """Build scheme ``name`` on the first ``num_devices`` devices.

    Args:
      sample_x: example inputs ``(batch, 8, 8, 1)`` (shape only; its batch is the global
        batch, for which the transformer's ideal traffic is worked out).
      tx: the optimizer.
      key: the initialisation key (shared with the reference).

    Raises:
      ConfigError: an unknown scheme, or one that does not fit ``num_devices``
        (:func:`check_scheme_fits`).
    """
    check_scheme_fits(name, num_devices, None, opts)
    builders = {"tensor": _tensor, "fsdp": _fsdp, "hybrid": _hybrid, "pipeline": _pipeline}
    if name.startswith("dp_"):
        return _data_parallel(name, num_devices, sample_x, tx, key, opts)
    return builders[name](num_devices, sample_x, tx, key, opts)


def _classifier_step(model: nn.Module, prepare: Callable | None = None) -> Callable:
    """dlfun's cross-entropy step; ``prepare`` (if given) maps each batch first, inside."""
    step = make_train_step(model, losses.softmax_cross_entropy,
                           metrics_fn=classification_metrics)
    if prepare is None:
        return step
    return lambda state, batch, key: step(state, prepare(batch), key)


def _reference(model: nn.Module, tx, key, sample_input,
               prepare: Callable | None = None) -> tuple[TrainState, Callable]:
    state = create_train_state(model, tx, key, sample_input[:1])
    return state, jax.jit(_classifier_step(model, prepare), donate_argnums=0)


def _accuracy_of(model: nn.Module, host_state: Callable[[Any], TrainState]) -> Callable:
    """``accuracy(state, x, y)`` of ``model`` with the state's parameters on one device."""
    predict = jax.jit(make_predict(model))

    def accuracy(state, x, y) -> float:
        logits = predict(jax.device_put(host_state(state), jax.devices()[0]), x)
        return float(np.mean(np.argmax(np.asarray(logits), -1) == y))

    return accuracy


def _data_parallel(name, n, sample_x, tx, key, opts) -> Scheme:
    method = name[len("dp_"):]
    mesh = make_mesh((n,), (DATA,))

    def cnn(axis_name):
        return SmallCNN(batch_norm=opts.batch_norm, dropout_rate=opts.dropout,
                        axis_name=axis_name)

    ref_state, ref_step = _reference(cnn(None), tx, key, sample_x)
    dp = make_data_parallel(cnn(model_axis_name(method)), losses.softmax_cross_entropy, mesh,
                            method, metrics_fn=classification_metrics)
    accuracy = _accuracy_of(cnn(None), lambda s: to_host(dp.get_state(s)))
    return Scheme(name, mesh, dp.put_state(ref_state), dp.step, dp.put_batch,
                  lambda s: to_host(dp.get_state(s).params), ref_state, ref_step, accuracy,
                  dict(mesh=f"data={n}"))


def _sharded(name, mesh, model, rules, batch_axes, sample_x, tx, key, notes) -> Scheme:
    """A scheme that is dlfun's ordinary step under a rules table (tensor, FSDP, hybrid)."""
    ref_state, ref_step = _reference(model, tx, key, sample_x)
    state = create_sharded_train_state(model, tx, key, sample_x[:1], mesh, rules)
    shardings = state_shardings(model, tx, sample_x[:1], mesh, rules)
    compiled = make_sharded_train_step(_classifier_step(model), mesh, shardings, rules,
                                       batch_axes)
    return Scheme(name, mesh, state, compiled, lambda b: global_batch(b, mesh, batch_axes),
                  lambda s: to_host(s.params), ref_state, ref_step,
                  _accuracy_of(model, to_host), dict(notes, mesh=_mesh_text(mesh)))


def _mesh_text(mesh: jax.sharding.Mesh) -> str:
    return " x ".join(f"{k}={v}" for k, v in mesh.shape.items())


def _sharded_transformer(name, mesh, rules, sample_x, tx, key, opts) -> Scheme:
    """Tensor parallel or FSDP on the pixel transformer: digits batches in, turned into
    pixel sequences inside the step (:func:`.pixel_lm.pixel_batch`)."""
    model = pixel_lm.pixel_transformer(opts.transformer_layers, opts.transformer_width,
                                       opts.transformer_heads, opts.transformer_mlp)
    tokens = pixel_lm.sample_tokens()
    ref_state, ref_step = _reference(model, tx, key, tokens, pixel_lm.pixel_batch)
    state = create_sharded_train_state(model, tx, key, tokens, mesh, rules)
    shardings = state_shardings(model, tx, tokens, mesh, rules)
    compiled = make_sharded_train_step(_classifier_step(model, pixel_lm.pixel_batch), mesh,
                                       shardings, rules, DATA)
    n = mesh.devices.size
    ideal = pixel_lm.ideal_traffic(name, n, len(sample_x), opts.transformer_layers,
                                   opts.transformer_width, tree_bytes(ref_state.params))
    notes = dict(model="transformer", mesh=_mesh_text(mesh),
                 task="next pixel of the digits (64 grey-level tokens each); test_accuracy "
                      "is per pixel",
                 layers=opts.transformer_layers, width=opts.transformer_width,
                 heads=opts.transformer_heads, mlp=opts.transformer_mlp,
                 vocab=pixel_lm.VOCAB, seq_len=pixel_lm.PIXELS)
    return Scheme(name, mesh, state, compiled, lambda b: global_batch(b, mesh, DATA),
                  lambda s: to_host(s.params), ref_state, ref_step,
                  pixel_lm.next_pixel_accuracy(model, to_host), notes, ideal)


def _tensor(n, sample_x, tx, key, opts) -> Scheme:
    mesh = make_mesh((1, n), (DATA, MODEL))
    if opts.model_for("tensor") == "transformer":
        return _sharded_transformer("tensor", mesh, TENSOR_PARALLEL_RULES, sample_x, tx, key,
                                    opts)
    return _sharded("tensor", mesh, ShardedMLP(opts.mlp_blocks, opts.mlp_width),
                    TENSOR_PARALLEL_RULES, DATA, sample_x, tx, key, {})


def _fsdp(n, sample_x, tx, key, opts) -> Scheme:
    mesh = make_mesh((n, 1), (DATA, MODEL))
    if opts.model_for("fsdp") == "transformer":
        return _sharded_transformer("fsdp", mesh, FSDP_RULES, sample_x, tx, key, opts)
    return _sharded("fsdp", mesh, ShardedMLP(opts.mlp_blocks, opts.mlp_width), FSDP_RULES,
                    DATA, sample_x, tx, key, {})


def _hybrid(n, sample_x, tx, key, opts) -> Scheme:
    m = opts.model_devices  # check_scheme_fits: m divides n
    mesh = make_mesh((n // m, m), (DATA, MODEL))
    model = SmallCNN(batch_norm=opts.batch_norm, dropout_rate=opts.dropout)
    return _sharded("hybrid", mesh, model, HYBRID_RULES, (DATA, MODEL), sample_x, tx, key, {})


def pipeline_layers(blocks: int, width: int, classes: int = 10) -> list[nn.Module]:
    """An MLP as ``blocks`` pipeline-able blocks: (flatten ->) Dense(width) -> ReLU, ...,
    and a final Dense(classes) block."""
    def block(first: bool) -> nn.Sequential:
        flat = [lambda x: x.reshape(x.shape[0], -1)] if first else []
        return nn.Sequential(flat + [Dense(width), nn.relu])

    return [block(i == 0) for i in range(blocks - 1)] + [Dense(classes)]


def _pipeline(n, sample_x, tx, key, opts) -> Scheme:
    mesh = make_mesh((n,), (STAGE,))
    stages = pp.split_layers(pipeline_layers(opts.pipeline_blocks, opts.pipeline_width), n)
    params, plan = pp.init_stages(stages, key, sample_x[:1])
    ref_state = TrainState(step=np.int32(0), apply_fn=None, params=params, tx=tx,
                           opt_state=tx.init(params), batch_stats={}, bad_step=np.int32(-1))
    ref_step = jax.jit(pp.make_sequential_train_step(plan, losses.softmax_cross_entropy),
                       donate_argnums=0)
    state = pp.create_pipeline_state(plan, params, tx, mesh)
    step = pp.make_pipeline_train_step(plan, losses.softmax_cross_entropy, mesh,
                                       opts.microbatches)
    shardings = jax.tree.map(lambda a: a.sharding, state)
    batch = NamedSharding(mesh, P())
    compiled = jax.jit(step, in_shardings=(shardings, batch, batch),
                       out_shardings=(shardings, batch), donate_argnums=0)
    notes = dict(mesh=f"stage={n}", stages=n, microbatches=opts.microbatches,
                 bubble_fraction=pp.bubble_fraction(n, opts.microbatches))
    host_params = lambda s: pp.unstack_params(plan, to_host(s.params["stages"]))  # noqa: E731
    predict = jax.jit(lambda p, x: pp.sequential_apply(plan, p, x))

    def accuracy(s, x, y) -> float:
        return float(np.mean(np.argmax(np.asarray(predict(host_params(s), x)), -1) == y))

    return Scheme("pipeline", mesh, state, compiled, lambda b: replicate(b, mesh), host_params,
                  ref_state, ref_step, accuracy, notes)
