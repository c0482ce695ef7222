"""Time the plain-Flax reference training step of one model; print a "RESULT {json}" line.

    python -m benchmarks.baselines.flax_step --model mlp [--device cpu|gpu] [--seconds 4]

The step benchmarks (``benchmarks.mlp_step``, ``cnn_step``, ``lstm_step``) run this in its own
process next to dlfun's step. JAX runs on the platform that ``JAX_PLATFORMS`` names (the
benchmarks set it from ``--device``).
"""

from __future__ import annotations

import argparse
import time

from benchmarks import harness
from benchmarks.baselines.specs import SPECS


def measure(model: str, seconds: float, batch: int | None = None, num_batches: int = 16) -> dict:
    """Steps/s, images/s, GFLOP/s and compile seconds of the plain-Flax step."""
    import jax

    from benchmarks.baselines import flax_models
    from benchmarks.baselines.specs import make_data

    spec = SPECS[model]
    batch = batch or spec.batch
    x, y = make_data(spec, batch, num_batches)
    xs, ys = [jax.device_put(a) for a in x], [jax.device_put(a) for a in y]
    module, tx, step = flax_models.build(spec)
    variables = dict(module.init(jax.random.key(0), xs[0], train=False))
    state = dict(v=variables, o=tx.init(variables["params"]), i=0, loss=None)
    jstep = jax.jit(step, donate_argnums=(0, 1))

    def run_n(n):
        v, o, i, loss = state["v"], state["o"], state["i"], None
        for _ in range(n):
            v, o, loss = jstep(v, o, xs[i % num_batches], ys[i % num_batches])
            i += 1
        jax.block_until_ready((v, o, loss))
        state.update(v=v, o=o, i=i, loss=loss)

    t0 = time.perf_counter()
    run_n(1)  # traces and compiles
    first_s = time.perf_counter() - t0
    r = harness.time_steps(run_n, seconds=seconds, repeats=3)
    flops = spec.train_flops(batch)
    return dict(fw="flax", model=model, batch=batch, backend=jax.default_backend(),
                device_kind=jax.devices()[0].device_kind,
                compile_s=max(0.0, first_s - 1.0 / r["steps_per_s"]),
                images_per_s=r["steps_per_s"] * batch, gflops=flops * r["steps_per_s"] / 1e9,
                final_loss=float(state["loss"]), **r)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=sorted(SPECS), default="mlp")
    p.add_argument("--seconds", type=float, default=4.0, help="timed seconds per window")
    p.add_argument("--batch", type=int, default=None, help="batch size (default: the spec's)")
    args = p.parse_args(argv)
    harness.emit_result(measure(args.model, args.seconds, args.batch))


if __name__ == "__main__":
    main()
