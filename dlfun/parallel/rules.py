"""Logical axis names and the tables that map them to mesh axes.

Layers name the axes of their parameters and activations by role (``Dense(...,
kernel_axes=("embed", "mlp"))``, ``constrain(x, ("batch", None))``); a scheme is then just a
rules table from those names to mesh axes. The same model runs replicated, data parallel,
tensor parallel, FSDP or hybrid by changing the table, not the model.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax

from .devices import DATA, MODEL

# Logical names used by dlfun's sharded models.
BATCH = "batch"
"""Batch axis of activations where the model is split over ``model`` (fully connected part)."""
CONV_BATCH = "conv_batch"
"""Batch axis of activations in the convolutional part (all devices in the hybrid scheme)."""
EMBED = "embed"
"""Features between blocks (the residual width); replicated in tensor parallelism."""
MLP_HIDDEN = "mlp"
"""Hidden units inside an MLP block: split over ``model`` in tensor parallelism."""
CLASSES = "classes"
"""Output classes (small; never split)."""

Rules = tuple[tuple[str, Any], ...]

REPLICATED_RULES: Rules = ()
"""Everything replicated (one device, or the reference run)."""
DATA_PARALLEL_RULES: Rules = ((BATCH, DATA), (CONV_BATCH, DATA))
"""Batch split over ``data``; every parameter replicated."""
TENSOR_PARALLEL_RULES: Rules = ((BATCH, DATA), (CONV_BATCH, DATA), (MLP_HIDDEN, MODEL))
"""Megatron-style MLP blocks: the hidden axis over ``model`` (first matrix by columns, second
by rows); the batch, if the mesh has a ``data`` axis of more than one device, over ``data``."""
FSDP_RULES: Rules = ((BATCH, DATA), (CONV_BATCH, DATA), (MLP_HIDDEN, DATA), (EMBED, DATA))
"""Fully sharded data parallel: the batch *and* every large parameter axis over ``data``
(a kernel uses ``data`` once: its hidden axis if it has one, else its embed axis)."""
HYBRID_RULES: Rules = ((CONV_BATCH, (DATA, MODEL)), (BATCH, DATA), (MLP_HIDDEN, MODEL))
"""Krizhevsky's "one weird trick": convolutions data parallel over all devices, the fully
connected layers model parallel over ``model`` (and data parallel over ``data``)."""


def constrain(x: jax.Array, names: Sequence[str | None]) -> jax.Array:
    """Declare the layout of activation ``x`` by logical axis names (one per axis).

    A no-op unless rules are active (``nn.logical_axis_rules``) and a mesh is set
    (``jax.set_mesh``, or ``sharding.layout_context`` inside ``jit``), as in the steps of
    :func:`dlfun.parallel.sharding.make_sharded_train_step`.
    """
    return nn.with_logical_constraint(x, tuple(names))


def logical_to_shardings(logical_specs: Any, mesh: jax.sharding.Mesh, rules: Rules) -> Any:
    """A pytree of logical ``PartitionSpec`` -> ``NamedSharding`` on ``mesh`` via ``rules``."""
    return nn.logical_to_mesh_sharding(logical_specs, mesh, rules)
