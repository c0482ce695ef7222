"""Measure a scheme: its collectives against the ideal, per-device parameter memory, step
time, and agreement with one device on the same batches and keys."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from ..data.split import Split
from ..errors import ConfigError
from .collectives import find_collectives, ring_allreduce_bytes, summarize
from .schemes import Scheme
from .sharding import max_bytes_per_device
from .training import run_steps

SIMULATED_NOTE = ("simulated CPU devices share this machine's cores: step times show the "
                  "overhead of each scheme, not a speed-up; collective bytes and per-device "
                  "memory are exact")


def collective_report(compiled: Any, num_devices: int, grad_bytes: int,
                      scheme_ideal: dict | None = None) -> dict:
    """Collectives of a compiled step vs the data-parallel ideal (one ring all-reduce of the
    gradient: ``2 (N-1)/N * grad_bytes`` per device), and vs the scheme's own ideal if given.

    Args:
      compiled: the compiled step.
      num_devices: N.
      grad_bytes: bytes of one gradient (all parameters).
      scheme_ideal: ``bytes_per_device`` and ``formula`` of the scheme's least traffic
        (e.g. :func:`.pixel_lm.ideal_traffic`), or None.
    Returns:
      ``ops`` (per kind: executions and bytes per device), ``bytes_per_device``,
      ``ideal_bytes_per_device`` and ``ratio_to_ideal`` (NaN on one device); with
      ``scheme_ideal``, also ``scheme_ideal_bytes_per_device``, ``scheme_ideal`` (the
      formula) and ``ratio_to_scheme_ideal``.
    """
    summary = summarize(find_collectives(compiled, num_devices))
    ideal = ring_allreduce_bytes(grad_bytes, num_devices)
    total = summary.pop("total")["bytes_per_device"]
    report = dict(ops={k: dict(count=v["ops"], bytes_per_device=round(v["bytes_per_device"]))
                       for k, v in summary.items()},
                  bytes_per_device=round(total), ideal_bytes_per_device=round(ideal),
                  ratio_to_ideal=total / ideal if ideal else float("nan"))
    if scheme_ideal is not None:
        own = scheme_ideal["bytes_per_device"]
        report.update(scheme_ideal_bytes_per_device=own, scheme_ideal=scheme_ideal["formula"],
                      ratio_to_scheme_ideal=total / own if own else float("nan"))
    return report


def memory_report(scheme: Scheme, compiled: Any) -> dict:
    """Per-device parameter bytes (from the arrays' shards) against the whole parameter set,
    and the compiled step's per-device argument bytes (parameters, optimizer state, batch)."""
    per_device = max_bytes_per_device(scheme.state.params)
    if scheme.name == "dp_pmap":  # the pmap state is stacked: one copy per device
        per_device = max_bytes_per_device(jax.tree.map(lambda a: a[0], scheme.state.params))
    analysis = compiled.memory_analysis()
    n = scheme.mesh.devices.size
    return dict(param_bytes=scheme.param_bytes, param_bytes_per_device=per_device,
                param_fraction=per_device / scheme.param_bytes,
                # what a scheme that shards every parameter should hold: 1/N, plus a little
                # for what is too small to split (norms, biases)
                within_1_over_n_plus_5_percent=bool(
                    per_device <= (1 / n + 0.05) * scheme.param_bytes),
                step_argument_bytes_per_device=getattr(analysis, "argument_size_in_bytes", None))


def max_param_diff(a: Any, b: Any) -> float:
    """Largest absolute difference between two parameter pytrees of the same structure."""
    return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def measure_scheme(scheme: Scheme, train: Split, test: Split | None, keys, epochs: int,
                   batch_size: int, max_steps: int | None = None, rows: slice = slice(None),
                   check: bool = True, state: Any = None, start_step: int = 0,
                   after_step=None) -> tuple[dict, Any]:
    """Compile, train and report one scheme (and optionally its one-device reference).

    Args:
      scheme: from :func:`~.schemes.build_scheme`.
      train, test: host splits; ``test`` (optional) gives ``test_accuracy``.
      keys: ``(init_key, data_key, step_key)`` of :func:`dlfun.train.run_keys`.
      epochs, batch_size, max_steps: how long to train (global batch size).
      rows: this process's rows of each global batch.
      check: also train the single-device reference and report the largest parameter and
        training-loss differences (``max_param_diff_vs_1_device``,
        ``max_loss_diff_vs_1_device``).
      state, start_step: a restored state (in the scheme's layout) and the steps it has done;
        default the scheme's initial state at step 0. The reference always starts at step 0,
        so a resumed run is checked against an uninterrupted one.
      after_step: passed to :func:`~.training.run_steps` (checkpoints).
    Returns:
      ``(report, params)``: a JSON-ready dict of the figures and the trained parameters
      (host arrays, shaped like the reference's).
    """
    _, data_key, step_key = keys
    first = np.arange(batch_size)[rows]
    batch = scheme.put_batch((train.x[first], train.y[first]))
    compiled = scheme.step.lower(scheme.state, batch, step_key).compile()
    n = scheme.mesh.devices.size
    report = dict(scheme=scheme.name, devices=n, processes=jax.process_count(), **scheme.notes,
                  collectives=collective_report(compiled, n, scheme.param_bytes,
                                                scheme.ideal_traffic),
                  memory=memory_report(scheme, compiled))
    loop = run_steps(compiled, scheme.put_batch, scheme.state if state is None else state,
                     train, data_key, step_key, epochs, batch_size, max_steps, rows,
                     start_step=start_step, after_step=after_step)
    if not loop.losses:
        raise ConfigError(f"nothing left to train: the checkpoint is at step {start_step}, the "
                          "end of this run; raise --epochs or --max-steps to train further")
    step_s = loop.median_step_seconds
    report.update(steps=len(loop.losses), first_loss=loop.losses[0], last_loss=loop.losses[-1],
                  step_ms=1e3 * step_s, images_per_s=batch_size / step_s)
    if test is not None and jax.process_index() == 0:
        report["test_accuracy"] = scheme.accuracy(loop.state, test.x, test.y)
    if check and jax.process_index() == 0:
        ref = run_steps(scheme.reference_step, lambda b: b, scheme.reference_state, train,
                        data_key, step_key, epochs, batch_size, max_steps)
        report["max_param_diff_vs_1_device"] = max_param_diff(
            scheme.host_params(loop.state), jax.device_get(ref.state.params))
        # the same steps' training losses (a resumed run's first step is step start_step)
        report["max_loss_diff_vs_1_device"] = float(np.max(np.abs(
            np.asarray(loop.losses) - np.asarray(ref.losses[start_step:]))))
    return report, scheme.host_params(loop.state)
