"""The small networks the parallel schemes are demonstrated and checked on.

Each names the logical axes of its parameters and activations (see :mod:`.rules`), so one
definition serves single-device, data-parallel, tensor-parallel, FSDP and hybrid runs.
``axis_name`` is for ``shard_map``/``pmap`` data parallelism: batch-norm statistics and dropout
masks then span the whole global batch.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax

from ..nn import BatchNorm, Conv, Dense, Dropout, max_pool
from .rules import BATCH, CLASSES, CONV_BATCH, EMBED, MLP_HIDDEN, constrain


class SmallCNN(nn.Module):
    """Conv (3x3, SAME) -> [batch norm] -> ReLU -> 2x2 max pool, per entry of ``channels``;
    then flatten -> Dense(hidden) -> ReLU -> [dropout] -> Dense(classes).

    Attributes:
      channels: filters of each conv stage.
      hidden: width of the fully-connected hidden layer.
      classes: number of outputs.
      batch_norm: batch norm after each convolution (then the convolution has no bias).
      dropout_rate: dropout on the hidden layer (per-example masks: any device split draws
        the masks one device would).
      axis_name: the ``shard_map``/``pmap`` axis the batch is split over, else None.

    Input ``(batch, height, width, channels_in)``, height and width divisible by
    ``2 ** len(channels)``; output ``(batch, classes)`` logits. The convolutional part's batch
    axis is ``conv_batch``, the fully-connected part's ``batch``; the hybrid scheme maps the
    first over every device and the second over ``data`` only.
    """

    channels: Sequence[int] = (16, 32)
    hidden: int = 64
    classes: int = 10
    batch_norm: bool = True
    dropout_rate: float = 0.0
    axis_name: str | None = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = constrain(x, (CONV_BATCH, None, None, None))
        for c in self.channels:
            x = Conv(c, 3, padding="SAME", use_bias=not self.batch_norm)(x)
            if self.batch_norm:
                x = BatchNorm(axis_name=self.axis_name)(x, train=train)
            x = max_pool(nn.relu(constrain(x, (CONV_BATCH, None, None, None))), 2)
        x = x.reshape(x.shape[0], -1)  # (batch, h * w * c)
        x = constrain(x, (BATCH, None))  # the hybrid scheme's re-layout point
        x = nn.relu(Dense(self.hidden, kernel_axes=(EMBED, MLP_HIDDEN))(x))
        x = constrain(x, (BATCH, MLP_HIDDEN))
        x = Dropout(self.dropout_rate, per_example=True, axis_name=self.axis_name)(x, train)
        return constrain(Dense(self.classes, kernel_axes=(MLP_HIDDEN, CLASSES))(x),
                         (BATCH, None))


class SmallMLP(nn.Module):
    """Dense -> [batch norm] -> ReLU -> [dropout] per hidden layer, then Dense(classes).

    Attributes:
      hidden: hidden layer sizes.
      classes: number of outputs.
      batch_norm, dropout_rate, axis_name: as in :class:`SmallCNN`.

    Input ``(batch, features)`` (or images, flattened here) -> ``(batch, classes)`` logits.
    """

    hidden: Sequence[int] = (64, 32)
    classes: int = 10
    batch_norm: bool = True
    dropout_rate: float = 0.0
    axis_name: str | None = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = constrain(x.reshape(x.shape[0], -1), (BATCH, None))
        for width in self.hidden:
            x = Dense(width, use_bias=not self.batch_norm)(x)
            if self.batch_norm:
                x = BatchNorm(axis_name=self.axis_name)(x, train=train)
            x = nn.relu(x)
            x = Dropout(self.dropout_rate, per_example=True, axis_name=self.axis_name)(x, train)
        return Dense(self.classes)(x)


class ShardedMLP(nn.Module):
    """Megatron-style MLP blocks: per entry of ``blocks``, Dense(hidden) split by columns
    (``embed -> mlp``) -> ReLU -> Dense(width) split by rows (``mlp -> embed``), so each block
    needs one all-reduce under tensor parallelism; the last block's second matrix produces
    the ``classes`` logits. ReLU between blocks.

    Attributes:
      blocks: hidden size of each block.
      width: features between blocks.
      classes: number of outputs.

    Input ``(batch, features)`` (or images, flattened here) -> ``(batch, classes)``.
    """

    blocks: Sequence[int] = (256, 256)
    width: int = 64
    classes: int = 10

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = constrain(x.reshape(x.shape[0], -1), (BATCH, None))
        for i, hidden in enumerate(self.blocks):
            last = i == len(self.blocks) - 1
            h = nn.relu(Dense(hidden, kernel_axes=(EMBED, MLP_HIDDEN))(x))
            h = constrain(h, (BATCH, MLP_HIDDEN))
            out_axis = CLASSES if last else EMBED
            x = Dense(self.classes if last else self.width, kernel_axes=(MLP_HIDDEN, out_axis))(h)
            x = constrain(x, (BATCH, None))
            if not last:
                x = nn.relu(x)
        return x
