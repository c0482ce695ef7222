"""Environment variables that shape a JAX process before it starts (no JAX import here, so
the launcher starts fast): simulated CPU devices and the ``dlfun.launch`` protocol."""

from __future__ import annotations

import os
import re

from .errors import ConfigError

COUNT_FLAG = "--xla_force_host_platform_device_count"

ENV_COORDINATOR = "DLFUN_COORDINATOR"
"""``host:port`` of the ``jax.distributed`` coordinator (process 0)."""
ENV_NUM_PROCESSES = "DLFUN_NUM_PROCESSES"
ENV_PROCESS_ID = "DLFUN_PROCESS_ID"


def simulated_device_env(n: int, env: dict[str, str] | None = None) -> dict[str, str]:
    """Environment variables that make a new JAX process see ``n`` CPU devices.

    Returns a copy of ``env`` (default ``os.environ``) with the device-count XLA flag set to
    ``n`` (replacing any earlier count), ``PJRT_NPROC`` at least ``2n`` (fewer threads than
    that can deadlock collectives on a machine with few cores) and ``JAX_PLATFORMS=cpu``
    unless another platform was chosen. In this process, use
    :func:`dlfun.platform.simulate_cpu_devices`, which applies it.

    Raises:
      ConfigError: ``PJRT_NPROC`` is set but not a whole number.
    """
    out = dict(os.environ if env is None else env)
    flags = re.sub(rf"{COUNT_FLAG}(=\S*)?", "", out.get("XLA_FLAGS", "")).split()
    out["XLA_FLAGS"] = " ".join(flags + [f"{COUNT_FLAG}={n}"])
    nproc = out.get("PJRT_NPROC", "").strip() or "0"
    if not nproc.isdigit():
        raise ConfigError(f"PJRT_NPROC={nproc!r} is not a whole number; unset it or set it to "
                          f"at least {2 * n}")
    out["PJRT_NPROC"] = str(max(int(nproc), 2 * n))
    out.setdefault("JAX_PLATFORMS", "cpu")
    return out


def requested_device_count(env: dict[str, str] | None = None) -> int | None:
    """The device count in ``XLA_FLAGS``, if one is set."""
    env = os.environ if env is None else env
    found = re.search(rf"{COUNT_FLAG}=(\d+)", env.get("XLA_FLAGS", ""))
    return int(found.group(1)) if found else None
