"""Logical axis names on parameters (resolved to mesh axes by ``dlfun.parallel``), and the
per-device types of values inside ``shard_map``."""

import flax.linen as nn
import jax
from jax import lax

from .axis_names import BATCH


def maybe_partitioned(init, axes):
    """Wrap ``init`` so its parameter carries logical ``axes`` names; no-op for ``None``."""
    return init if axes is None else nn.with_logical_partitioning(init, tuple(axes))


def constrain_activation(x, trailing: tuple):
    """Lay out activation ``x (*batch, *trailing)`` by logical names: its first batch axis
    ``"batch"``, other batch axes unnamed, the last ``len(trailing)`` axes ``trailing``.

    A no-op unless rules and a mesh are active (``dlfun.parallel.sharding.layout_context``);
    with no batch axis (``x.ndim == len(trailing)``) only the trailing names apply.
    """
    lead = x.ndim - len(trailing)
    names = ((BATCH,) + (None,) * (lead - 1) if lead > 0 else ()) + tuple(trailing)
    return nn.with_logical_constraint(x, names)


def varying_axes(x) -> frozenset:
    """Mesh axes ``x`` varies over inside ``shard_map`` (empty outside), across JAX versions."""
    aval = jax.typeof(x)
    vma = getattr(aval, "vma", None)
    if vma is None:
        vma = getattr(getattr(aval, "manual_axis_type", None), "varying", None)
    return frozenset(vma or ())


def union_varying_axes(*trees) -> frozenset:
    """The mesh axes any array leaf of ``trees`` varies over (empty outside ``shard_map``)."""
    axes = frozenset()
    for leaf in jax.tree.leaves(trees):
        axes |= varying_axes(leaf)
    return axes


def vary_over(tree, axes: frozenset):
    """``tree`` with every leaf marked as varying over ``axes`` (a no-op for empty ``axes``).

    A loop carry that starts as a replicated constant (zeros) but is updated from per-device
    data must start with the type it ends with; ``lax.scan`` inside ``shard_map`` checks it.
    """
    if not axes:
        return tree

    def cast(a):
        missing = tuple(sorted(axes - varying_axes(a)))
        return lax.pcast(a, missing, to="varying") if missing else a
    return jax.tree.map(cast, tree)


def sum_to_type_of(ct, primal):
    """A cotangent summed over the mesh axes it varies over but ``primal`` does not.

    The transpose of using a replicated value in per-device work: what JAX's own autodiff
    does for a replicated input, for hand-written backward passes inside ``shard_map``.
    """
    extra = tuple(sorted(varying_axes(ct) - varying_axes(primal)))
    return lax.psum(ct, extra) if extra else ct
