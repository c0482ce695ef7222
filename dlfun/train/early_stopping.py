"""Early stopping for :func:`dlfun.train.fit`: end training once a validation figure has not
improved for ``patience`` epochs, and hand back the state of the best epoch.

With K models at once (an ensemble of seeds) each model has its own best epoch and keeps its
own best state; training ends when every model has waited ``patience`` epochs. The best
states, best epochs and best figures travel in the checkpoint (the state alongside the
current one, the rest in its position), so a resumed run stops at the same epoch with the same
parameters as an uninterrupted one, and a finished run restored from its last checkpoint does
not train again.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ..errors import ConfigError

MODES = ("min", "max")


@dataclasses.dataclass(frozen=True)
class EarlyStopping:
    """When :func:`dlfun.train.fit` stops early and which state it returns."""

    patience: int
    """Epochs without improvement after which training ends (>= 1)."""
    monitor: str = "val_loss"
    """The epoch-record field watched (``val_*`` from validation, or an ``on_epoch`` figure)."""
    mode: str = "min"
    """"min" (a loss) or "max" (an accuracy): which direction is better."""
    min_delta: float = 0.0
    """An epoch improves only if it beats the best by more than this."""

    def __post_init__(self):
        if isinstance(self.patience, bool) or not isinstance(self.patience, int) \
                or self.patience < 1:
            raise ConfigError(f"early stopping patience must be an integer >= 1 (epochs), "
                              f"got {self.patience!r}")
        if self.mode not in MODES:
            raise ConfigError(f"early stopping mode must be 'min' or 'max', got {self.mode!r}")
        if not (math.isfinite(self.min_delta) and self.min_delta >= 0):
            raise ConfigError(f"early stopping min_delta must be a finite number >= 0, got "
                              f"{self.min_delta}")


class BestTracker:
    """The best epoch so far of each model, its figure and a copy of its state.

    ``best_epoch`` is 0 (``(K,)`` zeros for K models) before any epoch improved; epochs are
    1-based. The state kept is a copy: the training steps donate (overwrite) theirs.
    """

    def __init__(self, rule: EarlyStopping, num_models: int | None):
        self.rule = rule
        shape = () if num_models is None else (num_models,)
        self.best_epoch = np.zeros(shape, np.int64)
        self.best_value = np.full(shape, self._worst)
        self.best_state: Any = None

    @property
    def _worst(self) -> float:
        return math.inf if self.rule.mode == "min" else -math.inf

    def update(self, state: Any, record: dict, epoch: int) -> None:
        """Take epoch ``epoch``'s (1-based) ``record``; keep ``state`` where it improved."""
        value = np.asarray(self._monitored(record), np.float64).reshape(self.best_value.shape)
        delta = self.rule.min_delta
        better = (value < self.best_value - delta if self.rule.mode == "min" else
                  value > self.best_value + delta)  # NaN never improves
        self.best_value = np.where(better, value, self.best_value)
        self.best_epoch = np.where(better, epoch, self.best_epoch)
        old = state if self.best_state is None else self.best_state
        self.best_state = select_models(better, state, old)

    def _monitored(self, record: dict):
        name = self.rule.monitor
        if self.best_epoch.ndim and f"{name}_each" in record:
            return record[f"{name}_each"]
        if name not in record:
            fields = ", ".join(k for k in record if isinstance(record[k], (int, float))
                               and k not in ("epoch", "step"))
            raise ConfigError(f"early stopping watches {name!r}, which the epoch records do "
                              f"not have (they have {fields}); monitor one of those, or pass "
                              f"a validation split for val_* figures")
        return record[name]

    def stopped(self, epoch: int) -> bool:
        """Whether, after ``epoch`` epochs, every model has waited ``patience`` epochs."""
        return epoch > 0 and bool(np.all(epoch - self.best_epoch >= self.rule.patience))

    def checkpointed(self, state: Any) -> dict:
        """The pytree saved at a checkpoint: the current state and the best one."""
        return {"state": state, "best": state if self.best_state is None else self.best_state}

    def position(self) -> dict:
        """JSON fields saved with the checkpoint's position (no best yet: ``None``)."""
        def plain(a, cast):
            return cast(a) if a.ndim == 0 else [cast(v) for v in a]

        return {"best_epoch": plain(self.best_epoch, int),
                "best_value": plain(self.best_value,
                                    lambda v: float(v) if math.isfinite(v) else None)}

    def load(self, saved: dict, position: dict | None) -> Any:
        """The current state from a restored :meth:`checkpointed` tree (``position`` None:
        a fresh start, nothing to load); the best state and figures are taken over."""
        if position is None:
            return saved["state"]
        shape = self.best_epoch.shape
        self.best_epoch = np.asarray(position["best_epoch"], np.int64).reshape(shape)
        value = np.asarray(position["best_value"], dtype=object).reshape(shape)
        self.best_value = np.where(value == None, self._worst, value).astype(np.float64)  # noqa: E711
        self.best_state = saved["best"] if np.any(self.best_epoch > 0) else None
        return saved["state"]

    def result_state(self, state: Any) -> Any:
        """The best state of each model (``state`` itself if no epoch was evaluated)."""
        return state if self.best_state is None else self.best_state


def select_models(mask: np.ndarray, new: Any, old: Any) -> Any:
    """``new`` where ``mask`` (scalar, or ``(K,)`` over the models' leading axis), else ``old``;
    always fresh arrays (neither input may be donated later)."""
    if np.ndim(mask) == 0:
        return jax.tree.map(jnp.copy, new if bool(mask) else old)
    mask = jnp.asarray(mask)

    def pick(a, b):
        return jnp.where(mask.reshape(mask.shape + (1,) * (a.ndim - 1)), a, b)

    return jax.tree.map(pick, new, old)
