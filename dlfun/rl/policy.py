"""Saved policies: the Q-network parameters a run selected, in their own orbax checkpoint.

A policy checkpoint is small (parameters only, no optimizer or replay buffer) and carries
JSON metadata saying which environment and network it is for, so it can be evaluated or
rendered later without the run's full training state.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import CheckpointError
from ..train.checkpoint import Checkpointer


def save_policy(directory: str | Path, params: Any, meta: dict, step: int = 0) -> Path:
    """Save ``params`` (one network, or K stacked on a leading axis) with ``meta``.

    Args:
      directory: the policy checkpoint folder (e.g. ``<run>/checkpoints/policy``).
      params: the Q-network parameters.
      meta: JSON-ready description (environment, network, evaluation returns, ...).
      step: checkpoint number (e.g. the training period it was taken at).

    Returns:
      The folder of the written checkpoint.
    """
    ckpt = Checkpointer(directory, keep=1)
    try:
        ckpt.save(step, {"params": params}, meta)
    finally:
        ckpt.close()
    return Path(directory).absolute() / str(step)


def load_policy(directory: str | Path, template: Any) -> tuple[Any, dict]:
    """The parameters and metadata of the newest policy in ``directory``.

    Args:
      directory: a folder written by :func:`save_policy`.
      template: parameters of the same structure and shapes (e.g. a fresh ``network.init``).

    Raises:
      CheckpointError: no policy there, or one of another network's shapes.
    """
    ckpt = Checkpointer(directory, keep=1)
    try:
        restored = ckpt.restore_latest({"params": template})
    finally:
        ckpt.close()
    if restored is None:
        raise CheckpointError(f"no saved policy in {directory}; train one first (python -m "
                              "experiments.dqn) and point at its checkpoints/policy folder")
    state, meta, _ = restored
    return state["params"], meta
