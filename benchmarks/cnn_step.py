"""How fast is dlfun's CNN training step next to plain Flax and PyTorch eager (same device)?

Runs, interleaved in separate processes (A B C A B C ...), for each model:
  * dlfun: LeNet-5 / the 4-conv CNN on ``dlfun.nn.conv_ops`` (``impl="auto"``) with
    ``dlfun.platform.configure_cpu()`` (XLA flags added unless the user set them), and, on the
    CPU, again with ``DLFUN_MALLOC=tuned`` (glibc keeps large scratch buffers between steps);
  * plain Flax ``nn.Conv`` + Optax (``benchmarks.baselines.flax_step``);
  * PyTorch eager (``benchmarks.baselines.torch_step``, when torch imports; ``--torch-compile``
    adds ``torch.compile``).
Same batch (128), optimizers (LeNet: SGD 0.01 momentum 0.9; CNN: Adam 1e-3), cross-entropy.
Prints a table (steps/s, images/s, ratio vs PyTorch, GFLOP/s, % of the XLA f32 matmul peak)
and writes ``bench_results/cnn_step.json``.

    python -m benchmarks.cnn_step --rounds 3 --seconds 3 [--device cpu|gpu] [--cross-check]
    python -m benchmarks.cnn_step --worker cnn --impl xla   # one dlfun measurement, RESULT line
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from benchmarks import harness
from dlfun.validate import terminal_text

MODELS = ("lenet", "cnn")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=terminal_text(__doc__.split("\n\n")[0]),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds per contender")
    p.add_argument("--seconds", type=float, default=3.0, help="timed seconds per measurement")
    p.add_argument("--models", default="lenet,cnn", help="comma-separated subset of lenet,cnn")
    harness.add_device_args(p)
    p.add_argument("--torch-compile", action="store_true",
                   help="also time PyTorch with torch.compile")
    p.add_argument("--impl", default="auto", choices=("auto", "xla", "cpu"),
                   help="conv/pool lowering of the dlfun contender")
    p.add_argument("--extra", default="tuned", help="also time dlfun with impl=xla ('xla'), "
                   "without the platform allocator/flags ('noflags') and/or with "
                   "DLFUN_MALLOC=tuned ('tuned', CPU only), comma-separated (default: tuned)")
    p.add_argument("--allocator", default="system",
                   help="dlfun contender's allocator: 'system' (as it comes, dlfun's default), "
                   "'tuned' (DLFUN_MALLOC=tuned: glibc keeps large scratch buffers), "
                   "or a DLFUN_ALLOCATOR value (jemalloc, tcmalloc, glibc-thp, auto: restarts the "
                   "worker with it); the baselines always use the system malloc")
    p.add_argument("--no-matmul", action="store_true", help="skip measuring the matmul peak")
    p.add_argument("--out", type=Path, default=harness.REPO_ROOT / "bench_results" / "cnn_step.json")
    p.add_argument("--worker", choices=MODELS, help=argparse.SUPPRESS)
    p.add_argument("--no-platform", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args(argv)


# ----------------------------------------------------------------------------- worker
def worker(args) -> None:
    """Measure one dlfun training step in this process and print a RESULT line."""
    from dlfun import platform

    if not args.no_platform:
        platform.reexec_with_allocator()
    added = {} if args.no_platform else platform.configure_cpu()
    import jax
    import numpy as np

    from benchmarks.cnn_models import SPECS, make_train_step, train_flops
    from dlfun.nn.conv_ops import describe_conv_lowering

    spec = SPECS[args.worker]
    module, tx = spec["module"](impl=args.impl), spec["optimizer"]()
    rng = np.random.default_rng(0)
    n_batches = 16
    xs = [jax.device_put(rng.standard_normal((spec["batch"], *spec["shape"]), np.float32))
          for _ in range(n_batches)]
    ys = [jax.device_put(rng.integers(0, 10, spec["batch"]).astype(np.int32))
          for _ in range(n_batches)]
    params = module.init(jax.random.key(0), xs[0])["params"]
    opt_state = tx.init(params)
    step = make_train_step(module, tx)
    compile_s = harness.compile_seconds(jax.jit(step), params, opt_state, xs[0], ys[0])
    jstep = jax.jit(step, donate_argnums=(0, 1))
    state = dict(p=params, o=opt_state, i=0)

    def run_n(n):
        p, o, i = state["p"], state["o"], state["i"]
        for _ in range(n):
            p, o, loss = jstep(p, o, xs[i % n_batches], ys[i % n_batches])
            i += 1
        jax.block_until_ready((p, o, loss))
        state.update(p=p, o=o, i=i)

    r = harness.time_steps(run_n, seconds=args.seconds, repeats=3)
    harness.emit_result(dict(
        model=args.worker, impl=args.impl, batch=spec["batch"], compile_s=compile_s,
        images_per_s=r["steps_per_s"] * spec["batch"], backend=jax.default_backend(),
        gflops=train_flops(args.worker) * r["steps_per_s"] / 1e9,
        lowering=describe_conv_lowering(args.impl), added_flags=added,
        allocator=platform.allocator_in_use(),
        xla_flags=os.environ.get("XLA_FLAGS", ""), **r))


# ----------------------------------------------------------------------------- driver
def contenders_for(model: str, args, torch_ok: bool) -> list[harness.Contender]:
    """dlfun (and the requested extra dlfun variants) plus the two baselines for ``model``."""
    me = (sys.executable, "-m", "benchmarks.cnn_step", "--worker", model,
          "--seconds", str(args.seconds))
    dev = harness.device_env(args.device)
    alloc = {"system": (), "tuned": (("DLFUN_MALLOC", "tuned"),)}.get(
        args.allocator, (("DLFUN_ALLOCATOR", args.allocator),))
    out = [harness.Contender(f"dlfun {model} (impl={args.impl})", (*me, "--impl", args.impl),
                             cwd=str(harness.REPO_ROOT), env=(*alloc, *dev))]
    extra = [e for e in args.extra.split(",") if e]
    if "xla" in extra:
        out.append(harness.Contender(f"dlfun {model} (impl=xla)", (*me, "--impl", "xla"),
                                     cwd=str(harness.REPO_ROOT), env=(*alloc, *dev)))
    if "noflags" in extra:
        out.append(harness.Contender(f"dlfun {model} (impl={args.impl}, no allocator/flags)",
                                     (*me, "--impl", args.impl, "--no-platform"),
                                     cwd=str(harness.REPO_ROOT), env=dev))
    if "tuned" in extra and args.device == "cpu":  # a host malloc setting: nothing to tune on a GPU
        out.append(harness.Contender(f"dlfun {model} (impl={args.impl}, DLFUN_MALLOC=tuned)",
                                     (*me, "--impl", args.impl), cwd=str(harness.REPO_ROOT),
                                     env=(("DLFUN_MALLOC", "tuned"), *dev)))
    out += harness.baseline_contenders(model, args.seconds, args.device, torch_ok,
                                       torch_compile=args.torch_compile,
                                       cross_check=args.cross_check)
    return out


def table_rows(model: str, results: dict, peak: float | None) -> list[dict]:
    """One table row per contender, ratios against the PyTorch eager median."""
    from benchmarks.cnn_models import SPECS, train_flops

    torch_rate = results.get(harness.TORCH_EAGER, {}).get("median")
    rows = []
    for name, v in results.items():
        rate = v["median"]
        gflops = train_flops(model) * rate / 1e9
        rows.append({"model": model, "contender": name, "steps/s": rate,
                     "images/s": rate * SPECS[model]["batch"],
                     "vs PyTorch": rate / torch_rate if torch_rate else float("nan"),
                     "GFLOP/s": gflops, "% matmul peak": 100 * gflops / peak if peak else float("nan"),
                     "runs": " ".join(f"{x:.2f}" for x in v["values"])})
    return rows


def matmul_peak(args) -> float | None:
    """GFLOP/s of a 2048^2 f32 matrix product compiled by XLA on the device (its own process)."""
    if args.no_matmul:
        return None
    c = harness.Contender("matmul", (sys.executable, "-m", "benchmarks.baselines.matmul",
                                     "--size", "2048", "--dtype", "f32", "--seconds", "1"),
                          str(harness.REPO_ROOT), harness.device_env(args.device))
    return 1e3 * float(harness.run_contender(c)["tflops"])


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.worker:
        return worker(args)
    harness.require_device(args.device)
    models = [m for m in args.models.split(",") if m]
    bad = [m for m in models if m not in MODELS]
    if bad:
        sys.exit(f"error: unknown model(s) {bad}; choose from {','.join(MODELS)}")
    torch_ok = harness.torch_installed()
    peak = matmul_peak(args)
    print(f"matmul peak (XLA, 2048^2 f32): {peak:.1f} GFLOP/s" if peak else "matmul peak: skipped")
    rows, raw = [], {}
    for model in models:
        print(f"== {model}")
        raw[model] = harness.run_interleaved(contenders_for(model, args, torch_ok), args.rounds)
        rows += table_rows(model, raw[model], peak)
    cols = ["model", "contender", "steps/s", "images/s", "vs PyTorch", "GFLOP/s", "% matmul peak",
            "runs"]
    text = harness.print_table(rows, cols, title=f"CNN training step on {args.device}, medians "
                               f"of {args.rounds} interleaved rounds")
    harness.write_json(args.out, dict(rows=rows, raw=raw, matmul_peak_gflops=peak, table=text,
                                      args={k: str(v) for k, v in vars(args).items()}))


if __name__ == "__main__":
    main()
