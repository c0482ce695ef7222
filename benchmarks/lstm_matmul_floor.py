"""How long do the matrix products of the LSTM benchmark's training step take on their own?

The step of ``benchmarks/lstm_step.py`` (T=100, batch 64, input 64, hidden 256) multiplies, per
training step: 100 times ``[h, x] (64x320) @ W (320x1024)`` in the forward loop, 100 times
``dA (64x1024) @ W_hh^T (1024x256)`` in the backward loop, and once each the weight gradients
``h^T dA`` (256x6400 @ 6400x1024) and ``x^T dA`` (64x6400 @ 6400x1024). This script times each
group alone, compiled by XLA (the loops as ``lax.fori_loop`` like the real step's scans; the
forward loop also takes a tanh of each product, to keep its values bounded), and prints their
sum: a floor under the step time that no rearrangement of the gate arithmetic can beat on this
backend.

    python -m benchmarks.lstm_matmul_floor
    python -m benchmarks.lstm_matmul_floor --target-steps-per-s 27.5   # compare with a goal
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from benchmarks import harness
from dlfun.validate import terminal_text

T, B, I, H = 100, 64, 64, 256


def timed_ms(fn, *args, seconds: float) -> float:
    """Median milliseconds per call of the jitted ``fn`` over 5 windows of ``seconds / 5``."""
    jax.block_until_ready(fn(*args))
    per_call = []
    for _ in range(5):
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds / 5:
            jax.block_until_ready(fn(*args))
            n += 1
        per_call.append(1e3 * (time.perf_counter() - t0) / n)
    return statistics.median(per_call)


def groups() -> dict[str, tuple]:
    """name -> (jitted function, arguments, FLOPs)."""
    rng = np.random.default_rng(0)
    f32 = lambda *shape: jnp.asarray(rng.standard_normal(shape, dtype=np.float32) * 0.05)
    w_cat, w_hh_t = f32(H + I, 4 * H), f32(4 * H, H)
    hx, da = f32(B, H + I), f32(B, 4 * H)
    hs, xs, das = f32(T * B, H), f32(T * B, I), f32(T * B, 4 * H)

    @jax.jit
    def forward_loop(w, a):  # the next step's operand depends on this step's product
        return lax.fori_loop(0, T, lambda _, a: jnp.tanh((a @ w)[:, :H + I]), a)

    @jax.jit
    def backward_loop(w, d):
        return lax.fori_loop(0, T, lambda _, d: jnp.tile(d @ w, (1, 4)) * 0.5, d)

    return {
        f"forward: {T} x [h,x] ({B}x{H + I}) @ W ({H + I}x{4 * H})":
            (forward_loop, (w_cat, hx), 2 * T * B * (H + I) * 4 * H),
        f"backward: {T} x dA ({B}x{4 * H}) @ W_hh^T ({4 * H}x{H})":
            (backward_loop, (w_hh_t, da), 2 * T * B * 4 * H * H),
        "dW_hh = (dA^T h)^T": (jax.jit(lambda h, d: (d.T @ h).T), (hs, das), 2 * T * B * H * 4 * H),
        "dW_ih = x^T dA": (jax.jit(lambda x, d: x.T @ d), (xs, das), 2 * T * B * I * 4 * H),
    }


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=terminal_text(__doc__.split("\n\n")[0]),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=5.0, help="timed seconds per group")
    p.add_argument("--target-steps-per-s", type=float, default=None,
                   help="also print the time per step this rate allows")
    args = p.parse_args(argv)
    rows, total = [], 0.0
    for name, (fn, fn_args, flops) in groups().items():
        ms = timed_ms(fn, *fn_args, seconds=args.seconds)
        total += ms
        rows.append({"matrix products": name, "ms per step": ms, "GFLOP/s": flops / ms / 1e6})
    rows.append({"matrix products": "sum (a floor under the step time)", "ms per step": total,
                 "GFLOP/s": ""})
    harness.print_table(rows, ["matrix products", "ms per step", "GFLOP/s"])
    if args.target_steps_per_s:
        budget = 1e3 / args.target_steps_per_s
        print(f"{args.target_steps_per_s} steps/s allows {budget:.1f} ms per step; the matrix "
              f"products alone take {total:.1f} ms ({100 * total / budget:.0f}% of it)")


if __name__ == "__main__":
    main()
