"""Generator and discriminator blocks for image GANs in the DCGAN style (Radford et al. 2016):
the generator grows a small feature map by nearest-neighbour upsampling + convolution with
batch norm and ReLU; the discriminator shrinks the image with strided convolutions and
LeakyReLU."""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from ..errors import ConfigError
from .activations import get_activation
from .checks import check_ndim
from .conv import Conv, pair, with_batch_axis
from .dense import Dense
from .norm import BatchNorm
from .precision import Dtype, layer_dtypes


def upsample_nearest(x: jax.Array, factor: int | Sequence[int] = 2) -> jax.Array:
    """Nearest-neighbour upsampling: every pixel repeated ``factor`` times along height and
    width.

    Upsampling followed by a convolution avoids the checkerboard artefacts of transposed
    convolutions whose kernel size is not a multiple of the stride (Odena et al. 2016).

    Args:
      x: ``(batch, height, width, channels)`` or ``(height, width, channels)``.
      factor: int or (height, width) factors.
    Returns:
      ``(batch, height * fh, width * fw, channels)`` (or without the batch axis).
    """
    check_ndim("upsample_nearest", x, (3, 4), "(batch, height, width, channels)")
    fh, fw = pair(factor, "factor")
    return with_batch_axis(lambda b: jnp.repeat(jnp.repeat(b, fh, axis=1), fw, axis=2), x)


def doublings(size: int, smallest: int = 3) -> int:
    """How many times ``size`` halves exactly while staying at least ``smallest`` (8 -> 1,
    28 -> 2, 32 -> 3): the generator's upsampling stages and the discriminator's strided
    convolutions for that image size."""
    n = 0
    while size % 2 == 0 and size // 2 >= smallest:
        size, n = size // 2, n + 1
    return n


class DCGANGenerator(nn.Module):
    """Latent vector -> image.

    Dense -> reshape to ``(H / 2^s, W / 2^s, features[0])`` -> BN -> ReLU, then per stage
    ``upsample x2 -> 3x3 conv (features[i]) -> BN -> ReLU``, and a final 3x3 conv to the image
    channels with ``output_activation`` (sigmoid for images in [0, 1]). ``s = len(features) - 1``.

    Attributes:
      image_shape: ``(height, width, channels)`` of the output; height and width must be
        divisible by ``2^s``.
      features: channels of the base map and of each upsampling stage, e.g. ``(128, 64)``.
      output_activation: applied to the output ("sigmoid", "tanh", "identity", ...).
      dtype, param_dtype: computation and parameter dtypes of every layer (see
        :mod:`dlfun.nn.precision`); the image comes out in the computation dtype.

    Input ``(batch, latent_dim)``; output ``(batch, height, width, channels)``.
    """

    image_shape: tuple[int, int, int]
    features: Sequence[int] = (128, 64)
    output_activation: str = "sigmoid"
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, z: jax.Array, train: bool = False) -> jax.Array:
        check_ndim("DCGANGenerator", z, (2,), "(batch, latent_dim)")
        h, w, c = self.image_shape
        scale = 2 ** (len(self.features) - 1)
        if h % scale or w % scale:
            raise ConfigError(f"DCGANGenerator with {len(self.features) - 1} upsampling stages "
                              f"needs height and width divisible by {scale}, got {h}x{w}; use "
                              f"fewer features")
        p = layer_dtypes(self)
        x = Dense(h // scale * w // scale * self.features[0], use_bias=False, **p)(z)
        x = x.reshape(z.shape[0], h // scale, w // scale, self.features[0])
        x = nn.relu(BatchNorm(**p)(x, train=train))
        for f in self.features[1:]:
            x = Conv(f, 3, padding="SAME", use_bias=False, **p)(upsample_nearest(x))
            x = nn.relu(BatchNorm(**p)(x, train=train))
        x = Conv(c, 3, padding="SAME", **p)(x)
        return get_activation(self.output_activation)(x)


class DCGANDiscriminator(nn.Module):
    """Image -> one raw score (a logit for the cross-entropy losses).

    Per stage a 4x4 convolution with stride 2 ("SAME" padding, so each halves the size) and
    LeakyReLU(``negative_slope``); then flatten and a Dense layer to one output. No batch
    norm: the discriminator sees real and generated batches separately, and the R1 penalty
    needs per-example gradients that batch statistics would mix.

    Attributes:
      features: channels of each strided stage, e.g. ``(64, 128)``.
      negative_slope: LeakyReLU slope for negative inputs.
      dtype, param_dtype: computation and parameter dtypes of every layer (see
        :mod:`dlfun.nn.precision`); the score comes out in the computation dtype.

    Input ``(batch, height, width, channels)``; output ``(batch, 1)``.
    """

    features: Sequence[int] = (64, 128)
    negative_slope: float = 0.2
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        check_ndim("DCGANDiscriminator", x, (4,), "(batch, height, width, channels)")
        p = layer_dtypes(self)
        for f in self.features:
            x = Conv(f, 4, strides=2, padding="SAME", **p)(x)
            x = nn.leaky_relu(x, self.negative_slope)
        return Dense(1, **p)(x.reshape(x.shape[0], -1))
