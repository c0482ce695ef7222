"""The PyTorch worker of ``benchmarks.accelerator``: the reference models of
``benchmarks.baselines.torch_models`` eager and with ``torch.compile``, for one model, every
batch size and precision asked for (bf16 through ``torch.autocast``).

Prints one ``RESULT {json}`` line per measurement; a failing one gives a row with ``error``.
"""

from __future__ import annotations

import time
from typing import Callable

from benchmarks import harness
from benchmarks.accelerator import LABELS, model_spec, resolve_batches, transformer_heads
from benchmarks.baselines.specs import ModelSpec

NUM_BATCHES = 4


def transformer_block(d_model: int, heads: int):
    """PyTorch's own pre-norm encoder layer: attention + a 4x GELU MLP, no dropout."""
    from torch import nn

    return nn.TransformerEncoderLayer(d_model, heads, 4 * d_model, dropout=0.0,
                                      activation="gelu", batch_first=True, norm_first=True)


def trainer(spec: ModelSpec, dev, compiled: bool, bf16: bool, smoke: bool) -> Callable:
    """``one_step(x, y) -> loss`` of the spec's PyTorch model."""
    import torch

    from benchmarks.baselines import torch_models

    if compiled:
        torch._dynamo.reset()  # a fresh cache: no shape-generalised recompiles across rows
    model = None
    if spec.name == "transformer":
        model = transformer_block(spec.shape[1], transformer_heads(smoke))
    return torch_models.make_trainer(spec, dev, compiled=compiled, bf16=bf16, model=model)


def timed(run_n: Callable, seconds: float) -> dict:
    """Steps/s; the first two steps (compilation, a possible recompile) as compile seconds."""
    t0 = time.perf_counter()
    run_n(2)
    first = time.perf_counter() - t0
    r = harness.time_steps(run_n, seconds=seconds / 3, repeats=3,
                           warmup_seconds=min(1.0, seconds / 3), min_steps=1)
    return dict(steps_per_s=r["steps_per_s"], all_steps_per_s=r["all_steps_per_s"],
                compile_s=max(0.0, first - 2.0 / r["steps_per_s"]))


def measure(spec: ModelSpec, batch: int, precision: str, contender: str, dev, args) -> dict:
    """One row: the contender on ``batch`` examples in ``precision`` (``error`` if it failed)."""
    import torch

    from benchmarks.baselines import torch_models
    from benchmarks.baselines.specs import make_data

    out = dict(kind="row", model=spec.name, batch=batch, precision=precision,
               contender=contender, label=LABELS[contender], unit=spec.unit,
               device_kind=torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
               note="autocast bf16" if precision == "bf16" else "")
    try:
        x, y = make_data(spec, batch, NUM_BATCHES, channels_first=True)
        data = [torch_models.to_device(x[i], y[i], spec, dev) for i in range(NUM_BATCHES)]
        one_step = trainer(spec, dev, contender == "torch_compile", precision == "bf16",
                           args.smoke)
        box = dict(i=0)

        def run_n(n):
            for _ in range(n):
                one_step(*data[box["i"] % NUM_BATCHES])
                box["i"] += 1
            torch_models.synchronize(dev)

        torch_models.synchronize(dev)
        out.update(timed(run_n, args.seconds))
    except Exception as e:  # noqa: BLE001 -- one failing contender must not end the run
        out["error"] = f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:160]}"
    finally:
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    if "steps_per_s" in out:
        out["items_per_s"] = out["steps_per_s"] * batch * spec.items_per_example
        out["tflops"] = spec.train_flops(batch) * out["steps_per_s"] / 1e12
    return out


def main(args) -> None:
    """Worker entry: measure every (batch, precision, contender) of ``args.model``."""
    from benchmarks.baselines import torch_models

    dev = torch_models.configure_device(args.device)
    spec = model_spec(args.model, args.smoke)
    contenders = [c for c in args.contenders.split(",") if c]
    for batch in resolve_batches(spec, args.batch_sizes.split(","), args.smoke):
        for precision in [p for p in args.precisions.split(",") if p]:
            for contender in contenders:
                harness.emit_result(measure(spec, batch, precision, contender, dev, args))
