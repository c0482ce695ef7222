"""Model parallelism on the digits: tensor, FSDP, hybrid or pipeline, checked against one device.

Per-device parameter memory, collectives and agreement with one device, for:
* ``tensor``: Megatron-style MLP blocks, the first matrix split by columns and the second by
  rows over ``model`` (one all-reduce per block forward);
* ``fsdp``: parameters and optimizer state split over ``data`` and gathered for compute;
* ``hybrid`` (Krizhevsky 2014): a CNN whose convolutions run data-parallel over all devices
  and whose fully-connected layers are split over ``model``, activations re-laid-out between;
* ``pipeline``: an MLP cut into one stage per device, fed micro-batches (GPipe); prints the
  bubble fraction (S-1)/(M+S-1).

``--model transformer`` (tensor and fsdp) trains a 2-block transformer on the digits read as
pixel sequences instead: Megatron's split (QKV and the first MLP matrix by heads/columns,
the attention output and second MLP matrix by rows: two all-reduces per block forward) or
FSDP, with the collective bytes against that scheme's ideal (``--preset transformer``: the
transformer with momentum, checked against one device to 1e-5).

    python -m experiments.model_parallel --scheme tensor --devices 8
    python -m experiments.model_parallel --preset transformer --scheme fsdp --devices 8
"""

from __future__ import annotations

import dataclasses

from dlfun.runs.cli import run_cli
from dlfun.runs.parallel import ParallelConfig, run_parallel_experiment
from dlfun.parallel.schemes import MODELS, SchemeOptions, check_scheme_fits
from dlfun.runs.config import check_choice, check_positive

NAME = "model_parallel"
SCHEMES = ("tensor", "fsdp", "hybrid", "pipeline")


@dataclasses.dataclass(frozen=True)
class Config(ParallelConfig):
    scheme: str = "tensor"
    """tensor, fsdp, hybrid or pipeline."""
    model: str = "auto"
    """auto (the scheme's own: MLP blocks for tensor, fsdp and pipeline, the CNN for hybrid),
    mlp, cnn, or transformer (tensor and fsdp: next-pixel prediction on the digits)."""
    model_devices: int = 2
    """hybrid: devices on the model axis (the fully-connected layers are split over them)."""
    microbatches: int = 4
    """pipeline: micro-batches per step (M); the batch size must be a multiple of it."""
    pipeline_blocks: int = 8
    """pipeline: Dense+ReLU blocks of the MLP (at least --devices: one stage per device)."""

    def unused_because(self, name: str) -> str | None:
        needs = {"model_devices": "hybrid", "microbatches": "pipeline",
                 "pipeline_blocks": "pipeline"}.get(name)
        if needs and self.scheme != needs:
            return f"with --scheme {self.scheme} (a {needs} flag)"
        return super().unused_because(name)

    def __post_init__(self):
        super().__post_init__()
        check_choice(self, "scheme", SCHEMES)
        check_choice(self, "model", ("auto", *sorted({m for s in SCHEMES for m in MODELS[s]})))
        check_positive(self, "model_devices", "microbatches", "pipeline_blocks")
        # Network and mesh divisibility at parse time, before any device or run directory.
        check_scheme_fits(self.scheme, self.devices, self.batch_size, self.options)

    @property
    def options(self) -> SchemeOptions:
        """The scheme's knobs from these flags."""
        return SchemeOptions(model_devices=self.model_devices, microbatches=self.microbatches,
                             pipeline_blocks=self.pipeline_blocks, model=self.model)


PRESETS = {
    "default": Config(optimizer="adam", learning_rate=3e-3),
    "smoke": Config(preset="smoke", devices=4, epochs=1, batch_size=64, max_steps=8,
                    optimizer="adam", learning_rate=3e-3),
    # Momentum, not Adam: Adam divides each update by the gradient's own size, so the float
    # rounding of near-zero gradients (almost-dead GELU units) grows to ~1e-4 parameter
    # differences from one device; with momentum they stay ~1e-6, well within 1e-5.
    "transformer": Config(preset="transformer", model="transformer", epochs=10,
                          optimizer="momentum", learning_rate=0.1, tolerance=1e-5),
}


def main(cfg: Config) -> dict:
    """Train the chosen scheme, compare with one device; returns the summary."""
    return run_parallel_experiment(NAME, cfg, cfg.scheme, cfg.options)


if __name__ == "__main__":
    run_cli(main, Config, PRESETS, prog="python -m experiments.model_parallel",
            description=__doc__)
