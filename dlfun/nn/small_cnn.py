"""A small convolutional classifier whose penultimate layer doubles as a feature extractor
(for classifier-feature Fréchet distances of generated images)."""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from .checks import check_ndim
from .conv import Conv
from .dense import Dense
from .pooling import max_pool
from .precision import Dtype, layer_dtypes


class SmallCNN(nn.Module):
    """``[3x3 conv (SAME) -> ReLU -> 2x2 max pool] * len(features) -> Dense(hidden) -> ReLU
    -> Dense(num_classes)``.

    Attributes:
      num_classes: number of output logits.
      features: channels of each conv stage; each pool halves height and width (floor).
      hidden: width of the penultimate layer (the feature vector of :meth:`embed`).
      dtype, param_dtype: computation and parameter dtypes of every layer (see
        :mod:`dlfun.nn.precision`).

    Input ``(batch, height, width, channels)``; ``__call__`` gives logits
    ``(batch, num_classes)``, ``embed`` the penultimate activations ``(batch, hidden)``
    (call it with ``model.apply(variables, x, method=SmallCNN.embed)``).
    """

    num_classes: int = 10
    features: Sequence[int] = (32, 64)
    hidden: int = 128
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    def setup(self):
        p = layer_dtypes(self)
        self.convs = [Conv(f, 3, padding="SAME", **p) for f in self.features]
        self.penultimate = Dense(self.hidden, **p)
        self.head = Dense(self.num_classes, **p)

    def embed(self, x: jax.Array) -> jax.Array:
        """Penultimate features ``(batch, hidden)`` (after the ReLU)."""
        check_ndim("SmallCNN", x, (4,), "(batch, height, width, channels)")
        for conv in self.convs:
            x = max_pool(nn.relu(conv(x)), 2)
        return nn.relu(self.penultimate(x.reshape(x.shape[0], -1)))

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.head(self.embed(x))
