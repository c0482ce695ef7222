"""How should K LeNets (an ensemble over seeds) be stepped on the CPU: vmap, lax.map or a loop?

Each strategy runs as its own subprocess, interleaved (A B C A B C ...), and reports
model-steps/s (K models x steps/s). Every model gets its own batch (128 images) and its own
SGD-momentum state, as in ``plain_flax_bench.py --mode vmap``:
  * vmap: ``jit(vmap(step))`` over the K models (convolutions become grouped convolutions);
  * map: ``jit(lambda ...: lax.map(step, ...))`` (one model after another inside one program);
  * sequential: a Python loop calling ``jit(step)`` K times.
Each with dlfun's conv ops at ``--impls`` (default ``auto`` and ``xla``).

    python -m benchmarks.lenet_ensemble --rounds 3 --seconds 2
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmarks import harness
from dlfun.validate import terminal_text

STRATEGIES = ("vmap", "map", "sequential")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=terminal_text(__doc__.split("\n\n")[0]),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds per contender")
    p.add_argument("--seconds", type=float, default=2.0, help="timed seconds per window")
    p.add_argument("--models", type=int, default=8, help="ensemble size K")
    p.add_argument("--impls", default="auto,xla", help="conv lowerings to compare")
    p.add_argument("--strategies", default=",".join(STRATEGIES), help="subset of vmap,map,sequential")
    p.add_argument("--out", type=Path,
                   default=harness.REPO_ROOT / "bench_results" / "lenet_ensemble.json")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--impl", default="auto", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def _setup(k: int, impl: str):
    """K LeNets' stacked params/opt states, per-model batches and the single-model step."""
    import jax
    import numpy as np

    from benchmarks.cnn_models import SPECS, make_train_step

    spec = SPECS["lenet"]
    module, tx = spec["module"](impl=impl), spec["optimizer"]()
    rng = np.random.default_rng(1)
    xs = [jax.device_put(rng.standard_normal((k, 128, 28, 28, 1), np.float32)) for _ in range(4)]
    ys = [jax.device_put(rng.integers(0, 10, (k, 128)).astype(np.int32)) for _ in range(4)]

    def init_one(key):
        p = module.init(key, xs[0][0])["params"]
        return p, tx.init(p)

    params, opt = jax.jit(jax.vmap(init_one))(jax.random.split(jax.random.key(0), k))
    return make_train_step(module, tx), params, opt, xs, ys


def _runner(strategy: str, step):
    """``run(params, opt, x, y) -> (params, opt, loss)`` stepping all K stacked models once."""
    import jax
    from jax import lax

    if strategy == "vmap":
        return jax.jit(jax.vmap(step), donate_argnums=(0, 1))
    return jax.jit(lambda p, o, x, y: lax.map(lambda a: step(*a), (p, o, x, y)),
                   donate_argnums=(0, 1))


def worker(args) -> None:
    """Time one strategy in this process and print a RESULT line."""
    from dlfun import platform

    platform.reexec_with_allocator()
    platform.configure_cpu()
    import jax

    step, params, opt, xs, ys = _setup(args.models, args.impl)
    if args.worker == "sequential":
        params, opt = _unstack(params, args.models), _unstack(opt, args.models)
        run = _sequential_runner(step)
    else:
        run = _runner(args.worker, step)
    state = dict(p=params, o=opt, i=0)

    def run_n(n):
        p, o, i = state["p"], state["o"], state["i"]
        for _ in range(n):
            p, o, loss = run(p, o, xs[i % 4], ys[i % 4])
            i += 1
        jax.block_until_ready((p, o, loss))
        state.update(p=p, o=o, i=i)

    run_n(1)
    r = harness.time_steps(run_n, seconds=args.seconds, repeats=3)
    harness.emit_result(dict(strategy=args.worker, impl=args.impl, models=args.models,
                             model_steps_per_s=r["steps_per_s"] * args.models, **r))


def _unstack(tree, k):
    import jax

    return [jax.tree.map(lambda a, i=i: a[i], tree) for i in range(k)]


def _sequential_runner(step):
    """Loop over per-model states (lists), one jitted single-model step each."""
    import jax

    jstep = jax.jit(step, donate_argnums=(0, 1))

    def run(ps, os_, x, y):
        outs = [jstep(p, o, x[i], y[i]) for i, (p, o) in enumerate(zip(ps, os_))]
        return [a for a, _, _ in outs], [b for _, b, _ in outs], outs[-1][2]

    return run


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.worker:
        return worker(args)
    contenders = []
    for impl in [i for i in args.impls.split(",") if i]:
        for s in [s for s in args.strategies.split(",") if s]:
            argv_ = (sys.executable, "-m", "benchmarks.lenet_ensemble", "--worker", s, "--impl",
                     impl, "--models", str(args.models), "--seconds", str(args.seconds))
            contenders.append(harness.Contender(f"{s} impl={impl}", argv_,
                                                cwd=str(harness.REPO_ROOT)))
    res = harness.run_interleaved(contenders, args.rounds, key="model_steps_per_s")
    rows = [{"contender": k, "model-steps/s": v["median"],
             "runs": " ".join(f"{x:.1f}" for x in v["values"])} for k, v in res.items()]
    text = harness.print_table(rows, ["contender", "model-steps/s", "runs"],
                               title=f"{args.models} LeNets, medians of {args.rounds} rounds")
    harness.write_json(args.out, dict(rows=rows, raw=res, table=text,
                                      args={k: str(v) for k, v in vars(args).items()}))


if __name__ == "__main__":
    main()
