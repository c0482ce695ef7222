"""Computation precision of the layers (Flax's ``dtype`` / ``param_dtype`` convention).

Every dlfun layer takes two attributes:

* ``param_dtype`` (default ``float32``): the dtype its parameters are stored (and optimised) in;
* ``dtype`` (default ``None``): the dtype its matmuls and convolutions compute in. Inputs and
  parameters are cast to it first. ``None`` keeps the input's dtype (float32 in, float32
  arithmetic, as before ``dtype`` existed).

Mixed precision is ``dtype=jnp.bfloat16`` with float32 parameters: products run in bfloat16,
while batch-norm statistics, recurrent cell states and losses (:mod:`dlfun.losses`) stay in
float32. :func:`compute_dtype` maps the experiments' ``--precision`` names to a ``dtype``
(``dlfun.runs.config.RunConfig.model_dtypes`` gives every experiment's models their
``dtype``/``param_dtype`` from it). Code that reads a model's outputs outside a loss (softmax
probabilities, samples, plots) widens them with :func:`at_least_float32` first.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from ..errors import ConfigError

Dtype = Any

PRECISIONS = ("f32", "bf16")
"""The names ``--precision`` accepts: float32 throughout, or bfloat16 matmuls/convolutions."""

_DTYPES = {"f32": jnp.float32, "bf16": jnp.bfloat16}


def compute_dtype(name: str) -> Dtype:
    """The layers' computation ``dtype`` for a precision name.

    Args:
      name: one of :data:`PRECISIONS` ("f32" or "bf16").

    Returns:
      ``jnp.float32`` or ``jnp.bfloat16``, to pass as a model's ``dtype`` (its parameters
      stay float32).

    Raises:
      ConfigError: for any other name.
    """
    if name not in _DTYPES:
        raise ConfigError(f"unknown precision {name!r}; use one of {PRECISIONS}")
    return _DTYPES[name]


def cast_for_compute(dtype: Dtype | None, x: jax.Array,
                     *params: jax.Array) -> tuple[jax.Array, ...]:
    """``x`` and ``params`` cast to the computation dtype: ``dtype``, or ``x.dtype`` when None.

    Returns:
      ``(x, *params)`` in that dtype (arrays already in it are returned unchanged).
    """
    to = x.dtype if dtype is None else jnp.dtype(dtype)
    return tuple(a.astype(to) for a in (x, *params))


def at_least_float32(x: jax.Array) -> jax.Array:
    """``x`` as float32 if it is a floating array narrower than that (bf16, f16), else ``x``.

    Losses and normalisation statistics call this so that a bfloat16 forward pass still sums
    and exponentiates in float32 (float64 and integer arrays are left alone).
    """
    if jnp.issubdtype(x.dtype, jnp.floating) and jnp.finfo(x.dtype).bits < 32:
        return x.astype(jnp.float32)
    return x


def layer_dtypes(module: Any) -> dict[str, Dtype]:
    """``{"dtype": ..., "param_dtype": ...}`` of a model, to pass on to its layers."""
    return {"dtype": module.dtype, "param_dtype": module.param_dtype}


def add_bias(y: jax.Array, bias: jax.Array) -> jax.Array:
    """``y + bias`` for ``y`` ``(..., F)`` and ``bias`` ``(F,)``, returned in ``y``'s dtype.

    The sum is formed in at least float32: the bias's gradient is a sum of ``y``'s cotangent
    over every other axis, and summed in bfloat16 it stops growing once it is ~256 times an
    element (a bias gradient 10x too small was seen on a (4, 32, 32, 4) convolution).
    """
    wide = at_least_float32(y)
    b = bias.astype(wide.dtype).reshape((1,) * (y.ndim - 1) + bias.shape)
    return (wide + b).astype(y.dtype)
