"""Simulated CPU devices and device meshes with named axes.

On a CPU-only machine JAX can pretend to have N devices (``--xla_force_host_platform_device_
count=N``), which is how dlfun runs and tests every parallel scheme. Two facts matter:

* the device count is fixed when JAX's backend starts (its first operation), so it must be
  set before that;
* with fewer cores than devices, XLA:CPU's thread pool can deadlock inside collectives unless
  ``PJRT_NPROC`` (threads) is at least 2N; :func:`simulate_cpu_devices` (defined in
  :mod:`dlfun.platform`) sets both.
"""

from __future__ import annotations

from typing import Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh

from ..errors import ConfigError
# The device set-up lives with the rest of the process set-up (it must not need JAX started);
# re-exported here because meshes are where users meet it.
from ..platform import backend_started as backend_started
from ..platform import simulate_cpu_devices as simulate_cpu_devices

DATA, MODEL, STAGE = "data", "model", "stage"
"""The mesh axis names dlfun uses: batch split (data), weights split (model), pipeline stages."""


def make_mesh(shape: Sequence[int], names: Sequence[str],
              axis_types: Sequence[AxisType] | None = None,
              devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A device mesh with named axes, e.g. ``make_mesh((4, 2), ("data", "model"))``.

    Args:
      shape: devices along each axis; their product must not exceed the devices available.
      names: one name per axis (``DATA``, ``MODEL``, ``STAGE``).
      axis_types: per axis; default ``AxisType.Auto`` for every axis: shardings are declared
        on inputs/outputs (and logical constraints) and the compiler propagates them, which is
        what dlfun's steps are written for. (``jax.make_mesh`` defaults to Explicit now, where
        sharding is part of every array's type.)
      devices: which devices (default: the first ``prod(shape)`` of :func:`ordered_devices`).

    Returns:
      a ``jax.sharding.Mesh``.
    """
    shape, names = tuple(int(s) for s in shape), tuple(names)
    if len(shape) != len(names):
        raise ConfigError(f"mesh shape {shape} and axis names {names} differ in length")
    need = int(np.prod(shape))
    pool = list(ordered_devices() if devices is None else devices)
    if need > len(pool) or min(shape, default=1) < 1:
        raise ConfigError(
            f"a {'x'.join(map(str, shape))} mesh needs {need} devices but {len(pool)} are "
            f"available; use a smaller mesh or call dlfun.parallel.simulate_cpu_devices({need}) "
            f"before JAX starts")
    types = tuple(axis_types) if axis_types is not None else (AxisType.Auto,) * len(shape)
    # Mesh over the given order (jax.make_mesh may reorder devices for its own topology).
    return Mesh(np.array(pool[:need], dtype=object).reshape(shape), names, axis_types=types)


def ordered_devices() -> list[jax.Device]:
    """All devices, grouped by process (process 0's first): with several processes, each
    process's devices then hold a contiguous block of a mesh's leading axis."""
    return sorted(jax.devices(), key=lambda d: (d.process_index, d.id))


def data_mesh(n: int | None = None) -> Mesh:
    """A 1-D ``("data",)`` mesh of ``n`` devices (default: all)."""
    return make_mesh((n or jax.device_count(),), (DATA,))
