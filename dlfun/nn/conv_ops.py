"""2-D convolution and max-pooling with CPU-friendly lowerings (pure functions, no Flax).

XLA:CPU lowers a plain ``lax.conv_general_dilated`` and its autodiff well for the forward
and input-gradient passes of wide layers, but poorly in three places that dominate small-CNN
training on the CPU (measured with ``benchmarks/cnn_step.py``):

* the forward pass when the input has very few channels (1-4, a first layer): the library
  convolution vectorises over input channels and runs at a few GFLOP/s; im2col patches
  ``(N, H_out, W_out, KH*KW*C_in)`` times the reshaped kernel is one matmul and ~2x faster;
* the kernel gradient (batch and features swapped): the whole-batch reduction makes a conv
  with a huge kernel and a tiny output; the same gradient summed over 4-16 batch chunks
  (unrolled: XLA:CPU runs a conv inside a loop body far slower) is 1.3-2x faster;
* max-pooling's autodiff backward is a ``select_and_scatter``; a mask of each window's first
  maximum times the output gradient is elementwise and fuses (same gradients, see below).

``impl="auto"`` picks these on the CPU backend and the plain lowering elsewhere (accelerators
have their own tuned conv libraries); ``impl="xla"`` always gives the plain lowering. Values
and gradients agree with the plain lowering to float32 rounding (only the order of summation
differs); max-pool gradients are bit-identical for non-overlapping windows (overlapping ones
sum in another order), ties included: both give a window's gradient to its first maximum in
row-major window order.

Any floating dtype works (bfloat16 for mixed precision): an input and a kernel of different
dtypes are both cast to their common dtype first, and the kernel gradient's batch chunks are
summed in at least float32.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from typing import NamedTuple, Sequence, Union

import jax
import jax.numpy as jnp
from jax import lax

from dlfun.errors import ConfigError, ShapeError
from dlfun.nn.precision import at_least_float32
from dlfun.nn.sharding import varying_axes

Padding = Union[str, Sequence[tuple[int, int]]]
_DIMS = ("NHWC", "HWIO", "NHWC")
_IMPLS = ("auto", "xla", "cpu")

# Thresholds of the CPU plan, from per-layer timings on a 2-core AVX-512 machine.
PATCHES_MAX_IN_CHANNELS = 4   # forward as im2col patches + one matmul when C_in <= this
DW_CHUNK_BYTES = 512 * 1024   # kernel gradient over batch chunks of about this many input bytes
DW_MAX_CHUNKS = 16


class ConvPlan(NamedTuple):
    """How one convolution is computed on the CPU path."""

    forward: str        # "patches" (im2col + one matmul) or "xla" (lax conv)
    kernel_chunks: int  # number of batch chunks for the kernel gradient (1 = one conv)


def explicit_padding(padding: Padding, in_hw: Sequence[int], window: Sequence[int],
                     strides: Sequence[int]) -> tuple[tuple[int, int], tuple[int, int]]:
    """Padding as ``((top, bottom), (left, right))`` from "SAME", "VALID" or int pairs."""
    if isinstance(padding, str):
        if padding.upper() not in ("SAME", "VALID"):
            raise ConfigError(f"padding {padding!r} is not supported; use 'SAME', 'VALID' "
                              "or ((top, bottom), (left, right))")
        pads = lax.padtype_to_pads(tuple(in_hw), tuple(window), tuple(strides), padding.upper())
        return tuple((int(lo), int(hi)) for lo, hi in pads)
    pads = tuple(tuple(int(v) for v in p) for p in padding)
    if len(pads) != 2 or any(len(p) != 2 for p in pads):
        raise ConfigError(f"padding {padding!r} must be 'SAME', 'VALID' or two (low, high) "
                          "pairs, e.g. ((1, 1), (1, 1))")
    return pads


def _check_impl(impl: str) -> None:
    if impl not in _IMPLS:
        raise ConfigError(f"impl={impl!r} is not one of {_IMPLS}; use 'auto' (fastest for the "
                          "backend), 'xla' (plain lax lowering) or 'cpu' (CPU lowering)")


_FORCE_PLAIN = contextvars.ContextVar("dlfun_conv_force_plain", default=False)


@contextlib.contextmanager
def plain_lowering():
    """Trace ``impl="auto"`` convolutions and pools with the plain lax lowering.

    The CPU lowering splits the batch into chunks for the kernel gradient; when the batch is
    sharded over devices (``jit`` with a batch ``NamedSharding``) those slices cut across shards
    and the partitioner gathers them. The parallel step builders trace their steps inside this
    context, so a model built with the default ``impl="auto"`` stays all-reduce-only. It acts
    at trace time: wrap the body of the function being traced, not the call of a compiled one.
    """
    token = _FORCE_PLAIN.set(True)
    try:
        yield
    finally:
        _FORCE_PLAIN.reset(token)


def traced_with_plain_lowering(fn):
    """``fn`` whose body runs inside :func:`plain_lowering` (decorate before ``jit``)."""
    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        with plain_lowering():
            return fn(*args, **kwargs)
    return wrapped


def _use_cpu_path(impl: str, x=None) -> bool:
    _check_impl(impl)
    if impl == "cpu":
        return True
    if impl != "auto" or jax.default_backend() != "cpu" or _FORCE_PLAIN.get():
        return False
    # Inside shard_map the custom-VJP lowering would have to restate every per-device type;
    # the per-device batch there is small anyway, so take the plain lowering.
    return x is None or not varying_axes(x)


# ----------------------------------------------------------------------------- planning
def plan_conv(x_shape: Sequence[int], kernel_shape: Sequence[int], itemsize: int = 4) -> ConvPlan:
    """The CPU plan for an NHWC input of ``x_shape`` and an HWIO kernel of ``kernel_shape``."""
    batch, c_in = x_shape[0], x_shape[-1]
    forward = "patches" if c_in <= PATCHES_MAX_IN_CHANNELS else "xla"
    x_bytes = itemsize
    for d in x_shape:
        x_bytes *= d
    # Small inputs still gain from 4 chunks; more than 16 adds per-conv overhead.
    want = min(batch, max(4, min(DW_MAX_CHUNKS, x_bytes // DW_CHUNK_BYTES)))
    chunks = max(d for d in range(1, want + 1) if batch % d == 0)
    return ConvPlan(forward, chunks)


# ----------------------------------------------------------------------------- lowerings
def _conv_xla(x, kernel, strides, pads):
    return lax.conv_general_dilated(x, kernel, strides, pads, dimension_numbers=_DIMS)


def _out_size(size, k, s, lo, hi):
    return (size + lo + hi - k) // s + 1


def _conv_patches(x, kernel, strides, pads):
    """Forward as im2col patches (N, Ho, Wo, KH*KW*C_in) times the reshaped kernel."""
    kh, kw, c_in, c_out = kernel.shape
    (sh, sw), ((pt, pb), (pl, pr)) = strides, pads
    xp = lax.pad(x, jnp.zeros((), x.dtype), ((0, 0, 0), (pt, pb, 0), (pl, pr, 0), (0, 0, 0)))
    ho = _out_size(x.shape[1], kh, sh, pt, pb)
    wo = _out_size(x.shape[2], kw, sw, pl, pr)
    taps = [lax.slice(xp, (0, i, j, 0), (xp.shape[0], i + sh * (ho - 1) + 1, j + sw * (wo - 1) + 1,
                                         c_in), (1, sh, sw, 1)) for i in range(kh) for j in range(kw)]
    patches = jnp.concatenate(taps, axis=-1)
    return jnp.einsum("nhwk,ko->nhwo", patches, kernel.reshape(kh * kw * c_in, c_out))


def _input_grad_xla(g, kernel, x_shape, strides, pads):
    x0 = jnp.zeros(x_shape, g.dtype)
    return jax.vjp(lambda x: _conv_xla(x, kernel, strides, pads), x0)[1](g)[0]


def _kernel_grad(x, g, kernel_shape, strides, pads, chunks):
    """Kernel gradient as a sum over ``chunks`` batch chunks of the plain wgrad conv.

    Shapes: x (N, H, W, C_in), g (N, H_out, W_out, C_out) -> (KH, KW, C_in, C_out).
    """
    k0 = jnp.zeros(kernel_shape, x.dtype)
    size = x.shape[0] // chunks
    total = None
    for c in range(chunks):  # unrolled on purpose: a conv inside lax.scan runs ~50x slower
        xc, gc = x[c * size:(c + 1) * size], g[c * size:(c + 1) * size]
        part = jax.vjp(lambda k, xc=xc: _conv_xla(xc, k, strides, pads), k0)[1](gc)[0]
        part = at_least_float32(part)  # bfloat16 chunks would lose bits in the running sum
        total = part if total is None else total + part
    return total.astype(x.dtype)


# ----------------------------------------------------------------------------- custom VJP
@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _conv_cpu(x, kernel, strides, pads, plan):
    if plan.forward == "patches":
        return _conv_patches(x, kernel, strides, pads)
    return _conv_xla(x, kernel, strides, pads)


def _conv_cpu_fwd(x, kernel, strides, pads, plan):
    return _conv_cpu(x, kernel, strides, pads, plan), (x, kernel)


def _conv_cpu_bwd(strides, pads, plan, res, g):
    x, kernel = res
    dx = _input_grad_xla(g, kernel, x.shape, strides, pads)
    dk = _kernel_grad(x, g, kernel.shape, strides, pads, plan.kernel_chunks)
    return dx, dk


_conv_cpu.defvjp(_conv_cpu_fwd, _conv_cpu_bwd)


def conv2d(x: jax.Array, kernel: jax.Array, strides: Sequence[int] = (1, 1),
           padding: Padding = "VALID", impl: str = "auto") -> jax.Array:
    """2-D cross-correlation (what deep-learning libraries call convolution), NHWC/HWIO.

    Args:
      x: input, shape ``(batch, height, width, in_channels)``.
      kernel: shape ``(kernel_h, kernel_w, in_channels, out_channels)``.
      strides: ``(stride_h, stride_w)`` (an int means both).
      padding: "SAME", "VALID" or ``((top, bottom), (left, right))``.
      impl: "auto" (the CPU lowering on the CPU backend, the plain one elsewhere), "xla"
        (plain ``lax.conv_general_dilated`` with autodiff) or "cpu" (the CPU lowering
        anywhere).

    Returns:
      shape ``(batch, out_height, out_width, out_channels)``, ``out = (in + pads - k) // s + 1``,
      in the common dtype of ``x`` and ``kernel`` (bfloat16 inputs give a bfloat16 result).
    """
    if x.ndim != 4 or kernel.ndim != 4 or x.shape[-1] != kernel.shape[2]:
        raise ShapeError(f"conv2d needs x (N, H, W, C) and kernel (KH, KW, C, C_out) with equal "
                         f"C; got x {x.shape} and kernel {kernel.shape}")
    strides = (strides, strides) if isinstance(strides, int) else tuple(int(s) for s in strides)
    pads = explicit_padding(padding, x.shape[1:3], kernel.shape[:2], strides)
    common = jnp.result_type(x, kernel)  # lax convolutions need equal dtypes
    x, kernel = x.astype(common), kernel.astype(common)
    if not _use_cpu_path(impl, x):
        return _conv_xla(x, kernel, strides, pads)
    plan = plan_conv(x.shape, kernel.shape, jnp.dtype(x.dtype).itemsize)
    return _conv_cpu(x, kernel, strides, pads, plan)


# ----------------------------------------------------------------------------- max pooling
def _pool_taps(xp, y_shape, window, strides):
    """Yield ``(i, j, tap)``: the input under window offset (i, j) for every output pixel."""
    n, ho, wo, c = y_shape
    for i in range(window[0]):
        for j in range(window[1]):
            limit = (n, i + strides[0] * (ho - 1) + 1, j + strides[1] * (wo - 1) + 1, c)
            yield i, j, lax.slice(xp, (0, i, j, 0), limit, (1, strides[0], strides[1], 1))


def _max_pool_xla(x, window, strides, pads):
    cfg = ((0, 0), *pads, (0, 0))
    return lax.reduce_window(x, -jnp.inf, lax.max, (1, *window, 1), (1, *strides, 1), cfg)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def _max_pool_mask(x, window, strides, pads):
    return _max_pool_xla(x, window, strides, pads)


def _max_pool_mask_fwd(x, window, strides, pads):
    y = _max_pool_xla(x, window, strides, pads)
    return y, (x, y)


def _max_pool_mask_bwd(window, strides, pads, res, g):
    """Each window's gradient goes to its first maximum (row-major), like autodiff's."""
    x, y = res
    (pt, pb), (pl, pr) = pads
    h, w = x.shape[1], x.shape[2]
    xp = lax.pad(x, jnp.array(-jnp.inf, x.dtype), ((0, 0, 0), (pt, pb, 0), (pl, pr, 0), (0, 0, 0)))
    zero = jnp.zeros((), g.dtype)
    found = jnp.zeros(y.shape, bool)
    dx = None
    for i, j, tap in _pool_taps(xp, y.shape, window, strides):
        hit = (tap == y) & ~found
        found = found | hit
        cfg = ((0, 0, 0), (i - pt, h + pt - i - strides[0] * (y.shape[1] - 1) - 1, strides[0] - 1),
               (j - pl, w + pl - j - strides[1] * (y.shape[2] - 1) - 1, strides[1] - 1), (0, 0, 0))
        term = lax.pad(jnp.where(hit, g, zero), zero, cfg)
        dx = term if dx is None else dx + term
    return (dx,)


_max_pool_mask.defvjp(_max_pool_mask_fwd, _max_pool_mask_bwd)


def max_pool2d(x: jax.Array, window: Sequence[int] = (2, 2), strides: Sequence[int] | None = None,
               padding: Padding = "VALID", impl: str = "auto") -> jax.Array:
    """2-D max pooling over NHWC input; on the CPU with a first-maximum mask backward.

    Args:
      x: shape ``(batch, height, width, channels)``.
      window: ``(window_h, window_w)`` (an int means both).
      strides: ``(stride_h, stride_w)``; defaults to ``window`` (non-overlapping windows).
      padding: "SAME", "VALID" or ``((top, bottom), (left, right))``; pads never win the max.
      impl: "auto" (mask backward on the CPU backend, plain elsewhere), "xla"
        (``lax.reduce_window`` with autodiff's select-and-scatter) or "cpu".

    Returns:
      shape ``(batch, out_height, out_width, channels)``. Gradients equal autodiff's, ties
      included (bit for bit when windows do not overlap): a window's gradient goes to its first
      maximum in row-major window order.
    """
    if x.ndim != 4:
        raise ShapeError(f"max_pool2d needs x of shape (N, H, W, C); got {x.shape}")
    window = (window, window) if isinstance(window, int) else tuple(int(v) for v in window)
    strides = window if strides is None else strides
    strides = (strides, strides) if isinstance(strides, int) else tuple(int(s) for s in strides)
    pads = explicit_padding(padding, x.shape[1:3], window, strides)
    if not _use_cpu_path(impl, x):
        return _max_pool_xla(x, window, strides, pads)
    return _max_pool_mask(x, window, strides, pads)


def describe_conv_lowering(impl: str = "auto") -> str:
    """One line saying how :func:`conv2d` and :func:`max_pool2d` lower here, for run logs."""
    backend = jax.default_backend()
    if not _use_cpu_path(impl):
        return f"conv2d/max_pool2d: plain lax lowering (impl={impl}, backend={backend})"
    return (f"conv2d/max_pool2d: CPU lowering (impl={impl}, backend={backend}): forward as "
            f"im2col patches + matmul when C_in<={PATCHES_MAX_IN_CHANNELS}, else lax conv; input "
            f"grad by lax; kernel grad summed over 4-{DW_MAX_CHUNKS} batch chunks of "
            f"~{DW_CHUNK_BYTES // 1024} KiB; max-pool backward as a first-maximum mask")
