"""Keyed image augmentation that runs inside a compiled step (pure ``jax.numpy``/``lax``).

Every function takes an explicit key and an image batch ``(batch, height, width, channels)``
(or one image ``(height, width, channels)``) and returns an array of the same shape and
dtype. There are no host round-trips, so the functions can be called inside a ``jit``-ed
training step, ``vmap``-ed over keys (ensembles) or over examples, and sharded.

Typical use in a CIFAR step::

    aug_key, dropout_key = jax.random.split(jax.random.fold_in(key, state.step))
    images = augment_cifar(aug_key, batch["image"])
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from dlfun.errors import ConfigError, ShapeError


def _as_batch(images: jax.Array, name: str) -> tuple[jax.Array, bool]:
    """Return ``(batch, H, W, C)`` images and whether a single ``(H, W, C)`` image was given."""
    if images.ndim == 3:
        return images[None], True
    if images.ndim != 4:
        raise ShapeError(f"{name} expects images of shape (batch, height, width, channels) or "
                         f"(height, width, channels), got shape {images.shape}: reshape the input")
    return images, False


def _check_padding(padding: int) -> None:
    """Padding must be a non-negative Python int (it fixes the output's static shape)."""
    if not isinstance(padding, int) or isinstance(padding, bool) or padding < 0:
        raise ConfigError(f"crop padding must be a non-negative integer, got {padding!r}")


def crop_windows(images: jax.Array, offsets: jax.Array, padding: int) -> jax.Array:
    """Zero-pad each image by ``padding`` on all four sides and cut a window at ``offsets``.

    Args:
      images: ``(batch, height, width, channels)``.
      offsets: ``(batch, 2)`` integer (row, column) of each window's top-left corner in the
        padded image, each in ``0..2*padding`` (``padding, padding`` = the original image).
      padding: a non-negative Python int.

    Returns:
      ``(batch, height, width, channels)``, same dtype as ``images``.
    """
    _check_padding(padding)
    images, single = _as_batch(images, "crop_windows")
    _, height, width, channels = images.shape
    padded = jnp.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    zero = jnp.zeros((), offsets.dtype)

    def window(image, offset):  # (H+2p, W+2p, C), (2,) -> (H, W, C)
        return lax.dynamic_slice(image, (offset[0], offset[1], zero), (height, width, channels))

    out = jax.vmap(window)(padded, offsets)
    return out[0] if single else out


def random_crop(key: jax.Array, images: jax.Array, padding: int = 4) -> jax.Array:
    """Random crop with zero padding: pad by ``padding``, cut back to the original size.

    Each example gets its own offset, uniform over the ``(2*padding + 1)**2`` windows.
    Zero is the padding value, which is the mean for standardised images.

    Args:
      key: a PRNG key (``jax.random.key``).
      images: ``(batch, height, width, channels)`` or ``(height, width, channels)``.
      padding: pixels added on each side (4 is standard for 32x32 CIFAR).

    Returns:
      An array of the same shape and dtype as ``images``.
    """
    _check_padding(padding)
    batch, single = _as_batch(images, "random_crop")
    offsets = jax.random.randint(key, (batch.shape[0], 2), 0, 2 * padding + 1)  # (B, 2)
    out = crop_windows(batch, offsets, padding)
    return out[0] if single else out


def random_flip_left_right(key: jax.Array, images: jax.Array,
                           probability: float = 0.5) -> jax.Array:
    """Mirror each image horizontally (along width) with the given probability.

    Args:
      key: a PRNG key.
      images: ``(batch, height, width, channels)`` or ``(height, width, channels)``.
      probability: chance that an example is flipped.

    Returns:
      An array of the same shape and dtype as ``images``; each example is either unchanged
      or exactly mirrored.
    """
    batch, single = _as_batch(images, "random_flip_left_right")
    flip = jax.random.bernoulli(key, probability, (batch.shape[0],))  # (B,)
    out = jnp.where(flip[:, None, None, None], batch[:, :, ::-1, :], batch)
    return out[0] if single else out


def augment_cifar(key: jax.Array, images: jax.Array, padding: int = 4) -> jax.Array:
    """The standard CIFAR augmentation: random crop with ``padding``, then random flip.

    Args:
      key: a PRNG key; split internally into independent crop and flip keys.
      images: ``(batch, 32, 32, 3)`` float (any size works), or one ``(32, 32, 3)`` image.
      padding: zero padding on each side before cropping.

    Returns:
      An array of the same shape and dtype as ``images``.
    """
    crop_key, flip_key = jax.random.split(key)
    return random_flip_left_right(flip_key, random_crop(crop_key, images, padding))
