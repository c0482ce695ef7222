"""Wire a config's training flags into :func:`dlfun.train.fit`: the optimizer, keys, epochs,
epoch mode, K models and the non-finite policy, with the run driving checkpoints and resume."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from .. import losses
from ..data.split import Split
from ..optim import make_optimizer
from ..train.fit import FitOptions, FitResult, fit, init_states, run_keys
from ..train.hooks import RunHooks
from ..train.language_model import (char_lm_metrics, make_window_eval_step,
                                    make_window_train_step, text_splits)
from ..train.metrics import no_metrics
from ..train.state import create_train_state
from ..train.step import make_eval_step, make_train_step
from .config import TrainConfig


def fit_options(cfg: TrainConfig, name: str = "model", **overrides) -> FitOptions:
    """:class:`FitOptions` from a config's training flags."""
    opts = FitOptions(epochs=cfg.epochs, batch_size=cfg.batch_size, name=name,
                      num_models=cfg.num_models, epoch_mode=cfg.epoch_mode,
                      ensemble=cfg.ensemble)
    return dataclasses.replace(opts, **overrides)


def initial_state(cfg: TrainConfig, model: nn.Module, train: Split, *, name: str = "model",
                  schedule: str = "constant", clip_norm: float | None = None,
                  eager: bool = False):
    """The state :func:`train_supervised` starts from: the config's optimizer (with
    ``schedule`` over the run's steps, after clipping the global gradient norm to
    ``clip_norm``), initialised from ``cfg.seed`` (stacked ``(K, ...)`` for ``--num-seeds
    K``); e.g. to measure a model at initialisation.

    ``eager``: build it op by op instead of as one compiled program. Eager ops compile once
    per shape and are reused by every later call with the same shapes, so an experiment
    training many variants of one architecture pays ~0.02 s per variant instead of ~1.5 s of
    CPU for compiling a new init program each time (measured: MLP 64-128-128-10, 3 seeds);
    the first call costs more (~2.7 s against ~1.7 s)."""
    opts = fit_options(cfg, name)
    keys = run_keys(cfg.seed, opts.num_models)
    tx = make_optimizer(cfg.optimizer, cfg.learning_rate, weight_decay=cfg.weight_decay,
                        clip_norm=clip_norm, schedule=schedule,
                        total_steps=opts.epochs * (len(train) // opts.batch_size))
    sample = jnp.asarray(train.x[:1])

    def create(key):
        return create_train_state(model, tx, key, sample)

    if not eager:
        return init_states(create, keys[0], opts.num_models)
    return create(keys[0]) if opts.num_models is None else jax.vmap(create)(keys[0])


def train_supervised(cfg: TrainConfig, run: RunHooks | None, model: nn.Module,
                     loss_fn: Callable, train: Split, val: Split | None, *,
                     name: str = "model", metrics_fn: Callable = no_metrics,
                     augment_fn: Callable | None = None, schedule: str = "constant",
                     clip_norm: float | None = None,
                     on_epoch: Callable[[Any, int], dict] | None = None,
                     state: Any = None, **fit_overrides) -> FitResult:
    """Train ``model`` (one, or ``cfg.num_seeds`` at once) on ``train``, validating on ``val``.

    The state comes from :func:`initial_state`; keys from ``cfg.seed``; epochs, batch size,
    epoch mode and the non-finite policy from the config (``fit_overrides`` replace
    :class:`FitOptions` fields); ``on_epoch(state, epoch) -> dict`` adds figures to each
    epoch's record (see :func:`dlfun.train.fit`). ``run`` (a :class:`dlfun.runs.Run`, or None
    for no files) checkpoints and resumes. ``state``: :func:`initial_state`'s result, if the
    caller built it already (e.g. eagerly); otherwise it is built here.
    """
    opts = fit_options(cfg, name, **fit_overrides)
    keys = run_keys(cfg.seed, opts.num_models)
    if state is None:
        state = initial_state(cfg, model, train, name=name, schedule=schedule,
                              clip_norm=clip_norm)
    step = make_train_step(model, loss_fn, metrics_fn=metrics_fn, augment_fn=augment_fn,
                           nonfinite=cfg.nonfinite_policy)
    eval_step = make_eval_step(model, loss_fn, metrics_fn=metrics_fn)
    return fit(state, step, eval_step, train, val, keys, opts, run, on_epoch=on_epoch)


def train_language_model(cfg: TrainConfig, run: RunHooks | None, model: nn.Module,
                         train_ids: np.ndarray, held_ids: np.ndarray, *, seq_len: int,
                         name: str = "model", clip_norm: float | None = None,
                         schedule: str = "constant") -> FitResult:
    """Train ``model`` (ids ``(B, T)`` -> logits ``(B, T, V)``) on ``train_ids``.

    As :func:`train_supervised`, on random windows of the text (see
    :mod:`dlfun.train.language_model`); each epoch ends with the held-out figures ``val_loss``
    (nats/char), ``val_bits_per_char`` and ``val_accuracy`` over the fixed windows of
    ``held_ids``.
    """
    train, held = text_splits(train_ids, held_ids, seq_len)
    opts = fit_options(cfg, name, eval_batch_size=256)  # 256 windows: bounded memory
    keys = run_keys(cfg.seed, opts.num_models)
    tx = make_optimizer(cfg.optimizer, cfg.learning_rate, weight_decay=cfg.weight_decay,
                        clip_norm=clip_norm, schedule=schedule,
                        total_steps=opts.epochs * (len(train) // opts.batch_size))
    sample = jnp.zeros((1, seq_len), jnp.int32)
    state = init_states(lambda k: create_train_state(model, tx, k, sample), keys[0],
                        opts.num_models)
    loss = losses.softmax_cross_entropy
    step = make_window_train_step(
        make_train_step(model, loss, metrics_fn=char_lm_metrics, nonfinite=cfg.nonfinite_policy),
        seq_len)
    eval_step = make_window_eval_step(make_eval_step(model, loss, metrics_fn=char_lm_metrics))
    return fit(state, step, eval_step, train, held, keys, opts, run)
