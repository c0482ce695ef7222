"""A plain step loop over global batches, shared by the parallel experiments and benchmarks.

Unlike :func:`dlfun.train.fit` (which keeps the dataset on one device), batches are cut on
the host and each process hands over only its rows (``put_batch``), which is what
multi-process data parallelism needs. Batch order and step keys follow ``fit``'s contract:
batch ``i`` of epoch ``e`` is ``batch_indices(data_key, e, ...)[i]`` and its key is
``fold_in(step_key, e * num_batches + i)``, so any device layout sees the same batches and
dropout keys as one device.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from typing import Any, Callable

import jax
import numpy as np

from ..data.batching import batch_indices
from ..data.split import Split
from .distributed import to_host


@dataclasses.dataclass
class LoopResult:
    """What :func:`run_steps` returns.

    Attributes:
      state: the final state (in the step's layout).
      losses: the training loss of every step.
      step_seconds: wall time of every step, waited for (the first includes compilation
        unless the step was compiled ahead of time).
    """

    state: Any
    losses: list[float]
    step_seconds: list[float]

    @property
    def median_step_seconds(self) -> float:
        """Median over the steps after the first (which may include compilation)."""
        rest = self.step_seconds[1:] or self.step_seconds
        return statistics.median(rest)


def run_steps(step: Callable, put_batch: Callable, state: Any, train: Split, data_key, step_key,
              epochs: int, batch_size: int, max_steps: int | None = None,
              rows: slice = slice(None), start_step: int = 0,
              after_step: Callable[[int, Any, float], None] | None = None) -> LoopResult:
    """Run ``step`` over ``epochs`` epochs of ``train`` (or the first ``max_steps`` steps).

    Args:
      step: ``step(state, batch, key) -> (state, metrics)`` with ``metrics["loss"]``.
      put_batch: ``(x_rows, y_rows) -> batch`` in the step's layout (numpy in).
      state: the initial state, already placed.
      train: the training split (host arrays).
      data_key, step_key: the run's keys (:func:`dlfun.train.run_keys`).
      epochs, batch_size: the global batch size; the remainder of each epoch is dropped.
      max_steps: stop early after this many steps.
      rows: which rows of each global batch this process feeds (all, with one process).
      start_step: steps already done (a resumed run): training continues with the batch and
        key that step would have had, so the result equals an uninterrupted run.
      after_step: ``after_step(steps_done, state, loss)`` after every step (checks,
        records, checkpoints); called on every process.
    Returns:
      a :class:`LoopResult` (losses and times of the steps run here).
    """
    losses, seconds, t = [], [], 0
    for epoch in range(epochs):
        idx = np.asarray(batch_indices(data_key, epoch, len(train), batch_size))
        for row in idx:
            if max_steps is not None and t >= max_steps:
                return LoopResult(state, losses, seconds)
            if t < start_step:
                t += 1
                continue
            mine = row[rows]
            batch = put_batch((train.x[mine], train.y[mine]))
            t0 = time.perf_counter()
            state, metrics = step(state, batch, jax.random.fold_in(step_key, t))
            loss = float(np.asarray(to_host(metrics["loss"])).reshape(-1)[0])  # waits
            seconds.append(time.perf_counter() - t0)
            losses.append(loss)
            t += 1
            if after_step is not None:
                after_step(t, state, loss)
    return LoopResult(state, losses, seconds)
