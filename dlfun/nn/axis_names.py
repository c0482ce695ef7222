"""Logical axis names on the parameters of the attention and transformer layers.

Layers attach these names to their weights (``nn.with_logical_partitioning``); a rules table in
:mod:`dlfun.parallel.rules` maps them to mesh axes. ``EMBED`` and ``MLP_HIDDEN`` are the names
the dense layers already use there. Tensor parallelism (Megatron) splits ``HEADS`` and
``MLP_HIDDEN`` over ``model``: the QKV projection and the first MLP matrix by columns, the
attention output projection and the second MLP matrix by rows. A name missing from a table is
replicated.

Activations carry names too (``BATCH`` on their leading axis, ``HEADS``/``MLP_HIDDEN`` inside a
block; :func:`dlfun.nn.sharding.constrain_activation`), so FSDP keeps them split by example
while it gathers the weights, instead of letting the compiler split them by feature.
"""

BATCH = "batch"
"""Examples of a batch of activations: split over ``data`` by every table that has it."""

EMBED = "embed"
"""Model width ``d_model``: the residual stream between blocks."""
HEADS = "heads"
"""Attention heads: the axis tensor parallelism splits over ``model``."""
HEAD_DIM = "kv"
"""Features within one head (the name MaxText and Flax's lm1b example use)."""
QKV = "qkv"
"""The stacked query/key/value axis of a fused projection (size 3, or 2 for key/value)."""
MLP_HIDDEN = "mlp"
"""Hidden units of a transformer block's MLP."""
VOCAB = "vocab"
"""Token ids: rows of the embedding table, columns of the output layer."""
POSITION = "position"
"""Positions of a learned position table."""
