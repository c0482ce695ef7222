"""Parameters as a ``.npz`` file, one array per leaf named by its tree path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import numpy as np


def save_params(path: Path, params: Any) -> None:
    """Write a parameter pytree as ``.npz``, one array per leaf named by its tree path
    (``Dense_0/kernel``)."""
    def name(path) -> str:
        return "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)

    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    np.savez(path, **{name(k): np.asarray(v) for k, v in leaves})


def load_params(path: Path) -> dict[str, np.ndarray]:
    """The arrays written by :func:`save_params`, by tree path."""
    with np.load(path) as f:
        return {k: f[k] for k in f.files}
