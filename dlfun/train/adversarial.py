"""Adversarial training (Madry et al. 2018): every step first attacks its batch with the
current parameters, then trains on the adversarial inputs (the inner maximisation of
``min_theta E[max_{|delta| <= eps} L(theta, x + delta, y)]``, solved approximately by PGD or
FGSM from :mod:`dlfun.attacks`)."""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax

from .metrics import no_metrics
from .state import TrainState
from .step import LossFn, MetricsFn, apply_model, make_train_step

Attack = Callable[[Callable, Any, jax.Array, jax.Array, jax.Array], jax.Array]
"""``attack(input_loss, params, x, y, key) -> x_adv``, e.g. ``functools.partial(pgd, eps=...,
step_size=..., steps=...)`` wrapped to take the key as its last argument."""


def make_input_loss(model: nn.Module, loss_fn: LossFn, state: TrainState) -> Callable:
    """``input_loss(params, x, y) -> scalar``: ``loss_fn`` of the model's outputs in eval mode
    (batch-norm running statistics, no dropout), the loss an attacker differentiates."""
    def input_loss(params, x, y):
        out, _ = apply_model(model, state, params, x, train=False)
        return loss_fn(out, y)

    return input_loss


def make_adversarial_train_step(model: nn.Module, loss_fn: LossFn, attack: Attack, *,
                                metrics_fn: MetricsFn = no_metrics, nonfinite: str = "stop",
                                augment_fn: Callable | None = None) -> Callable:
    """A training step on adversarial examples of each batch.

    Args:
      model, loss_fn, metrics_fn, nonfinite, augment_fn: as in
        :func:`dlfun.train.make_train_step` (augmentation acts on the adversarial inputs).
      attack: ``attack(input_loss, params, x, y, key) -> x_adv`` (see :data:`Attack`), run
        with the state's current parameters held fixed.

    Returns:
      ``step(state, (inputs, targets), key) -> (state, metrics)``; the metrics (loss,
      ``metrics_fn``'s accuracy, ...) are those of the adversarial batch.
    """
    train_step = make_train_step(model, loss_fn, metrics_fn=metrics_fn, nonfinite=nonfinite,
                                 augment_fn=augment_fn)

    def step(state: TrainState, batch, key: jax.Array):
        x, y = batch
        attack_key, step_key = jax.random.split(key)
        x_adv = attack(make_input_loss(model, loss_fn, state), state.params, x, y, attack_key)
        return train_step(state, (x_adv, y), step_key)

    return step
