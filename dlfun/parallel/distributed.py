"""Several processes, one program: start-up on ``jax.distributed`` and process-local data.

Three ways a dlfun experiment can be started:

* one process (the default): nothing to do;
* by ``python -m dlfun.launch --nproc P --devices-per-proc D -- <command>`` on one machine:
  the launcher passes the coordinator address, process count and id in ``DLFUN_*``
  environment variables;
* by a cluster's own launcher, e.g. SLURM's ``srun`` (or Open MPI's ``mpirun``): then
  ``jax.distributed.initialize()`` without arguments reads the coordinator, the number of
  processes and this process's id from the cluster's environment (``SLURM_*``).

After :func:`initialize`, ``jax.devices()`` lists every process's devices; a mesh over them
(built by :func:`dlfun.parallel.make_mesh`, process-major) gives each process a contiguous
block of the ``data`` axis, so each process loads only its rows of every global batch
(:func:`local_rows`) and the global arrays are assembled from those process-local pieces
(:func:`global_batch`).
"""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from ..errors import ConfigError
from ..process_env import ENV_COORDINATOR, ENV_NUM_PROCESSES, ENV_PROCESS_ID
from .devices import DATA, backend_started

CLUSTER_ENV = {"SLURM_NTASKS": "SLURM (srun)", "OMPI_COMM_WORLD_SIZE": "Open MPI (mpirun)"}


def launched_by_dlfun(env: dict | None = None) -> bool:
    """Whether this process was started by ``python -m dlfun.launch``."""
    return ENV_COORDINATOR in (os.environ if env is None else env)


def cluster_launcher(env: dict | None = None) -> str | None:
    """The cluster launcher that started several processes (e.g. "SLURM (srun)"), or None."""
    env = os.environ if env is None else env
    for var, name in CLUSTER_ENV.items():
        if int(env.get(var, "1") or 1) > 1:
            return name
    return None


def initialize(timeout_s: int = 120) -> tuple[int, int]:
    """Join the other processes of a multi-process run, if this is one.

    Call first thing, before any JAX operation. A no-op for a single process.

    Args:
      timeout_s: how long to wait for every process to reach the coordinator.
    Returns:
      ``(process_index, process_count)``.
    Raises:
      ConfigError: JAX already started (too late to join), or bad ``DLFUN_*`` variables.
    """
    if jax.distributed.is_initialized():
        return jax.process_index(), jax.process_count()
    if launched_by_dlfun():
        args = _dlfun_env_args()
    elif cluster_launcher():
        args = {}  # jax.distributed reads the cluster's own variables
    else:
        return 0, 1
    if backend_started():
        raise ConfigError("JAX already started in this process; call "
                          "dlfun.parallel.distributed.initialize() before any JAX operation")
    jax.distributed.initialize(**args, initialization_timeout=timeout_s)
    return jax.process_index(), jax.process_count()


def _dlfun_env_args() -> dict[str, Any]:
    try:
        n, i = int(os.environ[ENV_NUM_PROCESSES]), int(os.environ[ENV_PROCESS_ID])
    except (KeyError, ValueError):
        raise ConfigError(f"{ENV_COORDINATOR} is set but {ENV_NUM_PROCESSES}/{ENV_PROCESS_ID} "
                          f"are missing or not integers; start the processes with "
                          f"python -m dlfun.launch") from None
    address = os.environ[ENV_COORDINATOR]
    # Every process of a dlfun.launch run is on this machine: the coordinator listens only on
    # the address the others reach it at (JAX's default, [::], is every interface), unless the
    # user chose a bind address through JAX's own variable.
    bind = os.environ.get("JAX_COORDINATOR_BIND_ADDRESS") or address
    return dict(coordinator_address=address, num_processes=n, process_id=i,
                coordinator_bind_address=bind)


def local_rows(global_batch_size: int) -> slice:
    """The rows of a global batch this process feeds (its devices' block of ``data``).

    Raises:
      ConfigError: the batch cannot be split evenly over the processes.
    """
    n, i = jax.process_count(), jax.process_index()
    if global_batch_size % n:
        raise ConfigError(f"a global batch of {global_batch_size} cannot be split over {n} "
                          f"processes; use a multiple of {n}")
    per = global_batch_size // n
    return slice(i * per, (i + 1) * per)


def global_batch(local: Any, mesh: jax.sharding.Mesh, axes: Any = DATA) -> Any:
    """Global arrays, split over ``axes``, from this process's rows (a pytree of numpy
    arrays ``(local_batch, ...)``); with one process this is ``device_put``."""
    sharding = NamedSharding(mesh, P(axes))
    return jax.tree.map(lambda a: jax.make_array_from_process_local_data(sharding, a), local)


def replicate(tree: Any, mesh: jax.sharding.Mesh) -> Any:
    """A pytree that every process holds identically -> global arrays replicated on ``mesh``."""
    sharding = NamedSharding(mesh, P())
    return jax.tree.map(lambda a: jax.make_array_from_process_local_data(sharding,
                                                                         np.asarray(a)), tree)


def to_host(tree: Any) -> Any:
    """Numpy copies of replicated (or fully addressable) global arrays, on any process.

    Raises:
      ValueError: an array is split across processes (gather it first).
    """
    def one(a):
        if isinstance(a, jax.Array) and not a.is_fully_addressable:
            if not a.sharding.is_fully_replicated:
                raise ValueError(f"array of shape {a.shape} is split across processes; "
                                 "gather it (e.g. multihost_utils.process_allgather) first")
            return np.asarray(a.addressable_data(0))
        return np.asarray(a)

    return jax.tree.map(one, tree)


def gather_to_host(tree: Any) -> Any:
    """Numpy copies of global arrays however they are laid out; every process must call it
    (arrays split across processes are all-gathered)."""
    from jax.experimental import multihost_utils

    def one(a):
        if not isinstance(a, jax.Array) or a.is_fully_addressable:
            return np.asarray(a)
        if a.sharding.is_fully_replicated:
            return np.asarray(a.addressable_data(0))
        return np.asarray(multihost_utils.process_allgather(a, tiled=True))

    return jax.tree.map(one, tree)


def place_like(host: Any, template: Any) -> Any:
    """Host arrays -> global arrays laid out like ``template``'s (each process supplies its
    own shards from its full host copy)."""
    def one(h, t):
        if not isinstance(t, jax.Array):
            return h
        h = np.asarray(h, dtype=t.dtype)
        if h.shape != t.shape:
            raise ValueError(f"array of shape {h.shape} cannot replace one of shape {t.shape}")
        if isinstance(t.sharding, jax.sharding.SingleDeviceSharding):
            return jnp.asarray(h)  # uncommitted, like pmap's stacked copies: pmap places it
        if t.is_fully_addressable:
            return jax.device_put(h, t.sharding)
        return jax.make_array_from_callback(t.shape, t.sharding, lambda idx: h[idx])

    return jax.tree.map(one, host, template)
