"""Synthetic 2-D mixtures for generative models: Gaussians evenly spaced on a circle."""

import jax
import jax.numpy as jnp
import numpy as np

from ..errors import ConfigError


def ring_centers(num_modes: int = 8, radius: float = 2.0) -> np.ndarray:
    """Centres of ``num_modes`` Gaussians evenly spaced on a circle: ``(num_modes, 2)`` float32,
    the first at angle 0."""
    if num_modes < 1 or radius <= 0:
        raise ConfigError(f"a ring needs num_modes >= 1 and radius > 0, got {num_modes}, {radius}")
    angles = 2 * np.pi * np.arange(num_modes) / num_modes
    return (radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)).astype(np.float32)


def ring_of_gaussians(key: jax.Array, n: int, num_modes: int = 8, radius: float = 2.0,
                      std: float = 0.02) -> tuple[np.ndarray, np.ndarray]:
    """``n`` samples of the classic GAN test distribution: an equal mixture of isotropic
    Gaussians (standard deviation ``std``) centred on a circle of ``radius``.

    Returns:
      points ``(n, 2)`` float32 and the component of each ``(n,)`` int32.
    """
    if n < 1 or std <= 0:
        raise ConfigError(f"need n >= 1 samples and std > 0, got n={n}, std={std}")
    centers = jnp.asarray(ring_centers(num_modes, radius))
    c_key, e_key = jax.random.split(key)
    component = jax.random.randint(c_key, (n,), 0, num_modes)
    points = centers[component] + std * jax.random.normal(e_key, (n, 2))
    return np.asarray(points, np.float32), np.asarray(component, np.int32)
