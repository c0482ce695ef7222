"""Optax recipes: one factory from a few named hyperparameters."""

from typing import Callable, Collection

import jax.numpy as jnp

import jax
import optax

from .errors import ConfigError

OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam", "adamw", "rmsprop")
SCHEDULES = ("constant", "cosine", "warmup_cosine", "step")
HYPERPARAMETERS = ("learning_rate", "weight_decay", "momentum")
"""The hyperparameters :func:`make_optimizer` can carry in the optimizer state
(``traced=True``), so that K models stacked on a leading axis each train with their own."""


def make_schedule(learning_rate: float, schedule: str = "constant", total_steps: int = 0,
                  warmup_steps: int = 0) -> optax.Schedule:
    """A learning-rate schedule: constant, cosine decay, linear warm-up + cosine, or step decay
    (x0.1 at 50% and 75% of ``total_steps``)."""
    if learning_rate <= 0:
        raise ConfigError(f"learning rate must be positive, got {learning_rate}")
    if schedule != "constant" and total_steps <= 0:
        raise ConfigError(f"schedule {schedule!r} needs total_steps > 0")
    if schedule == "constant":
        return optax.constant_schedule(learning_rate)
    if schedule == "cosine":
        return optax.cosine_decay_schedule(learning_rate, total_steps)
    if schedule == "warmup_cosine":
        return optax.warmup_cosine_decay_schedule(0.0, learning_rate, max(warmup_steps, 1),
                                                  max(total_steps, warmup_steps + 1))
    if schedule == "step":
        bounds = {int(total_steps * 0.5): 0.1, int(total_steps * 0.75): 0.1}
        return optax.piecewise_constant_schedule(learning_rate, bounds)
    raise ConfigError(f"unknown schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}")


def make_optimizer(name: str = "adam", learning_rate: float = 1e-3, *, momentum: float = 0.9,
                   weight_decay: float = 0.0, clip_norm: float | None = None,
                   schedule: str = "constant", total_steps: int = 0,
                   warmup_steps: int = 0,
                   betas: tuple[float, float] = (0.9, 0.999),
                   traced: bool = False) -> optax.GradientTransformation:
    """Build an optimizer.

    Args:
      name: "sgd", "momentum" (heavy ball), "nesterov", "adam", "adamw", "rmsprop".
      learning_rate: peak learning rate.
      momentum: for momentum/nesterov.
      weight_decay: decoupled weight decay for "adamw", L2 added to gradients otherwise.
      clip_norm: clip the global gradient norm to this value first (``None``: no clipping).
      schedule, total_steps, warmup_steps: see :func:`make_schedule`.
      betas: Adam's (b1, b2) decay rates of the gradient moments, for "adam" and "adamw"
        (GANs train better with b1 = 0.5: less momentum in a game whose target moves).
      traced: carry the :data:`HYPERPARAMETERS` (peak learning rate, weight decay, momentum)
        in the optimizer state (``optax.inject_hyperparams``: ``opt_state.hyperparams``) instead
        of compiling them in as constants. Each of K models vmapped over a stacked state then
        trains with its own values (a hyperparameter sweep in one program; see
        :func:`set_hyperparams`). Weight decay is then always applied, so a swept 0 is exact.

    Returns:
      an ``optax.GradientTransformation``.
    """
    if learning_rate <= 0:
        raise ConfigError(f"learning rate must be positive, got {learning_rate}")
    unit = make_schedule(1.0, schedule, total_steps, warmup_steps)  # validates the schedule
    if name not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")

    def build(learning_rate, weight_decay, momentum):
        lr = (make_schedule(learning_rate, schedule, total_steps, warmup_steps)
              if not traced else learning_rate if schedule == "constant" else
              (lambda count: learning_rate * unit(count)))  # the same shape, traced peak
        parts = [] if clip_norm is None else [optax.clip_by_global_norm(clip_norm)]
        if (traced or weight_decay) and name != "adamw":
            parts.append(optax.add_decayed_weights(weight_decay))
        parts.append(_base(name, lr, momentum, weight_decay, betas))
        return parts[0] if len(parts) == 1 else optax.chain(*parts)

    if not traced:
        return build(learning_rate, weight_decay, momentum)
    return optax.inject_hyperparams(build)(learning_rate=float(learning_rate),
                                           weight_decay=float(weight_decay),
                                           momentum=float(momentum))


def set_hyperparams(opt_state, values: dict) -> object:
    """``opt_state`` of a ``traced`` optimizer (see :func:`make_optimizer`) with the given
    hyperparameters replaced, e.g. ``{"learning_rate": lrs}`` with ``lrs`` of shape ``(K,)``
    for K stacked models (each array must have the shape of the one it replaces)."""
    hyper = dict(opt_state.hyperparams)
    for k, v in values.items():
        if k not in hyper:
            raise ConfigError(f"the optimizer state carries no hyperparameter {k!r} "
                              f"(it carries {', '.join(hyper)}); build it with traced=True")
        hyper[k] = jnp.asarray(v, hyper[k].dtype).reshape(hyper[k].shape)
    return opt_state._replace(hyperparams=hyper)


def _base(name, lr, momentum, weight_decay, betas) -> optax.GradientTransformation:
    if name == "sgd":
        return optax.sgd(lr)
    if name in ("momentum", "nesterov"):
        return optax.sgd(lr, momentum=momentum, nesterov=name == "nesterov")
    if name == "adam":
        return optax.adam(lr, b1=betas[0], b2=betas[1])
    if name == "adamw":
        return optax.adamw(lr, b1=betas[0], b2=betas[1], weight_decay=weight_decay)
    if name == "rmsprop":
        return optax.rmsprop(lr)
    raise ConfigError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")


def path_names(path) -> tuple[str, ...]:
    """``("conv1", "kernel")`` of a pytree key path (dict keys, attribute names, indices)."""
    names = []
    for entry in path:
        for attr in ("key", "name", "idx"):
            if hasattr(entry, attr):
                names.append(str(getattr(entry, attr)))
                break
    return tuple(names)


def freeze(tx: optax.GradientTransformation,
           trainable: Collection[str] | Callable[[tuple[str, ...]], bool]
           ) -> optax.GradientTransformation:
    """``tx`` on the trainable parameters only; the others get zero updates.

    Built with ``optax.multi_transform`` and ``optax.set_to_zero``: frozen parameters keep
    their values exactly (``p + 0``), and ``tx`` keeps no state for them (no Adam moments, no
    weight decay). Transfer learning's linear probe freezes everything but the head.

    Args:
      tx: the optimizer of the trainable parameters.
      trainable: the names of the top-level modules to train (e.g. ``{"fc3"}`` of a LeNet-5's
        parameters), or a predicate on a parameter's path names (e.g.
        ``lambda path: path[0].startswith("fc")``).

    Returns:
      an ``optax.GradientTransformation`` over the whole parameter tree.
    """
    wanted = trainable if callable(trainable) else (lambda path: path[0] in trainable)

    def labels(params):
        return jax.tree_util.tree_map_with_path(
            lambda path, _: "train" if wanted(path_names(path)) else "frozen", params)

    return optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, labels)
