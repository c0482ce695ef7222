"""Supervised training with a per-epoch hook, for the experiments that measure something after
every epoch (per-layer gradient norms, accuracy on the noisy training labels).

:func:`dlfun.runs.training.train_supervised` does not pass :func:`dlfun.train.fit`'s
``on_epoch`` hook through (yet), so :func:`train_with_epoch_hook` is its body with the hook
added: the same optimizer, keys, steps, checkpoints and resume. Once ``train_supervised``
takes ``on_epoch``, this module can go.
"""

from __future__ import annotations

from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from dlfun.data.split import Split
from dlfun.optim import make_optimizer
from dlfun.runs.config import TrainConfig
from dlfun.runs.training import fit_options
from dlfun.train.fit import FitResult, fit, run_keys
from dlfun.train.hooks import RunHooks
from dlfun.train.metrics import no_metrics
from dlfun.train.state import create_train_state
from dlfun.train.step import make_eval_step, make_train_step


def initial_state(cfg: TrainConfig, model: nn.Module, train: Split, name: str = "model"):
    """The state :func:`train_with_epoch_hook` starts from (seeded by ``cfg.seed``; stacked
    ``(K, ...)`` for ``--num-seeds K``), e.g. to measure the model at initialisation.

    Built eagerly, not through :func:`dlfun.train.fit.init_states`' jit: an experiment that
    trains many variants one after another would compile a new init program for each (~2 s
    on 2 cores for a 10-layer MLP), while eager ops compile once per shape and are reused by
    every variant whose layers have the same shapes.
    """
    opts = fit_options(cfg, name)
    keys = run_keys(cfg.seed, opts.num_models)
    tx = make_optimizer(cfg.optimizer, cfg.learning_rate, weight_decay=cfg.weight_decay,
                        total_steps=opts.epochs * (len(train) // opts.batch_size))
    sample = jnp.asarray(train.x[:1])

    def create(key):
        return create_train_state(model, tx, key, sample)

    return create(keys[0]) if opts.num_models is None else jax.vmap(create)(keys[0])


def train_with_epoch_hook(cfg: TrainConfig, run: RunHooks | None, model: nn.Module,
                          loss_fn: Callable, train: Split, val: Split | None, *,
                          name: str = "model", metrics_fn: Callable = no_metrics,
                          on_epoch: Callable | None = None, state=None) -> FitResult:
    """:func:`dlfun.runs.training.train_supervised` (constant learning rate, no clipping or
    augmentation) with ``on_epoch(state, epoch) -> dict`` joining each epoch's record.
    ``state``: :func:`initial_state`'s result, if the caller has it already."""
    opts = fit_options(cfg, name)
    keys = run_keys(cfg.seed, opts.num_models)
    if state is None:
        state = initial_state(cfg, model, train, name)
    step = make_train_step(model, loss_fn, metrics_fn=metrics_fn, nonfinite=cfg.nonfinite_policy)
    eval_step = make_eval_step(model, loss_fn, metrics_fn=metrics_fn)
    return fit(state, step, eval_step, train, val, keys, opts, run, on_epoch=on_epoch)
