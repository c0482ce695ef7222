"""What does each parallel scheme cost at N = 1, 2, 4, 8 simulated devices?

For data parallel (jit, shard_map, pmap), tensor parallel, FSDP, the hybrid CNN and the GPipe
pipeline: step time (median), collective bytes sent per device per step against the
data-parallel ideal (one ring all-reduce of the gradient, 2(N-1)/N x gradient bytes), and
per-device parameter memory as a fraction of the whole. One process with 8 simulated CPU
devices; the N-device meshes use the first N. Simulated devices share this machine's cores,
so the times show each scheme's overhead, not a speed-up; the bytes and the memory are exact
(read from the compiled programs' HLO and the arrays' shards).

    python -m benchmarks.parallel_schemes [--devices 1 2 4 8] [--schemes dp_jit tensor ...]
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from benchmarks import harness
from dlfun.validate import terminal_text

BATCH = 64


def measure(name: str, n: int, seconds: float) -> dict:
    """One row: build the scheme on n devices, compile, read bytes and memory, time steps."""
    import jax

    from dlfun.data import digits
    from dlfun.optim import make_optimizer
    from dlfun.parallel.measure import collective_report, memory_report
    from dlfun.parallel.schemes import SchemeOptions, build_scheme

    x, y = digits()
    x, y = x[:BATCH], y[:BATCH]
    options = SchemeOptions(model_devices=min(2, n))  # hybrid: a model axis of 2 where it fits
    scheme = build_scheme(name, n, x, make_optimizer("adam", 1e-3), jax.random.key(0), options)
    batch, key = scheme.put_batch((x, y)), jax.random.key(1)
    compiled = scheme.step.lower(scheme.state, batch, key).compile()
    comm = collective_report(compiled, n, scheme.param_bytes)
    mem = memory_report(scheme, compiled)
    box = {"state": scheme.state}

    def run_n(k: int) -> None:
        s = box["state"]
        for _ in range(k):
            s, m = compiled(s, batch, key)
        jax.block_until_ready(m)
        box["state"] = s

    timing = harness.time_steps(run_n, seconds=seconds, repeats=3, warmup_seconds=0.3)
    return dict(scheme=name, N=n, mesh=scheme.notes["mesh"],
                step_ms=1e3 / timing["steps_per_s"],
                coll_kb_per_dev=comm["bytes_per_device"] / 1e3,
                dp_ideal_kb=comm["ideal_bytes_per_device"] / 1e3,
                vs_ideal=("-" if math.isnan(comm["ratio_to_ideal"]) else
                          f"{comm['ratio_to_ideal']:.3f}"),
                param_kb_per_dev=mem["param_bytes_per_device"] / 1e3,
                param_frac=f"{mem['param_fraction']:.3f}",
                bubble=f"{scheme.notes.get('bubble_fraction', 0.0):.3f}",
                collectives=comm["ops"])


def main(argv=None) -> None:
    from dlfun.parallel import simulate_cpu_devices
    from dlfun.parallel.measure import SIMULATED_NOTE
    from dlfun.parallel.schemes import SCHEMES

    ap = argparse.ArgumentParser(description=terminal_text(__doc__),
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--schemes", nargs="+", default=list(SCHEMES), choices=SCHEMES)
    ap.add_argument("--seconds", type=float, default=1.0, help="timed seconds per window")
    ap.add_argument("--out", type=Path, default=Path("bench_results/parallel_schemes.json"))
    args = ap.parse_args(argv)
    simulate_cpu_devices(max(args.devices))
    rows = []
    for n in args.devices:
        for name in args.schemes:
            rows.append(measure(name, n, args.seconds))
            print(f"  measured {name} on {n} device(s): {rows[-1]['step_ms']:.2f} ms/step",
                  flush=True)
    harness.print_table(rows, ["scheme", "N", "mesh", "step_ms", "coll_kb_per_dev",
                               "dp_ideal_kb", "vs_ideal", "param_kb_per_dev", "param_frac",
                               "bubble"],
                        title=f"Parallel schemes on the digits, global batch {BATCH} "
                              "(CNN: dp_*, hybrid; MLP: tensor, fsdp, pipeline)")
    print(f"note: {SIMULATED_NOTE}")
    harness.write_json(args.out, dict(benchmark="parallel_schemes", batch=BATCH,
                                      note=SIMULATED_NOTE, rows=rows))


if __name__ == "__main__":
    main()
