"""Pipeline parallelism (GPipe): a network's layers split into S stages, one per device of a
``stage`` mesh axis, fed M micro-batches.

At tick ``t`` stage ``s`` works on micro-batch ``t - s`` (when that exists), then passes its
activations to stage ``s + 1`` with ``ppermute``; the forward pass takes ``M + S - 1`` ticks,
of which each stage idles ``S - 1``: the bubble fraction ``(S - 1) / (M + S - 1)``. The
backward pass is the reverse schedule, derived by autodiff (the transpose of a ``ppermute``
is the ``ppermute`` the other way). Gradients equal those of the unpipelined network on the
whole batch (the loss is the mean over micro-batches of each micro-batch's mean).

Stages may differ (an MLP's input and output layers, a CNN's conv and dense stages): each
stage's parameters are flattened into one vector, padded to the longest and stacked
``(S, P_max)`` with the stage axis sharded, so each device holds only its stage's weights;
activations cross stage boundaries flattened and padded to the widest boundary. Each device
runs its own stage through ``lax.switch`` on its stage index. Stages here have no batch norm
or dropout (micro-batch statistics would differ from the whole batch's).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax
from jax.flatten_util import ravel_pytree
from jax.sharding import NamedSharding, PartitionSpec as P

from ..errors import ConfigError, ShapeError
from ..nn.conv_ops import traced_with_plain_lowering
from ..train.state import TrainState
from .devices import STAGE


def gpipe_schedule(num_stages: int, num_microbatches: int) -> np.ndarray:
    """The forward GPipe schedule: ``(ticks, stages)`` micro-batch indices, -1 where idle.

    ``ticks = M + S - 1``; stage ``s`` runs micro-batch ``t - s`` at tick ``t``.
    """
    t = np.arange(num_microbatches + num_stages - 1)[:, None]
    mb = t - np.arange(num_stages)[None, :]
    return np.where((mb >= 0) & (mb < num_microbatches), mb, -1)


def bubble_fraction(num_stages: int, num_microbatches: int) -> float:
    """Idle share of the stage-ticks of :func:`gpipe_schedule`: ``(S-1)/(M+S-1)``."""
    sched = gpipe_schedule(num_stages, num_microbatches)
    return float(np.mean(sched < 0))


def split_layers(layers: Sequence[Callable], num_stages: int) -> list[nn.Sequential]:
    """Split a list of layers (modules or functions) into ``num_stages`` contiguous
    ``nn.Sequential`` stages, as even in length as possible (earlier stages get the extra).

    Raises:
      ConfigError: fewer layers than stages.
    """
    if not 1 <= num_stages <= len(layers):
        raise ConfigError(f"cannot split {len(layers)} layers into {num_stages} pipeline "
                          f"stages; use between 1 and {len(layers)} stages")
    bounds = np.cumsum([0] + [len(c) for c in np.array_split(np.arange(len(layers)),
                                                               num_stages)])
    return [nn.Sequential(list(layers[a:b])) for a, b in zip(bounds[:-1], bounds[1:])]


@dataclasses.dataclass(frozen=True)
class StagePlan:
    """How S stages are laid out: per-stage parameter unflattening and activation shapes.

    Attributes:
      stages: the S modules, applied in order.
      in_shapes: per stage, its input shape without the batch axis.
      out_shapes: per stage, its output shape without the batch axis.
      unravel: per stage, flat parameter vector -> its parameter pytree.
      param_sizes: per stage, the number of parameters.
    """

    stages: tuple[nn.Module, ...]
    in_shapes: tuple[tuple[int, ...], ...]
    out_shapes: tuple[tuple[int, ...], ...]
    unravel: tuple[Callable, ...]
    param_sizes: tuple[int, ...]

    @property
    def num_stages(self) -> int:
        return len(self.stages)

    @property
    def width(self) -> int:
        """Flat size of the widest activation crossing a stage boundary (and of the input)."""
        return max(int(np.prod(s)) for s in self.in_shapes + self.out_shapes)

    @property
    def max_params(self) -> int:
        return max(self.param_sizes)


def init_stages(stages: Sequence[nn.Module], key: jax.Array,
                sample_input: jax.Array) -> tuple[list[Any], StagePlan]:
    """Initialise each stage on the previous stage's output shape.

    Args:
      stages: S Linen modules (e.g. from :func:`split_layers`).
      key: initialisation key (split per stage).
      sample_input: ``(batch, ...)`` example input; only shape and dtype matter.
    Returns:
      ``(params, plan)``: a list of S parameter pytrees (the unpipelined network's) and the
      :class:`StagePlan`.
    """
    params, ins, outs, unravel, sizes = [], [], [], [], []
    x = jnp.zeros(sample_input.shape, sample_input.dtype)
    for stage, k in zip(stages, jax.random.split(key, len(stages))):
        p = stage.init(k, x)["params"] if _has_params(stage, x) else {}
        ins.append(tuple(x.shape[1:]))
        x = jax.eval_shape(lambda p_, x_: stage.apply({"params": p_}, x_), p, x)
        x = jnp.zeros(x.shape, x.dtype)
        outs.append(tuple(x.shape[1:]))
        flat, unr = ravel_pytree(p)
        params.append(p)
        unravel.append(unr)
        sizes.append(int(flat.size))
    plan = StagePlan(tuple(stages), tuple(ins), tuple(outs), tuple(unravel), tuple(sizes))
    return params, plan


def _has_params(stage: nn.Module, x: jax.Array) -> bool:
    return bool(jax.eval_shape(lambda: stage.init(jax.random.key(0), x)).get("params"))


def sequential_apply(plan: StagePlan, params: Sequence[Any], x: jax.Array) -> jax.Array:
    """The unpipelined network: every stage in turn on the whole batch ``(batch, ...)``."""
    for stage, p in zip(plan.stages, params):
        x = stage.apply({"params": p}, x)
    return x


def stack_params(plan: StagePlan, params: Sequence[Any]) -> jax.Array:
    """Per-stage parameter pytrees -> ``(S, P_max)`` float32, each row one stage, zero-padded."""
    rows = [jnp.pad(ravel_pytree(p)[0], (0, plan.max_params - n))
            for p, n in zip(params, plan.param_sizes)]
    return jnp.stack(rows)


def unstack_params(plan: StagePlan, stacked: jax.Array) -> list[Any]:
    """Inverse of :func:`stack_params` (e.g. to compare gradients with the unpipelined net)."""
    return [unr(stacked[s, :n]) for s, (unr, n) in enumerate(zip(plan.unravel,
                                                                  plan.param_sizes))]


def _stage_branch(plan: StagePlan, s: int) -> Callable:
    """Stage ``s`` on padded flat activations: ``(P_max,), (mb, width) -> (mb, width)``."""
    n_in, n_p = int(np.prod(plan.in_shapes[s])), plan.param_sizes[s]

    def run(flat_params, act):
        x = act[:, :n_in].reshape((act.shape[0],) + plan.in_shapes[s])
        y = plan.stages[s].apply({"params": plan.unravel[s](flat_params[:n_p])}, x)
        y = y.reshape(y.shape[0], -1)
        return jnp.pad(y, ((0, 0), (0, plan.width - y.shape[1])))

    return run


def _pipeline_forward(plan: StagePlan, flat_params: jax.Array, xs: jax.Array) -> jax.Array:
    """Per device (inside shard_map): run the GPipe forward schedule.

    Args:
      flat_params: ``(1, P_max)``: this device's stage.
      xs: ``(M, mb, width)`` padded flat micro-batches (every device gets them; stage 0 reads).
    Returns:
      ``(M, mb, width)``: the last stage's outputs per micro-batch (zeros on other stages).
    """
    S, M = plan.num_stages, xs.shape[0]
    s = lax.axis_index(STAGE)
    branches = [_stage_branch(plan, k) for k in range(S)]
    forward = [(i, i + 1) for i in range(S - 1)]

    def tick(carry, t):
        received, outs = carry
        inp = jnp.where(s == 0, xs[jnp.minimum(t, M - 1)], received)
        out = lax.switch(s, branches, flat_params[0], inp)
        m = t - (S - 1)  # micro-batch leaving the last stage at this tick
        keep = (s == S - 1) & (m >= 0)
        slot = jnp.clip(m, 0, M - 1)
        outs = lax.dynamic_update_index_in_dim(outs, jnp.where(keep, out, outs[slot]), slot, 0)
        return (lax.ppermute(out, STAGE, forward), outs), None

    init = (jnp.zeros(xs.shape[1:], xs.dtype), jnp.zeros_like(xs))
    init = lax.pcast(init, STAGE, to="varying")
    (_, outs), _ = lax.scan(tick, init, jnp.arange(M + S - 1))
    return outs


def make_pipeline_loss(plan: StagePlan, loss_fn: Callable, mesh: jax.sharding.Mesh,
                       num_microbatches: int) -> Callable:
    """``loss(stacked_params, x, y) -> scalar``: the pipelined network's mean loss.

    Args:
      plan: from :func:`init_stages`; its S must equal the mesh's ``stage`` size.
      loss_fn: ``(outputs, targets) -> mean`` over a micro-batch.
      mesh: a mesh with a ``stage`` axis.
      num_microbatches: M; the batch size must be a multiple of it.
    Returns:
      a function of ``(S, P_max)`` stacked parameters (sharded over ``stage``), inputs
      ``(batch, ...)`` and targets ``(batch, ...)``; differentiable.
    """
    S, M = plan.num_stages, num_microbatches
    if mesh.shape.get(STAGE) != S:
        raise ConfigError(f"{S} pipeline stages need a mesh axis {STAGE!r} of size {S}; got "
                          f"mesh {dict(mesh.shape)}")
    out_shape = plan.out_shapes[-1]
    n_out = int(np.prod(out_shape))

    def per_device(flat_params, xs, ys):
        outs = _pipeline_forward(plan, flat_params, xs)
        logits = outs[..., :n_out].reshape(outs.shape[:2] + out_shape)
        losses = jax.vmap(loss_fn)(logits, ys)  # (M,)
        mine = jnp.where(lax.axis_index(STAGE) == S - 1, jnp.mean(losses), 0.0)
        return lax.psum(mine, STAGE)

    sharded = jax.shard_map(traced_with_plain_lowering(per_device), mesh=mesh,
                            in_specs=(P(STAGE), P(), P()),
                            out_specs=P())

    def loss(stacked, x, y):
        if x.shape[0] % M:
            raise ShapeError(f"a batch of {x.shape[0]} examples cannot be cut into {M} equal "
                             f"micro-batches; use a batch size that is a multiple of {M}")
        flat = x.reshape(x.shape[0], -1)
        flat = jnp.pad(flat, ((0, 0), (0, plan.width - flat.shape[1])))
        return sharded(stacked, flat.reshape(M, -1, plan.width),
                       y.reshape((M, -1) + y.shape[1:]))

    return loss


def make_pipeline_train_step(plan: StagePlan, loss_fn: Callable, mesh: jax.sharding.Mesh,
                             num_microbatches: int) -> Callable:
    """A pure step ``step(state, (x, y), key) -> (state, metrics)`` for a pipelined network
    whose ``state.params`` is ``{"stages": (S, P_max) stacked array}``
    (:func:`create_pipeline_state`). ``key`` is unused (stages have no dropout). Jit it with
    the state's shardings."""
    loss = make_pipeline_loss(plan, loss_fn, mesh, num_microbatches)

    def step(state: TrainState, batch, key):
        value, grads = jax.value_and_grad(lambda p: loss(p["stages"], *batch))(state.params)
        new_state = state.apply_gradients(grads=grads)
        return new_state, dict(loss=value, grad_norm=optax.tree.norm(grads))

    return step


def create_pipeline_state(plan: StagePlan, params: Sequence[Any], tx, mesh) -> TrainState:
    """A ``TrainState`` whose params are ``{"stages": (S, P_max)}``, sharded over ``stage``
    (each device holds one stage's row, and the optimizer state likewise)."""
    def make(stacked):
        p = {"stages": stacked}
        return TrainState(step=jnp.zeros((), jnp.int32), apply_fn=None, params=p, tx=tx,
                          opt_state=tx.init(p), batch_stats={},
                          bad_step=jnp.full((), -1, jnp.int32))

    stacked = stack_params(plan, params)
    split, whole = NamedSharding(mesh, P(STAGE)), NamedSharding(mesh, P())
    shardings = jax.tree.map(lambda a: split if a.shape == stacked.shape else whole,
                             jax.eval_shape(make, stacked))
    return jax.jit(make, out_shardings=shardings)(stacked)


def make_sequential_train_step(plan: StagePlan, loss_fn: Callable) -> Callable:
    """The unpipelined reference: ``step(state, (x, y), key)`` on one device, where
    ``state.params`` is the list of per-stage parameter pytrees."""
    def step(state: TrainState, batch, key):
        x, y = batch
        value, grads = jax.value_and_grad(
            lambda p: loss_fn(sequential_apply(plan, p, x), y))(state.params)
        return state.apply_gradients(grads=grads), dict(loss=value)

    return step
