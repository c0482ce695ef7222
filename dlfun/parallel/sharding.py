"""Sharded training states and steps from logical axis names and a rules table.

The flow (as in Flax's lm1b example): trace the initialisation with ``jax.eval_shape`` (no
memory, no compute) to read each parameter's logical axis names; map them through the rules
to ``NamedSharding``s on the mesh; compile the initialisation with those as
``out_shardings``, so every parameter (and the optimizer state that mirrors it) is created
already split across devices, never whole on one. The training step is dlfun's ordinary
``make_train_step``, compiled with the same shardings; the compiler inserts the collectives.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

from ..nn.checks import takes_train
from ..nn.conv_ops import plain_lowering
from ..train.state import TrainState
from .devices import DATA
from .rules import Rules, logical_to_shardings


def _boxed_init(model: nn.Module, tx: optax.GradientTransformation,
                sample_input: jax.Array) -> Callable[[jax.Array], TrainState]:
    """``init(key) -> TrainState`` whose parameters (and optimizer moments) keep their
    logical-axis boxes; same keys and values as ``dlfun.train.create_train_state``."""
    kwargs = {"train": False} if takes_train(model) else {}

    def init(key: jax.Array) -> TrainState:
        p_key, d_key = jax.random.split(key)
        variables = model.init({"params": p_key, "dropout": d_key}, sample_input, **kwargs)
        params = variables["params"]
        return TrainState(step=jnp.zeros((), jnp.int32), apply_fn=model.apply, params=params,
                          tx=tx, opt_state=tx.init(params),
                          batch_stats=variables.get("batch_stats", {}),
                          bad_step=jnp.full((), -1, jnp.int32))

    return init


def state_shardings(model: nn.Module, tx: optax.GradientTransformation,
                    sample_input: jax.Array, mesh: jax.sharding.Mesh, rules: Rules) -> Any:
    """``NamedSharding`` of every leaf of the model's ``TrainState`` on ``mesh``.

    Parameters without logical names (and all scalars) are replicated.
    """
    abstract = jax.eval_shape(_boxed_init(model, tx, sample_input), jax.random.key(0))
    return logical_to_shardings(nn.get_partition_spec(abstract), mesh, rules)


def create_sharded_train_state(model: nn.Module, tx: optax.GradientTransformation,
                               key: jax.Array, sample_input: jax.Array,
                               mesh: jax.sharding.Mesh, rules: Rules) -> TrainState:
    """Like :func:`dlfun.train.create_train_state` (same values for the same key), but every
    array is created directly in its sharding from ``rules``.

    Args:
      model, tx, key, sample_input: as for ``create_train_state``.
      mesh: the device mesh.
      rules: logical name -> mesh axis table (e.g. ``TENSOR_PARALLEL_RULES``).
    Returns:
      a ``TrainState`` of global ``jax.Array``s sharded over ``mesh``.
    """
    shardings = state_shardings(model, tx, sample_input, mesh, rules)
    init = _boxed_init(model, tx, sample_input)
    with nn.logical_axis_rules(rules):
        return jax.jit(lambda k: nn.meta.unbox(init(k)), out_shardings=shardings)(key)


@contextlib.contextmanager
def layout_context(mesh: jax.sharding.Mesh, rules: Rules):
    """Activate ``rules`` and ``mesh`` for the logical constraints of code traced inside
    (usable within ``jit``, unlike ``jax.set_mesh``)."""
    with nn.logical_axis_rules(rules), jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
        yield


def batch_sharding(mesh: jax.sharding.Mesh, axes: Any = DATA) -> NamedSharding:
    """Sharding of a batch ``(batch, ...)`` split over mesh axes ``axes`` (rest replicated)."""
    return NamedSharding(mesh, P(axes))


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
    """Sharding of an array kept whole on every device of ``mesh``."""
    return NamedSharding(mesh, P())


def make_sharded_train_step(step: Callable, mesh: jax.sharding.Mesh, shardings: Any,
                            rules: Rules, batch_axes: Any = DATA) -> Callable:
    """Compile ``step(state, batch, key)`` for sharded state and batch.

    Args:
      step: an undecorated step, e.g. from ``make_train_step`` (no ``axis_name``).
      mesh: the device mesh.
      shardings: the state's shardings (:func:`state_shardings`).
      rules: the table the model's activation constraints (:func:`~.rules.constrain`) use.
      batch_axes: mesh axes the batch's leading axis is split over.
    Returns:
      ``jit``-compiled ``step(state, batch, key) -> (state, metrics)``; the state is donated
      and keeps its shardings, metrics are replicated.
    """
    def with_rules(state, batch, key):
        with layout_context(mesh, rules), plain_lowering():  # no batch-chunked conv grads
            return step(state, batch, key)

    batch = batch_sharding(mesh, batch_axes)
    return jax.jit(with_rules, in_shardings=(shardings, batch, replicated(mesh)),
                   out_shardings=(shardings, replicated(mesh)), donate_argnums=0)


def bytes_per_device(tree: Any) -> dict[jax.Device, int]:
    """Bytes each device holds of the arrays in ``tree`` (read from their shards)."""
    held: dict[jax.Device, int] = defaultdict(int)
    for leaf in jax.tree.leaves(tree):
        for shard in leaf.addressable_shards:
            held[shard.device] += shard.data.nbytes
    return dict(held)


def max_bytes_per_device(tree: Any) -> int:
    """The largest per-device share of ``tree`` in bytes (the memory that limits a device)."""
    return max(bytes_per_device(tree).values())
