"""How fast do dlfun's steps and epochs train on this device, in f32 and bf16, next to a bare
JAX step and PyTorch (eager and ``torch.compile``)?

For each model (MLP 784-512-512-10, LeNet-5, the 4-conv CNN, ResNet-20, the LSTM h256 T100 and
one ``dlfun.nn.TransformerBlock`` at d_model 1024, sequence 1024), at the CPU step benchmarks'
batch size ("small") and a large one ("large", 1024 or more), in f32 and bf16, it times these
contenders:

  * ``dlfun_epoch``: "dlfun fit epoch", ``--scan-steps`` steps per dispatch: one ``lax.scan``
    over dlfun's step on a device-resident dataset (``dlfun.train.make_scan_epoch``, what
    ``fit``'s scan epoch mode runs);
  * ``dlfun_step``: dlfun's step (``dlfun.train.make_train_step``: gradient norm and NaN guard
    included), one jitted call per step;
  * ``bare_jax``: the same model in a bare step (``value_and_grad`` + Optax, jitted);
  * ``plain_flax`` (only on request): the plain-Flax reference of ``benchmarks.baselines``;
  * ``torch_eager`` / ``torch_compile``: the PyTorch reference, eager or ``torch.compile``d;
    bf16 through ``torch.autocast``; on CUDA with TF32 allowed (JAX's default precision).

Columns: steps/s, items/s (images, or tokens for the sequence models), analytic TFLOP/s
(matrix products and convolutions only, counted 6 x MACs x batch: x2 FLOPs per multiply-add,
x3 for forward + backward; XLA's cost analysis is not used because on GPUs it leaves cuDNN
convolutions out), MFU (% of a bf16 matrix-product peak measured on the same device), the
compile seconds (first call minus one step) and the ratios to the bare JAX step and to
PyTorch eager of the same row group. bf16 means bf16 matmuls/convolutions with float32
parameters and loss: a dlfun model built with ``dtype=bfloat16`` where the class has that
field, else bf16 inputs (dlfun's layers compute in their input's dtype); the note column says
which, how many of the step's dots/convolutions run in bf16, and any fallback to f32.

Each model runs in two worker processes (JAX, then PyTorch), each with ``--worker-timeout``,
so a hang costs one model's rows, not the run. Prints one table, writes JSON.

    python -m benchmarks.accelerator --device cpu --smoke          # tiny sizes, a minute or two
    python -m benchmarks.accelerator --device gpu --seconds 1
    python -m benchmarks.accelerator --models mlp,resnet20 --batch-sizes 256,1024 --precisions bf16
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from benchmarks import harness
from benchmarks.baselines.specs import SPECS, ModelSpec, transformer_block_macs
from dlfun.validate import terminal_text

MODELS = ("mlp", "lenet", "cnn", "resnet20", "lstm", "transformer")
JAX_CONTENDERS = ("dlfun_epoch", "dlfun_step", "bare_jax", "plain_flax")
TORCH_CONTENDERS = ("torch_eager", "torch_compile")
DEFAULT_CONTENDERS = ("dlfun_epoch", "dlfun_step", "bare_jax", "torch_eager", "torch_compile")
PRECISIONS = ("f32", "bf16")
LABELS = {"dlfun_epoch": "dlfun fit epoch", "dlfun_step": "dlfun step",
          "bare_jax": "bare JAX step", "plain_flax": "plain Flax",
          "torch_eager": harness.TORCH_EAGER, "torch_compile": harness.TORCH_COMPILE}
# transformer block: (d_model, sequence, heads, small batch, large batch)
TRANSFORMER = (1024, 1024, 16, 8, 32)
SMOKE_TRANSFORMER = (64, 32, 4, 2, 4)
SMOKE_BATCHES = (4, 16)  # small, large under --smoke
FLOP_NOTE = ("TFLOP/s: analytic, matrix products and convolutions only, 6 x MACs x batch "
             "(x2 per multiply-add, x3 for forward + backward); MFU: % of the measured bf16 "
             "matrix-product peak")


def transformer_spec(smoke: bool) -> ModelSpec:
    """The transformer block's spec: inputs ``(seq, d_model)``, MSE to a random target, Adam."""
    d, seq, _, small, large = SMOKE_TRANSFORMER if smoke else TRANSFORMER
    return ModelSpec("transformer", f"transformer block d{d} T{seq}", (seq, d), small, large,
                     "mse", "adam", transformer_block_macs(seq, d), items_per_example=seq,
                     unit="tokens")


def transformer_heads(smoke: bool) -> int:
    """Attention heads of the benchmark block."""
    return (SMOKE_TRANSFORMER if smoke else TRANSFORMER)[2]


def model_spec(name: str, smoke: bool) -> ModelSpec:
    """The spec of ``name`` (the transformer's depends on ``smoke``)."""
    return transformer_spec(smoke) if name == "transformer" else SPECS[name]


def resolve_batches(spec: ModelSpec, tokens: list[str], smoke: bool) -> list[int]:
    """``--batch-sizes`` for one model: "small"/"large" (the spec's, or tiny under ``--smoke``)
    or explicit integers; duplicates dropped, order kept."""
    small, large = spec.batch, spec.large_batch
    if smoke and spec.name != "transformer":  # the smoke transformer is small already
        small, large = SMOKE_BATCHES
    out = []
    for t in tokens:
        b = {"small": small, "large": large}.get(t) or int(t)
        if b not in out:
            out.append(b)
    return out


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line flags (also those of the internal worker mode)."""
    p = argparse.ArgumentParser(description=terminal_text(__doc__.split("\n\n")[0]),
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=terminal_text("\n\n".join(__doc__.split("\n\n")[1:])))
    harness.add_device_args(p, cross_check=False)
    p.add_argument("--models", default=",".join(MODELS), help=f"subset of {','.join(MODELS)}")
    p.add_argument("--batch-sizes", default="small,large",
                   help="comma-separated: 'small' (the CPU step benchmarks' batch), 'large' "
                   "(1024, 4096 for the MLP, 32 sequences for the transformer) or integers")
    p.add_argument("--precisions", default="f32,bf16", help="subset of f32,bf16")
    p.add_argument("--contenders", default=None,
                   help=f"subset of {','.join(JAX_CONTENDERS + TORCH_CONTENDERS)} (default "
                   f"{','.join(DEFAULT_CONTENDERS)}; without torch_compile under --smoke on the "
                   "CPU, where inductor's C++ compiles take minutes)")
    p.add_argument("--seconds", type=float, default=None,
                   help="timed seconds per measurement (default 2, 0.3 with --smoke)")
    p.add_argument("--scan-steps", type=int, default=None,
                   help="steps per dispatch of the dlfun fit epoch (one lax.scan; default 8, "
                   "2 with --smoke: on the CPU a scanned convolutional step runs tens of "
                   "times slower than a jitted one, which is why fit loops there)")
    p.add_argument("--peak-size", type=int, default=None,
                   help="N of the N^3 bf16 matrix product timed as the peak (default 8192 on a "
                   "GPU, 1024 on the CPU, 256 with --smoke)")
    p.add_argument("--peak-tflops", type=float, default=None,
                   help="use this bf16 matmul peak (TFLOP/s, e.g. from an earlier run's JSON) "
                   "instead of measuring it")
    p.add_argument("--worker-timeout", type=float, default=900.0,
                   help="seconds one model's JAX (or PyTorch) worker may run before it is killed")
    p.add_argument("--budget", type=float, default=None,
                   help="seconds for the whole run: a worker is cut short (and later ones "
                   "skipped) so that the table and JSON are still written in time")
    p.add_argument("--smoke", action="store_true",
                   help="tiny sizes (batches 4 and 16, a d64 T32 transformer, short timings, "
                   "2 steps per scanned epoch)")
    p.add_argument("--out", type=Path,
                   default=harness.REPO_ROOT / "bench_results" / "accelerator.json")
    p.add_argument("--worker", choices=("jax", "torch"), help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.seconds is None:
        args.seconds = 0.3 if args.smoke else 2.0
    if args.scan_steps is None:
        args.scan_steps = 2 if args.smoke else 8
    if args.contenders is None:
        slow = ("torch_compile",) if args.smoke and args.device == "cpu" else ()
        args.contenders = ",".join(c for c in DEFAULT_CONTENDERS if c not in slow)
    return args


def check_args(args) -> tuple[list[str], list[str], list[str]]:
    """Models, precisions and contenders asked for; exits with one line on an unknown name."""
    picked = {}
    for flag, known in (("models", MODELS), ("precisions", PRECISIONS),
                        ("contenders", JAX_CONTENDERS + TORCH_CONTENDERS)):
        names = [n for n in getattr(args, flag).split(",") if n]
        bad = [n for n in names if n not in known]
        if bad or not names:
            sys.exit(f"error: --{flag} {getattr(args, flag)!r}: unknown {bad or 'empty'}; "
                     f"choose from {','.join(known)}")
        picked[flag] = names
    for t in args.batch_sizes.split(","):
        if t not in ("small", "large") and not (t.isdigit() and int(t) > 0):
            sys.exit(f"error: --batch-sizes: {t!r} is neither 'small', 'large' nor a positive "
                     "integer")
    return picked["models"], picked["precisions"], picked["contenders"]


# ----------------------------------------------------------------------------- workers
def run_worker(argv: list[str], env: dict, timeout: float, label: str) -> tuple[list[dict], str]:
    """Run a worker process, echo its RESULT rows as they come, kill its process group after
    ``timeout`` seconds. Returns its rows and "" (or what went wrong, in one line)."""
    proc = subprocess.Popen(argv, cwd=str(harness.REPO_ROOT), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    rows, tail = [], []

    def read():
        for line in proc.stdout:
            if line.startswith(harness.RESULT_PREFIX):
                rows.append(json.loads(line[len(harness.RESULT_PREFIX):]))
                print("  " + (f"note: {rows[-1]['note']}" if rows[-1].get("kind") == "note"
                              else summary_line(rows[-1])), flush=True)
            else:
                tail.append(line.rstrip())
                del tail[:-20]

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        reader.join(5)
        return rows, f"{label}: killed after {timeout:.0f} s (--worker-timeout/--budget)"
    reader.join(5)
    if proc.returncode != 0:
        last = next((ln for ln in reversed(tail) if ln.strip()), "no output")
        return rows, f"{label}: exit {proc.returncode}: {last[:200]}"
    return rows, ""


def summary_line(row: dict) -> str:
    """One progress line per measured row."""
    head = f"{row['model']:<11s} b{row['batch']:<5d} {row['precision']:<4s} {row['label']:<22s}"
    if row.get("error"):
        return f"{head} error: {row['error']}"
    return (f"{head} {row['steps_per_s']:10.2f} steps/s  compile {row['compile_s']:.1f} s  "
            f"{row.get('note', '')}")


def worker_argv(args, kind: str, model: str, contenders: list[str]) -> list[str]:
    """The command line of one model's JAX or PyTorch worker."""
    argv = [sys.executable, "-m", "benchmarks.accelerator", "--worker", kind, "--model", model,
            "--device", args.device, "--batch-sizes", args.batch_sizes, "--precisions",
            args.precisions, "--contenders", ",".join(contenders), "--seconds",
            str(args.seconds), "--scan-steps", str(args.scan_steps)]
    return argv + (["--smoke"] if args.smoke else [])


def measure_peak(args, timeout: float) -> dict:
    """The bf16 matrix-product peak (TFLOP/s), in JAX and (if installed) PyTorch; the larger
    one is the MFU denominator (``--peak-tflops`` gives it instead)."""
    if args.peak_tflops:
        return dict(size="given", tflops=args.peak_tflops)
    size = args.peak_size or (256 if args.smoke else 8192 if args.device == "gpu" else 1024)
    env = dict(os.environ, **dict(harness.device_env(args.device)))
    out = dict(size=size)
    fws = ("jax", "torch") if harness.torch_installed() else ("jax",)
    for fw in fws:
        c = harness.Contender(f"{fw} bf16 matmul", (
            sys.executable, "-m", "benchmarks.baselines.matmul", "--fw", fw, "--dtype", "bf16",
            "--size", str(size), "--device", args.device, "--seconds", str(min(args.seconds, 1.0))),
            str(harness.REPO_ROOT), tuple(env.items()))
        try:
            out[fw] = harness.run_contender(c, timeout=timeout)["tflops"]
        except (RuntimeError, subprocess.TimeoutExpired) as e:
            out[f"{fw}_error"] = str(e).splitlines()[0][:200]
    out["tflops"] = max((out[fw] for fw in fws if fw in out), default=float("nan"))
    return out


# ----------------------------------------------------------------------------- report
def add_ratios(rows: list[dict], peak: float) -> None:
    """MFU and the ratios to the bare JAX step and to PyTorch eager of the same group."""
    groups = {}
    for r in rows:
        groups.setdefault((r["model"], r["batch"], r["precision"]), {})[r["contender"]] = r
    for r in rows:
        if r.get("error"):
            continue
        r["mfu_pct"] = 100.0 * r["tflops"] / peak if peak == peak and peak > 0 else float("nan")
        group = groups[(r["model"], r["batch"], r["precision"])]
        for key, ref in (("vs_bare", "bare_jax"), ("vs_eager", "torch_eager")):
            base = group.get(ref, {})
            r[key] = (r["steps_per_s"] / base["steps_per_s"]
                      if base.get("steps_per_s") else "")


def table(rows: list[dict], args, peak: dict) -> str:
    """Print the table of all rows (grouped by model, batch and precision); return its text."""
    order = {c: i for i, c in enumerate(JAX_CONTENDERS + TORCH_CONTENDERS)}
    precisions = {p: i for i, p in enumerate(PRECISIONS)}
    cells = []
    for r in sorted(rows, key=lambda r: (MODELS.index(r["model"]), r["batch"],
                                         precisions[r["precision"]], order[r["contender"]])):
        cell = {"model": r["model"], "batch": r["batch"], "prec": r["precision"],
                "contender": r["label"], "note": r.get("note", "")}
        if r.get("error"):
            cell["note"] = "error: " + r["error"]
        else:
            cell.update({"steps/s": r["steps_per_s"], "items/s": f"{r['items_per_s']:,.0f} "
                         f"{r['unit']}", "TFLOP/s": r["tflops"], "MFU %": r["mfu_pct"],
                         "vs bare": r.get("vs_bare", ""), "vs eager": r.get("vs_eager", ""),
                         "compile s": r["compile_s"]})
        cells.append(cell)
    cols = ["model", "batch", "prec", "contender", "steps/s", "items/s", "TFLOP/s", "MFU %",
            "vs bare", "vs eager", "compile s", "note"]
    title = (f"Training throughput on {args.device} ({peak.get('device_kind', '')}); bf16 "
             f"matmul peak {peak['tflops']:.2f} TFLOP/s (N={peak['size']}); {FLOP_NOTE}")
    return harness.print_table(cells, cols, title=title)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.worker == "jax":
        from benchmarks import accelerator_jax

        return accelerator_jax.main(args)
    if args.worker == "torch":
        from benchmarks import accelerator_torch

        return accelerator_torch.main(args)
    models, _, contenders = check_args(args)
    harness.require_device(args.device)
    t0 = time.perf_counter()
    peak = measure_peak(args, min(300.0, (args.budget or 1e9) / 4))
    print(f"bf16 matmul peak, N={peak['size']}: {peak['tflops']:.3f} TFLOP/s "
          f"(jax {peak.get('jax', 'n/a')}, torch {peak.get('torch', 'n/a')})", flush=True)
    env = dict(os.environ, **dict(harness.device_env(args.device)))
    torch_ok = harness.torch_installed()
    rows, notes = [], []
    if not torch_ok and any(c in TORCH_CONTENDERS for c in contenders):
        notes.append("PyTorch is not installed: its contenders are skipped")
    deadline = t0 + args.budget - 3 if args.budget else float("inf")  # 3 s to write
    for model in models:
        for kind, known in (("jax", JAX_CONTENDERS), ("torch", TORCH_CONTENDERS)):
            picked = [c for c in contenders if c in known]
            left = deadline - time.perf_counter()
            if not picked or (kind == "torch" and not torch_ok):
                continue
            if left < 5:
                notes.append(f"{model} {kind} worker skipped: --budget {args.budget:g} s spent")
                continue
            print(f"== {model}: {kind} worker ({','.join(picked)})", flush=True)
            got, err = run_worker(worker_argv(args, kind, model, picked), env,
                                  min(args.worker_timeout, left), f"{model} {kind} worker")
            rows += [r for r in got if r.get("kind") != "note"]
            notes += [r["note"] for r in got if r.get("kind") == "note"]
            if err:
                notes.append(err)
    peak["device_kind"] = next((r["device_kind"] for r in rows if r.get("device_kind")), "")
    add_ratios(rows, peak["tflops"])
    text = table(rows, args, peak)
    for n in dict.fromkeys(notes):
        print("note: " + n)
    harness.write_json(args.out, dict(
        benchmark="accelerator", device=args.device, smoke=args.smoke,
        command=" ".join(["python -m benchmarks.accelerator", *(argv or sys.argv[1:])]),
        peak_bf16=peak, flop_note=FLOP_NOTE, rows=rows, notes=list(dict.fromkeys(notes)),
        table=text, wall_s=time.perf_counter() - t0,
        args={k: str(v) for k, v in vars(args).items()}))


if __name__ == "__main__":
    main()
