"""How fast is a dlfun MLP training step next to plain Flax and PyTorch eager (same CPU)?

MLP 784-512-512-10, batch 256, cross-entropy, SGD 0.01 with momentum 0.9 (the ``mlp`` spec
of ``benchmarks.baselines``). Each contender runs in its own process, interleaved A B C A B C
...; the table shows medians of steps/s. dlfun's step is the one the experiments use
(``make_train_step``: it also computes the gradient norm and guards against non-finite
updates); the references are ``benchmarks.baselines`` (plain Flax ``nn.Dense`` + Optax, and
PyTorch).

    python -m benchmarks.mlp_step [--rounds 3] [--seconds 4] [--device cpu|gpu]
        [--torch-compile] [--cross-check [DIR]]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmarks import harness
from dlfun.validate import terminal_text

MACS = 784 * 512 + 512 * 512 + 512 * 10
BATCH = 256


def worker(seconds: float, nonfinite: str) -> dict:
    """Time dlfun's step in this process and return the RESULT dict."""
    from dlfun import platform

    platform.configure_cpu()  # before the first JAX computation (DLFUN_MALLOC; CPU flags)
    import jax
    import jax.numpy as jnp
    import numpy as np

    from dlfun import losses
    from dlfun.nn import MLP
    from dlfun.optim import make_optimizer
    from dlfun.train import create_train_state, make_train_step

    model = MLP((512, 512), 10)
    state = create_train_state(model, make_optimizer("momentum", 0.01), jax.random.key(0),
                               jnp.zeros((1, 784)))
    step = make_train_step(model, losses.softmax_cross_entropy, nonfinite=nonfinite)
    rng = np.random.default_rng(0)
    xs = [jax.device_put(rng.standard_normal((BATCH, 784), dtype=np.float32)) for _ in range(16)]
    ys = [jax.device_put(rng.integers(0, 10, BATCH).astype(np.int32)) for _ in range(16)]
    keys = list(jax.random.split(jax.random.key(1), 16))
    jstep = jax.jit(step, donate_argnums=0)
    compile_s = harness.compile_seconds(jax.jit(step), state, (xs[0], ys[0]), keys[0])
    box = {"state": state, "i": 0}

    def run_n(n):
        s, i = box["state"], box["i"]
        for _ in range(n):
            s, m = jstep(s, (xs[i % 16], ys[i % 16]), keys[i % 16])
            i += 1
        jax.block_until_ready(s)
        box.update(state=s, i=i)

    r = harness.time_steps(run_n, seconds=seconds, repeats=3)
    flops = 6.0 * MACS * BATCH
    return dict(fw="dlfun", model="mlp", backend=jax.default_backend(),
                steps_per_s=r["steps_per_s"], compile_s=compile_s,
                gflops=flops * r["steps_per_s"] / 1e9, cpu_util=r["cpu_util"])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=terminal_text(__doc__),
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    ap.add_argument("--seconds", type=float, default=4.0, help="timed seconds per measurement")
    harness.add_device_args(ap)
    ap.add_argument("--torch-compile", action="store_true",
                    help="also time PyTorch with torch.compile")
    ap.add_argument("--out", type=Path, default=Path("bench_results/mlp_step.json"))
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--nonfinite", default="stop", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        harness.emit_result(worker(args.seconds, args.nonfinite))
        return
    harness.require_device(args.device)
    has_torch = harness.torch_installed()
    me = (sys.executable, "-m", "benchmarks.mlp_step", "--worker", "--seconds", str(args.seconds))
    here, env = str(harness.REPO_ROOT), harness.device_env(args.device)
    contenders = [harness.Contender("dlfun", me, here, env),
                  harness.Contender("dlfun (no NaN guard)", (*me, "--nonfinite", "off"), here,
                                    env),
                  *harness.baseline_contenders("mlp", args.seconds, args.device, has_torch,
                                               torch_compile=args.torch_compile,
                                               cross_check=args.cross_check)]
    res = harness.run_interleaved(contenders, args.rounds)
    report(res, has_torch, args.out, args.device)


def report(res: dict, has_torch: bool, out: Path, device: str) -> None:
    torch_sps = res.get(harness.TORCH_EAGER, {}).get("median")
    flax_sps = res[harness.FLAX]["median"]
    rows = []
    for name, r in res.items():
        sps = r["median"]
        rows.append(dict(contender=name, steps_per_s=sps, images_per_s=sps * BATCH,
                         gflops=6.0 * MACS * BATCH * sps / 1e9,
                         vs_plain_flax=sps / flax_sps,
                         vs_pytorch=(sps / torch_sps) if torch_sps else "n/a"))
    harness.print_table(rows, ["contender", "steps_per_s", "images_per_s", "gflops",
                               "vs_plain_flax", "vs_pytorch"],
                        title=f"MLP 784-512-512-10, batch 256, SGD+momentum, {device}: training "
                              "steps/s (medians of interleaved runs)")
    if not has_torch:
        print("note: PyTorch is not installed; its column is skipped "
              "(pip install torch==2.13.0)")
    harness.write_json(out, dict(benchmark="mlp_step", device=device, rows=rows, raw=res))


if __name__ == "__main__":
    main()
