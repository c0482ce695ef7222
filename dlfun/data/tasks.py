"""Tasks carved out of one labelled dataset: a subset of its classes, a few labels per class,
and splits joined together (a replay buffer mixed into a new task's training set)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..errors import ConfigError
from ..validate import check_at_most
from .split import Split, Splits


def class_task(splits: Splits, classes: Sequence[int], renumber: bool = True) -> Splits:
    """The examples of ``classes`` in every split.

    Args:
      splits: train/val/test with integer labels ``(N,)``.
      classes: the labels to keep, e.g. ``(5, 6, 7, 8, 9)``.
      renumber: relabel ``classes[i]`` as ``i`` (a head of ``len(classes)`` outputs); False
        keeps the original labels (one head over every class).

    Returns:
      the :class:`Splits` of that task, examples in their original order.
    """
    classes = tuple(int(c) for c in classes)
    if not classes or len(set(classes)) != len(classes):
        raise ConfigError(f"a task needs distinct classes, got {classes}")
    lookup = {c: i for i, c in enumerate(classes)}

    def part(s: Split) -> Split:
        keep = np.isin(s.y, classes)
        y = s.y[keep]
        if renumber:
            y = np.array([lookup[int(c)] for c in y], dtype=np.int32).reshape(y.shape)
        return Split(s.x[keep], y.astype(np.int32))

    return Splits(part(splits.train), part(splits.val), part(splits.test))


def few_labels(train: Split, per_class: int) -> Split:
    """The first ``per_class`` examples of each class (0: all), in split order.

    Args:
      train: inputs ``(N, ...)`` and integer labels ``(N,)``.
      per_class: examples kept per class (a class with fewer keeps all it has).

    Returns:
      a :class:`Split` of at most ``per_class * classes`` examples (``train`` itself for 0).
    """
    if per_class < 0:
        raise ConfigError(f"examples per class must be >= 0, got {per_class}")
    if per_class == 0:
        return train
    idx = np.concatenate([np.flatnonzero(train.y == c)[:per_class] for c in np.unique(train.y)])
    return train.take(np.sort(idx))


def check_per_class(train: Split, per_class: int, flag: str, what: str, also: str = "") -> None:
    """Refuse asking :func:`few_labels` for more examples per class than ``train``'s smallest
    class holds (it would quietly give all there is while the run reports the number asked)."""
    fewest = int(np.unique(train.y, return_counts=True)[1].min())
    check_at_most(per_class, fewest, flag, f"the smallest class of {what}", also)


def concat_splits(*parts: Split) -> Split:
    """The examples of every part, in order (same input and label shapes after axis 0)."""
    shapes = {(p.x.shape[1:], p.y.shape[1:]) for p in parts}
    if len(shapes) != 1:
        raise ConfigError(f"cannot join splits whose examples differ in shape: {sorted(shapes)}")
    return Split(np.concatenate([p.x for p in parts]), np.concatenate([p.y for p in parts]))
