"""Simulated CPU devices and device meshes with named axes.

On a CPU-only machine JAX can pretend to have N devices (``--xla_force_host_platform_device_
count=N``), which is how dlfun runs and tests every parallel scheme. Two facts matter:

* the device count is fixed when JAX's backend starts (its first operation), so it must be
  set before that;
* with fewer cores than devices, XLA:CPU's thread pool can deadlock inside collectives unless
  ``PJRT_NPROC`` (threads) is at least 2N; :func:`simulate_cpu_devices` sets both.
"""

from __future__ import annotations

import os
from typing import Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh

from ..errors import ConfigError
from ..process_env import COUNT_FLAG, requested_device_count, simulated_device_env

DATA, MODEL, STAGE = "data", "model", "stage"
"""The mesh axis names dlfun uses: batch split (data), weights split (model), pipeline stages."""

def backend_started() -> bool:
    """Whether JAX's backends are initialised (device count fixed from then on)."""
    from jax._src import xla_bridge  # no public query for "has JAX started?"

    return xla_bridge.backends_are_initialized()


def simulate_cpu_devices(n: int) -> None:
    """Make this process's JAX see at least ``n`` CPU devices.

    Call before the first JAX operation (importing jax and dlfun is fine). If JAX has already
    started with at least ``n`` devices this does nothing.

    Raises:
      ConfigError: ``n < 1``, or JAX already started with fewer than ``n`` devices.
    """
    if n < 1:
        raise ConfigError(f"the number of devices must be at least 1, got {n}")
    if backend_started():
        have = jax.device_count()
        if have < n:
            raise ConfigError(
                f"JAX already started with {have} device(s), fewer than the {n} asked for; call "
                f"simulate_cpu_devices({n}) before the first JAX operation, or start Python with "
                f"XLA_FLAGS={COUNT_FLAG}={n} PJRT_NPROC={2 * n}")
        return
    n = max(n, requested_device_count() or 0)  # never shrink a count the user chose
    os.environ.update({k: v for k, v in simulated_device_env(n).items()
                       if k in ("XLA_FLAGS", "PJRT_NPROC", "JAX_PLATFORMS")})


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
