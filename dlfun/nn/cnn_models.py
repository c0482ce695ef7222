"""Convolutional classifiers: LeNet-5, a small VGG-style net, ResNet-20 and its plain twin.

Every model maps images ``(batch, height, width, channels)`` to logits ``(batch,
num_classes)``, takes ``train`` (batch norm uses batch statistics and dropout is active only
when ``train=True``), and is split in two methods so class activation maps can be computed:

* ``features(x, train)``: the last convolutional feature maps ``(batch, h, w, k)``;
* ``classify(features, train)``: the rest of the network, features -> logits.

``model(x, train)`` is ``classify(features(x, train), train)``. Call a part with
``model.apply(variables, x, method="features")``. ``model.first_conv_path`` names the first
convolution in the parameters (its kernel holds the "first-layer filters"),
``model.gap_dense_path`` the dense layer after global average pooling (None without one), and
the activations worth looking at are sown into the ``"intermediates"`` collection
(``apply(..., mutable=["intermediates"])``).

ResNet-20 and Plain-20 end in global average pooling + one dense layer, the head that class
activation maps (Zhou et al. 2016) need; so does :class:`VGGSmall` with ``head="gap"``.
LeNet-5 and the classic VGG head (flatten + dense layers) have no such head; for them
:func:`dlfun.viz.cam.class_activation_maps` uses Grad-CAM, which equals CAM on a GAP head.

Every model and block takes ``dtype`` (computation dtype of its convolutions and dense layers;
None: the input's) and ``param_dtype`` (default float32) and passes them to its layers (see
:mod:`dlfun.nn.precision`); batch-norm statistics stay float32 and the logits come out in the
computation dtype.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from ..errors import ConfigError
from .activations import get_activation
from .conv import Conv
from .dense import Dense
from .dropout import Dropout
from .norm import BatchNorm
from .pooling import avg_pool, global_avg_pool, max_pool
from .precision import Dtype, layer_dtypes
from .residual import Residual

# He et al. (2015) initialisation for ReLU networks, as the ResNet paper uses: it keeps the
# activations' variance from layer to layer.
HE_NORMAL = nn.initializers.he_normal()
POOLS = {"max": max_pool, "avg": avg_pool}


def _flatten(x: jax.Array) -> jax.Array:
    return x.reshape(x.shape[0], -1)  # (B, H, W, C) -> (B, H*W*C)


class LeNet5(nn.Module):
    """LeNet-5 (LeCun et al. 1998) with today's defaults: ReLU and max pooling.

    conv1 5x5x6 -> pool 2 -> conv2 5x5x16 -> pool 2 -> dense 120 -> dense 84 -> dense classes.
    Convolutions are "VALID" as in the paper, so the design input is 32x32 (MNIST's 28x28
    padded by 2; the 8x8 digits upsampled by 4). C3 is fully connected to S2 (the paper's
    partial connection table saved compute on 1998 hardware). No dropout (the design has none).

    Attributes:
      num_classes: number of logits.
      activation: "relu" (default) or the paper's "tanh" (any name of ``ACTIVATIONS``).
      pooling: "max" (default) or the paper's "avg" (subsampling).
      dtype, param_dtype: computation and parameter dtypes of every layer.

    Input ``(batch, H, W, C)``, H and W >= 16 (32 by design); output ``(batch, num_classes)``.
    Features: conv2's activations ``(batch, (H-12)/2, (W-12)/2, 16)`` (10x10 for 32x32).
    Parameters (32x32 input, C channels): ``(25C*6 + 6) + (150*16 + 16) + (400*120 + 120) +
    (120*84 + 84) + (84*classes + classes)``: 61,706 for C = 1 and 10 classes.
    """

    num_classes: int = 10
    activation: str = "relu"
    pooling: str = "max"
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    def setup(self):
        if self.pooling not in POOLS:
            raise ConfigError(f"LeNet5 pooling must be 'max' or 'avg', got {self.pooling!r}")
        p = layer_dtypes(self)
        self.conv1 = Conv(6, 5, **p)
        self.conv2 = Conv(16, 5, **p)
        self.fc1, self.fc2 = Dense(120, **p), Dense(84, **p)
        self.fc3 = Dense(self.num_classes, **p)

    first_conv_path = ("conv1",)
    gap_dense_path = None
    depth = 5  # weighted layers: 2 convolutions + 3 dense

    def features(self, x: jax.Array, train: bool = False) -> jax.Array:
        """``(batch, H, W, C)`` -> conv2 activations ``(batch, (H-12)/2, (W-12)/2, 16)``."""
        act, pool = get_activation(self.activation), POOLS[self.pooling]
        x = act(self.conv1(x))
        self.sow("intermediates", "relu1", x)
        x = pool(x, 2)
        x = act(self.conv2(x))
        self.sow("intermediates", "relu2", x)
        return x

    def classify(self, feats: jax.Array, train: bool = False) -> jax.Array:
        """conv2 activations -> logits ``(batch, num_classes)``."""
        act = get_activation(self.activation)
        x = _flatten(POOLS[self.pooling](feats, 2))
        return self.fc3(act(self.fc2(act(self.fc1(x)))))

    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        return self.classify(self.features(x, train), train)


class ConvBN(nn.Module):
    """Conv (no bias: batch norm's shift replaces it) -> BatchNorm, optionally -> ReLU.

    Input ``(batch, H, W, C)`` -> ``(batch, ceil(H/strides), ceil(W/strides), features)`` for
    odd ``kernel_size`` with padding ``kernel_size // 2``.
    Parameters: ``k*k*C*features + 2*features``.
    """

    features: int
    kernel_size: int = 3
    strides: int = 1
    relu: bool = True
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        p = layer_dtypes(self)
        x = Conv(self.features, self.kernel_size, self.strides, padding=self.kernel_size // 2,
                 use_bias=False, kernel_init=HE_NORMAL, name="conv", **p)(x)
        x = BatchNorm(name="bn", **p)(x, train=train)
        return nn.relu(x) if self.relu else x


class VGGSmall(nn.Module):
    """A small VGG-style net (Simonyan & Zisserman 2014): blocks of 3x3 convolutions, each
    block ending in 2x2 max pooling, then the classifier head.

    Each convolution is followed by batch norm and ReLU (later VGG variants; it lets the net
    train without the paper's staged initialisation).

    Attributes:
      num_classes: number of logits.
      widths: channels of each block (the spatial size halves after each).
      convs_per_block: 3x3 convolutions per block.
      head: "fc", VGG's head made small: flatten -> dense ``hidden`` -> ReLU -> dropout ->
        dense classes (VGG has two 4096-wide such layers, each followed by dropout 0.5); or
        "gap": global average pooling -> dense classes (Zhou et al. 2016's VGG-GAP, the head
        that CAM needs).
      hidden: width of the "fc" head's hidden layer.
      dropout_rate: dropout before the last dense layer of the "fc" head.
      dtype, param_dtype: computation and parameter dtypes of every layer.

    Input ``(batch, H, W, C)``, H and W at least ``2**B`` for B blocks (the sizes below assume
    multiples of it; others round down at each pooling); output ``(batch, num_classes)``. Features: the last block's activations before its pooling,
    ``(batch, H / 2**(B-1), W / 2**(B-1), widths[-1])`` for B blocks.
    Parameters: per conv ``9*c_in*c_out + 2*c_out``; "fc" head
    ``(H*W/4**B * widths[-1] + 1) * hidden + (hidden + 1) * classes``; "gap" head
    ``(widths[-1] + 1) * classes``.
    """

    num_classes: int = 10
    widths: Sequence[int] = (32, 64, 128)
    convs_per_block: int = 2
    head: str = "fc"
    hidden: int = 256
    dropout_rate: float = 0.5
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    def setup(self):
        if self.head not in ("fc", "gap"):
            raise ConfigError(f"VGGSmall head must be 'fc' or 'gap', got {self.head!r}")
        p = layer_dtypes(self)
        self.convs = [ConvBN(w, **p) for w in self.widths for _ in range(self.convs_per_block)]
        self.out = Dense(self.num_classes, **p)
        if self.head == "fc":
            self.fc = Dense(self.hidden, **p)
            self.drop = Dropout(self.dropout_rate)

    first_conv_path = ("convs_0", "conv")

    @property
    def gap_dense_path(self) -> tuple[str, ...] | None:
        return ("out",) if self.head == "gap" else None

    @property
    def depth(self) -> int:
        """Weighted layers: the convolutions and the head's dense layers."""
        return len(self.widths) * self.convs_per_block + (2 if self.head == "fc" else 1)

    def features(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Images -> the last block's activations before its pooling."""
        n = self.convs_per_block
        for i, conv in enumerate(self.convs):
            if i and i % n == 0:
                x = max_pool(x, 2)
            x = conv(x, train)
            if (i + 1) % n == 0:
                self.sow("intermediates", f"block{(i + 1) // n}", x)
        return x

    def classify(self, feats: jax.Array, train: bool = False) -> jax.Array:
        """Features -> logits ``(batch, num_classes)``."""
        if self.head == "gap":
            return self.out(global_avg_pool(feats))
        x = nn.relu(self.fc(_flatten(max_pool(feats, 2))))
        return self.out(self.drop(x, train=train))

    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        return self.classify(self.features(x, train), train)


class BasicBlock(nn.Module):
    """ResNet's basic block: relu(shortcut(x) + bn(conv(relu(bn(conv(x)))))).

    The shortcut is the identity, or a projection (1x1 convolution with the block's stride +
    batch norm; He et al.'s option B) where the block changes the shape: a stride > 1 or a
    different channel count. With ``shortcut=False`` the block is plain: relu(branch(x)).

    Input ``(batch, H, W, C)`` -> ``(batch, H/strides, W/strides, features)``.
    Parameters: ``9*C*f + 2f + 9*f*f + 2f`` (+ ``C*f + 2f`` with the projection).
    """

    features: int
    strides: int = 1
    shortcut: bool = True
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        p = layer_dtypes(self)
        branch = _Branch(self.features, self.strides, name="branch", **p)
        if not self.shortcut:
            return nn.relu(branch(x, train))
        projection = None
        if self.strides != 1 or x.shape[-1] != self.features:
            projection = ConvBN(self.features, 1, self.strides, relu=False, name="projection",
                                **p)
        return Residual(branch, "relu", projection)(x, train=train)


class _Branch(nn.Module):
    """The residual branch f(x): conv-bn-relu-conv-bn."""

    features: int
    strides: int = 1
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        p = layer_dtypes(self)
        x = ConvBN(self.features, 3, self.strides, name="a", **p)(x, train)
        return ConvBN(self.features, 3, relu=False, name="b", **p)(x, train)


class ResNet20(nn.Module):
    """ResNet-20 for 32x32 images (He et al. 2016, section 4.2), 6n + 2 layers with n = 3.

    A 3x3 convolution (16 channels) + batch norm + ReLU, then three stages of ``n`` basic
    blocks with 16, 32 and 64 channels (the first block of stages 2 and 3 halves the size
    with stride 2, through a projection shortcut), global average pooling and a dense layer.
    No dropout (the design regularises with batch norm).

    Attributes:
      num_classes: number of logits.
      blocks_per_stage: n (3 gives 20 layers, 9 gives ResNet-56).
      widths: channels of the three stages.
      shortcut: False gives the "plain" net of the same depth (see :class:`Plain20`).
      dtype, param_dtype: computation and parameter dtypes of every layer.

    Input ``(batch, H, W, C)``, any H, W >= 4 (32 by design); output ``(batch, num_classes)``.
    Features: stage 3's output ``(batch, ceil(H/4), ceil(W/4), 64)`` (8x8 for 32x32).
    Parameters: 272,474 for C = 3 and 10 classes (269,722 without shortcuts: no projections).
    """

    num_classes: int = 10
    blocks_per_stage: int = 3
    widths: Sequence[int] = (16, 32, 64)
    shortcut: bool = True
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    def setup(self):
        p = layer_dtypes(self)
        self.conv1 = ConvBN(self.widths[0], 3, **p)
        n = self.blocks_per_stage
        self.blocks = [BasicBlock(w, 2 if (i % n == 0 and i > 0) else 1, self.shortcut, **p)
                       for i, w in enumerate(w for w in self.widths for _ in range(n))]
        self.fc = Dense(self.num_classes, **p)

    first_conv_path = ("conv1", "conv")
    gap_dense_path = ("fc",)

    @property
    def depth(self) -> int:
        """Weighted layers: 2 per block, the first convolution and the dense layer."""
        return 2 * len(self.widths) * self.blocks_per_stage + 2

    def features(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Images -> stage 3's feature maps ``(batch, ceil(H/4), ceil(W/4), widths[-1])``."""
        x = self.conv1(x, train)
        self.sow("intermediates", "stem", x)
        n = self.blocks_per_stage
        for i, block in enumerate(self.blocks):
            x = block(x, train)
            if (i + 1) % n == 0:
                self.sow("intermediates", f"stage{(i + 1) // n}", x)
        return x

    def classify(self, feats: jax.Array, train: bool = False) -> jax.Array:
        """Feature maps -> global average pooling -> dense -> logits ``(batch, classes)``."""
        return self.fc(global_avg_pool(feats))

    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        return self.classify(self.features(x, train), train)


class Plain20(ResNet20):
    """ResNet-20 without its shortcuts: the same 20 layers stacked plainly (He et al.'s
    "plain" baseline, whose training error grows with depth). Shapes as :class:`ResNet20`."""

    shortcut: bool = False


def param_at(params: dict, path: tuple[str, ...]):
    """``params[path[0]][path[1]]...``: a sub-tree of a parameter dict."""
    for name in path:
        params = params[name]
    return params
