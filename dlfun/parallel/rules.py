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

from ..nn.axis_names import BATCH, EMBED, HEADS, MLP_HIDDEN, VOCAB
from .devices import DATA, MODEL

# Logical names used by dlfun's sharded models. BATCH (examples of activations), EMBED
# (features between blocks, the residual width: replicated in tensor parallelism), MLP_HIDDEN
# (hidden units inside an MLP block), HEADS (attention heads) and VOCAB (token ids) are the
# layers' own names, from dlfun.nn.axis_names.
CONV_BATCH = "conv_batch"
"""Batch axis of activations in the convolutional part (all devices in the hybrid scheme)."""
CLASSES = "classes"
"""Output classes (small; never split)."""

Rules = tuple[tuple[str, Any], ...]

REPLICATED_RULES: Rules = ()
"""Everything replicated (one device, or the reference run)."""
DATA_PARALLEL_RULES: Rules = ((BATCH, DATA), (CONV_BATCH, DATA))
"""Batch split over ``data``; every parameter replicated."""
TENSOR_PARALLEL_RULES: Rules = ((BATCH, DATA), (CONV_BATCH, DATA), (MLP_HIDDEN, MODEL),
                                (HEADS, MODEL), (VOCAB, MODEL))
"""Megatron: MLP blocks' hidden axis over ``model`` (first matrix by columns, second by
rows); attention by heads (the QKV projection by columns, the output projection by rows), so
a transformer block needs two all-reduces forward; the vocabulary (embedding rows, output
columns) over ``model`` as well. The batch, if the mesh has a ``data`` axis of more than one
device, over ``data``."""
FSDP_RULES: Rules = ((BATCH, DATA), (CONV_BATCH, DATA), (MLP_HIDDEN, DATA), (EMBED, DATA),
                     (HEADS, DATA), (VOCAB, DATA))
"""Fully sharded data parallel: the batch *and* every parameter over ``data`` along one axis
(a kernel uses ``data`` once: the first of its hidden, embed, heads or vocab axes in this
order; heads and vocab split only the biases that have neither of the others)."""
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
