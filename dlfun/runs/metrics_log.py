"""Streaming metrics: ``metrics.jsonl``, TensorBoard event files, and a progress bar."""

from __future__ import annotations

import json
import logging
import math
import sys
from pathlib import Path
from typing import Iterable

import numpy as np

from .rundir import RunDir, atomic_write_text, dumps_strict, fs_error

log = logging.getLogger(__name__)


def to_python(metrics: dict) -> dict:
    """Device/numpy scalars to plain floats/ints (JSON-ready)."""
    out = {}
    for k, v in metrics.items():
        v = np.asarray(v) if not isinstance(v, (int, float, str)) else v
        out[k] = v.item() if isinstance(v, np.ndarray) and v.size == 1 else (
            v.tolist() if isinstance(v, np.ndarray) else v)
    return out


class MetricsLog:
    """Append metric records to ``metrics.jsonl`` and TensorBoard, and keep them in memory.

    On resume, records after the restored point are dropped first (the resumed run writes
    them again), so the file never holds two versions of one epoch.
    """

    def __init__(self, run: RunDir | None, tensorboard: bool = True):
        self.run = run
        self.records: list[dict] = []
        self._tb = None
        self._want_tb = tensorboard and run is not None
        if run is not None:
            self._path = run.file("metrics.jsonl")
            if self._path.exists():
                self.records = _read_records(self._path)

    def truncate_after(self, key: str, value: int, model: str | None = None) -> None:
        """Forget records with ``record[key] > value`` on disk too (only those of ``model``
        among records that name a model)."""
        def later(r):
            return r.get(key, -1) > value and r.get("model", model) == model

        self.records = [r for r in self.records if not later(r)]
        if self.run is not None:
            atomic_write_text(self._path, "".join(dumps_strict(r) + "\n" for r in self.records))

    def log(self, record: dict, step: int | None = None, prefix: str = "") -> dict:
        """Write one record (a flat dict of scalars/strings)."""
        record = to_python(record)
        self.records.append(record)
        if self.run is not None:
            try:
                with self._path.open("a") as f:
                    f.write(dumps_strict(record) + "\n")
            except OSError as e:
                raise fs_error(e, self._path, "write") from None
            self.run.wrote_results = True
            if self._want_tb:  # made on the first record: a run that fails at start leaves none
                self._tb, self._want_tb = _tensorboard_writer(self.run.file("tensorboard")), False
        if self._tb is not None and step is not None:
            for k, v in record.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                    self._tb.add_scalar(f"{prefix}{k}", v, step)
        return record

    def select(self, **where) -> list[dict]:
        """Records whose fields equal ``where``."""
        return [r for r in self.records if all(r.get(k) == v for k, v in where.items())]

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def _read_records(path: Path) -> list[dict]:
    """Records of a metrics.jsonl; a line cut short by a killed run is skipped with a warning
    (the resumed run writes that record again)."""
    records = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            log.warning("%s line %d is not complete JSON (the run was killed while writing "
                        "it); skipping it", path, i)
            continue
        if isinstance(record, dict):
            records.append(record)
        else:
            log.warning("%s line %d is not a metrics record (a JSON object); skipping it",
                        path, i)
    return records


def _tensorboard_writer(path: Path):
    """A tensorboardX writer (lightweight: no TensorFlow needed), or None when tensorboardX is
    not installed: the run goes on and ``metrics.jsonl`` still holds every record."""
    try:
        SummaryWriter = _import_summary_writer()
    except ImportError:
        log.warning("tensorboardX is not installed, so no TensorBoard event files are written "
                    "(metrics.jsonl has every record); pip install tensorboardX to get them")
        return None
    return SummaryWriter(str(path), flush_secs=10)


def _import_summary_writer():
    """tensorboardX's ``SummaryWriter``, imported here (not at start). tensorboardX imports
    PyTorch, when installed, only to accept its tensors (~1.8 s; dlfun logs floats), so the
    import runs with ``torch`` marked unavailable unless PyTorch is loaded already."""
    hide = "torch" not in sys.modules
    if hide:
        sys.modules["torch"] = None  # ``import torch`` raises ImportError meanwhile
    try:
        from tensorboardX import SummaryWriter
    finally:
        if hide and sys.modules.get("torch", 0) is None:
            del sys.modules["torch"]
    return SummaryWriter


def progress_bar(total: int, desc: str, enabled: bool | None = None):
    """A tqdm bar on stderr (hidden when stderr is not a terminal, unless ``enabled``)."""
    from tqdm.auto import tqdm

    disable = (not sys.stderr.isatty()) if enabled is None else not enabled
    return tqdm(total=total, desc=desc, disable=disable, dynamic_ncols=True, leave=False)


def format_record(record: dict, keys: Iterable[str]) -> str:
    """``"loss 0.123  accuracy 0.981"`` for the keys present in ``record``."""
    parts = []
    for k in keys:
        if k in record and isinstance(record[k], (int, float)):
            v = record[k]
            parts.append(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}")
    return "  ".join(parts)
