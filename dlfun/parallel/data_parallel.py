"""Data parallelism three ways: same weights on every device, different data, gradients
synchronised. All three give the parameters one device gets on the same global batch.

* ``"jit"``: the ordinary step compiled with the batch sharded over ``data``
  (``NamedSharding``) and the state replicated; the compiler inserts the gradient all-reduce
  (and the batch-norm statistics' reductions) itself.
* ``"shard_map"``: the step written per device (``make_train_step(axis_name="data")``): each
  device differentiates its shard's loss and an explicit ``pmean`` averages the gradients;
  batch norm averages its statistics with ``pmean`` too.
* ``"pmap"``: the same per-device step under ``jax.pmap``, the classic API (state carries a
  leading device axis).

Dropout masks are drawn per example from the step key and the example's index in the global
batch (``Dropout(per_example=True)``), so every device draws different masks, reproducibly,
and the masks do not depend on the number of devices.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from ..errors import ConfigError, ShapeError
from ..nn.conv_ops import traced_with_plain_lowering
from ..train.step import make_train_step
from .devices import DATA
from .distributed import global_batch, replicate

METHODS = ("jit", "shard_map", "pmap")


def model_axis_name(method: str) -> str | None:
    """The ``axis_name`` a model's BatchNorm/Dropout need under ``method``: ``"data"`` for
    the per-device methods (shard_map, pmap), None for ``jit`` (the arrays are global)."""
    check_method(method)
    return None if method == "jit" else DATA


def check_method(method: str) -> None:
    if method not in METHODS:
        raise ConfigError(f"data-parallel method must be one of {', '.join(METHODS)}; "
                          f"got {method!r}")


@dataclasses.dataclass(frozen=True)
class DataParallel:
    """A compiled data-parallel step and the layouts it expects.

    Attributes:
      method: "jit", "shard_map" or "pmap".
      mesh: the devices (axis ``data``).
      step: ``step(state, batch, key) -> (state, metrics)`` taking values placed by
        :meth:`put_state` / :meth:`put_batch`; the state is donated.
    """

    method: str
    mesh: jax.sharding.Mesh
    step: Callable

    @property
    def num_devices(self) -> int:
        return self.mesh.shape[DATA]

    def put_state(self, state: Any) -> Any:
        """A copy of ``state`` (identical in every process) replicated for this method (pmap:
        stacked copies with a leading axis of this process's devices). A copy, since the
        step donates it."""
        if self.method == "pmap":
            n = len(self.mesh.local_devices)
            return jax.tree.map(lambda a: jnp.broadcast_to(a, (n,) + jnp.shape(a)), state)
        return replicate(jax.device_get(state), self.mesh)

    def put_batch(self, local_batch: Any) -> Any:
        """This process's rows of a global batch (a pytree of arrays ``(rows, ...)``; the
        whole batch when there is one process, see :func:`.distributed.local_rows`) split
        over its devices.

        Raises:
          ShapeError: the rows cannot be split evenly over this process's devices.
        """
        n = len(self.mesh.local_devices)
        size = jax.tree.leaves(local_batch)[0].shape[0]
        if size % n:
            raise ShapeError(f"a batch of {size} examples cannot be split evenly over "
                             f"{n} devices; use a batch size that is a multiple of {n}")
        local_batch = jax.tree.map(np.asarray, local_batch)
        if self.method == "pmap":
            return jax.tree.map(lambda a: a.reshape((n, -1) + a.shape[1:]), local_batch)
        return global_batch(local_batch, self.mesh)

    def get_state(self, state: Any) -> Any:
        """The state as one (replicated) copy: drops pmap's device axis."""
        if self.method == "pmap":
            return jax.tree.map(lambda a: a[0], state)
        return state

    def lower(self, state: Any, batch: Any, key: jax.Array):
        """The step lowered for these placed arguments (``.compile()`` it to read its HLO)."""
        return self.step.lower(state, batch, key)

    def get_metrics(self, metrics: dict) -> dict:
        """Metrics as scalars (pmap returns one identical copy per device)."""
        return self.get_state(metrics)


def make_data_parallel(model: nn.Module, loss_fn: Callable, mesh: jax.sharding.Mesh,
                       method: str = "jit", **step_kwargs) -> DataParallel:
    """Compile a data-parallel training step.

    Args:
      model: the Linen module, built with ``axis_name=model_axis_name(method)`` in its
        ``BatchNorm``/``Dropout`` layers (so its statistics and masks span the global batch).
      loss_fn: ``(outputs, targets) -> scalar`` mean over the batch.
      mesh: a mesh with a ``data`` axis (its other axes, if any, hold replicas).
      method: "jit", "shard_map" or "pmap" (see the module docstring).
      **step_kwargs: passed to :func:`dlfun.train.make_train_step` (``metrics_fn``, ...).
    Returns:
      a :class:`DataParallel`.
    """
    check_method(method)
    if DATA not in mesh.axis_names:
        raise ConfigError(f"data parallelism needs a mesh axis named {DATA!r}; got axes "
                          f"{mesh.axis_names}")
    step = make_train_step(model, loss_fn, axis_name=model_axis_name(method), **step_kwargs)
    # The CPU conv lowering chunks the batch, which would cut across the batch shards.
    step = traced_with_plain_lowering(step)
    rep, split = NamedSharding(mesh, P()), NamedSharding(mesh, P(DATA))
    if method == "jit":
        compiled = jax.jit(step, in_shardings=(rep, split, rep), out_shardings=(rep, rep),
                           donate_argnums=0)
    elif method == "shard_map":
        per_device = jax.shard_map(step, mesh=mesh, in_specs=(P(), P(DATA), P()),
                                   out_specs=(P(), P()))
        compiled = jax.jit(per_device, donate_argnums=0)
    else:
        compiled = jax.pmap(step, axis_name=DATA, in_axes=(0, 0, None),
                            devices=list(mesh.devices.flat), donate_argnums=0)
    return DataParallel(method, mesh, compiled)
