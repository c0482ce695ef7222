"""Simulated devices and meshes."""

import os
import subprocess
import sys
from pathlib import Path

import jax
import pytest
from jax.sharding import AxisType

from dlfun.errors import ConfigError
from dlfun.parallel import make_mesh, simulate_cpu_devices
from dlfun.parallel.devices import ordered_devices
from dlfun.process_env import simulated_device_env

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.devices(8)
def test_simulate_after_start_with_too_few_devices_names_the_fix():
    assert jax.device_count() == 8  # the test session simulates 8
    with pytest.raises(ConfigError, match=r"already started with 8 device.*before the first "
                                          r"JAX operation.*PJRT_NPROC=32"):
        simulate_cpu_devices(16)
    simulate_cpu_devices(4)  # enough devices already: nothing to do
    with pytest.raises(ConfigError, match="at least 1"):
        simulate_cpu_devices(0)


def test_simulated_device_env_replaces_the_count_and_raises_pjrt_nproc():
    env = simulated_device_env(3, {"XLA_FLAGS": "--foo --xla_force_host_platform_device_count=8",
                                   "PJRT_NPROC": "2"})
    assert env["XLA_FLAGS"] == "--foo --xla_force_host_platform_device_count=3"
    assert env["PJRT_NPROC"] == "6" and env["JAX_PLATFORMS"] == "cpu"
    assert simulated_device_env(2, {"PJRT_NPROC": "64"})["PJRT_NPROC"] == "64"


def test_simulate_in_a_fresh_process_sets_count_and_threads():
    # JAX imported first (allowed), a user's earlier count replaced; once JAX has started a
    # larger count is refused with the fix.
    code = ("import jax, os\n"
            "from dlfun.errors import ConfigError\n"
            "from dlfun.parallel import simulate_cpu_devices\n"
            "simulate_cpu_devices(3)\n"
            "print(jax.device_count(), os.environ['PJRT_NPROC'])\n"
            "simulate_cpu_devices(2)\n"
            "try:\n"
            "    simulate_cpu_devices(5)\n"
            "except ConfigError as e:\n"
            "    print(e)\n")
    # a fresh process as a user starts it (no JAX_PLATFORMS=cuda from a GPU test session:
    # simulate_cpu_devices keeps a platform the user chose)
    env = {k: v for k, v in os.environ.items()
           if k not in ("XLA_FLAGS", "PJRT_NPROC", "JAX_PLATFORMS")}
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["3", "6"]
    assert lines[1].startswith("JAX already started with 3 device(s), fewer than the 5 asked")


@pytest.mark.devices(8)
def test_make_mesh_names_axes_and_defaults_to_auto_axis_types():
    mesh = make_mesh((4, 2), ("data", "model"))
    assert dict(mesh.shape) == {"data": 4, "model": 2}
    assert mesh.axis_types == (AxisType.Auto, AxisType.Auto)
    explicit = make_mesh((2,), ("data",), axis_types=(AxisType.Explicit,))
    assert explicit.axis_types == (AxisType.Explicit,)
    assert list(mesh.devices.flat) == ordered_devices()


@pytest.mark.devices(8)
@pytest.mark.parametrize("shape,names,match", [
    ((4, 4), ("data", "model"), r"needs 16 devices but 8 are available.*simulate_cpu_devices"),
    ((4,), ("data", "model"), "differ in length"),
])
def test_make_mesh_errors(shape, names, match):
    with pytest.raises(ConfigError, match=match):
        make_mesh(shape, names)
