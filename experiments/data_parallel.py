"""Data-parallel CNN on the digits (jit, shard_map or pmap), checked against one device.

The batch is split over N (simulated) devices, every device holds the same weights, and the
gradients are averaged with one all-reduce per step. Batch norm uses the whole global batch's
statistics and dropout masks do not depend on the device count, so all three methods give
the parameters one device gets on the same batches (printed as the largest difference).
Also printed: step time, images/s, and the step's collective bytes per device against the
ideal (a ring all-reduce of the gradient, 2(N-1)/N x gradient bytes).

    python -m experiments.data_parallel --devices 8 --method shard_map
    python -m dlfun.launch --nproc 2 --devices-per-proc 2 -- \\
        python -m experiments.data_parallel --devices 4      # 2 processes x 2 devices
"""

from __future__ import annotations

import dataclasses

from dlfun.runs.cli import run_cli
from dlfun.errors import ConfigError
from dlfun.parallel.data_parallel import METHODS
from dlfun.runs.parallel import ParallelConfig, run_parallel_experiment
from dlfun.parallel.schemes import SchemeOptions
from dlfun.runs.config import check_choice

NAME = "data_parallel"


@dataclasses.dataclass(frozen=True)
class Config(ParallelConfig):
    method: str = "jit"
    """jit (NamedSharding), shard_map (explicit pmean) or pmap."""
    batch_norm: bool = True
    """Batch norm after each convolution (statistics over the global batch)."""
    dropout: float = 0.1
    """Dropout rate on the hidden layer (per-example masks, same for any device count)."""

    def __post_init__(self):
        super().__post_init__()
        check_choice(self, "method", METHODS)
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"--dropout must be in [0, 1), got {self.dropout}")


PRESETS = {
    "default": Config(),
    "smoke": Config(preset="smoke", devices=4, epochs=1, batch_size=64, max_steps=6),
}


def main(cfg: Config) -> dict:
    """Train data-parallel, compare with one device; returns the summary."""
    options = SchemeOptions(batch_norm=cfg.batch_norm, dropout=cfg.dropout)
    return run_parallel_experiment(NAME, cfg, f"dp_{cfg.method}", options)


if __name__ == "__main__":
    run_cli(main, Config, PRESETS, prog="python -m experiments.data_parallel",
            description=__doc__)
