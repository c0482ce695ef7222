"""dlfun.platform: CPU flags are added only where the user has not set them."""

import os

import pytest

from dlfun import platform
from dlfun.errors import ConfigError


def test_flag_names_parses_xla_flags():
    assert platform.flag_names("--a=1  --b --c=x=y") == {"a", "b", "c"}
    assert platform.flag_names("") == set()


def test_merge_adds_missing_flags_only():
    merged, added = platform.merge_xla_flags("--xla_force_host_platform_device_count=8",
                                             {"flag_one": "1", "flag_two": "-x"})
    assert added == {"flag_one": "1", "flag_two": "-x"}
    assert merged == "--xla_force_host_platform_device_count=8 --flag_one=1 --flag_two=-x"


def test_merge_never_overrides_a_user_flag():
    merged, added = platform.merge_xla_flags("--flag_one=0", {"flag_one": "1", "flag_two": "2"})
    assert added == {"flag_two": "2"}
    assert "--flag_one=0" in merged and "--flag_one=1" not in merged


def test_configure_cpu_keeps_user_value_and_reports_additions():
    env = {"XLA_FLAGS": "--flag_one=user"}
    lines = []
    added = platform.configure_cpu(env, flags={"flag_one": "ours", "flag_two": "ours"},
                                   log=lines.append)
    assert added == {"flag_two": "ours"}
    assert env["XLA_FLAGS"] == "--flag_one=user --flag_two=ours"
    assert "--flag_two=ours" in lines[0]


def test_configure_cpu_opt_out_changes_nothing():
    env = {"DLFUN_NO_CPU_FLAGS": "1"}
    assert platform.configure_cpu(env, flags={"flag_one": "1"}) == {}
    assert "XLA_FLAGS" not in env


def test_configure_cpu_after_backend_start_raises():
    import jax

    jax.numpy.zeros(1).block_until_ready()  # the backend is running now
    with pytest.raises(ConfigError, match="before any JAX"):
        platform.configure_cpu()


def test_unknown_allocator_is_a_config_error():
    with pytest.raises(ConfigError, match="DLFUN_ALLOCATOR"):
        platform.find_allocator("hoard")


def test_preloaded_allocator_reads_ld_preload():
    assert platform.preloaded_allocator({"LD_PRELOAD": "/x/libjemalloc.so.2"}) == "jemalloc"
    assert platform.preloaded_allocator({}) is None


def test_allocator_environment_keeps_user_settings():
    env = platform.allocator_environment("glibc-thp", {"GLIBC_TUNABLES": "user"})
    assert env == {}
    assert platform.allocator_environment("glibc-thp", {}) == platform.GLIBC_THP


def test_reexec_without_request_does_nothing():
    env = {}
    platform.reexec_with_allocator(env)  # returns: DLFUN_ALLOCATOR unset
    assert env == {}


_FAULTS_SCRIPT = """
import resource
from dlfun import platform
print(platform.tune_malloc())
import jax, jax.numpy as jnp

@jax.jit
def f(x):
    y = jnp.tanh(x).reshape(4096, 4096)  # a 64 MiB intermediate, allocated on every call
    return (y.T @ jnp.ones(4096)).sum()

x = jnp.linspace(-1, 1, 16 * 2**20)
faults = []
for _ in range(30):  # the heap grows to its steady size in the first calls
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    f(x).block_until_ready()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(sorted(faults[15:])[7])  # median over the last 15 calls
"""


def _faults_per_call(malloc: str) -> tuple[str, float]:
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "XLA_FLAGS")}
    env["DLFUN_MALLOC"] = malloc
    out = subprocess.run([sys.executable, "-c", _FAULTS_SCRIPT], env=env, capture_output=True,
                         text=True, timeout=300, check=True).stdout.splitlines()
    return out[0], float(out[1])


@pytest.mark.skipif(platform._glibc() is None, reason="tune_malloc acts on glibc's malloc only")
def test_tuned_malloc_reuses_xla_scratch_memory_instead_of_faulting_it_in_each_call():
    pages = 64 * 2**20 // 4096
    state, tuned = _faults_per_call("tuned")
    assert state.startswith("glibc malloc, tuned")
    system_state, system = _faults_per_call("system")
    assert system_state == "system malloc"
    assert system > pages / 2, "glibc maps a 64 MiB block afresh on every call"
    assert tuned < pages / 20, f"tuned malloc still faults {tuned:.0f} pages per call"


def test_bad_malloc_choice_is_a_config_error():
    with pytest.raises(ConfigError, match="DLFUN_MALLOC='jemalloc'.*'tuned'"):
        platform.tune_malloc({"DLFUN_MALLOC": "jemalloc"})


def test_preloaded_allocator_is_left_alone():
    state = platform.tune_malloc({"LD_PRELOAD": "/x/libjemalloc.so.2", "DLFUN_MALLOC": "tuned"})
    assert state.startswith("jemalloc (preloaded")


class _FakeLibc:
    """Records mallopt calls instead of changing this process's malloc."""

    def __init__(self):
        self.calls = []

    def mallopt(self, param, value):
        self.calls.append((param, value))
        return 1


def test_malloc_is_left_as_it_comes_unless_asked(monkeypatch):
    libc = _FakeLibc()
    monkeypatch.setattr(platform, "_glibc", lambda: libc)
    monkeypatch.setattr(platform, "_malloc_state", "system malloc")
    assert platform.tune_malloc({}) == "system malloc"
    assert platform.tune_malloc({"DLFUN_MALLOC": "system"}) == "system malloc"
    assert libc.calls == []
    assert platform.tune_malloc({"DLFUN_MALLOC": "tuned"}).startswith("glibc malloc, tuned")
    assert libc.calls == list(platform.MALLOC_SETTINGS.items())


# One entry point for simulated devices: simulate_cpu_devices (what conftest, the parallel
# experiments and the benchmarks call); its environment effects, checked as if JAX had not
# started yet (a fresh process proves JAX honours them: tests/test_parallel_devices.py).
COUNT = "--xla_force_host_platform_device_count"


@pytest.fixture
def before_jax(monkeypatch):
    monkeypatch.setattr(platform, "backend_started", lambda: False)
    for var in ("XLA_FLAGS", "PJRT_NPROC", "JAX_PLATFORMS"):
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


def test_the_test_session_was_set_up_by_simulate_cpu_devices():
    import jax

    assert jax.device_count() == 8 and int(os.environ["PJRT_NPROC"]) >= 16


def test_simulate_sets_count_threads_and_platform_keeping_other_flags(before_jax):
    before_jax.setenv("XLA_FLAGS", f"--xla_cpu_foo=1 {COUNT}=2 --xla_bar")
    platform.simulate_cpu_devices(5)
    assert os.environ["XLA_FLAGS"] == f"--xla_cpu_foo=1 --xla_bar {COUNT}=5"
    assert os.environ["PJRT_NPROC"] == "10" and os.environ["JAX_PLATFORMS"] == "cpu"
    platform.simulate_cpu_devices(3)  # a second call replaces the count; threads never shrink
    assert os.environ["XLA_FLAGS"] == f"--xla_cpu_foo=1 --xla_bar {COUNT}=3"
    assert os.environ["PJRT_NPROC"] == "10"


def test_simulate_keeps_the_users_platform_and_larger_thread_count(before_jax):
    before_jax.setenv("JAX_PLATFORMS", "cuda,cpu")
    before_jax.setenv("PJRT_NPROC", "64")
    platform.simulate_cpu_devices(4)
    assert os.environ["JAX_PLATFORMS"] == "cuda,cpu" and os.environ["PJRT_NPROC"] == "64"
    before_jax.delenv("JAX_PLATFORMS")
    platform.simulate_cpu_devices(4, cpu_only=False)
    assert "JAX_PLATFORMS" not in os.environ


@pytest.mark.parametrize("n", [0, -1, 2.0, True, "4"])
def test_simulate_refuses_a_count_that_is_not_a_positive_integer(before_jax, n):
    with pytest.raises(ConfigError, match="number of devices must be an integer at least 1"):
        platform.simulate_cpu_devices(n)


def test_simulate_names_a_malformed_pjrt_nproc(before_jax):
    before_jax.setenv("PJRT_NPROC", "lots")
    with pytest.raises(ConfigError, match=r"PJRT_NPROC='lots' is not a whole number; unset it "
                                          r"or set it to at least 8"):
        platform.simulate_cpu_devices(4)


def test_request_cpu_devices_is_best_effort_and_leaves_a_users_count(before_jax):
    assert platform.request_cpu_devices(3)
    assert os.environ["XLA_FLAGS"] == f"{COUNT}=3" and os.environ["PJRT_NPROC"] == "6"
    assert "JAX_PLATFORMS" not in os.environ  # an accelerator stays the default
    before_jax.setenv("XLA_FLAGS", f"{COUNT}=2")
    assert not platform.request_cpu_devices(6)
    assert os.environ["XLA_FLAGS"] == f"{COUNT}=2"


def test_request_after_jax_started_changes_nothing():
    flags = os.environ["XLA_FLAGS"]
    assert not platform.request_cpu_devices(64)  # this session's JAX started with 8
    assert os.environ["XLA_FLAGS"] == flags


# ------------------------------------------------ the run's malloc choice (--malloc)
def test_run_malloc_flag_wins_then_the_environment_then_system():
    assert platform.resolve_malloc("system", {"DLFUN_MALLOC": "tuned"}) == "system"
    assert platform.resolve_malloc("tuned", {}) == "tuned"
    assert platform.resolve_malloc("auto", {"DLFUN_MALLOC": "tuned"}) == "tuned"
    assert platform.resolve_malloc("auto", {}) == "system"
    with pytest.raises(ConfigError, match="DLFUN_MALLOC='fast'"):
        platform.resolve_malloc("auto", {"DLFUN_MALLOC": "fast"})
    with pytest.raises(ConfigError, match="--malloc 'fast'"):
        platform.resolve_malloc("fast", {})


def test_explicit_choice_overrides_the_environment_in_tune_malloc(monkeypatch):
    libc = _FakeLibc()
    monkeypatch.setattr(platform, "_glibc", lambda: libc)
    monkeypatch.setattr(platform, "_malloc_state", "system malloc")
    assert platform.tune_malloc({"DLFUN_MALLOC": "tuned"}, choice="system") == "system malloc"
    assert libc.calls == []
    assert platform.tune_malloc({}, choice="tuned").startswith("glibc malloc, tuned")
