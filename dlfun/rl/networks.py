"""Q-networks: an MLP for vector observations and the convolutional Q-network of Nature DQN.

Both map a batch of observations to one Q-value per action, ``(batch, num_actions)``, with
``dlfun.nn`` layers (the parameter names and numbers of Flax's ``Dense`` and ``Conv``). Both take
``dtype`` (computation dtype of the convolutions and dense layers; None: float32, as the
observations are cast to it) and ``param_dtype`` (default float32), see
:mod:`dlfun.nn.precision`; the Q-values come out in the computation dtype.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from ..nn.conv import Conv
from ..nn.dense import Dense
from ..nn.precision import Dtype, layer_dtypes

Array = jax.Array

# (features, kernel size, stride) of Mnih et al. (2015), "Human-level control through deep RL".
NATURE_CONVS: tuple[tuple[int, int, int], ...] = ((32, 8, 4), (64, 4, 2), (64, 3, 1))
# MinAtar's network (Young & Tian, 2019): one 3x3 conv with 16 filters, dense 128.
MINATAR_CONVS: tuple[tuple[int, int, int], ...] = ((16, 3, 1),)


class MLPQNetwork(nn.Module):
    """ReLU MLP Q-network.

    Attributes:
      num_actions: number of discrete actions.
      hidden: widths of the hidden layers.
      dtype, param_dtype: computation and parameter dtypes of every layer.
    """

    num_actions: int
    hidden: Sequence[int] = (120, 84)
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, obs: Array) -> Array:
        """``obs`` ``(batch, ...)`` (flattened after the batch axis) -> ``(batch, num_actions)``."""
        x = obs.reshape(obs.shape[0], -1).astype(jnp.float32)
        p = layer_dtypes(self)
        for width in self.hidden:
            x = nn.relu(Dense(width, **p)(x))
        return Dense(self.num_actions, **p)(x)


class ConvQNetwork(nn.Module):
    """Convolutional Q-network: ReLU convs (VALID padding), one ReLU dense layer, linear head.

    The defaults are the Nature DQN network for ``(84, 84, 4)`` uint8 Atari frames: conv 32
    8x8 stride 4, conv 64 4x4 stride 2, conv 64 3x3 stride 1, dense 512, inputs scaled by
    1/255. :func:`minatar_q_network` gives the small MinAtar variant.

    Attributes:
      num_actions: number of discrete actions.
      convs: ``(features, kernel, stride)`` per conv layer.
      dense: width of the hidden dense layer.
      input_scale: factor applied to the float32-cast input (1/255 for uint8 frames).
      dtype, param_dtype: computation and parameter dtypes of every layer.
    """

    num_actions: int
    convs: Sequence[tuple[int, int, int]] = NATURE_CONVS
    dense: int = 512
    input_scale: float = 1.0 / 255.0
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, obs: Array) -> Array:
        """``obs`` ``(batch, height, width, channels)`` -> ``(batch, num_actions)``."""
        x = obs.astype(jnp.float32) * self.input_scale
        p = layer_dtypes(self)
        for features, kernel, stride in self.convs:
            # the plain lax lowering, as Flax's Conv that this network was first written with
            conv = Conv(features, kernel, stride, padding="VALID", impl="xla", **p)
            x = nn.relu(conv(x))
        x = x.reshape(x.shape[0], -1)  # (batch, h * w * c)
        x = nn.relu(Dense(self.dense, **p)(x))
        return Dense(self.num_actions, **p)(x)


def nature_q_network(num_actions: int, **dtypes: Dtype) -> ConvQNetwork:
    """The Nature DQN Q-network for ``(84, 84, 4)`` uint8 frame stacks (``dtypes``: its
    ``dtype``/``param_dtype``)."""
    return ConvQNetwork(num_actions, **dtypes)


def minatar_q_network(num_actions: int, **dtypes: Dtype) -> ConvQNetwork:
    """MinAtar's Q-network (conv 16 3x3, dense 128) for ``(10, 10, C)`` 0/1 observations
    (``dtypes``: its ``dtype``/``param_dtype``)."""
    return ConvQNetwork(num_actions, convs=MINATAR_CONVS, dense=128, input_scale=1.0, **dtypes)
