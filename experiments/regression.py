"""Linear regression on two small tables from the lectures (apartment prices; ad spend -> sales).

Fits y = w.x + b by gradient descent on standardised features (full batch, MSE) for each
embedded table, reports the fitted weights in the tables' own units, the mean squared error,
and the closed-form least-squares solution for comparison (gradient descent should reach it).
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from dlfun import losses
from dlfun.runs.cli import run_cli
from dlfun.data import Split, Table, advertising, apartments, standardize
from dlfun.nn import Dense
from dlfun.plots import plot_curves
from dlfun.runs.config import TrainConfig
from dlfun.runs.experiment import run_experiment
from dlfun.runs.training import train_supervised

NAME = "regression"
TABLES = {"apartments": apartments, "advertising": advertising}


@dataclasses.dataclass(frozen=True)
class Config(TrainConfig):
    pass


PRESETS = {
    "default": Config(epochs=500, batch_size=24, learning_rate=0.05, optimizer="sgd",
                      checkpoint_every_epochs=250),
    "smoke": Config(preset="smoke", epochs=150, batch_size=24, learning_rate=0.05,
                    optimizer="sgd", checkpoint_every_epochs=150),
}


def main(cfg: Config) -> dict:
    """Fit both tables; return the summary."""
    def body(run, log):
        summary = {}
        for name, table_fn in TABLES.items():
            summary.update(_fit_table(cfg, run, log, name, table_fn()))
        plot_curves(log.records, run.file("curves.png"), [("train_loss",)],
                    title="Regression: training MSE (standardised units)")
        return summary

    return run_experiment(NAME, cfg, body)


def _fit_table(cfg, run, log, name: str, table: Table) -> dict:
    """Gradient descent on one table, reported in original units next to least squares."""
    xs, (mx, sx) = standardize(table.features)
    ys, (my, sy) = standardize(table.targets[:, None])
    fit = train_supervised(cfg, run, Dense(1, **cfg.model_dtypes), losses.mse, Split(xs, ys), None, name=name,
                           epoch_mode="scan")
    params = fit.state.params
    if cfg.num_models is not None:  # report the first seed; all reach the same optimum
        params = jax.tree.map(lambda a: a[0], params)
    w = np.asarray(params["kernel"])[:, 0] * sy[0] / sx
    b = float(my[0] + sy[0] * np.asarray(params["bias"])[0] - (w * mx).sum())
    w_ls, b_ls = _least_squares(table.features, table.targets)
    mse = float(np.mean((table.features @ w + b - table.targets) ** 2))
    mse_ls = float(np.mean((table.features @ w_ls + b_ls - table.targets) ** 2))
    return {f"{name}_mse": mse, f"{name}_least_squares_mse": mse_ls,
            f"{name}_weights": _named(table, w),
            f"{name}_bias": round(b, 4),
            f"{name}_least_squares_weights": _named(table, w_ls),
            f"{name}_least_squares_bias": round(float(b_ls), 4),
            f"{name}_target": table.target_name}


def _named(table: Table, w: np.ndarray) -> dict[str, float]:
    return {n: round(float(v), 4) for n, v in zip(table.feature_names, w)}


def _least_squares(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    """Closed-form ordinary least squares with an intercept (float64)."""
    a = np.hstack([x.astype(np.float64), np.ones((len(x), 1))])
    coef = np.linalg.lstsq(a, y.astype(np.float64), rcond=None)[0]
    return coef[:-1], coef[-1]


if __name__ == "__main__":
    run_cli(main, Config, PRESETS, prog="python -m experiments.regression", description=__doc__)
