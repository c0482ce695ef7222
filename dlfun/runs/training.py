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
from ..errors import ConfigError, ShapeError
from ..optim import make_optimizer
from ..train.fit import FitOptions, FitResult, fit, init_states, run_keys
from ..train.hooks import RunHooks
from ..train.language_model import (char_lm_metrics, make_window_eval_step,
                                    make_window_train_step, text_splits)
from ..train.metrics import no_metrics
from ..train.state import create_train_state, state_from_params
from ..train.step import make_eval_step, make_generated_train_step, make_train_step
from ..train.sweep import member_values, repeat_for_points, sweep_keys, with_hyperparams
from .config import TrainConfig


def fit_options(cfg: TrainConfig, name: str = "model", **overrides) -> FitOptions:
    """:class:`FitOptions` from a config's training flags (a sweep's members diverge on their
    own: training stops on NaN/inf only when all have)."""
    opts = FitOptions(epochs=cfg.epochs, batch_size=cfg.batch_size, name=name,
                      num_models=cfg.num_models, epoch_mode=cfg.epoch_mode,
                      ensemble=cfg.ensemble, nonfinite_stop="all" if cfg.sweep else "any")
    return dataclasses.replace(opts, **overrides)


def config_keys(cfg: TrainConfig):
    """``(init_key, data_key, step_key)`` of the run: :func:`dlfun.train.fit.run_keys` of
    ``cfg.seed`` (stacked for ``--num-seeds``), the seeds repeated per point of a sweep."""
    if cfg.sweep:
        return sweep_keys(cfg.seed, len(cfg.sweep_points), cfg.num_seeds)
    return run_keys(cfg.seed, cfg.num_models)


def config_optimizer(cfg: TrainConfig, total_steps: int, schedule: str = "constant",
                     clip_norm: float | None = None, warmup_steps: int = 0):
    """The config's optimizer; with ``--sweep`` its hyperparameters are carried in its state
    (``make_optimizer(..., traced=True)``) so that each member gets its own."""
    return make_optimizer(cfg.optimizer, cfg.learning_rate, momentum=cfg.momentum,
                          weight_decay=cfg.weight_decay, clip_norm=clip_norm,
                          schedule=schedule, total_steps=total_steps,
                          warmup_steps=warmup_steps, traced=bool(cfg.sweep))


def start_states(cfg: TrainConfig, create: Callable[[Any], Any]):
    """``create(init_key)`` for the run's model(s): one, K seeds stacked, or a sweep's
    points x seeds stacked with each member's hyperparameters set."""
    if not cfg.sweep:
        return init_states(create, config_keys(cfg)[0], cfg.num_models)
    seeds = None if cfg.num_seeds == 1 else cfg.num_seeds
    state = init_states(create, run_keys(cfg.seed, seeds)[0], seeds)
    state = repeat_for_points(state, len(cfg.sweep_points), seeds is not None)
    return with_hyperparams(state, member_values(cfg.sweep_points, cfg.num_seeds))


def initial_state(cfg: TrainConfig, model: nn.Module, train: Split, *, name: str = "model",
                  schedule: str = "constant", clip_norm: float | None = None,
                  eager: bool = False, start_params: dict | None = None,
                  warmup_steps: int = 0, sample: Any = None):
    """The state :func:`train_supervised` starts from: the config's optimizer (with
    ``schedule`` over the run's steps, ``warmup_steps`` of them warming up for
    ``"warmup_cosine"``, after clipping the global gradient norm to ``clip_norm``),
    initialised from ``cfg.seed`` (stacked ``(K, ...)`` for ``--num-seeds K`` or a sweep) on
    ``sample`` inputs (default: the first training example); e.g. to measure a model at
    initialisation.

    ``eager``: build it op by op instead of as one compiled program. Eager ops compile once
    per shape and are reused by every later call with the same shapes, so an experiment
    training many variants of one architecture pays ~0.02 s per variant instead of ~1.5 s of
    CPU for compiling a new init program each time (measured: MLP 64-128-128-10, 3 seeds);
    the first call costs more (~2.7 s against ~1.7 s). A sweep's state is always compiled.

    ``start_params`` (optional) replaces top-level entries of the fresh parameters (e.g. a
    network trained on an earlier task, or only its ``"encoder"``), stacked ``(K, ...)`` for
    K models; the optimizer state is then initialised for the result (batch-norm statistics
    stay fresh). When it gives every entry of a model without batch-norm statistics, nothing
    is initialised at random (no initialiser is compiled). Not with a sweep."""
    opts = fit_options(cfg, name)
    tx = config_optimizer(cfg, opts.epochs * (len(train) // opts.batch_size), schedule,
                          clip_norm, warmup_steps)
    sample = jnp.asarray(train.x[:1] if sample is None else sample)

    def create(key):
        return create_train_state(model, tx, key, sample)

    if start_params is None:
        if not eager or cfg.sweep:
            return start_states(cfg, create)
        key = config_keys(cfg)[0]
        return create(key) if opts.num_models is None else jax.vmap(create)(key)
    if cfg.sweep:
        raise ConfigError(f"{name}: --sweep cannot start from given parameters; run the "
                          f"points one at a time (--learning-rate ...)")
    keys = config_keys(cfg)
    batched = (lambda f: f) if opts.num_models is None else jax.vmap
    shapes = jax.eval_shape(batched(create), keys[0])
    params = replace_params(shapes.params, start_params, name)
    if set(start_params) == set(shapes.params) and not jax.tree.leaves(shapes.batch_stats):
        return jax.jit(batched(lambda p: state_from_params(model, tx, p)))(params)
    state = init_states(create, keys[0], opts.num_models)
    params = {k: start_params.get(k, v) for k, v in state.params.items()}
    return state.replace(params=params, opt_state=jax.jit(batched(tx.init))(params))


def replace_params(fresh: dict, given: dict, name: str = "model") -> dict:
    """``fresh`` with its top-level entries replaced by ``given``'s, which must be shaped
    alike (ShapeError naming the first mismatch otherwise)."""
    unknown = sorted(set(given) - set(fresh))
    if unknown:
        raise ShapeError(f"{name}: start parameters name {', '.join(unknown)}, which the model "
                         f"does not have (it has {', '.join(sorted(fresh))})")
    for key, tree in given.items():
        want = jax.tree.map(lambda a: tuple(a.shape), fresh[key])
        got = jax.tree.map(lambda a: tuple(np.shape(a)), tree)
        if want != got:
            raise ShapeError(f"{name}: start parameters {key!r} have shapes {got}, the model's "
                             f"{want}; build the model with the pretrained network's sizes")
    return {**fresh, **given}


def train_supervised(cfg: TrainConfig, run: RunHooks | None, model: nn.Module,
                     loss_fn: Callable, train: Split, val: Split | None, *,
                     name: str = "model", metrics_fn: Callable = no_metrics,
                     augment_fn: Callable | None = None, schedule: str = "constant",
                     clip_norm: float | None = None, warmup_steps: int = 0,
                     on_epoch: Callable[[Any, int], dict] | None = None,
                     state: Any = None, penalty_fn: Callable[[Any], jax.Array] | None = None,
                     start_params: dict | None = None, generate_fn: Callable | None = None,
                     **fit_overrides) -> FitResult:
    """Train ``model`` (one, or ``cfg.num_seeds`` at once) on ``train``, validating on ``val``.

    The state comes from :func:`initial_state`; keys from ``cfg.seed``; epochs, batch size,
    epoch mode and the non-finite policy from the config (``fit_overrides`` replace
    :class:`FitOptions` fields); ``on_epoch(state, epoch) -> dict`` adds figures to each
    epoch's record (see :func:`dlfun.train.fit`). ``run`` (a :class:`dlfun.runs.Run`, or None
    for no files) checkpoints and resumes. ``state``: the :func:`initial_state` of these
    arguments if the caller built it already (e.g. to measure the model at initialisation),
    so that it is not built twice. ``penalty_fn(params) -> scalar`` joins the loss (see
    :func:`dlfun.train.make_train_step`; one model: its closure is not split over K);
    ``start_params`` starts from given parameters (see :func:`initial_state`).
    ``generate_fn(key, batch_size) -> (x, y)`` trains on batches drawn inside each step
    instead (an endless synthetic task, see :func:`dlfun.train.step.make_generated_train_step`):
    ``train``'s rows then only count an epoch's examples.
    """
    opts = fit_options(cfg, name, **fit_overrides)
    keys = config_keys(cfg)
    if state is None:
        sample = None if generate_fn is None else generate_fn(jax.random.key(0), 1)[0]
        state = initial_state(cfg, model, train, name=name, schedule=schedule,
                              clip_norm=clip_norm, start_params=start_params,
                              warmup_steps=warmup_steps, sample=sample)
    step = make_train_step(model, loss_fn, metrics_fn=metrics_fn, augment_fn=augment_fn,
                           nonfinite=cfg.nonfinite_policy, penalty_fn=penalty_fn)
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
    keys = config_keys(cfg)
    tx = config_optimizer(cfg, opts.epochs * (len(train) // opts.batch_size), schedule,
                          clip_norm, warmup_steps)
    sample = jnp.zeros((1, seq_len), jnp.int32)
    state = start_states(cfg, lambda k: create_train_state(model, tx, k, sample))
    loss = losses.softmax_cross_entropy
    step = make_window_train_step(
        make_train_step(model, loss, metrics_fn=char_lm_metrics, nonfinite=cfg.nonfinite_policy),
        seq_len)
    eval_step = make_window_eval_step(make_eval_step(model, loss, metrics_fn=char_lm_metrics))
    return fit(state, step, eval_step, train, held, keys, opts, run)
