"""Test setup: 8 simulated CPU devices and strict numerics, before JAX starts."""
import os

# Must happen before the first JAX operation. PJRT_NPROC >= 2x the device count keeps
# collectives on simulated devices from deadlocking on a 2-core machine.
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("PJRT_NPROC", "16")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")
