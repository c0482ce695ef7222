"""Latent noise, sampling from a trained generator, and latent-space interpolation."""

import flax.linen as nn
import jax
import jax.numpy as jnp

from ..nn.precision import at_least_float32
from ..train.state import TrainState
from ..train.step import apply_model


def sample_latent(key: jax.Array, n: int, latent_dim: int) -> jax.Array:
    """Standard normal latents ``(n, latent_dim)``."""
    return jax.random.normal(key, (n, latent_dim), jnp.float32)


def generate(generator: nn.Module, gen: TrainState, z: jax.Array) -> jax.Array:
    """Samples ``(n, ...)`` for latents ``z (n, latent_dim)`` in eval mode (batch norm uses its
    running statistics, so a sample does not depend on the rest of its batch); at least
    float32 also from a bfloat16 generator, for the scores and plots that read them."""
    return at_least_float32(apply_model(generator, gen, gen.params, z, train=False)[0])


def interpolate_latents(z0: jax.Array, z1: jax.Array, num: int) -> jax.Array:
    """Spherical interpolation between latents ``z0`` and ``z1`` (each ``(rows, latent_dim)``):
    ``(rows, num, latent_dim)``, the ends included.

    Spherical rather than linear because a straight line between two Gaussian latents passes
    through the low-norm centre, where the generator saw almost no training latents.
    """
    t = jnp.linspace(0.0, 1.0, num)[None, :, None]  # (1, num, 1)
    a, b = z0[:, None, :], z1[:, None, :]  # (rows, 1, latent_dim)
    cos = jnp.sum(z0 * z1, -1) / (jnp.linalg.norm(z0, axis=-1) * jnp.linalg.norm(z1, axis=-1))
    omega = jnp.arccos(jnp.clip(cos, -1.0, 1.0))[:, None, None]  # (rows, 1, 1)
    sin = jnp.sin(omega)
    safe = jnp.where(sin > 1e-6, sin, 1.0)
    slerp = (jnp.sin((1 - t) * omega) * a + jnp.sin(t * omega) * b) / safe
    lerp = (1 - t) * a + t * b  # (almost) parallel latents: slerp's limit
    return jnp.where(sin > 1e-6, slerp, lerp)
