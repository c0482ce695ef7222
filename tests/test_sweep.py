"""--sweep: each point of a vmapped grid trains exactly as that configuration alone; a
diverging member leaves the others going; bad names are one-line errors."""

import dataclasses
from types import SimpleNamespace

import jax
import numpy as np
import pytest

import experiments.mlp as mlp
from dlfun import losses, nn
from dlfun.errors import NonFiniteError
from dlfun.runs.cli import parse_config, run_cli
from dlfun.runs.config import TrainConfig
from dlfun.runs.sweep import sweep_report
from dlfun.runs.training import train_supervised
from dlfun.train.fit import _raise_if_nonfinite
from dlfun.train.metrics import classification_metrics
from test_train_core import toy_data

TRAIN, VAL = toy_data(64, 6, 3, seed=0), toy_data(32, 6, 3, seed=1)
MODEL = nn.MLP((8,), 3)


def train(cfg):
    return train_supervised(cfg, None, MODEL, losses.softmax_cross_entropy, TRAIN, VAL,
                            metrics_fn=classification_metrics)


def leaves(state, members):
    return [np.asarray(a)[members] for a in jax.tree.leaves(state.params)]


def test_each_sweep_point_equals_it_trained_alone_and_a_diverging_one_stops_alone():
    # 3 learning rates x 2 seeds = 6 members in one program; the largest diverges at once
    cfg = TrainConfig(epochs=2, batch_size=16, optimizer="momentum", weight_decay=0.01,
                      num_seeds=2, epoch_mode="scan", sweep=("learning_rate=0.05,0.3,1e30",))
    swept = train(cfg)
    assert cfg.num_models == 6 and np.shape(swept.state.step) == (6,)
    np.testing.assert_array_equal(swept.state.opt_state.hyperparams["learning_rate"],
                                  np.float32([0.05, 0.05, 0.3, 0.3, 1e30, 1e30]))
    for p, point in enumerate(cfg.sweep_points[:2]):
        alone = train(dataclasses.replace(cfg, sweep=(), **point))  # --num-seeds 2
        members = slice(2 * p, 2 * p + 2)
        for a, b in zip(leaves(swept.state, members), leaves(alone.state, slice(None))):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(swept.history[-1]["val_loss_each"][members],
                                   alone.history[-1]["val_loss_each"], rtol=1e-5)
    bad = swept.history[-1]["nonfinite_step_each"]
    assert bad[:4] == [-1] * 4 and min(bad[4:]) >= 0  # frozen at their last good state
    assert all(np.isfinite(a).all() for a in leaves(swept.state, slice(4, 6)))


@pytest.mark.parametrize("bad_steps,stops", [([-1, 3], False), ([5, 3], True)])
def test_a_sweep_stops_on_nonfinite_only_when_every_member_has(bad_steps, stops):
    state = SimpleNamespace(bad_step=np.asarray(bad_steps, np.int32))
    metrics = {"loss": np.asarray([[0.5, 0.5], [np.nan, np.nan]])}  # (steps, K)
    if stops:
        with pytest.raises(NonFiniteError, match="every one of the 2 models"):
            _raise_if_nonfinite(state, metrics, 0, stop_when="all")
    else:
        _raise_if_nonfinite(state, metrics, 0, stop_when="all")
        with pytest.raises(NonFiniteError, match="model 1 of the ensemble"):
            _raise_if_nonfinite(state, metrics, 0, stop_when="any")


def test_sweep_report_gives_one_record_per_point_and_a_plot(tmp_path, capsys):
    cfg = TrainConfig(num_seeds=2, sweep=("learning_rate=0.1,1,10",))
    records = [dict(model="m", epoch=1, val_loss_each=[9.0] * 6),
               dict(model="m", epoch=2, val_loss_each=[0.5, 0.7, 0.2, 0.4, float("nan"), 3.0],
                    train_grad_norm_each=[1.0] * 6, nonfinite_step_each=[-1, -1, -1, -1, 7, -1])]
    rows = sweep_report(cfg, records, {"member_test_accuracy": [0.9, 0.8, 1, 1, 0.1, 0.2]},
                        tmp_path)
    assert [r["learning_rate"] for r in rows] == [0.1, 1.0, 10.0]
    assert rows[0]["val_loss"] == pytest.approx(0.6) and rows[1]["val_loss"] == pytest.approx(0.3)
    assert rows[2]["val_loss"] is None and rows[2]["val_loss_each_seed"] == [None, 3.0]
    assert [r["diverged"] for r in rows] == [False, False, True]
    assert rows[2]["diverged_at_step"] == 7 and rows[1]["test_accuracy"] == 1.0
    assert "train_grad_norm" not in rows[0]
    assert (tmp_path / "sweep_m.png").stat().st_size > 0
    assert "learning_rate" in capsys.readouterr().out


def test_sweep_flag_is_repeatable_and_combines_with_seeds():
    cfg = parse_config(mlp.Config, mlp.PRESETS, [
        "--sweep", "learning-rate=1e-3,1e-2", "--sweep", "weight_decay=0,1e-4,1e-3",
        "--num-seeds", "3"])
    assert cfg.sweep_axes == [("learning_rate", (1e-3, 1e-2)), ("weight_decay", (0, 1e-4, 1e-3))]
    assert len(cfg.sweep_points) == 6 and cfg.num_models == 18


@pytest.mark.parametrize("argv,message", [
    (["--sweep", "hidden=32,64"], "--sweep hidden: cannot be swept (it changes the program or "
                                  "the architecture); sweepable: learning_rate, weight_decay, "
                                  "momentum"),
    (["--sweep", "lr=1,2"], "--sweep lr: is not a hyperparameter of this experiment; sweepable"),
    (["--sweep", "learning_rate"], "expected NAME=V1,V2,..."),
    (["--sweep", "learning_rate=0.1,fast"], "'fast' is not a number"),
    (["--sweep", "learning_rate=0.1,-1"], "--sweep learning_rate: must be >= 1e-12, got -1.0"),
    (["--sweep", "momentum=0.5,0.9"], "--optimizer adam has no momentum"),
])
def test_bad_sweeps_exit_2_with_one_line(argv, message, capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        run_cli(mlp.main, mlp.Config, mlp.PRESETS, argv + ["--run-dir", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()
