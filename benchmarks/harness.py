"""Shared timing harness for dlfun benchmarks.

Two layers:

* in-process timing of a compiled step (:func:`time_steps`, :func:`compile_seconds`): warm-up,
  ``block_until_ready``, median of repeats, compile time reported separately;
* side-by-side comparison (:func:`run_interleaved`): run each contender (dlfun, and the
  plain-Flax and PyTorch references of :mod:`benchmarks.baselines`) as its own subprocess,
  interleaved A B C A B C ..., parse its ``RESULT {json}`` line and report medians. Separate
  processes keep one contender's threads, allocator state and XLA flags from leaking into
  another's figures. ``--cross-check`` adds the outside scripts of ``../shared/baselines``;
* the device (:func:`add_device_args`, :func:`device_env`, :func:`require_device`): every step
  benchmark takes ``--device cpu|gpu``; its subprocesses get ``JAX_PLATFORMS`` accordingly and
  PyTorch runs on CUDA with TF32 allowed, as JAX's default precision does on a GPU.

Every script prints a table (:func:`print_table`) and writes JSON (:func:`write_json`).
"""

from __future__ import annotations

import json
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

REPO_ROOT = Path(__file__).resolve().parent.parent


def _find_shared_baselines() -> Path:
    """``shared/baselines`` beside the checkout (or beside a parent folder: git worktrees)."""
    for parent in REPO_ROOT.parents:
        if (parent / "shared" / "baselines").is_dir():
            return parent / "shared" / "baselines"
    return REPO_ROOT.parent / "shared" / "baselines"


SHARED_BASELINES = _find_shared_baselines()
RESULT_PREFIX = "RESULT "
DEVICES = ("cpu", "gpu")
JAX_PLATFORM = {"cpu": "cpu", "gpu": "cuda"}
FLAX = "plain Flax"
TORCH_EAGER = "PyTorch eager"
TORCH_COMPILE = "PyTorch compile"


def cpu_seconds() -> float:
    """User + system CPU time of this process (all threads)."""
    t = os.times()
    return t.user + t.system


def time_steps(run_n: Callable[[int], None], *, seconds: float = 2.0, repeats: int = 5,
               warmup_seconds: float = 1.0, min_steps: int = 3) -> dict:
    """Time a step function: warm up, then the median of ``repeats`` timed windows.

    Args:
      run_n: ``run_n(n)`` runs ``n`` steps and blocks until the results are ready.
      seconds: target length of each timed window.
      repeats: number of timed windows; the median is reported.
      warmup_seconds: untimed running before the first window (compilation must be done
        before calling this; see :func:`compile_seconds`).
      min_steps: minimum steps per window.

    Returns:
      dict with ``steps_per_s`` (median), ``all_steps_per_s``, ``n_per_window`` and
      ``cpu_util`` (CPU seconds per wall second, median).
    """
    t0, n_warm = time.perf_counter(), 0
    while n_warm < min_steps or time.perf_counter() - t0 < warmup_seconds:
        run_n(1)
        n_warm += 1
    per_step = (time.perf_counter() - t0) / n_warm
    n = max(min_steps, math.ceil(seconds / per_step))
    rates, utils = [], []
    for _ in range(repeats):
        c0, w0 = cpu_seconds(), time.perf_counter()
        run_n(n)
        w1, c1 = time.perf_counter(), cpu_seconds()
        rates.append(n / (w1 - w0))
        utils.append((c1 - c0) / (w1 - w0))
    return dict(steps_per_s=statistics.median(rates), all_steps_per_s=rates, n_per_window=n,
                cpu_util=statistics.median(utils))


def compile_seconds(jitted, *args) -> float:
    """Seconds to lower and compile ``jitted`` for ``args`` (a fresh AOT compile)."""
    t0 = time.perf_counter()
    jitted.lower(*args).compile()
    return time.perf_counter() - t0


def emit_result(result: dict) -> None:
    """Print one ``RESULT {json}`` line, the protocol the baseline scripts use too."""
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def parse_result(stdout: str) -> dict:
    """The last ``RESULT {json}`` line of a contender's output."""
    lines = [ln for ln in stdout.splitlines() if ln.startswith(RESULT_PREFIX)]
    if not lines:
        raise RuntimeError("contender printed no RESULT line; its output was:\n" + stdout[-2000:])
    return json.loads(lines[-1][len(RESULT_PREFIX):])


@dataclass(frozen=True)
class Contender:
    """One side of a side-by-side comparison: a name and the command that measures it."""

    name: str
    argv: tuple[str, ...]
    cwd: str | None = None
    env: tuple[tuple[str, str], ...] = ()


def run_contender(c: Contender, timeout: float = 900.0) -> dict:
    """Run one contender in a fresh process and return its RESULT dict."""
    env = dict(os.environ, **dict(c.env))
    proc = subprocess.run(list(c.argv), cwd=c.cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{c.name} failed ({shlex.join(c.argv)}):\n{proc.stderr[-3000:]}")
    return parse_result(proc.stdout)


def run_interleaved(contenders: Sequence[Contender], rounds: int, key: str = "steps_per_s",
                    log=print) -> dict[str, dict]:
    """Run the contenders A B C A B C ... ``rounds`` times; medians of ``key`` per contender.

    Returns:
      ``{name: {"median": float, "values": [...], "last": <last RESULT dict>}}``.
    """
    out = {c.name: dict(values=[], last=None) for c in contenders}
    for r in range(rounds):
        for c in contenders:
            res = run_contender(c)
            out[c.name]["values"].append(res[key])
            out[c.name]["last"] = res
            log(f"  round {r + 1}/{rounds}  {c.name:<28s} {key}={res[key]:.2f}")
    for v in out.values():
        v["median"] = statistics.median(v["values"])
    return out


def baseline_contenders(model: str, seconds: float, device: str, torch_available: bool, *,
                        torch_compile: bool = False,
                        cross_check: Path | None = None) -> list[Contender]:
    """The plain-Flax and (when torch imports) PyTorch references of ``model`` as contenders.

    Args:
      model: a key of :data:`benchmarks.baselines.SPECS`.
      seconds: timed seconds per window.
      device: "cpu" or "gpu".
      torch_available: whether to add the PyTorch contenders.
      torch_compile: also time PyTorch with ``torch.compile``.
      cross_check: a folder with the outside ``plain_flax_bench.py`` / ``torch_bench.py``
        scripts to run as extra contenders (their CPU modes; ``None``: none).
    """
    py, here, env = sys.executable, str(REPO_ROOT), device_env(device)
    common = ("--model", model, "--seconds", str(seconds))
    out = [Contender(FLAX, (py, "-m", "benchmarks.baselines.flax_step", *common), here, env)]
    if torch_available:
        torch_argv = (py, "-m", "benchmarks.baselines.torch_step", *common, "--device", device)
        out.append(Contender(TORCH_EAGER, (*torch_argv, "--mode", "eager"), here, env))
        if torch_compile:
            out.append(Contender(TORCH_COMPILE, (*torch_argv, "--mode", "compile"), here, env))
    if cross_check is not None:
        out += shared_contenders(check_shared_baselines(cross_check), model, seconds, device,
                                 torch_available)
    return out


def shared_contenders(folder: Path, model: str, seconds: float, device: str,
                      torch_available: bool) -> list[Contender]:
    """The outside scripts in ``folder`` (``../shared/baselines``) as cross-check contenders."""
    py, env = sys.executable, device_env(device)
    common = ("--model", model, "--seconds", str(seconds))
    out = [Contender(f"{FLAX} (shared cross-check)",
                     (py, "plain_flax_bench.py", "--mode", "train", *common), str(folder), env)]
    if torch_available:
        out.append(Contender(f"{TORCH_EAGER} (shared cross-check)",
                             (py, "torch_bench.py", "--mode", "eager", *common, "--device",
                              "cuda" if device == "gpu" else "cpu"), str(folder), env))
    return out


def torch_installed() -> bool:
    """Whether torch can be imported (checked in a subprocess: importing it here costs time)."""
    proc = subprocess.run([sys.executable, "-c", "import torch"], capture_output=True)
    return proc.returncode == 0


def check_shared_baselines(path: Path) -> Path:
    """Return ``path`` if it holds the outside baseline scripts, else exit with how to supply
    them (only ``--cross-check`` needs them)."""
    if not (path / "plain_flax_bench.py").is_file():
        sys.exit(f"error: --cross-check: plain_flax_bench.py not found in {path}; pass "
                 "--cross-check DIR with the folder holding plain_flax_bench.py and "
                 "torch_bench.py, or leave --cross-check out")
    return path


def add_device_args(parser, *, cross_check: bool = True) -> None:
    """Add ``--device cpu|gpu`` (and ``--cross-check [DIR]``) to a benchmark's parser."""
    parser.add_argument("--device", choices=DEVICES, default="cpu",
                        help="where JAX and PyTorch train: cpu (default) or gpu (JAX on CUDA; "
                        "PyTorch on CUDA with TF32 allowed, as JAX's default precision does)")
    if cross_check:
        parser.add_argument("--cross-check", nargs="?", type=Path, const=SHARED_BASELINES,
                            default=None, metavar="DIR",
                            help="also run the outside plain_flax_bench.py / torch_bench.py "
                            f"scripts in DIR (default {SHARED_BASELINES}) as cross-checks")


def device_env(device: str) -> tuple[tuple[str, str], ...]:
    """Environment for a contender subprocess: ``JAX_PLATFORMS`` naming the device's platform."""
    return (("JAX_PLATFORMS", JAX_PLATFORM[device]),)


def require_device(device: str) -> None:
    """Exit with status 2 and one line if JAX finds no device of that kind here; else point
    this process's JAX (imported later, for the JSON's machine info) at that platform too."""
    if device == "cpu":
        return _point_jax_at(device)
    code = "import jax; print(jax.devices()[0].device_kind)"
    env = dict(os.environ, **dict(device_env(device)))
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        print(f"error: --device {device}, but JAX finds no GPU here ({last[:160]}); run with "
              "--device cpu, or install jax[cuda13] on a machine with a GPU", file=sys.stderr)
        sys.exit(2)
    _point_jax_at(device)


def _point_jax_at(device: str) -> None:
    """``JAX_PLATFORMS`` for this process (and ``jax_platforms`` if jax is imported already)."""
    os.environ.update(device_env(device))
    if "jax" in sys.modules:
        sys.modules["jax"].config.update("jax_platforms", JAX_PLATFORM[device])


def machine_info() -> dict:
    """What the figures were measured on."""
    import jax

    return dict(python=platform.python_version(), machine=platform.machine(),
                processor=_cpu_model(), cpu_count=os.cpu_count(), jax=jax.__version__,
                backend=jax.default_backend(), device_kind=jax.devices()[0].device_kind,
                xla_flags=os.environ.get("XLA_FLAGS", ""))


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def print_table(rows: Sequence[dict], columns: Sequence[str], title: str = "") -> str:
    """Print ``rows`` as an aligned text table (floats to 2 decimals) and return it."""
    def fmt(v):
        return f"{v:.2f}" if isinstance(v, float) else str(v)

    cells = [[fmt(r.get(c, "")) for c in columns] for r in rows]
    widths = [max([len(c), *(len(row[i]) for row in cells)]) for i, c in enumerate(columns)]
    lines = [title] if title else []
    lines.append("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    text = "\n".join(lines)
    print(text, flush=True)
    return text


def write_json(path: str | Path, payload: dict) -> Path:
    """Write ``payload`` (plus machine info) as JSON, creating parent folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dict(machine=machine_info(), **payload), indent=2))
    print(f"wrote {path}")
    return path
