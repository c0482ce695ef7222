"""Activation functions by name, as the lecture slides list them."""

from typing import Callable

import jax
import jax.numpy as jnp

from ..errors import ConfigError

Activation = Callable[[jax.Array], jax.Array]


def identity(x: jax.Array) -> jax.Array:
    """f(x) = x."""
    return x


ACTIVATIONS: dict[str, Activation] = {
    "identity": identity,
    "sigmoid": jax.nn.sigmoid,
    "relu": jax.nn.relu,
    "softplus": jax.nn.softplus,
    "tanh": jnp.tanh,
    "leaky_relu": jax.nn.leaky_relu,
    "gelu": jax.nn.gelu,
    "elu": jax.nn.elu,
}


def get_activation(activation: str | Activation) -> Activation:
    """Resolve an activation given by name (see ``ACTIVATIONS``) or as a callable.

    Raises:
      ConfigError: for an unknown name, listing the known ones.
    """
    if callable(activation):
        return activation
    try:
        return ACTIVATIONS[activation]
    except KeyError:
        raise ConfigError(f"unknown activation {activation!r}; choose one of "
                          f"{', '.join(sorted(ACTIVATIONS))} or pass a function") from None
