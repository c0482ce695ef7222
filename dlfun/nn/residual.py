"""Residual block z -> g(z + f(z)) (He et al. 2016)."""

from typing import Callable

import flax.linen as nn
import jax

from ..errors import ShapeError
from .activations import Activation, get_activation
from .checks import takes_train


class Residual(nn.Module):
    """Wraps a module ``f``: output g(shortcut(z) + f(z)).

    Attributes:
      f: the residual branch, any Linen module mapping z to an array of z's shape (or of the
        shortcut's output shape).
      activation: g, applied after the sum ("relu" as in ResNet; "identity" for none).
      shortcut: optional projection of z (e.g. a 1x1 strided Conv) for when ``f`` changes the
        shape; identity when ``None``.

    ``train`` is passed to ``f`` (and ``shortcut``) when they accept it.
    """

    f: nn.Module
    activation: str | Activation = "relu"
    shortcut: nn.Module | None = None

    @nn.compact
    def __call__(self, z: jax.Array, train: bool = False) -> jax.Array:
        fz = _call(self.f, z, train)
        skip = z if self.shortcut is None else _call(self.shortcut, z, train)
        if fz.shape != skip.shape:
            raise ShapeError(f"Residual branch output {fz.shape} does not match the shortcut "
                             f"{skip.shape}; give Residual a shortcut projection "
                             f"(e.g. a 1x1 Conv with the branch's stride and channels)")
        return get_activation(self.activation)(skip + fz)


def _call(module: Callable, z: jax.Array, train: bool) -> jax.Array:
    """Call ``module(z, train=train)`` if it takes ``train``, else ``module(z)``."""
    return module(z, train=train) if takes_train(module) else module(z)
