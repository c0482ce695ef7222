"""Time the PyTorch reference training step of one model; print a "RESULT {json}" line.

    python -m benchmarks.baselines.torch_step --model mlp [--mode eager|compile]
        [--device cpu|gpu] [--seconds 4]

On ``--device gpu`` it trains on CUDA with TF32 allowed (as JAX's default precision does) and
synchronizes the device around every timed window. ``compile`` wraps the model in
``torch.compile``; its first two steps (compilation, and a possible recompile) are reported as
``compile_s``, not timed.
"""

from __future__ import annotations

import argparse
import time

from benchmarks import harness
from benchmarks.baselines.specs import SPECS


def measure(model: str, mode: str, device: str, seconds: float, batch: int | None = None,
            num_batches: int = 16) -> dict:
    """Steps/s, images/s, GFLOP/s and compile seconds of the PyTorch step."""
    import torch

    from benchmarks.baselines import torch_models
    from benchmarks.baselines.specs import make_data

    dev = torch_models.configure_device(device)
    spec = SPECS[model]
    batch = batch or spec.batch
    x, y = make_data(spec, batch, num_batches, channels_first=True)
    data = [torch_models.to_device(x[i], y[i], spec, dev) for i in range(num_batches)]
    one_step = torch_models.make_trainer(spec, dev, compiled=mode == "compile")
    state = dict(i=0, loss=None)

    def run_n(n):
        i = state["i"]
        for _ in range(n):
            state["loss"] = one_step(*data[i % num_batches])
            i += 1
        torch_models.synchronize(dev)
        state["i"] = i

    t0 = time.perf_counter()
    run_n(2)  # torch.compile compiles (and may recompile once) here
    first_s = time.perf_counter() - t0
    r = harness.time_steps(run_n, seconds=seconds, repeats=3)
    flops = spec.train_flops(batch)
    return dict(fw="torch", mode=mode, model=model, batch=batch, device=str(dev),
                torch=torch.__version__, threads=torch.get_num_threads(),
                compile_s=max(0.0, first_s - 2.0 / r["steps_per_s"]),
                images_per_s=r["steps_per_s"] * batch, gflops=flops * r["steps_per_s"] / 1e9,
                final_loss=state["loss"].item(), **r)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=sorted(SPECS), default="mlp")
    p.add_argument("--mode", choices=("eager", "compile"), default="eager")
    p.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    p.add_argument("--seconds", type=float, default=4.0, help="timed seconds per window")
    p.add_argument("--batch", type=int, default=None, help="batch size (default: the spec's)")
    args = p.parse_args(argv)
    harness.emit_result(measure(args.model, args.mode, args.device, args.seconds, args.batch))


if __name__ == "__main__":
    main()
