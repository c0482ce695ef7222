"""Autoencoders: an encoder to a latent code and a decoder back, as one module whose encoder
can be lifted into a classifier (fine-tuning what was learned without labels)."""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from ..errors import ConfigError
from .checks import check_ndim
from .conv import Conv
from .dense import Dense
from .gan_blocks import upsample_nearest
from .precision import Dtype


class ConvEncoder(nn.Module):
    """``[3x3 conv, stride 2, SAME -> ReLU] * len(features) -> flatten -> Dense(latent)``.

    Attributes:
      latent: size of the code.
      features: channels of each stage; each halves height and width (rounding up).

    Input ``(batch, height, width, channels)`` -> code ``(batch, latent)``.
    Parameters: ``Σ_i (9 * c_{i-1} * c_i + c_i) + (h' * w' * c_last) * latent + latent``.
    """

    latent: int
    features: Sequence[int] = (16, 32)
    dtype: Dtype | None = None
    """Computation dtype of the convolutions and the dense layer (see :mod:`dlfun.nn.precision`)."""
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        check_ndim("ConvEncoder", x, (4,), "(batch, height, width, channels)")
        for f in self.features:
            x = nn.relu(Conv(f, 3, strides=2, padding="SAME", **self._dtypes)(x))
        return Dense(self.latent, **self._dtypes)(x.reshape(x.shape[0], -1))

    @property
    def _dtypes(self) -> dict:
        return dict(dtype=self.dtype, param_dtype=self.param_dtype)


class ConvDecoder(nn.Module):
    """``Dense -> (h / 2^S, w / 2^S, features[0]) -> [2x nearest upsampling -> 3x3 conv ->
    ReLU] per later stage -> 2x upsampling -> 3x3 conv to the channels -> sigmoid``, with S =
    ``len(features)`` (the mirror of :class:`ConvEncoder`; upsampling then convolving avoids
    transposed convolutions' checkerboard artefacts).

    Attributes:
      image_shape: ``(height, width, channels)`` of the output; height and width must be
        multiples of ``2 ** len(features)``.
      features: channels of each stage, the smallest maps first.

    Input ``(batch, latent)`` -> images ``(batch, height, width, channels)`` in (0, 1).
    """

    image_shape: Sequence[int]
    features: Sequence[int] = (32, 16)
    dtype: Dtype | None = None
    """Computation dtype of the layers; the output image is float32 whatever it is."""
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        check_ndim("ConvDecoder", z, (2,), "(batch, latent)")
        h, w, c = self.image_shape
        scale = 2 ** len(self.features)
        if h % scale or w % scale:
            raise ConfigError(f"ConvDecoder: an image of {h}x{w} is not a multiple of "
                              f"{scale} (2 ** {len(self.features)} stages); use fewer stages")
        dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = Dense(h // scale * w // scale * self.features[0], **dtypes)(z)
        x = nn.relu(x).reshape(z.shape[0], h // scale, w // scale, self.features[0])
        for f in self.features[1:]:
            x = nn.relu(Conv(f, 3, padding="SAME", **dtypes)(upsample_nearest(x, 2)))
        x = Conv(c, 3, padding="SAME", **dtypes)(upsample_nearest(x, 2))
        return nn.sigmoid(x.astype(jnp.float32))  # the reconstruction loss in float32


class Autoencoder(nn.Module):
    """``decoder(encoder(x))``; parameters ``{"encoder": ..., "decoder": ...}``.

    Attributes:
      encoder: a module mapping inputs ``(batch, ...)`` to codes ``(batch, latent)``.
      decoder: a module mapping codes back to inputs' shape.

    ``encode`` gives the codes: ``model.apply(variables, x, method=Autoencoder.encode)``.
    """

    encoder: nn.Module
    decoder: nn.Module

    def encode(self, x: jax.Array) -> jax.Array:
        """The latent codes ``(batch, latent)``."""
        return self.encoder(x)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.decoder(self.encoder(x))


class EncoderClassifier(nn.Module):
    """``Dense(num_classes)`` on an encoder's code: parameters ``{"encoder": ..., "head":
    ...}``, so an :class:`Autoencoder`'s ``"encoder"`` parameters drop in (see
    ``start_params`` of :func:`dlfun.runs.training.train_supervised`).

    Input as the encoder's -> logits ``(batch, num_classes)``.
    """

    encoder: nn.Module
    num_classes: int
    dtype: Dtype | None = None
    """Computation dtype of the head (the encoder has its own)."""
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return Dense(self.num_classes, name="head", dtype=self.dtype,
                     param_dtype=self.param_dtype)(self.encoder(x))
