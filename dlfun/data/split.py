"""Reproducible splits by key, and standardisation with training-set statistics."""

from dataclasses import dataclass
from typing import Sequence

import jax
import numpy as np

from ..errors import ConfigError


@dataclass(frozen=True)
class Split:
    """Supervised arrays: ``x (N, ...)`` inputs and ``y (N, ...)`` targets."""

    x: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.x)

    def take(self, idx: np.ndarray) -> "Split":
        """The examples at ``idx``."""
        return Split(self.x[idx], self.y[idx])


@dataclass(frozen=True)
class Splits:
    """Train, validation and test splits of one dataset."""

    train: Split
    val: Split
    test: Split


def split_indices(key: jax.Array, n: int, fractions: Sequence[float]) -> list[np.ndarray]:
    """Shuffle ``range(n)`` by ``key`` and cut it into parts of the given ``fractions``.

    The last part takes the remainder, so every index lands in exactly one part. Each part
    gets at least one example.
    """
    if abs(sum(fractions) - 1.0) > 1e-6 or min(fractions) <= 0:
        raise ConfigError(f"split fractions must be positive and sum to 1, got {fractions}")
    if n < len(fractions):
        raise ConfigError(f"cannot split {n} examples into {len(fractions)} parts")
    perm = np.asarray(jax.random.permutation(key, n))
    sizes = [max(1, int(round(f * n))) for f in fractions[:-1]]
    cuts = np.cumsum(sizes)
    return np.split(perm, cuts)


def train_val_test(key: jax.Array, x: np.ndarray, y: np.ndarray,
                   fractions: Sequence[float] = (0.7, 0.1, 0.2)) -> Splits:
    """Split ``(x, y)`` into train/val/test by ``key`` (same key, same split)."""
    if len(x) != len(y):
        raise ConfigError(f"inputs ({len(x)}) and targets ({len(y)}) differ in length")
    tr, va, te = split_indices(key, len(x), fractions)
    data = Split(x, y)
    return Splits(data.take(tr), data.take(va), data.take(te))


def standardize(train: np.ndarray, *others: np.ndarray, eps: float = 1e-8):
    """Scale features to zero mean and unit variance using the training set's statistics.

    Args:
      train: ``(N, ...)``; statistics are taken over axis 0.
      others: more arrays shaped like ``train`` (validation, test), scaled the same way.
    Returns:
      ``(train_scaled, *others_scaled, (mean, std))``.
    """
    mean = train.mean(axis=0)
    std = train.std(axis=0) + eps
    return (*((a - mean) / std for a in (train, *others)), (mean, std))
