"""One epoch of training, two ways, same batches and keys:

* ``loop``: a Python loop of jitted steps (one dispatch per step);
* ``scan``: the whole epoch in one ``lax.scan`` over a device-resident dataset.

Batch ``i`` of epoch ``e`` uses example indices ``batch_indices(data_key, e, ...)[i]`` and step
key ``fold_in(step_key, e * num_batches + i)``, so both ways (and a resumed run) see exactly the
same batches and keys. Both also exist for K models at once (seeds/ensembles), see
:func:`over_models`.
"""

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ..data.batching import batch_indices
from ..errors import ConfigError

EPOCH_MODES = ("auto", "loop", "scan")
ENSEMBLE_STRATEGIES = ("auto", "vmap", "map", "sequential")


def make_indexed_step(step: Callable) -> Callable:
    """Wrap ``step(state, batch, key)`` as ``(state, data, rows, step_key, t)``: it gathers the
    batch ``data[rows]`` on the device and derives the key ``fold_in(step_key, t)``."""
    def indexed(state, data, rows, step_key, t):
        batch = jax.tree.map(lambda a: a[rows], data)
        return step(state, batch, jax.random.fold_in(step_key, t))

    return indexed


def make_scan_epoch(step: Callable, batch_size: int) -> Callable:
    """``epoch_fn(state, data, data_key, step_key, epoch) -> (state, metrics)``, one lax.scan.

    ``data`` is a pytree of device arrays with a common leading axis (examples);
    metrics are stacked per step, ``(num_batches,)`` each.
    """
    indexed = make_indexed_step(step)

    def epoch_fn(state, data, data_key, step_key, epoch):
        n = jax.tree.leaves(data)[0].shape[0]
        idx = batch_indices(data_key, epoch, n, batch_size)
        t0 = epoch * idx.shape[0]

        def body(state, i_rows):
            i, rows = i_rows
            return indexed(state, data, rows, step_key, t0 + i)

        return lax.scan(body, state, (jnp.arange(idx.shape[0]), idx))

    return epoch_fn


def loop_epoch(jitted_indexed: Callable, state, data, idx: np.ndarray, step_key, t0: int,
               on_step: Callable[[], None] | None = None, first: int = 0,
               stop: Callable[[], bool] | None = None):
    """Run one epoch as a Python loop of a jitted indexed step.

    Args:
      jitted_indexed: ``jit(make_indexed_step(step))`` (or its K-model version).
      idx: ``(num_batches, batch_size)`` example indices (``(num_batches, K, batch_size)`` for
        K models), on the host.
      t0: global index of this epoch's first step.
      on_step: called after each dispatched step (progress bars); does not wait for results.
      first: the first batch to run (a run resumed in the middle of an epoch).
      stop: asked after each step; when it returns True the epoch ends there.
    Returns:
      ``(state, metrics, end)``: metrics stacked over the steps run, as in the scan version,
      and the index of the batch after the last one run (``len(idx)`` unless stopped).
    """
    per_step = []
    end = first
    for i in range(first, len(idx)):
        state, m = jitted_indexed(state, data, idx[i], step_key, np.int32(t0 + i))
        per_step.append(m)
        end = i + 1
        if on_step is not None:
            on_step()
        if stop is not None and stop():
            break
    if not per_step:
        return state, None, end
    return state, jax.tree.map(lambda *xs: jnp.stack(xs), *per_step), end


def over_models(fn: Callable, in_axes: tuple, strategy: str) -> Callable:
    """Run ``fn`` for K models in one traceable function: arguments with axis 0 in
    ``in_axes`` are per model.

    ``strategy`` "vmap" batches the computation (best for dense layers); "map" loops over
    the models inside the program with ``lax.map`` (smaller programs; on XLA:CPU slow for
    convolutions, which lose their fast kernels inside loop bodies). Same results either way.
    For convolutional models on CPU see :func:`sequential_over_models`.
    """
    if strategy == "vmap":
        return jax.vmap(fn, in_axes=in_axes)
    if strategy != "map":
        raise ConfigError(f"over_models strategy must be 'vmap' or 'map', got {strategy!r}")

    def mapped(*args):
        per_model = tuple(a for a, ax in zip(args, in_axes) if ax == 0)

        def one(xs):
            it = iter(xs)
            return fn(*(next(it) if ax == 0 else a for a, ax in zip(args, in_axes)))

        return lax.map(one, per_model)

    return mapped


def _take(tree, k):
    return jax.tree.map(lambda a: a[k], tree)


def make_member_step(indexed: Callable) -> Callable:
    """``(states, data, rows, step_keys, t, k) -> (states, metrics)``: step model ``k`` of the
    stacked ``states`` with its own rows ``rows[k]`` and key ``step_keys[k]``.

    Jit it with ``donate_argnums=0``: model k's slot is then updated in place.
    """
    def member(states, data, rows, step_keys, t, k):
        new, metrics = indexed(_take(states, k), data, rows[k], step_keys[k], t)
        return jax.tree.map(lambda a, b: a.at[k].set(b), states, new), metrics

    return member


def sequential_over_models(jitted_member: Callable, num_models: int) -> Callable:
    """An indexed step for K stacked models that dispatches ``jitted_member`` once per model.

    On XLA:CPU this beats both vmap (grouped convolutions) and lax.map (convolutions in a
    loop body) for convolutional models: each model runs the single-model program
    (``python -m benchmarks.lenet_ensemble``: 8 LeNets, sequential 122 vs vmap 33 vs map 26
    model-steps/s on a quiet 2-core CPU).
    """
    def run(states, data, rows, step_keys, t):
        per_model = []
        for k in range(num_models):
            states, m = jitted_member(states, data, rows, step_keys, t, np.int32(k))
            per_model.append(m)
        return states, jax.tree.map(lambda *xs: jnp.stack(xs), *per_model)

    return run


def compiled_over_models(fn: Callable, in_axes: tuple, strategy: str,
                         num_models: int) -> Callable:
    """A compiled function of K stacked models for evaluation/prediction (no donation):
    one program for "vmap"/"map", one single-model program called per model for
    "sequential"; outputs stacked on a leading model axis either way."""
    if strategy != "sequential":
        return jax.jit(over_models(fn, in_axes, strategy))
    jitted, take = jax.jit(fn), jax.jit(_take)

    def run(*args):
        outs = [jitted(*(take(a, np.int32(k)) if ax == 0 else a
                         for a, ax in zip(args, in_axes))) for k in range(num_models)]
        return jax.tree.map(lambda *xs: jnp.stack(xs), *outs)

    return run


def has_convolution(fn: Callable, *example_args) -> bool:
    """Whether tracing ``fn`` on the example arguments produces a convolution primitive."""
    return "conv_general_dilated" in str(jax.make_jaxpr(fn)(*example_args))


def choose_ensemble_strategy(strategy: str, fn: Callable, *example_args) -> str:
    """Resolve "auto": "sequential" for models with convolutions on CPU, "vmap" otherwise."""
    if strategy not in ENSEMBLE_STRATEGIES:
        raise ConfigError(f"ensemble strategy must be one of {ENSEMBLE_STRATEGIES}, "
                          f"got {strategy!r}")
    if strategy != "auto":
        return strategy
    on_cpu = jax.default_backend() == "cpu"
    return "sequential" if on_cpu and has_convolution(fn, *example_args) else "vmap"


def choose_epoch_mode(mode: str, fn: Callable, *example_args) -> str:
    """Resolve "auto" to the mode measured faster (``python -m benchmarks.epoch_mode``).

    On XLA:CPU a scanned epoch of a convolutional net ran ~5x slower than a loop of jitted
    steps (LeNet), while for dense nets the scan is as fast or faster (it saves the per-step
    dispatch: 2x for a small MLP). So: "loop" for convolutional models on CPU, else "scan".
    """
    if mode not in EPOCH_MODES:
        raise ConfigError(f"epoch mode must be one of {EPOCH_MODES}, got {mode!r}")
    if mode != "auto":
        return mode
    on_cpu = jax.default_backend() == "cpu"
    return "loop" if on_cpu and has_convolution(fn, *example_args) else "scan"
