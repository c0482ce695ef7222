"""Wire a model, a loss and data into :func:`fit` with a config's training flags."""

from __future__ import annotations

from typing import Callable

import flax.linen as nn
import jax.numpy as jnp

from ..data.split import Split
from ..optim import make_optimizer
from .experiment import TrainConfig, fit_options
from .fit import FitResult, fit, init_states, run_keys
from .metrics import no_metrics
from .metrics_log import MetricsLog
from .rundir import RunDir
from .state import create_train_state
from .step import make_eval_step, make_train_step


def train_supervised(cfg: TrainConfig, run: RunDir | None, log: MetricsLog | None,
                     model: nn.Module, loss_fn: Callable, train: Split, val: Split | None, *,
                     name: str = "model", metrics_fn: Callable = no_metrics,
                     augment_fn: Callable | None = None, schedule: str = "constant",
                     clip_norm: float | None = None, **fit_overrides) -> FitResult:
    """Train ``model`` (one, or ``cfg.num_seeds`` at once) on ``train``, validating on ``val``.

    The optimizer comes from ``cfg.optimizer``/``learning_rate``/``weight_decay`` with the given
    ``schedule``, after clipping the global gradient norm to ``clip_norm`` (None: no clipping);
    keys from ``cfg.seed``; epochs, batch size, epoch mode, checkpoints and the non-finite policy
    from the config (``fit_overrides`` replace :class:`FitOptions` fields).
    """
    opts = fit_options(cfg, name, **fit_overrides)
    keys = run_keys(cfg.seed, opts.num_models)
    total_steps = opts.epochs * (len(train) // opts.batch_size)
    tx = make_optimizer(cfg.optimizer, cfg.learning_rate, weight_decay=cfg.weight_decay,
                        clip_norm=clip_norm, schedule=schedule, total_steps=total_steps)
    sample = jnp.asarray(train.x[:1])
    state = init_states(lambda k: create_train_state(model, tx, k, sample), keys[0],
                        opts.num_models)
    step = make_train_step(model, loss_fn, metrics_fn=metrics_fn, augment_fn=augment_fn,
                           nonfinite=cfg.nonfinite_policy)
    eval_step = make_eval_step(model, loss_fn, metrics_fn=metrics_fn)
    return fit(state, step, eval_step, train, val, keys, opts, run, log)
