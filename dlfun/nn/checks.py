"""Input-shape checks that turn Flax's shape errors into messages naming the fix."""

import inspect
from typing import Callable

import flax.linen as nn
import jax

from ..errors import ShapeError


def check_ndim(layer: str, x: jax.Array, ndims: tuple[int, ...], layout: str) -> None:
    """Raise ShapeError unless ``x.ndim`` is one of ``ndims``; ``layout`` names the axes."""
    if x.ndim not in ndims:
        raise ShapeError(f"{layer} expected an input of shape {layout} but got shape {x.shape} "
                         f"({x.ndim} axes); reshape the input to {layout}")


def check_param_axis(module: nn.Module, name: str, axis: int, x: jax.Array) -> None:
    """If parameter ``name`` exists, its ``axis`` must equal the input's last-axis size.

    Called before ``self.param`` so a mismatched input gives a ShapeError that names the
    expected size instead of Flax's initializer-shape error.
    """
    if not module.has_variable("params", name):
        return
    expected = nn.meta.unbox(module.get_variable("params", name)).shape[axis]
    if x.shape[-1] != expected:
        raise ShapeError(
            f"{type(module).__name__} was initialised for inputs with {expected} features "
            f"(last axis) but got shape {x.shape}; pass inputs with {expected} features in the "
            f"last axis or initialise the model again for this input size")


def takes_train(module: Callable) -> bool:
    """Whether ``module``'s ``__call__`` has a ``train`` parameter (train/eval behaviour)."""
    fn = type(module).__call__ if isinstance(module, nn.Module) else module
    return "train" in inspect.signature(fn).parameters


def along_last_axis(v: jax.Array, ndim: int) -> jax.Array:
    """Reshape a per-feature vector ``(F,)`` to ``(1, ..., 1, F)`` with ``ndim`` axes.

    Explicit, so code stays valid under ``jax_numpy_rank_promotion="raise"``.
    """
    return v.reshape((1,) * (ndim - 1) + v.shape)
