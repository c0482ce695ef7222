"""Process set-up for fast CPU training: XLA flags, glibc malloc settings, an optional allocator.

Call :func:`configure_cpu` at the top of a script, before the first JAX computation (XLA reads
``XLA_FLAGS`` once, when its backend starts). It adds the flags in :data:`CPU_FLAGS` to
``XLA_FLAGS`` **only for flags the user has not set**: a flag already in ``XLA_FLAGS`` always
wins, so nothing a user chose is overridden. ``DLFUN_NO_CPU_FLAGS=1`` turns the additions off.

Every experiment calls :func:`tune_malloc` through :func:`dlfun.runs.cli.run_cli` with the
run's ``--malloc`` (auto: ``DLFUN_MALLOC`` if set, else "system"); ``summary.json`` records
the result. XLA:CPU allocates each computation's scratch memory afresh on every call, and glibc serves an allocation above 32 MiB (and any above 64 MiB
made by a worker thread) with a fresh ``mmap``, so every training step page-faults its whole
scratch buffer in again (measured: 17.7k faults and ~29 ms of system time in a 65 ms LSTM
step). ``DLFUN_MALLOC=tuned`` keeps such blocks in the heap for reuse, in this process only,
through glibc's ``mallopt`` (no restart, no extra library). It is opt-in because XLA's threads
then share one malloc arena, which costs the small models: measured with the step benchmarks on
the 2-core machine (interleaved runs), the LSTM step +40% (13.6 -> 19 steps/s) and the 4-conv
CNN step +20% (7.4 -> 8.8), whose scratch buffers exceed 32 MiB, but the MLP step -5% and
LeNet -8 to -12%, and ``python -m experiments.cnn`` (LeNet on digits) 16 s -> 19 s wall.
The arena choice is made when XLA's threads first allocate, so the setting must come before
JAX starts; it cannot be picked after compiling a step and reading its scratch size.

The allocator part is opt-in (a caching allocator is a system library, not a Python package):
:func:`reexec_with_allocator` restarts the script with jemalloc or tcmalloc in ``LD_PRELOAD``
when ``DLFUN_ALLOCATOR=jemalloc`` (or ``tcmalloc``, ``glibc-thp``, ``auto``) is set; on
Debian/Ubuntu install one with ``apt-get install libjemalloc2`` (or ``libtcmalloc-minimal4``).
"""

from __future__ import annotations

import ctypes
import os
import platform as _platform
import shlex
import sys
import warnings
from pathlib import Path
from typing import Mapping, MutableMapping

from dlfun.errors import ConfigError
from dlfun.process_env import COUNT_FLAG, requested_device_count, simulated_device_env

# Flags that made CPU training steps faster (see benchmarks/cnn_step.py); flag name -> value.
# Empty on purpose: on the 2-core AVX-512 EPYC measured, with dlfun's conv ops,
# --xla_cpu_experimental_ynn_fusion_type=-individual_convolution (Eigen convs) made the CNN
# step ~5-10% slower (CPU time 152 -> 160-166 ms), though it helped plain nn.Conv elsewhere.
CPU_FLAGS: dict[str, str] = {}

# Measured on the 4-conv CNN step (2-core AVX-512 EPYC, jaxlib 0.10.2): XLA:CPU maps its
# ~200 MiB temp buffer afresh each step (page faults: ~36 ms of system time per step). A
# caching allocator removes them: CPU time per step 192 ms -> 147 (jemalloc or tcmalloc);
# glibc's own transparent huge pages (no extra library) reach 165.
ALLOCATORS = {
    # name: (library file names searched, environment that keeps freed memory cached)
    "jemalloc": (("libjemalloc.so.2", "libjemalloc.so"),
                 {"MALLOC_CONF": "dirty_decay_ms:-1,muzzy_decay_ms:-1"}),
    "tcmalloc": (("libtcmalloc_minimal.so.4", "libtcmalloc.so.4"),
                 {"TCMALLOC_RELEASE_RATE": "0"}),
}
GLIBC_THP = {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}  # allocator "glibc-thp"
# glibc mallopt parameters (malloc.h) and what tune_malloc sets: one arena (XLA's worker threads
# share the main heap, whose freed blocks every thread can reuse), no mmap (large blocks come
# from the heap too), and no trimming (freed memory stays mapped, so it is not faulted in again).
M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8
MALLOC_SETTINGS = {M_ARENA_MAX: 1, M_MMAP_MAX: 0, M_TRIM_THRESHOLD: 2**31 - 1}
MALLOC_CHOICES = ("tuned", "system")
MALLOC_FLAGS = ("auto",) + MALLOC_CHOICES  # a run's --malloc
_malloc_state = "system malloc"

_LIB_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib",
             "/usr/local/lib")


def flag_names(xla_flags: str) -> set[str]:
    """Names of the flags in an ``XLA_FLAGS`` string: ``"--a=1 --b"`` -> ``{"a", "b"}``."""
    names = set()
    for token in shlex.split(xla_flags):
        name = token.lstrip("-").split("=", 1)[0]
        if name:
            names.add(name)
    return names


def merge_xla_flags(user_flags: str, defaults: Mapping[str, str]) -> tuple[str, dict[str, str]]:
    """Add ``defaults`` to ``user_flags`` for the flags the user has not set.

    Args:
      user_flags: the current ``XLA_FLAGS`` value (may be empty).
      defaults: flag name -> value to add when absent.

    Returns:
      ``(merged XLA_FLAGS string, {flag: value} actually added)``.
    """
    present = flag_names(user_flags)
    added = {k: v for k, v in defaults.items() if k not in present}
    extra = " ".join(f"--{k}={v}" for k, v in added.items())
    return " ".join(s for s in (user_flags.strip(), extra) if s), added


def backend_started() -> bool:
    """Whether JAX's backends are initialised: from then on the device count is fixed and
    changes to ``XLA_FLAGS`` or ``PJRT_NPROC`` have no effect. Imports no JAX."""
    if "jax" not in sys.modules:
        return False
    try:
        from jax._src import xla_bridge  # private, but the only way to ask without starting one
    except ImportError:
        return False
    return xla_bridge.backends_are_initialized()


def simulate_cpu_devices(n: int, *, cpu_only: bool = True) -> None:
    """Make this process's JAX start with ``n`` CPU devices: dlfun's one place for this set-up.

    Call before the first JAX operation (importing jax and dlfun is fine). It sets, in
    ``os.environ``: ``--xla_force_host_platform_device_count=n`` in ``XLA_FLAGS`` (the user's
    other flags kept, an earlier count replaced); ``PJRT_NPROC`` to at least ``2n`` (with fewer
    threads than that, collectives across simulated devices can deadlock on a machine with
    few cores); and, with ``cpu_only``, ``JAX_PLATFORMS=cpu`` unless the user chose platforms,
    so that ``jax.devices()`` lists these devices. Once JAX has started nothing can change: if
    it has at least ``n`` devices this does nothing.

    Args:
      n: the number of CPU devices, at least 1.
      cpu_only: make CPU JAX's platform (False: an accelerator stays the default and the count
        applies to ``jax.devices("cpu")``).

    Raises:
      ConfigError: ``n < 1``, or JAX already started with fewer than ``n`` devices.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"the number of devices must be an integer at least 1, got {n!r}")
    if backend_started():
        import jax

        have = len(jax.devices() if cpu_only else jax.devices("cpu"))
        if have < n:
            raise ConfigError(
                f"JAX already started with {have} device(s), fewer than the {n} asked for; call "
                f"simulate_cpu_devices({n}) before the first JAX operation, or start Python with "
                f"XLA_FLAGS={COUNT_FLAG}={n} PJRT_NPROC={2 * n}")
        return
    keys = ("XLA_FLAGS", "PJRT_NPROC", "JAX_PLATFORMS") if cpu_only else ("XLA_FLAGS",
                                                                         "PJRT_NPROC")
    env = simulated_device_env(n)
    os.environ.update({k: env[k] for k in keys})


def request_cpu_devices(count: int) -> bool:
    """Best-effort :func:`simulate_cpu_devices` (``cpu_only=False``) for code that can use
    however many devices it gets: does nothing when JAX already started or when the user set
    a device count in ``XLA_FLAGS`` (theirs wins).

    Returns:
      Whether the request was applied.
    """
    if backend_started() or requested_device_count() is not None:
        return False
    simulate_cpu_devices(count, cpu_only=False)
    return True


def configure_cpu(environ: MutableMapping[str, str] | None = None, *,
                  flags: Mapping[str, str] | None = None, log=None) -> dict[str, str]:
    """Add the helpful CPU flags to ``XLA_FLAGS``, never overriding a user-set flag.

    With the process environment (the default) it also calls :func:`tune_malloc`.

    Args:
      environ: the environment to update (default ``os.environ``).
      flags: flag name -> value to add (default :data:`CPU_FLAGS`).
      log: optional callable given one line saying what was added.

    Returns:
      ``{flag: value}`` actually added (empty when all were set by the user, when
      ``DLFUN_NO_CPU_FLAGS=1``, or when there is nothing to add).

    Raises:
      ConfigError: when called after the JAX backend started (the flags would be ignored).
    """
    environ = os.environ if environ is None else environ
    flags = CPU_FLAGS if flags is None else flags
    if environ is os.environ and backend_started():
        raise ConfigError("dlfun.platform.configure_cpu() was called after JAX's backend "
                          "started; call it at the top of the script, before any JAX array "
                          "or jit call")
    if environ is os.environ:
        tune_malloc(environ)
    if environ.get("DLFUN_NO_CPU_FLAGS", "") not in ("", "0"):
        added = {}
    else:
        merged, added = merge_xla_flags(environ.get("XLA_FLAGS", ""), flags)
        if added:
            environ["XLA_FLAGS"] = merged
    if log is not None:
        log(describe_platform(added, environ))
    return added


def describe_platform(added: Mapping[str, str], environ: Mapping[str, str] | None = None) -> str:
    """One line for run logs: which flags dlfun added and which allocator is preloaded."""
    environ = os.environ if environ is None else environ
    flags = " ".join(f"--{k}={v}" for k, v in added.items()) or "none"
    return (f"dlfun platform: added XLA flags: {flags}; XLA_FLAGS={environ.get('XLA_FLAGS', '')!r}; "
            f"allocator: {allocator_in_use(environ)}")


def allocator_in_use(environ: Mapping[str, str] | None = None) -> str:
    """The allocator of this process, in words: a restarted-with or preloaded allocator's
    name, else the glibc malloc state :func:`tune_malloc` left."""
    environ = os.environ if environ is None else environ
    return environ.get("DLFUN_ALLOCATOR_ACTIVE") or preloaded_allocator(environ) or _malloc_state


def _glibc() -> ctypes.CDLL | None:
    """The C library of this process when it is glibc (it has ``mallopt``), else None."""
    if sys.platform != "linux" or _platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        return libc
    except (OSError, AttributeError):
        return None


def resolve_malloc(flag: str, environ: Mapping[str, str] | None = None) -> str:
    """The glibc malloc setting of a run, ``"tuned"`` or ``"system"``, from its ``--malloc``:
    "tuned" or "system" as given; "auto" takes ``DLFUN_MALLOC`` when set, else "system" (what
    the experiments measured faster: see the README's "Memory on the CPU").

    Raises:
      ConfigError: ``flag`` or ``DLFUN_MALLOC`` is not a known choice.
    """
    environ = os.environ if environ is None else environ
    if flag not in MALLOC_FLAGS:
        raise ConfigError(f"--malloc {flag!r} is not one of {', '.join(MALLOC_FLAGS)}")
    if flag != "auto":
        return flag
    choice = environ.get("DLFUN_MALLOC", "") or "system"
    _check_malloc_choice(choice)
    return choice


def _check_malloc_choice(choice: str) -> None:
    if choice not in MALLOC_CHOICES:
        raise ConfigError(f"DLFUN_MALLOC={choice!r} is not one of {list(MALLOC_CHOICES)}; "
                          "set it to 'tuned' (glibc keeps large scratch buffers) or unset it")


def tune_malloc(environ: Mapping[str, str] | None = None, choice: str | None = None) -> str:
    """With ``DLFUN_MALLOC=tuned`` (or ``choice="tuned"``, which wins): let glibc keep XLA's
    large scratch buffers for reuse.

    Sets :data:`MALLOC_SETTINGS` through ``mallopt`` (this process only): one arena, no ``mmap`` for large blocks,
    no trimming of the heap. Freed memory then stays with the process (its resident size
    stays at its peak, as with jemalloc or tcmalloc in caching mode) instead of being unmapped
    and page-faulted in again on the next step. Does nothing unless ``DLFUN_MALLOC=tuned``
    (the default is "system": see the module docstring for the measured trade-off), when
    another allocator is preloaded, or when the C library is not glibc. Call it before
    the first JAX computation: XLA's threads that already allocated keep their own arenas.

    Returns:
      What the process's allocator is now, in words (also shown by :func:`describe_platform`).

    Raises:
      ConfigError: ``DLFUN_MALLOC`` is neither "tuned" nor "system".
    """
    global _malloc_state
    environ = os.environ if environ is None else environ
    choice = choice or environ.get("DLFUN_MALLOC", "") or "system"
    _check_malloc_choice(choice)
    if choice == "system":
        return _malloc_state
    preloaded = preloaded_allocator(environ)
    if preloaded:
        return f"{preloaded} (preloaded; glibc malloc settings left alone)"
    if _malloc_state.startswith("glibc"):
        return _malloc_state
    libc = _glibc()
    if libc is None:
        return _malloc_state
    if all(libc.mallopt(param, value) == 1 for param, value in MALLOC_SETTINGS.items()):
        _malloc_state = "glibc malloc, tuned (one arena, no mmap, no trim)"
    else:
        _malloc_state = "glibc malloc (mallopt refused a setting)"
    return _malloc_state


def find_allocator(name: str) -> Path:
    """Path of the shared library for allocator ``name`` ("jemalloc" or "tcmalloc")."""
    if name not in ALLOCATORS:
        raise ConfigError(f"DLFUN_ALLOCATOR={name!r} is not one of "
                          f"{sorted(ALLOCATORS) + ['glibc-thp', 'auto']}; unset it to keep the "
                          "system malloc")
    for d in _LIB_DIRS:
        for lib in ALLOCATORS[name][0]:
            if (Path(d) / lib).is_file():
                return Path(d) / lib
    pkg = {"jemalloc": "libjemalloc2", "tcmalloc": "libtcmalloc-minimal4"}[name]
    raise ConfigError(f"{name} library ({' or '.join(ALLOCATORS[name][0])}) not found in "
                      f"{', '.join(_LIB_DIRS)}; install it (Debian/Ubuntu: apt-get install "
                      f"{pkg}) or unset DLFUN_ALLOCATOR")


def preloaded_allocator(environ: Mapping[str, str] | None = None) -> str | None:
    """Name of the allocator in ``LD_PRELOAD``, if one of :data:`ALLOCATORS` is there."""
    preload = (os.environ if environ is None else environ).get("LD_PRELOAD", "")
    for name, (libs, _) in ALLOCATORS.items():
        if any(lib in preload for lib in libs):
            return name
    return None


def choose_allocator(name: str) -> str:
    """Resolve "auto" to the first installed of jemalloc, tcmalloc, else "glibc-thp"."""
    if name != "auto":
        return name
    for candidate in ALLOCATORS:
        try:
            find_allocator(candidate)
            return candidate
        except ConfigError:
            continue
    return "glibc-thp"


def allocator_environment(name: str, environ: Mapping[str, str]) -> dict[str, str]:
    """Environment variables that select allocator ``name``; user-set values are kept."""
    if name == "glibc-thp":
        return {k: v for k, v in GLIBC_THP.items() if k not in environ}
    lib = str(find_allocator(name))
    out = {"LD_PRELOAD": " ".join(s for s in (lib, environ.get("LD_PRELOAD", "")) if s)}
    out.update({k: v for k, v in ALLOCATORS[name][1].items() if k not in environ})
    return out


def reexec_with_allocator(environ: MutableMapping[str, str] | None = None) -> None:
    """Restart this Python process with ``DLFUN_ALLOCATOR``'s allocator (opt-in).

    ``DLFUN_ALLOCATOR`` is "jemalloc", "tcmalloc" (preloaded from the system library),
    "glibc-thp" (glibc's malloc with transparent huge pages; needs no library) or "auto"
    (the first of those available). Does nothing when it is unset or already in effect
    (``DLFUN_ALLOCATOR_ACTIVE`` marks the restarted process). Call it first thing in a
    script's ``main``: it replaces the process, so work done before is lost.
    """
    environ = os.environ if environ is None else environ
    name = environ.get("DLFUN_ALLOCATOR", "")
    if not name or environ.get("DLFUN_ALLOCATOR_ACTIVE"):
        return
    if backend_started():
        warnings.warn("reexec_with_allocator() after JAX started: restarting anyway", stacklevel=2)
    name = choose_allocator(name)
    environ.update(allocator_environment(name, environ))
    environ["DLFUN_ALLOCATOR_ACTIVE"] = name
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], dict(environ))
