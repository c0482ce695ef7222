"""``--sweep NAME=V1,V2,...``: a grid of hyperparameter values trained at once.

The flag is parsed and checked with the configuration (:func:`parse_sweep`, at parse time,
before anything is written); :mod:`dlfun.runs.training` stacks the grid's points times the
seeds as K models in one compiled program (see :mod:`dlfun.train.sweep`); at the end of the
run :func:`sweep_report` reads each model's final epoch record and gives one record per point
(the values and the final figures), a table on stdout and a plot, ``sweep_<model>.png``.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from ..errors import ConfigError

SWEEP_SYNTAX = "NAME=V1,V2,... (e.g. --sweep learning_rate=1e-3,1e-2,1e-1)"


def parse_sweep(specs: Sequence[str], sweepable: Sequence[str],
                fields: Sequence[str]) -> list[tuple[str, tuple[float, ...]]]:
    """``[(field name, values), ...]`` of ``--sweep`` entries, in the order given.

    Args:
      specs: the flag's entries, each ``NAME=V1,V2,...``; NAME is a field name
        (``learning_rate``) or its flag (``learning-rate``, ``--learning-rate``).
      sweepable: the names this experiment can sweep.
      fields: every field of the configuration (to tell "cannot be swept" from "unknown").

    Raises:
      ConfigError: one line naming the entry, the problem and the sweepable names.
    """
    names = ", ".join(sweepable) or "none"
    if specs and not sweepable:
        raise ConfigError("--sweep: this experiment sweeps no hyperparameter; drop --sweep")
    axes: list[tuple[str, tuple[float, ...]]] = []
    for spec in specs:
        name, sep, text = spec.partition("=")
        name = name.strip().lstrip("-").replace("-", "_")
        if not sep or not name or not text.strip():
            raise ConfigError(f"--sweep {spec!r}: expected {SWEEP_SYNTAX}")
        if name not in sweepable:
            why = ("cannot be swept (it changes the program or the architecture)"
                   if name in fields else "is not a hyperparameter of this experiment")
            raise ConfigError(f"--sweep {name}: {why}; sweepable: {names}")
        if any(name == n for n, _ in axes):
            raise ConfigError(f"--sweep {name} is given twice; give all its values in one "
                              f"entry, {name}=V1,V2,...")
        axes.append((name, _values(spec, name, text)))
    return axes


def _values(spec: str, name: str, text: str) -> tuple[float, ...]:
    values = []
    for part in text.split(","):
        try:
            v = float(part)
        except ValueError:
            raise ConfigError(f"--sweep {spec!r}: {part.strip()!r} is not a number; expected "
                              f"{SWEEP_SYNTAX}") from None
        if not math.isfinite(v):
            raise ConfigError(f"--sweep {name}: values must be finite numbers, got {part}")
        values.append(v)
    if len(set(values)) != len(values):
        raise ConfigError(f"--sweep {name}: a value is given twice ({text}); give each once")
    return tuple(values)


def sweep_report(cfg: Any, records: Sequence[dict], summary: dict,
                 plot_dir=None) -> list[dict]:
    """One record per (model, point): the point's values, its final figures (mean over
    seeds), ``diverged``; printed as a table; a plot per model in ``plot_dir``.

    Args:
      cfg: the run's configuration (``sweep_points``, ``num_seeds``, ``num_models``).
      records: the run's metric records (epoch records with ``<figure>_each`` lists).
      summary: the experiment's summary; its ``member_<figure>`` lists of one value per
        member (e.g. ``member_test_accuracy``) join the points' figures when one model swept.
      plot_dir: a folder for ``sweep_<model>.png`` (None: no plots).
    """
    from ..train.sweep import member_figures, point_results

    points, seeds, members = cfg.sweep_points, cfg.num_seeds, cfg.num_models
    finals = _final_records(records, members)
    out = []
    for model, rec in finals.items():
        figures = member_figures(rec, members)
        if len(finals) == 1:
            figures.update({k[len("member_"):]: v for k, v in summary.items()
                            if k.startswith("member_") and isinstance(v, list)
                            and len(v) == members})
        figures = {k: figures[k] for k in _ordered(list(figures))}
        rows = point_results(points, seeds, figures, rec.get("nonfinite_step_each"))
        out += [dict(model=model, **r) for r in rows]
        if plot_dir is not None:
            plot_sweep(rows, [n for n, _ in cfg.sweep_axes], plot_dir / f"sweep_{model}.png",
                       title=f"{model}: final figures over the sweep ({seeds} seed(s) each)")
    print(format_sweep_table(out, [n for n, _ in cfg.sweep_axes]))
    return out


def _final_records(records: Sequence[dict], members: int) -> dict[str, dict]:
    """The last epoch record of each model whose records have per-member figures."""
    finals: dict[str, dict] = {}
    for r in records:
        if "model" in r and "epoch" in r and any(
                k.endswith("_each") and isinstance(v, list) and len(v) == members
                for k, v in r.items()):
            finals[r["model"]] = r
    return finals


FIGURE_ORDER = ("train_loss", "val_loss", "val_accuracy", "test_accuracy", "train_accuracy")


def _ordered(names: Sequence[str]) -> list[str]:
    """Figure names, the usual ones first."""
    return [k for k in FIGURE_ORDER if k in names] + [k for k in names if k not in FIGURE_ORDER]


def _figures(rows: Sequence[dict], names: Sequence[str]) -> list[str]:
    """The figure columns of a table: the usual ones first, at most six."""
    skip = set(names) | {"model", "diverged", "diverged_at_step"}
    return _ordered([k for k in rows[0] if k not in skip and not k.endswith("_each_seed")])[:6]


def format_sweep_table(rows: Sequence[dict], names: Sequence[str]) -> str:
    """The sweep's points as a fixed-width text table (one line per model and point)."""
    if not rows:
        return "sweep: no per-member records"
    figures = _figures(rows, names)
    cols = ["model", *names, *figures, "diverged"]
    cells = [[_cell(r.get(c)) for c in cols] for r in rows]
    width = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    line = "  ".join(c.rjust(w) for c, w in zip(cols, width))
    body = ["  ".join(x.rjust(w) for x, w in zip(row, width)) for row in cells]
    return "\n".join(["== sweep ==", line, *body])


def _cell(v) -> str:
    if v is None:
        return "nan"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def plot_sweep(rows: Sequence[dict], names: Sequence[str], path, title: str = ""):
    """The final figures over the first swept name (log x axis for spans over 10x), one line
    per combination of the other names; diverged points marked x at the panel's bottom."""
    from ..plots import _pyplot, save_figure

    plt = _pyplot()
    figures = [f for f in _figures(rows, names)][:3]
    x_name, others = names[0], list(names[1:])
    fig, axes = plt.subplots(1, len(figures), figsize=(4.6 * len(figures), 3.6), squeeze=False)
    xs_all = [r[x_name] for r in rows]
    log_x = min(xs_all) > 0 and max(xs_all) / min(xs_all) >= 10
    groups = sorted({tuple(r[n] for n in others) for r in rows})
    bad = [r[x_name] for r in rows if r.get("diverged")]
    for ax, fig_name in zip(axes[0], figures):
        for g in groups:
            sel = [r for r in rows if tuple(r[n] for n in others) == g]
            label = ", ".join(f"{n}={v:g}" for n, v in zip(others, g)) or fig_name
            xs = [r[x_name] for r in sel]
            ys = [math.nan if r.get(fig_name) is None or r.get("diverged") else r[fig_name]
                  for r in sel]  # a diverged point's figures are its frozen state's
            ax.plot(xs, ys, marker="o", label=label)
        if bad:
            ax.plot(bad, [0] * len(bad), "x", color="red", transform=ax.get_xaxis_transform(),
                    clip_on=False, markersize=9, label="diverged (NaN/inf)")
        if log_x:
            ax.set_xscale("log")
        ax.set_xlabel(x_name)
        ax.set_ylabel(f"final {fig_name}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)
