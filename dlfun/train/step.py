"""Pure training and evaluation steps: ``step(state, batch, key) -> (state, metrics)``.

The factories return undecorated functions; ``jit``, ``vmap`` (seeds), ``shard_map`` or
``pmap`` are applied at the call site.
"""

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax import lax

from ..errors import ConfigError
from ..nn.checks import takes_train
from ..nn.precision import at_least_float32
from .metrics import no_metrics
from .state import TrainState

Batch = tuple[jax.Array, jax.Array]
LossFn = Callable[[jax.Array, jax.Array], jax.Array]
MetricsFn = Callable[[jax.Array, jax.Array], dict]
NONFINITE_POLICIES = ("stop", "skip", "off")


def apply_model(model: nn.Module, state: TrainState, params, x: jax.Array, *, train: bool,
                key: jax.Array | None = None):
    """Run ``model`` on ``x``; returns ``(outputs, new_batch_stats)``.

    In training mode batch-norm statistics are updated and ``key`` feeds the ``"dropout"`` rng.
    """
    variables = {"params": params}
    if state.batch_stats:
        variables["batch_stats"] = state.batch_stats
    kwargs = {"train": train} if takes_train(model) else {}
    if train and state.batch_stats:
        out, updates = model.apply(variables, x, rngs={"dropout": key}, mutable=["batch_stats"],
                                   **kwargs)
        return out, updates["batch_stats"]
    rngs = {"dropout": key} if train else {}
    return model.apply(variables, x, rngs=rngs, **kwargs), state.batch_stats


def make_train_step(model: nn.Module, loss_fn: LossFn, *, metrics_fn: MetricsFn = no_metrics,
                    augment_fn: Callable[[jax.Array, jax.Array], jax.Array] | None = None,
                    nonfinite: str = "stop", axis_name: str | None = None,
                    penalty_fn: Callable[[Any], jax.Array] | None = None) -> Callable:
    """A pure training step for supervised learning.

    Args:
      model: the Linen module (called with ``train=True`` if it takes ``train``).
      loss_fn: ``(outputs, targets) -> scalar``, e.g. ``dlfun.losses.softmax_cross_entropy``.
      metrics_fn: ``(outputs, targets) -> dict`` of batch figures (e.g. accuracy).
      augment_fn: optional ``(key, inputs) -> inputs`` applied inside the step.
      nonfinite: what a NaN/inf loss or gradient does: "stop" (freeze the state at the last good
        step and record ``state.bad_step``; the training loop then stops with a message),
        "skip" (drop that update and go on), or "off" (no check).
      axis_name: for data parallelism under ``shard_map``/``pmap``: the mapped axis the batch is
        split over. Each device then differentiates its own shard's loss and the gradients,
        loss and metrics are averaged over the axis with an explicit ``pmean`` (equal shards,
        so this is the global batch's mean). The augmentation key is folded with the device
        index so shards are augmented differently. Build the model with the same
        ``axis_name`` in its ``BatchNorm``/``Dropout`` layers. ``None`` (default): one
        device, or ``jit`` with sharded arrays (the compiler adds the collectives).
      penalty_fn: optional ``penalty(params) -> scalar`` added to the loss before
        differentiating (a regulariser on the parameters, e.g. the EWC anchor of
        :func:`dlfun.train.ewc.make_ewc_penalty`); reported as the metric ``penalty``.

    Returns:
      ``step(state, (inputs, targets), key) -> (state, metrics)``, metrics a dict of scalars:
      ``loss`` (the data loss, without the penalty, so it compares with an eval step's),
      ``grad_norm``, ``nonfinite`` (1.0 if this step's update was dropped; with
      ``nonfinite="off"``, 1.0 if its loss or gradients were non-finite), ``penalty`` (with
      ``penalty_fn``) and those of ``metrics_fn``.
    """
    if nonfinite not in NONFINITE_POLICIES:
        raise ConfigError(f"nonfinite must be one of {NONFINITE_POLICIES}, got {nonfinite!r}")

    def step(state: TrainState, batch: Batch, key: jax.Array):
        x, y = batch
        aug_key, drop_key = jax.random.split(key)
        if augment_fn is not None:
            if axis_name is not None:
                aug_key = jax.random.fold_in(aug_key, lax.axis_index(axis_name))
            x = augment_fn(aug_key, x)

        def loss_of(params):
            out, stats = apply_model(model, state, params, x, train=True, key=drop_key)
            loss = loss_fn(out, y)
            penalty = penalty_fn(params) if penalty_fn is not None else None
            return loss if penalty is None else loss + penalty, (out, stats, loss, penalty)

        params = state.params
        if axis_name is not None:
            # Mark the replicated parameters as per-device values so each device's gradient
            # is its own shard's; the pmean below is then the one gradient collective.
            params = lax.pcast(params, axis_name, to="varying")
        (_, (out, stats, loss, penalty)), grads = jax.value_and_grad(
            loss_of, has_aux=True)(params)
        metrics = dict(loss=loss, **metrics_fn(out, y))
        if penalty is not None:
            metrics["penalty"] = penalty
        if axis_name is not None:
            grads, metrics = lax.pmean((grads, metrics), axis_name)
        # the parameters' penalty is the same on every device: no collective of its own
        objective = metrics["loss"] if penalty is None else metrics["loss"] + metrics["penalty"]
        grad_norm = optax.tree.norm(grads)
        new_state, dropped = guarded_update(
            state, lambda s: s.apply_gradients(grads=grads, batch_stats=stats), objective,
            grad_norm, nonfinite)
        return new_state, dict(metrics, grad_norm=grad_norm, nonfinite=dropped)

    return step


def make_generated_train_step(step: Callable,
                              generate: Callable[[jax.Array, int], Batch]) -> Callable:
    """``step(state, (x, y), key)`` -> a step that trains on a batch drawn inside it.

    For endless synthetic tasks: ``generate(key, batch_size) -> (inputs, targets)`` makes the
    batch from a key split off the step's key, so no example is seen twice and a resumed run
    draws the same batches (the keys come from the seed and the step). The batch the step is
    given only sets the batch size (its rows are unused placeholders).
    """
    def generated(state, batch, key):
        data_key, step_key = jax.random.split(key)
        return step(state, generate(data_key, batch[0].shape[0]), step_key)

    return generated


def _acceptance(old: Any, loss: jax.Array, grad_norm: jax.Array, policy: str):
    """``(accept, bad_step, dropped)`` of one step under ``policy`` ("stop" or "skip")."""
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    if policy == "stop":
        accept = finite & (old.bad_step < 0)
        bad_step = jnp.where(finite | (old.bad_step >= 0), old.bad_step, old.step)
    else:  # skip
        accept, bad_step = finite, old.bad_step
    return accept, bad_step, 1.0 - accept.astype(jnp.float32)


def _reported(loss: jax.Array, grad_norm: jax.Array) -> jax.Array:
    """Policy "off": the non-finite flag, reported and not acted on. (A constant here would be
    a constant output of the compiled step, which XLA:CPU copies on every call: ~8% of an MLP
    step, measured.)"""
    return 1.0 - (jnp.isfinite(loss) & jnp.isfinite(grad_norm)).astype(jnp.float32)


def guarded_update(state: Any, update: Callable[[Any], Any], loss: jax.Array,
                   grad_norm: jax.Array, policy: str) -> tuple[Any, jax.Array]:
    """``update(state)`` only if the loss and gradient norm are finite (``policy`` as in
    :func:`make_train_step`); returns the new state and 1.0 if the update was dropped.

    The update runs inside a ``lax.cond``, so XLA updates the (donated) parameters and
    optimizer state in place; selecting between old and new states after the fact cost ~12%
    of an MLP step on the CPU (``benchmarks/mlp_step.py``). Under ``vmap`` the cond becomes
    that select, with the same results. The gradient norm is inf/NaN whenever any gradient
    entry is, so one scalar covers them all.
    """
    if policy == "off":
        return update(state), _reported(loss, grad_norm)
    accept, bad_step, dropped = _acceptance(state, loss, grad_norm, policy)
    # skip keeps counting steps (keys and data move on); stop freezes the step too
    keep = (lambda s: s) if policy == "stop" else (lambda s: s.replace(step=s.step + 1))
    new = lax.cond(accept, update, keep, state)
    return new.replace(bad_step=bad_step), dropped


def guard_nonfinite(old: TrainState, new: TrainState, loss: jax.Array, grad_norm: jax.Array,
                    policy: str) -> tuple[TrainState, jax.Array]:
    """Keep ``old`` instead of ``new`` where the loss or gradient norm is not finite (for
    steps whose update cannot be put in one function, e.g. a GAN's two players).

    Returns the state to continue with and 1.0 if the update was dropped (with "off": if the
    loss or gradients were non-finite, though the update went through), else 0.0.
    """
    if policy == "off":
        return new, _reported(loss, grad_norm)
    accept, bad_step, dropped = _acceptance(old, loss, grad_norm, policy)
    kept = jax.tree.map(lambda n, o: jnp.where(accept, n, o), new, old)
    step = new.step if policy == "skip" else kept.step
    return kept.replace(bad_step=bad_step, step=step), dropped


def make_eval_step(model: nn.Module, loss_fn: LossFn, *,
                   metrics_fn: MetricsFn = no_metrics) -> Callable:
    """A pure evaluation step.

    Returns:
      ``eval_step(state, (inputs, targets)) -> metrics``: the batch's mean ``loss`` and
      ``metrics_fn`` figures, plus ``count`` (batch size) for weighting batch means.
    """
    def eval_step(state: TrainState, batch: Batch) -> dict:
        x, y = batch
        out, _ = apply_model(model, state, state.params, x, train=False)
        return dict(loss=loss_fn(out, y), count=jnp.asarray(x.shape[0], jnp.float32),
                    **metrics_fn(out, y))

    return eval_step


def make_predict(model: nn.Module) -> Callable:
    """``predict(state, inputs) -> outputs`` in eval mode (pure, undecorated); at least
    float32 also from a bfloat16 model, so that softmax and the figures computed from them
    are float32 (see :mod:`dlfun.nn.precision`)."""
    def predict(state: TrainState, x: jax.Array) -> jax.Array:
        return at_least_float32(apply_model(model, state, state.params, x, train=False)[0])

    return predict
