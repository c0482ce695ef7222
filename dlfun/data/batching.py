"""Shuffling and batching by key: the batch order is a pure function of (key, epoch).

Because the order is derived, not stored, a resumed run sees the same batches as an
uninterrupted one, and a scanned epoch sees the same batches as a Python-loop epoch.
"""

from typing import Iterator

import jax
import jax.numpy as jnp
import numpy as np

from ..errors import ConfigError


def num_batches(n: int, batch_size: int) -> int:
    """Full batches per epoch (the remainder is dropped; it differs every epoch)."""
    check_batch_size(n, batch_size)
    return n // batch_size


def check_batch_size(n: int, batch_size: int) -> None:
    """Raise ConfigError unless 1 <= batch_size <= n."""
    if batch_size < 1:
        raise ConfigError(f"batch size must be at least 1, got {batch_size}")
    if batch_size > n:
        raise ConfigError(f"batch size {batch_size} is larger than the training set ({n} "
                          f"examples); use a batch size of at most {n}")


def batch_indices(key: jax.Array, epoch: int | jax.Array, n: int, batch_size: int) -> jax.Array:
    """Shuffled example indices of one epoch, ``(num_batches, batch_size)`` int32.

    Jittable (``epoch`` may be traced); ``key`` is the run's data key.
    """
    perm = jax.random.permutation(jax.random.fold_in(key, epoch), n)
    nb = num_batches(n, batch_size)
    return perm[: nb * batch_size].reshape(nb, batch_size).astype(jnp.int32)


def iterate_batches(key: jax.Array, epoch: int, x: np.ndarray, y: np.ndarray,
                    batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Host-side batches of one epoch, in the same order as :func:`batch_indices`.

    Yields ``(x[idx], y[idx])`` numpy pairs of ``batch_size`` examples each.
    """
    idx = np.asarray(batch_indices(key, epoch, len(x), batch_size))
    for row in idx:
        yield x[row], y[row]
