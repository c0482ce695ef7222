"""Randomised labels (Zhang et al. 2017, "Understanding deep learning requires rethinking
generalization"): each label is replaced, with probability ``fraction``, by a class drawn
uniformly at random (which may be its own class again, as in the paper)."""

from __future__ import annotations

import jax
import numpy as np

from ..errors import ConfigError, DataError


def randomize_labels(key: jax.Array, labels: np.ndarray, fraction: float,
                     num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Corrupt a share ``fraction`` of ``labels`` with uniformly random classes.

    The draws depend on ``key`` and the number of labels only, not on ``fraction``: example
    ``i`` is corrupted when its uniform draw ``u_i < fraction``, and then always gets the same
    random class. So one key gives nested corruptions (the examples corrupted at 0.2 are
    corrupted, identically, at 0.5 and 1.0), and fraction 0 returns the labels unchanged.

    Args:
      key: the randomisation key (e.g. ``jax.random.key(seed)``).
      labels: int class ids ``(N,)`` in ``[0, num_classes)``.
      fraction: the probability of corrupting each label, in ``[0, 1]``.
      num_classes: number of classes.

    Returns:
      ``(new_labels, corrupted)``: int32 ``(N,)`` labels, and the bool ``(N,)`` mask of the
      examples whose label was redrawn (about ``fraction * N``; a redrawn label equals the
      true one with probability ``1 / num_classes``).

    Raises:
      ConfigError: ``fraction`` outside ``[0, 1]``. DataError: labels not ``(N,)`` ids in range.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ConfigError(f"the label-noise fraction must be in [0, 1], got {fraction}")
    labels = np.asarray(labels)
    if labels.ndim != 1 or (labels.size and not 0 <= labels.min() <= labels.max() < num_classes):
        raise DataError(f"labels must be class ids (N,) in [0, {num_classes}), got shape "
                        f"{labels.shape}")
    k_which, k_class = jax.random.split(key)
    u = np.asarray(jax.random.uniform(k_which, labels.shape))
    random_classes = np.asarray(jax.random.randint(k_class, labels.shape, 0, num_classes))
    corrupted = u < fraction
    return np.where(corrupted, random_classes, labels).astype(np.int32), corrupted
