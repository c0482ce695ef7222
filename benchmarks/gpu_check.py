"""The one-shot GPU check of issue 13: the accelerator benchmark and the step benchmarks on a
GPU, every table and JSON written to one folder, in about 7 minutes.

    OUT=/some/folder python -m benchmarks.gpu_check            # on the GPU machine
    python -m benchmarks.gpu_check --dry-run                   # print the plan, run nothing
    python -m benchmarks.gpu_check --device cpu --smoke --out /tmp/check   # the plumbing on CPU

Runs these parts in order, each in its own process with a timeout (a part that hangs is
killed and the next one starts; time a part leaves unused goes to the ones after it; the
timeouts add up to ``--budget`` seconds):

  1. the bf16 matrix-product peak (``benchmarks.baselines.matmul``, 8192^3), once;
  2. ``benchmarks.accelerator`` on what the issue's goals name: dlfun fit epoch, dlfun step,
     bare JAX step and PyTorch eager for the MLP (b256) and ResNet-20 (b128) in f32; f32
     against bf16 for ResNet-20 at b1024; the transformer block
     (``dlfun.nn.TransformerBlock``) in bf16 and f32;
  3. ``benchmarks.mlp_step``, ``cnn_step``, ``lstm_step`` with ``--device gpu --rounds 1
     --seconds 2``;
  4. extras, only in the time the parts above left unused: the accelerator on LeNet, the
     4-conv CNN and the LSTM against PyTorch eager; the MLP in bf16; ``torch.compile``.
A part cut short by its timeout keeps the rows it measured (the accelerator writes its JSON
within its ``--budget``); the step benchmarks' logs keep every finished round.

Writes to ``--out`` (default ``$OUT``): ``<part>.log`` (everything the part printed),
``<part>.json`` (its results), ``environment.json`` (versions, GPU) and ``gpu_check.json``
(each part's command, exit status and seconds). Needs jax with CUDA, flax, optax and (for
the PyTorch columns) torch with CUDA; nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.harness import REPO_ROOT
from dlfun.validate import terminal_text

BUDGET_S = 405  # under 7 minutes with the start-up
MIN_PART_S = 15  # a part given less would not get past starting JAX or PyTorch on a GPU


@dataclass(frozen=True)
class Part:
    """One step of the check: a benchmark's arguments and its share of the time."""

    name: str
    module: str
    args: tuple[str, ...]
    share_s: float


def parts(device: str, smoke: bool) -> list[Part]:
    """The check's parts, most important first; extras (share 0) run only in the time the
    others left unused. ``smoke`` shrinks every part (to try the plumbing on a CPU)."""
    acc = ("--device", device) + (("--smoke",) if smoke else ("--seconds", "0.6"))
    steps = ("--device", device, "--rounds", "1", "--seconds", "0.2" if smoke else "2")
    step_contenders = "dlfun_epoch,dlfun_step,bare_jax"
    return [
        # the MFU denominator, measured once for every accelerator part
        Part("matmul_peak", "benchmarks.baselines.matmul",
             ("--fw", "jax", "--dtype", "bf16", "--size", "256" if smoke else "8192",
              "--seconds", "0.5"), 16),
        # the goals: fit epoch vs bare steps (MLP b256, ResNet-20 b128), vs PyTorch
        Part("accelerator_goals", "benchmarks.accelerator",
             (*acc, "--models", "mlp,resnet20", "--batch-sizes", "small", "--precisions", "f32",
              "--contenders", f"{step_contenders},torch_eager"), 85),
        # bf16 against f32 at the large batch (ResNet-20 b1024 goal: >= 1.5x)
        Part("accelerator_bf16", "benchmarks.accelerator",
             (*acc, "--models", "resnet20", "--batch-sizes", "large", "--precisions",
              "f32,bf16", "--contenders", "dlfun_step,bare_jax,dlfun_epoch"), 55),
        # the transformer block's MFU
        Part("accelerator_transformer", "benchmarks.accelerator",
             (*acc, "--models", "transformer", "--batch-sizes", "small", "--precisions",
              "bf16,f32", "--contenders", "dlfun_step,bare_jax"), 25),
        Part("mlp_step", "benchmarks.mlp_step", steps, 66),
        Part("cnn_step", "benchmarks.cnn_step", (*steps, "--no-matmul"), 105),
        Part("lstm_step", "benchmarks.lstm_step", steps, 52),
        # extras: the other models against PyTorch eager, MLP bf16, torch.compile
        Part("accelerator_more", "benchmarks.accelerator",
             (*acc, "--models", "lenet,cnn,lstm", "--batch-sizes", "small", "--precisions",
              "f32", "--contenders", "dlfun_epoch,dlfun_step,torch_eager"), 0),
        Part("accelerator_mlp_bf16", "benchmarks.accelerator",
             (*acc, "--models", "mlp", "--batch-sizes", "small,large", "--precisions",
              "f32,bf16", "--contenders", step_contenders), 0),
        Part("accelerator_compile", "benchmarks.accelerator",
             (*acc, "--models", "mlp,resnet20", "--batch-sizes", "small", "--precisions",
              "f32", "--contenders", "torch_compile"), 0),
    ]


def command(part: Part, out: Path, timeout_s: float) -> list[str]:
    """The part's command line. The accelerator gets a budget inside the timeout (so it still
    writes its JSON when its last worker has to be cut short) and the bf16 peak an earlier
    part measured, if one did."""
    argv = [sys.executable, "-m", part.module, *part.args, "--out", str(out / f"{part.name}.json")]
    if part.module == "benchmarks.accelerator":
        argv += ["--budget", f"{max(10.0, timeout_s - 10):.0f}"]
        peak = measured_peak(out)
        if peak:
            argv += ["--peak-tflops", f"{peak:.6g}"]
    return argv


def measured_peak(out: Path) -> float | None:
    """The bf16 matmul peak the ``matmul_peak`` part wrote to ``out``, if it did."""
    try:
        peak = json.loads((out / "matmul_peak.json").read_text())["tflops"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return peak if peak == peak and peak > 0 else None  # not NaN


def run_part(argv: list[str], log: Path, timeout_s: float) -> tuple[int | str, float]:
    """Run one part, its output to ``log`` (and echoed); kill its process group at the timeout.
    Returns ``(exit status or "timeout", seconds)``."""
    t0 = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.Popen(argv, cwd=str(REPO_ROOT), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True,
                                env=dict(os.environ, PYTHONUNBUFFERED="1"))

        def copy_lines():
            for line in proc.stdout:
                f.write(line)
                print(line, end="", flush=True)

        reader = threading.Thread(target=copy_lines, daemon=True)
        reader.start()
        try:
            status: int | str = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            status = "timeout"
        reader.join(5)
    return status, time.perf_counter() - t0


def environment() -> dict:
    """Python, package versions and the GPU (nvidia-smi), for the record."""
    from importlib import metadata

    versions = {}
    for name in ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "chex", "torch", "numpy"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    try:
        smi = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True,
                             timeout=20).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        smi = "nvidia-smi not available"
    return dict(python=platform.python_version(), versions=versions, nvidia_smi=smi,
                date=time.strftime("%Y-%m-%d %H:%M:%S %Z"))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=terminal_text(__doc__.split("\n\n")[0]),
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=terminal_text("\n\n".join(__doc__.split("\n\n")[1:])))
    p.add_argument("--out", type=Path, default=os.environ.get("OUT"),
                   help="folder for every log, table and JSON (default: $OUT)")
    p.add_argument("--device", choices=("gpu", "cpu"), default="gpu")
    p.add_argument("--smoke", action="store_true", help="tiny sizes (to try the plumbing)")
    p.add_argument("--budget", type=float, default=BUDGET_S,
                   help=f"seconds for all parts together (default {BUDGET_S})")
    p.add_argument("--only", default="", help="comma-separated part names to run (default all)")
    p.add_argument("--dry-run", action="store_true", help="print the plan and run nothing")
    args = p.parse_args(argv)
    if args.out is None:
        p.error("no output folder: set OUT or pass --out DIR")
    plan = [q for q in parts(args.device, args.smoke)
            if not args.only or q.name in args.only.split(",")]
    scale = args.budget / max(1.0, sum(q.share_s for q in plan))
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.dry_run:
        (args.out / "environment.json").write_text(json.dumps(environment(), indent=2))
    record, spare, t_start = [], 0.0, time.perf_counter()
    for part in plan:
        timeout_s = part.share_s * scale + spare
        argv_ = command(part, args.out, timeout_s)
        if timeout_s < MIN_PART_S:  # an extra with no time left over
            status = "runs only in time left over" if args.dry_run else "skipped: no time left"
            record.append(dict(part=part.name, argv=argv_, timeout_s=timeout_s, status=status))
            print(f"=== {part.name}: {status} ({timeout_s:.0f} s)", flush=True)
            continue
        print(f"=== {part.name} (timeout {timeout_s:.0f} s): {' '.join(argv_[1:])}", flush=True)
        if args.dry_run:
            record.append(dict(part=part.name, argv=argv_, timeout_s=timeout_s))
            continue
        status, secs = run_part(argv_, args.out / f"{part.name}.log", timeout_s)
        spare = max(0.0, timeout_s - secs)  # carried over: the extras run on it
        record.append(dict(part=part.name, argv=argv_, timeout_s=timeout_s, status=status,
                           seconds=round(secs, 1)))
        print(f"=== {part.name}: {status} after {secs:.0f} s", flush=True)
    summary = dict(device=args.device, smoke=args.smoke, budget_s=args.budget,
                   dry_run=args.dry_run, wall_s=round(time.perf_counter() - t_start, 1),
                   parts=record)
    (args.out / "gpu_check.json").write_text(json.dumps(summary, indent=2))
    print(f"wrote {args.out / 'gpu_check.json'}")


if __name__ == "__main__":
    main()
