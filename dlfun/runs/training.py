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
from ..train.step import make_eval_step, make_generated_train_step, make_train_step
from .config import TrainConfig


def fit_options(cfg: TrainConfig, name: str = "model", **overrides) -> FitOptions:
    """:class:`FitOptions` from a config's training flags."""
    opts = FitOptions(epochs=cfg.epochs, batch_size=cfg.batch_size, name=name,
                      num_models=cfg.num_models, epoch_mode=cfg.epoch_mode,
                      ensemble=cfg.ensemble)
    return dataclasses.replace(opts, **overrides)


def initial_state(cfg: TrainConfig, model: nn.Module, train: Split, *, name: str = "model",
                  schedule: str = "constant", clip_norm: float | None = None,
                  warmup_steps: int = 0, sample: Any = None):
    """The state :func:`train_supervised` starts from: the config's optimizer (with
    ``schedule`` over the run's steps, ``warmup_steps`` of them warming up for
    ``"warmup_cosine"``, after clipping the global gradient norm to ``clip_norm``),
    initialised from ``cfg.seed`` (stacked ``(K, ...)`` for ``--num-seeds K``) on ``sample``
    inputs (default: the first training example); e.g. to measure a model at
    initialisation."""
    opts = fit_options(cfg, name)
    keys = run_keys(cfg.seed, opts.num_models)
    tx = make_optimizer(cfg.optimizer, cfg.learning_rate, weight_decay=cfg.weight_decay,
                        clip_norm=clip_norm, schedule=schedule, warmup_steps=warmup_steps,
                        total_steps=opts.epochs * (len(train) // opts.batch_size))
    sample = jnp.asarray(train.x[:1] if sample is None else sample)
    return init_states(lambda k: create_train_state(model, tx, k, sample), keys[0],
                       opts.num_models)


def train_supervised(cfg: TrainConfig, run: RunHooks | None, model: nn.Module,
                     loss_fn: Callable, train: Split, val: Split | None, *,
                     name: str = "model", metrics_fn: Callable = no_metrics,
                     augment_fn: Callable | None = None, schedule: str = "constant",
                     clip_norm: float | None = None, warmup_steps: int = 0,
                     on_epoch: Callable[[Any, int], dict] | None = None,
                     generate_fn: Callable | None = None, **fit_overrides) -> FitResult:
    """Train ``model`` (one, or ``cfg.num_seeds`` at once) on ``train``, validating on ``val``.

    The state comes from :func:`initial_state`; keys from ``cfg.seed``; epochs, batch size,
    epoch mode and the non-finite policy from the config (``fit_overrides`` replace
    :class:`FitOptions` fields); ``on_epoch(state, epoch) -> dict`` adds figures to each
    epoch's record (see :func:`dlfun.train.fit`). ``run`` (a :class:`dlfun.runs.Run`, or None
    for no files) checkpoints and resumes. ``generate_fn(key, batch_size) -> (x, y)`` trains on
    batches drawn inside each step instead (an endless synthetic task, see
    :func:`dlfun.train.step.make_generated_train_step`): ``train``'s rows then only count an
    epoch's examples.
    """
    opts = fit_options(cfg, name, **fit_overrides)
    keys = run_keys(cfg.seed, opts.num_models)
    sample = None if generate_fn is None else generate_fn(jax.random.key(0), 1)[0]
    state = initial_state(cfg, model, train, name=name, schedule=schedule, clip_norm=clip_norm,
                          warmup_steps=warmup_steps, sample=sample)
    step = make_train_step(model, loss_fn, metrics_fn=metrics_fn, augment_fn=augment_fn,
                           nonfinite=cfg.nonfinite_policy)
    if generate_fn is not None:
        step = make_generated_train_step(step, generate_fn)
    eval_step = make_eval_step(model, loss_fn, metrics_fn=metrics_fn)
    return fit(state, step, eval_step, train, val, keys, opts, run, on_epoch=on_epoch)


def train_language_model(cfg: TrainConfig, run: RunHooks | None, model: nn.Module,
                         train_ids: np.ndarray, held_ids: np.ndarray, *, seq_len: int,
                         name: str = "model", clip_norm: float | None = None,
                         schedule: str = "constant", warmup_steps: int = 0) -> FitResult:
    """Train ``model`` (ids ``(B, T)`` -> logits ``(B, T, V)``) on ``train_ids``.

    As :func:`train_supervised`, on random windows of the text (see
    :mod:`dlfun.train.language_model`); each epoch ends with the held-out figures ``val_loss``
    (nats/char), ``val_bits_per_char`` and ``val_accuracy`` over the fixed windows of
    ``held_ids``. ``warmup_steps``: the linear warm-up of ``schedule="warmup_cosine"``.
    """
    train, held = text_splits(train_ids, held_ids, seq_len)
    opts = fit_options(cfg, name, eval_batch_size=256)  # 256 windows: bounded memory
    keys = run_keys(cfg.seed, opts.num_models)
    tx = make_optimizer(cfg.optimizer, cfg.learning_rate, weight_decay=cfg.weight_decay,
                        clip_norm=clip_norm, schedule=schedule, warmup_steps=warmup_steps,
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
