"""Model parallelism on the digits: tensor, FSDP, hybrid or pipeline, checked against one device.

Per-device parameter memory, collectives and agreement with one device, for:
* ``tensor``: Megatron-style MLP blocks, the first matrix split by columns and the second by
  rows over ``model`` (one all-reduce per block forward);
* ``fsdp``: parameters and optimizer state split over ``data`` and gathered for compute;
* ``hybrid`` (Krizhevsky 2014): a CNN whose convolutions run data-parallel over all devices
  and whose fully-connected layers are split over ``model``, activations re-laid-out between;
* ``pipeline``: an MLP cut into one stage per device, fed micro-batches (GPipe); prints the
  bubble fraction (S-1)/(M+S-1).

    python -m experiments.model_parallel --scheme tensor --devices 8
"""

from __future__ import annotations

import dataclasses

from dlfun.runs.cli import run_cli
from dlfun.runs.parallel import ParallelConfig, run_parallel_experiment
from dlfun.parallel.schemes import SchemeOptions, check_scheme_fits
from dlfun.runs.config import check_choice, check_positive

NAME = "model_parallel"
SCHEMES = ("tensor", "fsdp", "hybrid", "pipeline")


@dataclasses.dataclass(frozen=True)
class Config(ParallelConfig):
    scheme: str = "tensor"
    """tensor, fsdp, hybrid or pipeline."""
    model_devices: int = 2
    """hybrid: devices on the model axis (the fully-connected layers are split over them)."""
    microbatches: int = 4
    """pipeline: micro-batches per step (M); the batch size must be a multiple of it."""
    pipeline_blocks: int = 8
    """pipeline: Dense+ReLU blocks of the MLP (at least --devices: one stage per device)."""

    def __post_init__(self):
        super().__post_init__()
        check_choice(self, "scheme", SCHEMES)
        check_positive(self, "model_devices", "microbatches", "pipeline_blocks")
        # Mesh divisibility at parse time, before any device or run directory exists.
        check_scheme_fits(self.scheme, self.devices, self.batch_size, SchemeOptions(
            model_devices=self.model_devices, microbatches=self.microbatches,
            pipeline_blocks=self.pipeline_blocks))


PRESETS = {
    "default": Config(optimizer="adam", learning_rate=3e-3),
    "smoke": Config(preset="smoke", devices=4, epochs=1, batch_size=64, max_steps=8,
                    optimizer="adam", learning_rate=3e-3),
}


def main(cfg: Config) -> dict:
    """Train the chosen scheme, compare with one device; returns the summary."""
    options = SchemeOptions(model_devices=cfg.model_devices, microbatches=cfg.microbatches,
                            pipeline_blocks=cfg.pipeline_blocks)
    return run_parallel_experiment(NAME, cfg, cfg.scheme, options)


if __name__ == "__main__":
    run_cli(main, Config, PRESETS, prog="python -m experiments.model_parallel",
            description=__doc__)
