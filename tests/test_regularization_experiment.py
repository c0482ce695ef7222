"""experiments.regularization (the gap each regulariser leaves) and early stopping in fit."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import serialization

import experiments.regularization as regularization
from dlfun import losses, nn
from dlfun.data import Split
from dlfun.errors import ConfigError
from dlfun.optim import make_optimizer
from dlfun.train import EarlyStopping, FitOptions, fit, init_states, run_keys
from dlfun.train.hooks import RunHooks
from dlfun.train.metrics import classification_metrics
from dlfun.train.state import create_train_state
from dlfun.train.step import make_eval_step, make_train_step
from run_helpers import smoke

PATIENCE, EPOCHS, K, INTERRUPT = 3, 25, 2, 5


def noisy_data(n, seed, noise=0.3):
    """Three Gaussian classes in 6-d; a share ``noise`` of the labels redrawn at random, so
    a net memorising the training set gets worse on held-out data (validation loss rises)."""
    rng = np.random.default_rng(seed)
    centers = np.random.default_rng(0).normal(0, 1.0, (3, 6))
    y = rng.integers(0, 3, n)
    x = (centers[y] + rng.normal(0, 1, (n, 6))).astype(np.float32)
    flip = rng.random(n) < noise
    y[flip] = rng.integers(0, 3, flip.sum())
    return Split(x, y.astype(np.int32))


class MemoryRun(RunHooks):
    """Checkpoints kept in memory after every epoch; asks to stop after ``stop_after`` epochs."""

    def __init__(self, saved=None, stop_after=None):
        super().__init__()
        self.saved, self.stop_after, self.epoch = saved if saved is not None else {}, stop_after, 0

    def restore(self, name, template, position_key):
        if not self.saved:
            return template, None
        tree, position = self.saved[max(self.saved)]
        return jax.tree.map(jnp.asarray, serialization.from_state_dict(template, tree)), position

    def end_of_unit(self, name, unit, total, index, state, position, wait=False):
        self.epoch = unit
        if unit == total or unit % 2 == 0:  # as Run: every 2nd epoch and the last one
            self.save(index, state, position)

    def save(self, index, state, position):
        self.saved[index] = (jax.device_get(serialization.to_state_dict(state)), dict(position))

    def stop_requested(self):
        return self.stop_after is not None and self.epoch >= self.stop_after

    def interrupt(self, name, index, state, position):
        self.save(index, state, position)
        raise KeyboardInterrupt


@functools.cache
def early_stopping_setup():
    """The model's pieces and initial state, built once (fit copies the state it is given)."""
    model = nn.MLP((32,), 3)
    keys = run_keys(3, K)
    tx = make_optimizer("adam", 0.03)
    state = init_states(lambda k: create_train_state(model, tx, k, jnp.zeros((1, 6))),
                        keys[0], K)
    step = make_train_step(model, losses.softmax_cross_entropy,
                           metrics_fn=classification_metrics)
    return state, step, make_eval_step(model, losses.softmax_cross_entropy), keys


def early_stopping_fit(hooks=None, on_epoch=None):
    state, step, eval_step, keys = early_stopping_setup()
    opts = FitOptions(epochs=EPOCHS, batch_size=16, num_models=K, epoch_mode="loop",
                      ensemble="vmap", early_stopping=EarlyStopping(PATIENCE))
    return fit(state, step, eval_step, noisy_data(48, 1), noisy_data(96, 2), keys, opts,
               hooks, on_epoch=on_epoch)


def expected_stop(val_loss):
    """Textbook early stopping over per-epoch losses ``(E, K)``: each model's best epoch
    (1-based, strict improvement) and the first epoch all waited PATIENCE epochs."""
    for e in range(1, len(val_loss) + 1):
        best = np.argmin(val_loss[:e], axis=0) + 1  # first minimum: strict improvement
        if np.all(e - best >= PATIENCE):
            return best, e
    return np.argmin(val_loss, axis=0) + 1, len(val_loss)


def leaves(tree, k):
    return [np.asarray(a)[k] for a in jax.tree.leaves(tree)]


def test_early_stopping_restores_each_models_best_val_weights_across_a_resume():
    seen = {}

    def keep_params(state, epoch):  # every epoch's parameters, to compare with
        seen[epoch] = jax.device_get(state.params)
        return {}

    # interrupted after epoch INTERRUPT (saved there), resumed from that checkpoint
    saved, first, second = {}, MemoryRun(stop_after=INTERRUPT), MemoryRun()
    first.saved = second.saved = saved
    with pytest.raises(KeyboardInterrupt):
        early_stopping_fit(first, keep_params)
    out = early_stopping_fit(second, keep_params)
    history = first.records() + second.records()
    val = np.array([r["val_loss_each"] for r in history])  # (epochs run, K)
    best, stop = expected_stop(val)
    assert best.min() <= INTERRUPT < stop < EPOCHS  # a best epoch the checkpoint carried over
    assert out.stopped_epoch == stop and len(history) == stop and out.start_epoch == INTERRUPT
    assert out.best_epoch == best.tolist() and best.max() < stop  # the weights go back
    for k in range(K):
        for got, want, last in zip(leaves(out.state.params, k), leaves(seen[best[k]], k),
                                   leaves(seen[stop], k)):
            np.testing.assert_array_equal(got, want)
            assert not np.array_equal(got, last)
    # a finished run restored from its last checkpoint (the stop epoch) trains no further
    assert saved[max(saved)][1]["epoch"] == stop
    again = MemoryRun(saved)
    done = early_stopping_fit(again)
    assert again.records() == [] and done.best_epoch == out.best_epoch
    for got, want in zip(jax.tree.leaves(done.state.params), jax.tree.leaves(out.state.params)):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_early_stopping_bad_settings_are_one_line_errors():
    with pytest.raises(ConfigError, match="patience must be an integer >= 1"):
        EarlyStopping(0)
    with pytest.raises(ConfigError, match="mode must be 'min' or 'max'"):
        EarlyStopping(3, mode="lowest")
    with pytest.raises(ConfigError, match="needs a validation split"):
        fit(None, None, None, noisy_data(16, 0), None, None,
            FitOptions(epochs=1, batch_size=4, early_stopping=EarlyStopping(2)))


def test_l2_narrows_the_loss_gap_of_an_overfitting_mlp(tmp_path):
    cfg, summary = smoke(regularization, tmp_path)
    assert summary["train_examples"] == 200
    train, test = summary["train_accuracy"], summary["test_accuracy"]
    # without regularisation the MLP fits its 200 digits and generalises worse than it fits
    assert train["none"] == 1.0 and 0.85 < test["none"] < 0.98
    assert summary["generalization_gap"]["none"] > 0.02
    gap = summary["loss_gap"]
    # L2 (λ = 0.01) keeps the weights small: test NLL - train NLL shrinks by 15% or more
    assert gap["l2_0.01"] < 0.85 * gap["none"], gap
    assert summary["narrows_gap"].keys() == {"l2_0.01"}
    assert (tmp_path / "run" / "regularization_bars.png").is_file()


def test_bad_flags_are_one_line_errors():
    with pytest.raises(ConfigError, match="--weight-decay is not used here"):
        regularization.Config(weight_decay=0.1)
    with pytest.raises(ConfigError, match="--batch-size 64 is larger than the smallest"):
        regularization.Config(batch_size=64, sizes=(50,))
    with pytest.raises(ConfigError, match="--methods must name methods among"):
        regularization.Config(methods=("none", "mixup"))
