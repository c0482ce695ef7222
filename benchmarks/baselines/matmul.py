"""Matrix-product peak of this device: an N x N x N product timed in JAX (and in PyTorch).

``benchmarks.accelerator`` divides its analytic TFLOP/s by the bf16 peak measured here (model
FLOP utilisation, MFU); ``benchmarks.cnn_step`` quotes its step GFLOP/s against the f32 one.

    python -m benchmarks.baselines.matmul [--size 8192] [--dtype bf16] [--fw jax|torch]
        [--device cpu|gpu]

Prints a ``RESULT {json}`` line with ``tflops``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks import harness

DTYPES = ("f32", "bf16")


def jax_peak(size: int, dtype: str, seconds: float) -> dict:
    """TFLOP/s of ``a @ b`` for two ``(size, size)`` arrays of ``dtype``, compiled by XLA."""
    import jax
    import jax.numpy as jnp

    dt = jnp.bfloat16 if dtype == "bf16" else jnp.float32
    ka, kb = jax.random.split(jax.random.key(0))
    a = jax.random.normal(ka, (size, size), dt)
    b = jax.random.normal(kb, (size, size), dt)
    product = jax.jit(jnp.matmul)
    box = {}

    def run_n(n):
        for _ in range(n):
            box["c"] = product(a, b)
        jax.block_until_ready(box["c"])

    r = harness.time_steps(run_n, seconds=seconds, repeats=3, warmup_seconds=seconds / 2)
    return dict(fw="jax", size=size, dtype=dtype, backend=jax.default_backend(),
                device_kind=jax.devices()[0].device_kind,
                tflops=2.0 * size ** 3 * r["steps_per_s"] / 1e12)


def torch_peak(size: int, dtype: str, device: str, seconds: float) -> dict:
    """TFLOP/s of ``torch.mm`` on two ``(size, size)`` tensors of ``dtype``."""
    import torch

    from benchmarks.baselines.torch_models import configure_device, synchronize

    dev = configure_device(device)
    dt = torch.bfloat16 if dtype == "bf16" else torch.float32
    g = torch.Generator(device=dev).manual_seed(0)
    a = torch.randn(size, size, generator=g, device=dev, dtype=dt)
    b = torch.randn(size, size, generator=g, device=dev, dtype=dt)
    out = torch.empty(size, size, device=dev, dtype=dt)

    def run_n(n):
        for _ in range(n):
            torch.mm(a, b, out=out)
        synchronize(dev)

    r = harness.time_steps(run_n, seconds=seconds, repeats=3, warmup_seconds=seconds / 2)
    return dict(fw="torch", size=size, dtype=dtype, device=str(dev),
                tflops=2.0 * size ** 3 * r["steps_per_s"] / 1e12)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=2048, help="N of the N x N x N product")
    p.add_argument("--dtype", choices=DTYPES, default="f32")
    p.add_argument("--fw", choices=("jax", "torch"), default="jax")
    p.add_argument("--device", choices=("cpu", "gpu"), default="cpu",
                   help="for --fw torch (JAX follows JAX_PLATFORMS)")
    p.add_argument("--seconds", type=float, default=1.0, help="timed seconds per window")
    p.add_argument("--out", type=Path, default=None, help="also write the result as JSON here")
    args = p.parse_args(argv)
    if args.fw == "jax":
        result = jax_peak(args.size, args.dtype, args.seconds)
    else:
        result = torch_peak(args.size, args.dtype, args.device, args.seconds)
    harness.emit_result(result)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
