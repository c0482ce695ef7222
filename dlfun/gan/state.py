"""The two players of a GAN held together as one pytree."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

from ..train.state import TrainState, create_train_state


class GANState(struct.PyTreeNode):
    """Generator and discriminator, each with its own parameters and optimizer state.

    Attributes:
      gen: the generator's ``TrainState`` (its ``step`` counts generator updates).
      disc: the discriminator's ``TrainState`` (its ``step`` counts discriminator updates,
        ``d_steps`` per GAN step).
      step: int32 scalar, GAN steps taken (one = ``d_steps`` discriminator updates then one
        generator update).
      bad_step: int32 scalar, the GAN step whose losses or gradients were first non-finite,
        or -1 (see :func:`dlfun.train.step.guard_nonfinite`).
    """

    gen: TrainState
    disc: TrainState
    step: jax.Array
    bad_step: jax.Array


def create_gan_state(generator: nn.Module, discriminator: nn.Module,
                     gen_tx: optax.GradientTransformation, disc_tx: optax.GradientTransformation,
                     key: jax.Array, latent_dim: int, sample_real: jax.Array) -> GANState:
    """Initialise both players.

    Args:
      generator: maps latents ``(batch, latent_dim)`` to samples shaped like the data.
      discriminator: maps samples ``(batch, ...)`` to one raw score each ``(batch, 1)``.
      gen_tx, disc_tx: each player's optimizer.
      key: initialisation key (split between the players).
      latent_dim: size of the generator's input.
      sample_real: an example data batch ``(batch, ...)`` (only shape and dtype matter).

    Returns:
      a :class:`GANState` with ``step = 0`` and ``bad_step = -1``.
    """
    g_key, d_key = jax.random.split(key)
    gen = create_train_state(generator, gen_tx, g_key, jnp.zeros((1, latent_dim), jnp.float32))
    disc = create_train_state(discriminator, disc_tx, d_key, sample_real)
    return GANState(gen=gen, disc=disc, step=jnp.zeros((), jnp.int32),
                    bad_step=jnp.full((), -1, jnp.int32))
