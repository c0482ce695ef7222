"""An experiment's life: open the run, train, and end it one of four ways.

:func:`run_experiment` opens the locked run directory, runs the experiment's body with a
:class:`~dlfun.runs.run.Run`, and ends with ``summary.json`` holding ``status``:

* ``ok``: the body returned its figures (with ``--sweep``, also ``sweep``: one record per
  point of the grid, see :func:`dlfun.runs.sweep.sweep_report`);
* ``nonfinite``: the loss or gradients became NaN/inf (policy "stop"), or every update was
  dropped (policy "skip"); the message names the step and the last good checkpoint (exit 3);
* ``interrupted``: SIGTERM/SIGINT, after saving a checkpoint where training stood (exit
  128 + signal);
* bad input found late (a missing data file): the run directory is removed again if this
  process made it and nothing was produced, so the corrected command runs as it was.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from ..errors import DlfunError, NonFiniteError
from ..platform import allocator_in_use
from .metrics_log import MetricsLog
from .run import Run, RunInterrupted, StopSignals
from .rundir import RunDir
from .sweep import sweep_report


def run_experiment(name: str, cfg: Any, body: Callable[[Run, MetricsLog], dict]) -> dict:
    """Open the run directory, run ``body(run, run.log) -> summary``, write ``summary.json``.

    Raises:
      NonFiniteError, RunInterrupted: after writing the summary with that status.
      DlfunError: bad input or a file-system failure (one line; see :mod:`dlfun.runs.cli`).
    """
    with StopSignals() as signals, matmul_precision(cfg):
        rundir = RunDir.open(cfg, name)
        try:
            return _run(name, cfg, body, Run(rundir, cfg, signals))
        finally:
            rundir.release()


def _run(name: str, cfg: Any, body: Callable, run: Run) -> dict:
    t0 = time.perf_counter()

    def end(status: str, **fields) -> None:
        run.write_json("summary.json", dict(status=status, experiment=name, **fields,
                                            wall_seconds=round(time.perf_counter() - t0, 2)))

    try:
        summary = body(run, run.log)
        if getattr(cfg, "sweep", ()):
            summary = dict(summary, sweep=sweep_report(cfg, run.log.records, summary, run.path))
        run.close()
        summary = dict(summary, **skipped_updates(run.log.records))
        if summary.get("skipped_share") == 1.0:
            raise NonFiniteError("every update was non-finite and dropped (--skip-nonfinite); "
                                 f"nothing was learned: {cfg.nonfinite_advice.split(',')[0]}")
    except NonFiniteError as e:
        _close_quietly(run)
        e.args = (_nonfinite_message(str(e), run, cfg),)
        end("nonfinite", reason=str(e), step=e.step, **skipped_updates(run.log.records))
        raise
    except RunInterrupted as e:
        _close_quietly(run)
        end("interrupted", reason=str(e))
        raise
    except DlfunError:
        _close_quietly(run)
        run.rundir.discard()
        raise
    except BaseException:
        _close_quietly(run)
        raise
    summary = dict(status="ok", experiment=name, **summary, resumed=run.resumed,
                   matmul_precision=getattr(cfg, "matmul_precision", "default"),
                   # not "precision": classifier reports hold per-class precision there
                   compute_precision=getattr(cfg, "precision", "f32"),
                   malloc=allocator_in_use(),
                   wall_seconds=round(time.perf_counter() - t0, 2), run_dir=str(run.path))
    run.write_json("summary.json", summary)
    print_summary(name, summary)
    return summary


def matmul_precision(cfg: Any):
    """``--matmul-precision`` for the run (a context: nothing leaks into the caller)."""
    import contextlib

    import jax

    value = getattr(cfg, "matmul_precision", "default")
    return contextlib.nullcontext() if value == "default" else jax.default_matmul_precision(value)


def skipped_updates(records: list[dict]) -> dict:
    """``skipped_updates``, ``updates`` and ``skipped_share`` over the run's records (policy
    "skip" drops non-finite updates; the records count them), or {} if none were counted."""
    updates = sum(r.get("updates", 0) for r in records)
    if not updates:
        return {}
    skipped = sum(r.get("skipped_updates", 0) for r in records)
    return dict(skipped_updates=skipped, updates=updates, skipped_share=skipped / updates)


def _nonfinite_message(message: str, run: Run, cfg: Any) -> str:
    where = ("no checkpoint has been written yet" if run.last_saved is None else
             f"the last good checkpoint is {run.last_saved}")
    return f"{message}; {where}; {cfg.nonfinite_advice}"


def _close_quietly(run: Run) -> None:
    try:
        run.close()
    except Exception:  # the error being reported matters more
        pass


def print_summary(name: str, summary: dict, max_items: int = 14) -> None:
    """A short human summary: the scalar figures, then where the files are."""
    print(f"\n== {name}: done ==")
    shown = 0
    for k, v in summary.items():
        if isinstance(v, (int, float, str)) and k not in ("run_dir", "status", "experiment"):
            print(f"  {k:<24s} {round(v, 4) if isinstance(v, float) else v}")
            shown += 1
            if shown >= max_items:
                break
    print(f"  files in {summary['run_dir']}: config.json metrics.jsonl summary.json *.png "
          f"tensorboard/ checkpoints/")
