"""How fast is a dlfun LSTM training step next to plain Flax and PyTorch (same device)?

The step of the baselines' ``lstm`` spec: one LSTM layer (input 64, hidden 256), T=100,
batch 64, a Dense(1) head on the last hidden state, MSE loss, Adam 1e-3. Each contender runs in
its own subprocess, interleaved A B C A B C ... for ``--rounds`` rounds; the table shows median
steps/s and the ratios to PyTorch eager and plain Flax (``benchmarks.baselines``: ``nn.RNN``
over ``nn.OptimizedLSTMCell``; PyTorch's ``nn.LSTM``). ``--ablation`` adds dlfun variants that
use other loop structures (see ``VARIANTS``).

    python -m benchmarks.lstm_step                       # dlfun vs the two references
    python -m benchmarks.lstm_step --ablation --rounds 5 # plus the lever-by-lever variants
    python -m benchmarks.lstm_step --device gpu --rounds 1 --seconds 2

Writes ``bench_results/lstm_step.json``. Internally, ``--contender dlfun --variant V`` measures
one dlfun variant in this process and prints a ``RESULT {json}`` line (the baselines' protocol).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from benchmarks import harness
from dlfun import platform
from dlfun.parallel import data_mesh, make_data_parallel, simulate_cpu_devices
from dlfun.train import create_train_state
from dlfun.nn import LSTMCell, LSTMState, Recurrent
from dlfun.nn.recurrent_scan import masked_scan
from dlfun.validate import terminal_text

BATCH, STEPS, INPUTS, HIDDEN, NUM_BATCHES = 64, 100, 64, 256, 16

# variant -> what it measures
VARIANTS = {
    "scan": "cell equations in lax.scan (x@W_ih and h@W_hh each step), JAX autodiff",
    "hoist": "input projection of all steps in one matmul before a plain lax.scan, JAX autodiff",
    "hoist_prefetch": "hoist + per-step inputs sliced one step ahead, JAX autodiff",
    "fused": "dlfun default: one [h,x]@[W_hh;W_ih] matmul per step, inputs read one step ahead, "
             "hand-written backward with the weight gradients as two large matmuls",
    "dp2": "fused, trained by dlfun's data-parallel step (make_data_parallel, shard_map) over 2 "
           "CPU devices, one per core: 32 + 32 sequences, gradients averaged (pmean)",
}


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line flags."""
    p = argparse.ArgumentParser(description=terminal_text(__doc__.split("\n\n")[0]),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (medians reported)")
    p.add_argument("--seconds", type=float, default=5.0, help="timed seconds per measurement")
    harness.add_device_args(p)
    p.add_argument("--torch-compile", action="store_true",
                   help="also time PyTorch with torch.compile")
    p.add_argument("--unroll", type=int, default=1, help="time steps per loop iteration (dlfun)")
    p.add_argument("--ablation", action="store_true",
                   help="also run the dlfun variants with levers switched off")
    p.add_argument("--out", type=Path,
                   default=harness.REPO_ROOT / "bench_results" / "lstm_step.json",
                   help="where to write the JSON results")
    p.add_argument("--contender", choices=["dlfun"], help=argparse.SUPPRESS)
    p.add_argument("--variant", choices=sorted(VARIANTS), default="fused", help=argparse.SUPPRESS)
    return p.parse_args(argv)


class HoistedLSTM(nn.Module):
    """Hoisted input projection, then a plain ``lax.scan`` differentiated by JAX."""

    unroll: int = 1

    @nn.compact
    def __call__(self, x: jax.Array) -> LSTMState:  # x: (B, T, I)
        cell = LSTMCell(HIDDEN)
        w = cell.weights(x.shape[-1])
        xs = jnp.swapaxes(x, 0, 1)  # (T, B, I)
        xp = cell.project_inputs(w, xs.reshape(-1, x.shape[-1])).reshape(*xs.shape[:2], -1)
        carry, _ = lax.scan(lambda c, xp_t: (cell.step_projected(w, c, xp_t), None),
                            cell.initialize_carry(x.shape[:1]), xp, unroll=self.unroll)
        return carry


class PrefetchAutodiffLSTM(Recurrent):
    """:class:`Recurrent` with the fused path's hoisting and prefetch but JAX's backward."""

    def _loop(self, w, xs, carry, mask):
        steps, n, feats = xs.shape
        xp = self.cell.project_inputs(w, xs.reshape(steps * n, feats)).reshape(steps, n, -1)
        return masked_scan(lambda c, x: self.cell.step_projected(w, c, x), self.cell.hidden,
                           carry, xp, mask, unroll=self.unroll)


class LSTMRegressor(nn.Module):
    """One LSTM layer, then Dense(1) on the last hidden state: ``(B, T, I) -> (B, 1)``."""

    variant: str = "fused"
    unroll: int = 1

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if self.variant == "hoist":
            carry = HoistedLSTM(self.unroll, name="rnn")(x)
        elif self.variant == "hoist_prefetch":
            carry, _ = PrefetchAutodiffLSTM(LSTMCell(HIDDEN), unroll=self.unroll, name="rnn")(x)
        else:
            carry, _ = Recurrent(LSTMCell(HIDDEN), unroll=self.unroll, name="rnn",
                                 implementation="scan" if self.variant == "scan" else "fused")(x)
        return nn.Dense(1)(carry.h)


def make_step(model, tx):
    """``step(params, opt_state, x, y) -> (params, opt_state, loss)``: MSE + Adam."""
    def loss_fn(params, x, y):
        return jnp.mean((model.apply({"params": params}, x) - y) ** 2)

    def step(params, opt_state, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return step


def measure_dlfun(variant: str, unroll: int, seconds: float) -> dict:
    """Time one dlfun variant in this process; the dict printed as its RESULT line."""
    if variant == "dp2":
        simulate_cpu_devices(2)  # with PJRT_NPROC=4: fewer threads deadlocked CNN collectives
    added = platform.configure_cpu()  # before the first JAX computation (DLFUN_MALLOC)
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((BATCH, STEPS, INPUTS), dtype=np.float32)
          for _ in range(NUM_BATCHES)]
    ys = [rng.standard_normal((BATCH, 1), dtype=np.float32) for _ in range(NUM_BATCHES)]
    model, tx = LSTMRegressor("fused" if variant == "dp2" else variant, unroll), optax.adam(1e-3)
    setup = data_parallel_run if variant == "dp2" else single_device_run
    advance, params, compile_s = setup(model, tx, xs, ys)
    box = dict(i=0, loss=None)

    def run_n(n):
        for _ in range(n):
            box["loss"] = advance(box["i"])
            box["i"] += 1
        jax.block_until_ready((params(), box["loss"]))

    timing = harness.time_steps(run_n, seconds=seconds, repeats=1)
    n_params = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(params()))
    return dict(fw="dlfun", variant=variant, unroll=unroll, batch=BATCH, n_params=n_params,
                backend=jax.default_backend(),
                compile_s=compile_s, final_loss=float(box["loss"]), devices=jax.device_count(),
                platform=platform.describe_platform(added), **timing)


def single_device_run(model, tx, xs, ys):
    """The baselines' step shape, jitted: ``(advance(i) -> loss, params(), compile_s)``."""
    xs, ys = [jax.device_put(x) for x in xs], [jax.device_put(y) for y in ys]
    params = model.init(jax.random.key(0), xs[0])["params"]
    state = [params, tx.init(params)]
    step = make_step(model, tx)
    compile_s = harness.compile_seconds(jax.jit(step), *state, xs[0], ys[0])
    jstep = jax.jit(step, donate_argnums=(0, 1))

    def advance(i):
        state[0], state[1], loss = jstep(*state, xs[i % NUM_BATCHES], ys[i % NUM_BATCHES])
        return loss

    return advance, lambda: state[0], compile_s


def data_parallel_run(model, tx, xs, ys):
    """dlfun's shard_map data-parallel step over 2 devices: ``(advance(i) -> loss, params(),
    compile_s)``."""
    dp = make_data_parallel(model, lambda out, y: jnp.mean((out - y) ** 2), data_mesh(2),
                            method="shard_map")
    state = [dp.put_state(create_train_state(model, tx, jax.random.key(0), xs[0][:1]))]
    batches = [dp.put_batch((x, y)) for x, y in zip(xs, ys)]
    key = jax.random.key(0)
    compile_s = harness.compile_seconds(dp.step, state[0], batches[0], key)

    def advance(i):
        state[0], metrics = dp.step(state[0], batches[i % NUM_BATCHES], key)
        return metrics["loss"]

    return advance, lambda: state[0].params, compile_s


def contenders(args, torch_ok: bool) -> list[harness.Contender]:
    """dlfun (default variant, plus the ablation variants on request) and the baselines."""
    here, env = str(harness.REPO_ROOT), harness.device_env(args.device)
    secs = str(args.seconds)
    variants = list(VARIANTS) if args.ablation else ["fused"]
    if args.device != "cpu":
        variants = [v for v in variants if v != "dp2"]  # two simulated CPU devices
    out = [harness.Contender(f"dlfun {v}" if args.ablation else "dlfun",
                             (sys.executable, "-m", "benchmarks.lstm_step", "--contender", "dlfun",
                              "--variant", v, "--unroll", str(args.unroll), "--seconds", secs),
                             cwd=here, env=env)
           for v in variants]
    if args.device == "cpu":
        # The default variant again with glibc keeping the ~69 MiB scratch buffer between steps.
        out.append(harness.Contender("dlfun, DLFUN_MALLOC=tuned",
                                     out[variants.index("fused")].argv, cwd=here,
                                     env=(("DLFUN_MALLOC", "tuned"), *env)))
    out += harness.baseline_contenders("lstm", args.seconds, args.device, torch_ok,
                                       torch_compile=args.torch_compile,
                                       cross_check=args.cross_check)
    return out


def interleave(contenders: list[harness.Contender], rounds: int) -> dict[str, dict]:
    """Run the contenders A B C A B C ... and keep every RESULT (steps/s and CPU time)."""
    out = {c.name: dict(values=[], cpu_ms=[], last=None) for c in contenders}
    for r in range(rounds):
        for c in contenders:
            res = harness.run_contender(c)
            rec = out[c.name]
            rec["values"].append(res["steps_per_s"])
            rec["cpu_ms"].append(1e3 * res["cpu_util"] / res["steps_per_s"])
            rec["last"] = res
            print(f"  round {r + 1}/{rounds}  {c.name:<26s} steps/s={res['steps_per_s']:6.2f}  "
                  f"CPU ms/step={rec['cpu_ms'][-1]:7.1f}  load={os.getloadavg()[0]:.1f}",
                  flush=True)
    for rec in out.values():
        rec["median"] = statistics.median(rec["values"])
        rec["cpu_ms_median"] = statistics.median(rec["cpu_ms"])
    return out


def table_rows(results: dict[str, dict]) -> list[dict]:
    """One row per contender: median steps/s, CPU time per step, ratios to the baselines."""
    torch_sps = results.get(harness.TORCH_EAGER, {}).get("median")
    flax_sps = results[harness.FLAX]["median"]
    rows = []
    for name, r in results.items():
        rows.append({"contender": name, "steps/s (median)": r["median"],
                     "min": min(r["values"]), "max": max(r["values"]),
                     "CPU ms/step": r["cpu_ms_median"],
                     "vs PyTorch": r["median"] / torch_sps if torch_sps else "n/a",
                     "vs plain Flax": r["median"] / flax_sps})
    return rows


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.contender:
        harness.emit_result(measure_dlfun(args.variant, args.unroll, args.seconds))
        return
    harness.require_device(args.device)
    torch_ok = harness.torch_installed()
    if not torch_ok:
        print("torch is not installed: PyTorch column skipped (pip install torch to compare)")
    t0, load0 = time.perf_counter(), os.getloadavg()[0]
    results = interleave(contenders(args, torch_ok), args.rounds)
    load1 = os.getloadavg()[0]
    cols = ["contender", "steps/s (median)", "min", "max", "CPU ms/step", "vs PyTorch",
            "vs plain Flax"]
    title = (f"LSTM train step (H={HIDDEN}, I={INPUTS}, T={STEPS}, B={BATCH}, Dense(1) head, MSE, "
             f"Adam) on {args.device}, {args.rounds} interleaved rounds, {args.seconds:g} s each, "
             f"load average {load0:.1f} -> {load1:.1f} on {os.cpu_count()} cores")
    text = harness.print_table(table_rows(results), cols, title)
    if args.device == "cpu" and max(load0, load1) > os.cpu_count():
        print("warning: the machine was busy with other work; ratios are noisy (PyTorch's "
              "OpenMP threads slow down most under contention)")
    harness.write_json(args.out, dict(
        benchmark="lstm_step", device=args.device,
        command=" ".join(["python -m benchmarks.lstm_step", *sys.argv[1:]]),
        rounds=args.rounds, seconds=args.seconds, unroll=args.unroll, variants=VARIANTS,
        load_average=[load0, load1], wall_s=time.perf_counter() - t0, table=text,
        results=results))


if __name__ == "__main__":
    main()
