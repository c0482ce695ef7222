"""Each experiment's smoke preset runs in-process and shows that learning happened."""

import dataclasses
import json
import shutil

import jax
import numpy as np
import pytest

import experiments.mlp as mlp
import experiments.regression as regression
import experiments.xor as xor
from dlfun.errors import NonFiniteError
from dlfun.train.checkpoint import Checkpointer
from run_helpers import checkpoint_index, records, saved_epochs, smoke


def test_mlp_smoke_learns_and_writes_the_run_contract(tmp_path):
    cfg, summary = smoke(mlp, tmp_path)
    assert summary["test_accuracy"] > 0.5  # chance is 0.1
    rec = records(tmp_path)
    assert len(rec) == cfg.epochs and rec[-1]["train_loss"] < 0.6 * rec[0]["train_loss"]
    run = tmp_path / "run"
    for f in ("config.json", "metrics.jsonl", "summary.json", "mlp_curves.png",
              "mlp_confusion.png", "mlp_precision_recall.png"):
        assert (run / f).is_file(), f
    assert any((run / "tensorboard").iterdir())
    assert saved_epochs(run / "checkpoints" / "mlp")[-1] == cfg.epochs
    saved = json.loads((run / "summary.json").read_text())
    assert saved["status"] == "ok" and len(saved["confusion_matrix"]) == 10
    assert set(saved["precision"]) == {str(i) for i in range(10)}
    assert np.sum(saved["confusion_matrix"]) == saved["test_examples"]


def test_mlp_resume_equals_uninterrupted_run(tmp_path):
    smoke(mlp, tmp_path, "full")
    smoke(mlp, tmp_path, "cut")
    # "interrupted" after epoch 2: the last checkpoint and the summary were never written
    last = checkpoint_index(tmp_path / "cut" / "checkpoints" / "mlp", 3)
    shutil.rmtree(tmp_path / "cut" / "checkpoints" / "mlp" / str(last))
    (tmp_path / "cut" / "summary.json").unlink()
    cfg = dataclasses.replace(mlp.PRESETS["smoke"], run_dir=str(tmp_path / "cut"), resume=True)
    summary = mlp.main(cfg)
    assert summary["resumed"]
    full = Checkpointer(tmp_path / "full" / "checkpoints" / "mlp")
    cut = Checkpointer(tmp_path / "cut" / "checkpoints" / "mlp")
    a = full._manager.restore(last)["state"]["params"]
    b = cut._manager.restore(last)["state"]["params"]
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        assert np.array_equal(np.asarray(x), np.asarray(y))
    assert summary["test_accuracy"] == json.loads(
        (tmp_path / "full" / "summary.json").read_text())["test_accuracy"]
    assert [r["epoch"] for r in records(tmp_path, "cut")] == [1, 2, 3]
    assert records(tmp_path, "cut")[-1] == records(tmp_path, "full")[-1] | {
        "seconds": records(tmp_path, "cut")[-1]["seconds"]}


def test_mlp_ensemble_reports_members_and_ensemble(tmp_path):
    _, summary = smoke(mlp, tmp_path, num_seeds=2)
    assert len(summary["member_test_accuracy"]) == 2
    assert summary["member_test_accuracy"][0] != summary["member_test_accuracy"][1] or \
        summary["entropy_correct"] is not None
    assert summary["test_accuracy"] > 0.5 and summary["ensemble_strategy"] == "vmap"
    assert summary["entropy_misclassified"] > summary["entropy_correct"]


def test_mlp_nonfinite_loss_stops_with_reason_in_summary(tmp_path):
    with pytest.raises(NonFiniteError, match="non-finite .* at step"):
        smoke(mlp, tmp_path, optimizer="sgd", learning_rate=1e30)
    saved = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert saved["status"] == "nonfinite" and "at step" in saved["reason"]


def test_xor_mlp_fits_and_perceptron_cannot(tmp_path, capsys):
    _, summary = smoke(xor, tmp_path, explain=True)
    assert summary["mlp_accuracy"] == 1.0 and summary["mlp_decided"]
    assert summary["perceptron_accuracy"] <= 0.75  # no line gets more than 3 of 4 rows
    # the perceptron sits at its cross-entropy optimum: every output 0.5, loss ln 2
    assert summary["perceptron_output_spread"] < 0.01 and not summary["perceptron_decided"]
    assert summary["perceptron_loss"] == pytest.approx(np.log(2), abs=1e-3)
    assert summary["mlp_loss"] < 0.1
    # --explain: the hand-derived gradients (float64) equal jax.grad's (float32)
    assert summary["explain_max_abs_grad_difference"] < 1e-6
    text = (tmp_path / "run" / "explain.txt").read_text()
    assert "delta_out" in text and "Dense_1.bias[0]" in text
    assert "Dense_0.kernel[1, 1]" in capsys.readouterr().out


def test_regression_reaches_least_squares(tmp_path):
    _, summary = smoke(regression, tmp_path)
    for table in ("apartments", "advertising"):
        mse, ls = summary[f"{table}_mse"], summary[f"{table}_least_squares_mse"]
        assert mse <= 1.05 * ls
        targets = regression.TABLES[table]().targets
        assert mse < 0.2 * targets.var()  # far better than predicting the mean
    w = summary["advertising_weights"]
    assert abs(w["newspaper_k"]) < 0.02 < w["tv_k"]
