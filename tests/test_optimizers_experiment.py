"""experiments.optimizers: one compiled learning-rate sweep runs through divergence and the
best rate lies inside the grid."""

import json

import experiments.optimizers as optimizers
from run_helpers import smoke


def test_learning_rate_sweep_has_an_interior_best_and_a_too_large_rate(tmp_path):
    cfg, summary = smoke(optimizers, tmp_path)
    grid = list(cfg.learning_rates)
    assert grid[0] == 1e-4 and grid[-1] == 10.0
    points = [p for p in summary["sweep"] if p["optimizer"] == "sgd"]
    assert [p["learning_rate"] for p in points] == grid  # every point trained to the end
    best = summary["best_learning_rate"]["sgd"]
    assert grid[0] < best < grid[-1]  # too small and too large both lose
    at = {p["learning_rate"]: p for p in points}
    # lr 10 diverges (NaN/inf, or ends above its initial loss) or ends far worse than the best
    assert at[10.0]["diverged"] or at[10.0]["val_loss"] > 2 * at[best]["val_loss"]
    assert summary["diverged"]["sgd"][-1] == at[10.0]["diverged"]
    # the smallest rate barely moves in 3 epochs: its loss stays within 5% of the start
    assert at[1e-4]["train_loss"] > 0.95 * at[1e-4]["initial_train_loss"]
    assert at[best]["val_loss"] < 0.5 * at[1e-4]["val_loss"]
    saved = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert saved["status"] == "ok" and saved["best_learning_rate"]["sgd"] == best
    for f in ("lr_sweep.png", "lr_curves.png", "loss_curves.png"):
        assert (tmp_path / "run" / f).stat().st_size > 0
