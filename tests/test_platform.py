"""dlfun.platform: CPU flags are added only where the user has not set them."""

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
