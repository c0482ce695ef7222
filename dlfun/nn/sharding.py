"""Logical axis names on parameters (resolved to mesh axes by ``dlfun.parallel``)."""

import flax.linen as nn


def maybe_partitioned(init, axes):
    """Wrap ``init`` so its parameter carries logical ``axes`` names; no-op for ``None``."""
    return init if axes is None else nn.with_logical_partitioning(init, tuple(axes))
