"""2-D convolution with explicit kernel size, stride and zero padding (NHWC layout)."""

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from ..errors import ConfigError, ShapeError
from .checks import check_ndim, check_param_axis
from .conv_ops import conv2d
from .precision import Dtype, add_bias, cast_for_compute
from .sharding import maybe_partitioned

Padding = str | int | Sequence[int] | Sequence[tuple[int, int]]


def conv_output_size(W: int, F: int, S: int = 1, P: int | str = 0) -> int:
    """Output width of a convolution or pooling window: (W - F + 2P) / S + 1.

    Args:
      W: input size (width or height).
      F: filter (window) size.
      S: stride.
      P: zero padding added on each side, or "VALID" (P = 0) or "SAME" (output ceil(W / S)).

    Returns:
      the output size.

    Raises:
      ConfigError: if the filter does not tile the input, i.e. (W - F + 2P) is not a multiple of
        S (the slides' "doesn't fit" case), or a size is not positive.
    """
    if min(W, F, S) < 1:
        raise ConfigError(f"conv_output_size needs positive sizes, got W={W}, F={F}, S={S}")
    if P == "SAME":
        return -(-W // S)
    if P == "VALID":
        P = 0
    if not isinstance(P, int) or P < 0:
        raise ConfigError(f"padding must be a non-negative int, 'SAME' or 'VALID', got {P!r}")
    span = W - F + 2 * P
    if span < 0:
        raise ConfigError(f"filter of size {F} is larger than the padded input ({W} + 2*{P})")
    if span % S:
        raise ConfigError(
            f"a {F}-wide filter with stride {S} and padding {P} does not tile an input of size {W}: "
            f"(W - F + 2P) / S + 1 = ({W} - {F} + {2 * P}) / {S} + 1 = {span / S + 1:g} is not an "
            f"integer; change the stride or the padding")
    return span // S + 1


def normalize_padding(padding: Padding) -> str | tuple[tuple[int, int], tuple[int, int]]:
    """Padding as "SAME"/"VALID" or ((top, bottom), (left, right)) for ``lax``."""
    if isinstance(padding, str):
        if padding.upper() not in ("SAME", "VALID"):
            raise ConfigError(f"padding must be 'SAME', 'VALID' or ints, got {padding!r}")
        return padding.upper()
    if isinstance(padding, int):
        return ((padding, padding), (padding, padding))
    pads = tuple(padding)
    if len(pads) == 2 and all(isinstance(p, int) for p in pads):
        return ((pads[0], pads[0]), (pads[1], pads[1]))
    if len(pads) == 2 and all(len(p) == 2 for p in pads):
        return tuple((int(a), int(b)) for a, b in pads)
    raise ConfigError(f"cannot read padding {padding!r}: use 'SAME', 'VALID', an int P, "
                      "(P_h, P_w) or ((top, bottom), (left, right))")


def pair(v: int | Sequence[int], name: str) -> tuple[int, int]:
    """An int or a pair of ints as a pair (height, width)."""
    t = (v, v) if isinstance(v, int) else tuple(v)
    if len(t) != 2 or min(t) < 1:
        raise ConfigError(f"{name} must be a positive int or a pair of them, got {v!r}")
    return t


def with_batch_axis(fn, x: jax.Array) -> jax.Array:
    """Apply ``fn`` to a (batch, H, W, C) array, accepting a single (H, W, C) image too."""
    if x.ndim == 3:
        return fn(x[None])[0]
    return fn(x)


class Conv(nn.Module):
    """2-D convolution layer (cross-correlation, as in every deep-learning library).

    Attributes:
      features: number of filters (output channels).
      kernel_size: filter size, int or (height, width).
      strides: stride, int or (height, width).
      padding: "SAME", "VALID", an int P (P zeros on every side), (P_h, P_w), or
        ((top, bottom), (left, right)). Output size per axis is floor((W - F + 2P) / S) + 1;
        use :func:`conv_output_size` to insist that the filter tiles the input exactly.
      use_bias: add a learned bias per filter.
      kernel_axes: optional logical names of the kernel's 4 axes, for sharding.
      impl: lowering, see :func:`dlfun.nn.conv2d`: "auto" (the fastest correct one for the
        backend: on CPU a custom backward; elsewhere plain XLA), "xla" or "cpu". All give the
        same results within float32 rounding.
      dtype: computation dtype (input and kernel are cast to it before the convolution);
        ``None`` computes in the input's dtype. See :mod:`dlfun.nn.precision`.
      param_dtype: dtype of the stored parameters.

    Input ``(batch, height, width, in_channels)`` or one image ``(height, width, in_channels)``;
    output ``(batch, height_out, width_out, features)`` (or without the batch axis), in the
    computation dtype.
    Parameters: ``kh * kw * in_channels * features + features``.
    """

    features: int
    kernel_size: int | Sequence[int]
    strides: int | Sequence[int] = 1
    padding: Padding = "VALID"
    use_bias: bool = True
    kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()
    bias_init: nn.initializers.Initializer = nn.initializers.zeros_init()
    kernel_axes: tuple[str | None, ...] | None = None
    impl: str = "auto"
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        check_ndim("Conv", x, (3, 4), "(batch, height, width, channels)")
        kh, kw = pair(self.kernel_size, "kernel_size")
        strides = pair(self.strides, "strides")
        padding = normalize_padding(self.padding)
        check_param_axis(self, "kernel", 2, x)
        kernel = self.param("kernel", maybe_partitioned(self.kernel_init, self.kernel_axes),
                            (kh, kw, x.shape[-1], self.features), self.param_dtype)
        self._check_fits(x, (kh, kw), padding)
        x, kernel = cast_for_compute(self.dtype, x, kernel)
        y = with_batch_axis(lambda b: conv2d(b, kernel, strides, padding, self.impl), x)
        if self.use_bias:
            bias_axes = None if self.kernel_axes is None else (self.kernel_axes[-1],)
            bias = self.param("bias", maybe_partitioned(self.bias_init, bias_axes),
                              (self.features,), self.param_dtype)
            y = add_bias(y, bias)
        return y

    @staticmethod
    def _check_fits(x, kernel_hw, padding) -> None:
        """The padded input must be at least as large as the filter."""
        hw = x.shape[-3:-1]
        pads = ((0, 0), (0, 0)) if padding in ("SAME", "VALID") else padding
        for size, k, (lo, hi) in zip(hw, kernel_hw, pads):
            if padding != "SAME" and size + lo + hi < k:
                raise ShapeError(f"Conv filter {kernel_hw} is larger than the padded input "
                                 f"{hw} (shape {x.shape}); use a larger input or more padding")
