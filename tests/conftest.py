"""Test setup: 8 simulated CPU devices and strict numerics, before JAX starts.

On a GPU (``JAX_PLATFORMS=cuda python -m pytest``, which this file leaves alone) two things
differ from the CPU default, and both are handled here:

* JAX's default float32 matmul and convolution precision on GPUs is TF32 (10-bit mantissa;
  bfloat16 passes on TPUs), far from the float32 that tests comparing against float64 numpy or
  PyTorch assume. The suite runs at ``highest`` (true float32) unless
  ``JAX_DEFAULT_MATMUL_PRECISION`` is set; the environment variable also reaches the
  subprocesses that tests start.
* One accelerator is one device: tests marked ``@pytest.mark.devices(n)`` are skipped, with
  the reason, where fewer than ``n`` devices exist (the CPU platform simulates 8).
"""
import atexit
import os
import shutil
import tempfile

import pytest

from dlfun.platform import simulate_cpu_devices

# Before the first JAX operation: the count, and PJRT_NPROC >= 2x the count, which keeps
# collectives on simulated devices from deadlocking on a 2-core machine. A platform the user
# chose (JAX_PLATFORMS) is kept.
simulate_cpu_devices(8)

# One persistent compilation cache for the whole session: the pytest process creates it
# before xdist starts its workers, which inherit the variable, and so do the experiments
# that tests run as subprocesses. Resume tests, subprocess runs and tests that build the
# same model compile each program once instead of once per process. A fresh folder each
# session (removed at exit), so no run is timed against an earlier one's cache; a cache the
# user set (JAX_COMPILATION_CACHE_DIR) is kept.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _cache = tempfile.mkdtemp(prefix="dlfun-test-jax-cache-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
MATMUL_PRECISION = os.environ.setdefault("JAX_DEFAULT_MATMUL_PRECISION", "highest")

import jax  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_default_matmul_precision", MATMUL_PRECISION)  # if jax came in earlier
jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
jax.config.update("jax_persistent_cache_min_compile_time_secs",
                  float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]))
jax.config.update("jax_persistent_cache_min_entry_size_bytes",
                  int(os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"]))
# Start the backend now: every test then finds JAX running with these devices, whatever
# order the tests run in (e.g. a parallel experiment asking for 16 is refused, not granted).
jax.devices()


def pytest_runtest_setup(item):
    """Skip a test marked ``devices(n)`` when the platform has fewer than ``n`` devices."""
    marker = item.get_closest_marker("devices")
    if marker is None:
        return
    need, have = marker.args[0], jax.device_count()
    if have < need:
        pytest.skip(f"needs {need} devices; the {jax.default_backend()} platform has {have} "
                    f"(JAX_PLATFORMS=cpu simulates 8)")
