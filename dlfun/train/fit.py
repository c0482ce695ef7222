"""``fit``: epochs of a training step with evaluation, logging, checkpoints and resume.

One model or K models at once (seeds of an ensemble: the state has a leading axis K and
each model has its own init key, data order and dropout keys). The epoch runs as a Python
loop of jitted steps or as one ``lax.scan`` (see :mod:`dlfun.train.epoch`); both consume the
same batches and keys, and so does a run resumed from a checkpoint.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from ..data.batching import batch_indices, num_batches
from ..data.split import Split
from ..errors import ConfigError, NonFiniteError
from .early_stopping import BestTracker, EarlyStopping
from .epoch import (choose_ensemble_strategy, choose_epoch_mode, compiled_over_models,
                    loop_epoch, make_indexed_step, make_member_step, make_scan_epoch,
                    over_models, sequential_over_models)
from .hooks import RunHooks


@dataclasses.dataclass(frozen=True)
class FitOptions:
    """How :func:`fit` trains (not what: model, loss and data are arguments)."""

    epochs: int
    batch_size: int
    name: str = "model"
    """Names this model's checkpoints folder and tags its metric records."""
    num_models: int | None = None
    """K for K models at once (state stacked on a leading axis); None for one model."""
    epoch_mode: str = "auto"
    """"loop", "scan" or "auto" (the faster for this model and backend)."""
    ensemble: str = "auto"
    """How K models run: "vmap", "map" (lax.map), "sequential" (one compiled single-model step
    per model) or "auto" (sequential for convolutional models on CPU, vmap otherwise)."""
    eval_batch_size: int = 1024
    loss_key: str = "loss"
    """The step metric shown in the progress bar and quoted when training stops on NaN/inf."""
    nonfinite_stop: str = "any"
    """With K models and the "stop" policy: training stops when "any" model's loss or
    gradients become NaN/inf, or only when "all" have (the members of a hyperparameter sweep
    are independent: a diverged one stays frozen at its last good state, the others go on,
    and each epoch record gives ``nonfinite_step_each``, -1 for members still training)."""
    early_stopping: EarlyStopping | None = None
    """Stop once a validation figure has not improved for its patience, and return the best
    epoch's state (see :mod:`dlfun.train.early_stopping`); None: train every epoch."""


@dataclasses.dataclass
class FitResult:
    """The trained state, every epoch record of this model (restored ones included), the epoch
    this call started at, and the epoch mode and K-model strategy used. With early stopping,
    ``state`` is each model's best epoch's, ``best_epoch`` that epoch (1-based; a ``(K,)``
    list for K models) and ``stopped_epoch`` the last epoch trained."""

    state: Any
    history: list[dict]
    start_epoch: int
    epoch_mode: str
    ensemble: str | None
    best_epoch: int | list[int] | None = None
    stopped_epoch: int | None = None


def run_keys(seed: int, num_models: int | None = None) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(init_key, data_key, step_key)`` of a run; with K models, stacked ``(K,)`` keys of
    seeds ``seed .. seed+K-1`` (so model k equals a single run with seed ``seed + k``)."""
    def one(s):
        return tuple(jax.random.split(jax.random.key(s), 3))

    if num_models is None:
        return one(seed)
    keys = [one(seed + k) for k in range(num_models)]
    return tuple(jnp.stack(ks) for ks in zip(*keys))


def init_states(create: Callable[[jax.Array], Any], init_key: jax.Array,
                num_models: int | None) -> Any:
    """``create(key)`` for one model, or vmapped over K stacked keys (one compiled program:
    eagerly, every initializer op would compile on its own)."""
    return run_once(create if num_models is None else jax.vmap(create), init_key)


# XLA's CPU backend at optimisation level 1 instead of its default 2: the random
# initialisers of a ResNet-20 compile in 1.9 s instead of 4.6 s, to the same values (bitwise
# on JAX 0.10; within 2 ulps on JAX 0.12, which rounds one product differently; checked by
# tests/test_train_core.py), and a program that runs once has no use for more.
ONE_CALL_CPU_OPTIONS = {"xla_backend_optimization_level": 1}


def run_once(fn: Callable, *args) -> Any:
    """``jax.jit(fn)(*args)`` for a program that runs once (initialisation), compiled on the
    CPU with :data:`ONE_CALL_CPU_OPTIONS` (elsewhere with the defaults)."""
    lowered = jax.jit(fn).lower(*args)
    cpu = jax.default_backend() == "cpu"
    return lowered.compile(compiler_options=ONE_CALL_CPU_OPTIONS if cpu else None)(*args)


def _device_data(split: Split) -> tuple[jax.Array, jax.Array]:
    return jnp.asarray(split.x), jnp.asarray(split.y)


class _EpochRunner:
    """Compiles and runs one epoch (loop or scan; one model or K) of ``step``."""

    def __init__(self, step: Callable, state: Any, data, opts: FitOptions, keys):
        self.opts, self.data, (_, self.data_key, self.step_key) = opts, data, keys
        self.n = len(data[0])
        self.nb = num_batches(self.n, opts.batch_size)
        indexed = make_indexed_step(step)
        example = self._single_example(state, indexed)
        self.mode = choose_epoch_mode(opts.epoch_mode, indexed, *example)
        self.ensemble = None
        if opts.num_models is not None:
            self.ensemble = choose_ensemble_strategy(opts.ensemble, indexed, *example)
        if self.ensemble == "sequential":
            self._check_sequential_mode(opts.epoch_mode)
            self.mode = "loop"
            member = jax.jit(make_member_step(indexed), donate_argnums=0)
            self._fn = sequential_over_models(member, opts.num_models)
        elif self.mode == "scan":
            fn = make_scan_epoch(step, opts.batch_size)
            self._fn = jax.jit(self._batched(fn, (0, None, 0, 0, None)), donate_argnums=0)
        else:
            self._fn = jax.jit(self._batched(indexed, (0, None, 0, 0, None)), donate_argnums=0)

    @staticmethod
    def _check_sequential_mode(epoch_mode: str) -> None:
        if epoch_mode == "scan":
            raise ConfigError("ensemble strategy 'sequential' steps the models one after another "
                              "from Python, so it needs epoch mode 'loop' (or 'auto'); use "
                              "--ensemble vmap or map to scan epochs")

    def _single_example(self, state, indexed):
        one = state if self.opts.num_models is None else jax.tree.map(lambda a: a[0], state)
        key = self.step_key if self.opts.num_models is None else self.step_key[0]
        rows = jnp.zeros((self.opts.batch_size,), jnp.int32)
        return one, self.data, rows, key, jnp.int32(0)

    def _batched(self, fn, in_axes):
        return fn if self.ensemble is None else over_models(fn, in_axes, self.ensemble)

    def __call__(self, state, epoch: int, on_step=None, first: int = 0, stop=None):
        """``(state, metrics, end)``: metrics stacked ``(steps,)``, or ``(steps, K)`` for K
        models, and the batch after the last one run (a loop epoch may start at ``first`` and
        end early when ``stop()`` says so; a scan epoch runs whole)."""
        if self.mode == "scan":
            state, metrics = self._fn(state, self.data, self.data_key, self.step_key, epoch)
            if self.ensemble is not None:  # K scans give (K, nb); the loop gives (nb, K)
                metrics = jax.tree.map(lambda a: jnp.swapaxes(a, 0, 1), metrics)
            on_step(self.nb)
            return state, metrics, self.nb
        idx = self._indices(epoch)
        return loop_epoch(self._fn, state, self.data, idx, self.step_key, epoch * self.nb,
                          lambda: on_step(1), first, stop)

    def _indices(self, epoch: int) -> np.ndarray:
        """``(nb, bs)`` indices, or ``(nb, K, bs)`` for K models (each its own order)."""
        if self.ensemble is None:
            return np.asarray(batch_indices(self.data_key, epoch, self.n, self.opts.batch_size))
        per_model = jax.vmap(lambda k: batch_indices(k, epoch, self.n, self.opts.batch_size))
        return np.asarray(per_model(self.data_key)).transpose(1, 0, 2)


def make_evaluator(eval_step: Callable, num_models: int | None, strategy: str | None,
                   batch_size: int) -> Callable[[Any, Split], dict]:
    """``evaluate(state, split) -> metrics``: batch-size-weighted means over the split
    (per-model arrays ``(K,)`` for K models)."""
    jitted = (jax.jit(eval_step) if num_models is None else
              compiled_over_models(eval_step, (0, None), strategy, num_models))

    def evaluate(state, split: Split) -> dict:
        totals: dict[str, Any] = {}
        for lo in range(0, len(split), batch_size):
            batch = (jnp.asarray(split.x[lo:lo + batch_size]),
                     jnp.asarray(split.y[lo:lo + batch_size]))
            m = jax.device_get(jitted(state, batch))
            count = m.pop("count")
            for k, v in m.items():
                totals[k] = totals.get(k, 0.0) + v * count
            totals["count"] = totals.get("count", 0.0) + count
        count = totals.pop("count")
        return {k: v / count for k, v in totals.items()}

    return evaluate


def fit(state: Any, step: Callable, eval_step: Callable | None, train: Split,
        val: Split | None, keys, opts: FitOptions, hooks: RunHooks | None = None,
        on_epoch: Callable[[Any, int], dict] | None = None) -> FitResult:
    """Train ``state`` with ``step`` for ``opts.epochs`` epochs over ``train``.

    Args:
      state: a ``TrainState`` (stacked ``(K, ...)`` when ``opts.num_models`` is K).
      step: ``step(state, (x, y), key) -> (state, metrics)``, undecorated.
      eval_step: ``eval_step(state, (x, y)) -> metrics`` with ``count``; run on ``val`` after
        each epoch (None: no validation).
      train, val: host arrays; the training set is moved to the device once.
      keys: ``run_keys(seed, num_models)``.
      opts: see :class:`FitOptions`.
      hooks: the run driving this fit (:class:`dlfun.train.hooks.RunHooks`; the default keeps
        nothing on disk). Through it fit restores the newest saved state of ``opts.name``
        (position ``{"epoch", "batch"}``), reports each epoch's record (``model``, ``epoch``,
        ``step``, ``train_*``, ``val_*``, ``skipped_updates``, ``seconds``), ends each epoch
        (the run may checkpoint), and, when a stop is requested, saves where it stands (after
        the current step in loop mode, the current epoch in scan mode) and ends.
      on_epoch: optional ``on_epoch(state, epoch) -> dict`` called after each epoch (1-based,
        before the checkpoint) for figures that are not means of step metrics, e.g. a GAN's
        sample-based scores; they join the epoch's record (per-model ``(K,)`` arrays give a
        mean and ``*_each``).

    Returns:
      a :class:`FitResult`. Batch ``i`` of epoch ``e`` always sees the same examples and keys,
      so a resumed run ends with the same parameters as an uninterrupted one. With
      ``opts.early_stopping``, training ends once the watched figure has not improved for its
      patience (every model's, for K models; the checkpoint of that epoch is saved as the
      last), and the state returned is each model's best epoch's, also when all epochs ran.

    Raises:
      NonFiniteError: the loss or gradients became NaN/inf (policy "stop"); the message names
        the step, and the last saved state is the last good one.
    """
    _check_options(opts, val is not None and eval_step is not None)
    hooks = hooks or RunHooks()
    state = jax.tree.map(jnp.copy, state)  # the steps donate their input; keep the caller's
    runner = _EpochRunner(step, state, _device_data(train), opts, keys)
    evaluate = (None if eval_step is None or val is None else
                make_evaluator(eval_step, opts.num_models, runner.ensemble, opts.eval_batch_size))
    best = (None if opts.early_stopping is None else
            BestTracker(opts.early_stopping, opts.num_models))
    saved, position = hooks.restore(opts.name, _checkpointed(state, best), "epoch")
    state = saved if best is None else best.load(saved, position)
    start, first = ((0, 0) if position is None else
                    (int(position["epoch"]), int(position.get("batch", 0))))
    if first and runner.mode == "scan":  # a scan epoch cannot start in the middle
        raise ConfigError(f"the saved state of {opts.name} is in the middle of epoch "
                          f"{start + 1}, which only --epoch-mode loop can continue; resume "
                          f"with --epoch-mode loop")
    bar = hooks.progress((opts.epochs - start) * runner.nb - first, opts.name)
    epoch = start
    try:
        while epoch < opts.epochs and not (best is not None and best.stopped(epoch)):
            state = _run_epoch(runner, state, epoch, first, opts, hooks, evaluate, val,
                               on_epoch, bar, best)
            epoch, first = epoch + 1, 0
    finally:
        bar.close()
    history = hooks.records(model=opts.name)
    if best is None:
        return FitResult(state, history, start, runner.mode, runner.ensemble)
    return FitResult(best.result_state(state), history, start, runner.mode, runner.ensemble,
                     best_epoch=best.position()["best_epoch"], stopped_epoch=epoch)


def _checkpointed(state, best: BestTracker | None):
    """What a checkpoint holds: the state, or with early stopping also the best one."""
    return state if best is None else best.checkpointed(state)


def _position(epoch: int, batch: int, best: BestTracker | None) -> dict:
    """A checkpoint's position; with early stopping also the best epochs and figures."""
    return {"epoch": epoch, "batch": batch, **(best.position() if best is not None else {})}


def _run_epoch(runner, state, epoch, first, opts, hooks, evaluate, val, on_epoch, bar, best):
    """One epoch (from batch ``first``): train, check, record, end the unit or interrupt."""
    t0 = time.perf_counter()
    state, metrics, end = runner(state, epoch, on_step=bar.update, first=first,
                                 stop=hooks.stop_requested)
    if metrics is not None:
        _raise_if_nonfinite(state, metrics, epoch, opts.loss_key, opts.nonfinite_stop)
    if end < runner.nb:  # stopped in the middle of the epoch
        hooks.interrupt(opts.name, epoch * runner.nb + end, _checkpointed(state, best),
                        _position(epoch, end, best))
    record = _epoch_record(opts, epoch, runner.nb, metrics, time.perf_counter() - t0)
    if opts.nonfinite_stop == "all" and opts.num_models is not None:
        record["nonfinite_step_each"] = np.asarray(state.bad_step).tolist()
    if evaluate is not None:
        for k, v in evaluate(state, val).items():
            _add_metric(record, f"val_{k}", v, per_model_axis=0)
    for k, v in (on_epoch(state, epoch + 1) if on_epoch is not None else {}).items():
        _add_metric(record, k, v, per_model_axis=0)
    if best is not None:
        best.update(state, record, epoch + 1)
    hooks.record(record, step=record["step"], prefix=f"{opts.name}/")
    bar.set_postfix({opts.loss_key: f"{record[f'train_{opts.loss_key}']:.4g}"}, refresh=False)
    position = _position(epoch + 1, 0, best)
    last = epoch + 1 if best is not None and best.stopped(epoch + 1) else opts.epochs
    saved = _checkpointed(state, best)
    hooks.end_of_unit(opts.name, epoch + 1, last, (epoch + 1) * runner.nb, saved, position)
    if hooks.stop_requested() and epoch + 1 < last:
        hooks.interrupt(opts.name, (epoch + 1) * runner.nb, saved, position)
    return state


def _check_options(opts: FitOptions, validates: bool) -> None:
    if opts.epochs < 0:
        raise ConfigError(f"epochs must be >= 0, got {opts.epochs}")
    if opts.nonfinite_stop not in ("any", "all"):
        raise ConfigError(f"nonfinite_stop must be 'any' or 'all', got {opts.nonfinite_stop!r}")
    if (opts.early_stopping is not None and not validates
            and opts.early_stopping.monitor.startswith("val_")):
        raise ConfigError(f"early stopping on {opts.early_stopping.monitor} needs a validation "
                          f"split and an eval step; pass val (or monitor an on_epoch figure)")


def _add_metric(record: dict, name: str, value, per_model_axis: int) -> None:
    """``record[name]`` = the mean; with K models also ``record[name + "_each"]`` = K means."""
    v = np.asarray(value)
    record[name] = float(v.mean())
    if v.ndim > per_model_axis:
        axes = tuple(a for a in range(v.ndim) if a != per_model_axis)
        record[f"{name}_each"] = v.mean(axis=axes).tolist()


def _epoch_record(opts, epoch, nb, metrics, seconds) -> dict:
    """One metrics.jsonl record: means over the epoch's steps (and over models), and the
    number of updates dropped as non-finite (policy "skip"), summed over steps and models."""
    record = dict(model=opts.name, epoch=epoch + 1, step=(epoch + 1) * nb,
                  seconds=round(seconds, 4))
    for k, v in metrics.items():  # (steps,) for one model, (steps, K) for K
        _add_metric(record, f"train_{k}", v, per_model_axis=1)
    if "nonfinite" in metrics:
        record["skipped_updates"] = int(np.asarray(metrics["nonfinite"]).sum())
        record["updates"] = int(np.asarray(metrics["nonfinite"]).size)
    return record


def _raise_if_nonfinite(state, metrics, epoch: int, loss_key: str = "loss",
                        stop_when: str = "any") -> None:
    """Stop with a clear message if any model's ``bad_step`` is set (policy "stop"), or, for
    ``stop_when`` "all", only once every model's is."""
    bad = np.atleast_1d(np.asarray(state.bad_step))
    if (bad < 0).all() or (stop_when == "all" and (bad < 0).any()):
        return
    member = int(np.argmax(bad >= 0))
    per_step = np.asarray(metrics[loss_key])
    losses = per_step.reshape(len(per_step), -1)[:, member]
    bad_loss = next((float(x) for x in losses if not np.isfinite(x)), float("nan"))
    which = (f" (every one of the {bad.size} models)" if stop_when == "all" and bad.size > 1
             else f" (model {member} of the ensemble)" if bad.size > 1 else "")
    raise NonFiniteError.at_step(
        int(bad[member]),
        f"training stopped: the loss or gradients became non-finite ({loss_key} {bad_loss}) at "
        f"step {int(bad[member])} in epoch {epoch + 1}{which}")
