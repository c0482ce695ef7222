"""Test setup: 8 simulated CPU devices and strict numerics, before JAX starts."""
from dlfun.platform import simulate_cpu_devices

# Before the first JAX operation: the count, and PJRT_NPROC >= 2x the count, which keeps
# collectives on simulated devices from deadlocking on a 2-core machine.
simulate_cpu_devices(8)

import jax  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")
# Start the backend now: every test then finds JAX running with these 8 devices, whatever
# order the tests run in (e.g. a parallel experiment asking for 16 is refused, not granted).
jax.devices()
