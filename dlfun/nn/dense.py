"""Fully-connected layers: ``Dense`` and the multi-layer perceptron ``MLP``."""

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from ..errors import ShapeError
from .activations import Activation, get_activation
from .checks import check_param_axis
from .dropout import Dropout
from .norm import BatchNorm
from .precision import Dtype, add_bias, cast_for_compute
from .sharding import maybe_partitioned


class Dense(nn.Module):
    """Affine layer y = x W + b over the last axis.

    Attributes:
      features: output size.
      use_bias: add a learned bias.
      kernel_init, bias_init: initialisers.
      kernel_axes: optional logical axis names ``(in_name, out_name)`` of the kernel, used to
        shard it (see ``dlfun.parallel``); ``None`` leaves parameters as plain arrays.
      dtype: computation dtype (input and parameters are cast to it before the matmul);
        ``None`` computes in the input's dtype. See :mod:`dlfun.nn.precision`.
      param_dtype: dtype of the stored parameters.

    Input ``(..., in_features)`` -> output ``(..., features)`` in the computation dtype.
    Parameters: ``in_features * features + features`` (with bias).
    """

    features: int
    use_bias: bool = True
    kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()
    bias_init: nn.initializers.Initializer = nn.initializers.zeros_init()
    kernel_axes: tuple[str | None, str | None] | None = None
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if x.ndim < 1:
            raise ShapeError(f"Dense expected an array with a feature axis, got shape {x.shape}")
        check_param_axis(self, "kernel", 0, x)
        kernel = self.param("kernel", maybe_partitioned(self.kernel_init, self.kernel_axes),
                            (x.shape[-1], self.features), self.param_dtype)
        x, kernel = cast_for_compute(self.dtype, x, kernel)
        y = jnp.matmul(x, kernel)
        if self.use_bias:
            bias_axes = None if self.kernel_axes is None else (self.kernel_axes[1],)
            bias = self.param("bias", maybe_partitioned(self.bias_init, bias_axes),
                              (self.features,), self.param_dtype)
            y = add_bias(y, bias)
        return y


class MLP(nn.Module):
    """Multi-layer perceptron: Dense -> activation (-> dropout) per hidden layer, then Dense.

    Attributes:
      hidden: sizes of the hidden layers (may be empty: a single affine layer).
      out: output size.
      activation: hidden activation, a name ("relu", "sigmoid", "tanh", "softplus",
        "identity", ...) or a function.
      output_activation: applied to the output ("identity" for logits/regression).
      dropout_rate: dropout after each hidden activation (active only when ``train=True``;
        needs the ``"dropout"`` rng in ``apply``).
      dtype, param_dtype: passed to every :class:`Dense` and :class:`BatchNorm` (see
        :mod:`dlfun.nn.precision`).
      kernel_init: initialiser of every layer's kernel (None: :class:`Dense`'s LeCun normal).
        He (``nn.initializers.he_normal()``) suits ReLU-like activations, Glorot sigmoid/tanh.
      batch_norm: a :class:`BatchNorm` between each hidden layer's affine map and its
        activation (the hidden layers then have no bias: the norm's shift replaces it).

    Each hidden activation is also sown as ``intermediates/hidden_<i>`` (read them with
    ``apply(..., mutable=["intermediates"])``; otherwise sowing does nothing).

    Input ``(batch, in_features)`` -> output ``(batch, out)``.
    Parameters: sum over layers of ``fan_in * fan_out + fan_out``; with batch norm each hidden
    layer has ``fan_in * fan_out + 2 * fan_out`` (no bias, scale and shift) instead.
    """

    hidden: Sequence[int]
    out: int
    activation: str | Activation = "relu"
    output_activation: str | Activation = "identity"
    dropout_rate: float = 0.0
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    kernel_init: nn.initializers.Initializer | None = None
    batch_norm: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        act = get_activation(self.activation)
        dense = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        if self.kernel_init is not None:
            dense["kernel_init"] = self.kernel_init
        for i, width in enumerate(self.hidden):
            z = Dense(width, use_bias=not self.batch_norm, **dense)(x)
            if self.batch_norm:
                z = BatchNorm(dtype=self.dtype, param_dtype=self.param_dtype)(z, train=train)
            x = act(z)
            self.sow("intermediates", f"hidden_{i}", x)
            if self.dropout_rate > 0:
                x = Dropout(self.dropout_rate)(x, train=train)
        return get_activation(self.output_activation)(Dense(self.out, **dense)(x))
