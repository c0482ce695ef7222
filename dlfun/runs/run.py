"""A run's life in one object: restore-or-start, the checkpoint policy, signals, metrics.

:class:`Run` implements :class:`dlfun.train.hooks.RunHooks` over a locked
:class:`~dlfun.runs.rundir.RunDir`, so every training loop (``fit``, the DQN loops, the
parallel step loop) resumes, checkpoints, logs and stops the same way:

* **restore or start** (:meth:`Run.restore`, the one place a run resumes): with ``--resume``,
  the newest readable checkpoint of that model; an unreadable one is set aside under a name
  orbax ignores (``<index>.unreadable``) so training can pass that point again, and the one
  before it is used; older checkpoints that a kill left half deleted while orbax rotated them
  out are removed; metrics records after the restored point are dropped (the run writes
  them again). Nothing saved yet: the run starts from the beginning.
* **checkpoints** every ``cfg.checkpoint_every`` units (epochs, periods or steps), after the
  last unit, and when a stop is requested; the newest ``--keep-checkpoints`` kept.
* **signals**: the first SIGTERM or SIGINT asks the loop to stop; it finishes its step, saves,
  and the run ends with status ``interrupted`` (exit 143 or 130). A second one ends the
  process at once.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from ..errors import CheckpointError, DlfunError
from ..train.checkpoint import Checkpointer
from ..train.hooks import RunHooks
from .metrics_log import MetricsLog, progress_bar
from .rundir import RunDir, fs_error, os_error_in

log = logging.getLogger(__name__)


class RunInterrupted(DlfunError):
    """The run stopped on a signal after saving its state (``signum``, ``where``)."""

    def __init__(self, signum: int, where: str):
        self.signum, self.where = signum, where
        super().__init__(f"interrupted by {signal.Signals(signum).name} {where}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class StopSignals:
    """Turns the first SIGTERM/SIGINT into a stop request; a second one acts at once."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous.clear()

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:  # the second signal: stop now
            signal.signal(signum, signal.SIG_DFL)
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            signal.raise_signal(signum)
            return
        self.signum = signum
        print(f"\n{signal.Signals(signum).name} received: finishing the current step, saving "
              f"a checkpoint, then stopping (send it again to stop at once)", file=sys.stderr,
              flush=True)


class Run(RunHooks):
    """A run directory driven through the :class:`RunHooks` interface.

    Args:
      rundir: the opened, locked run directory (None: a process that only reads checkpoints,
        e.g. rank > 0 of a multi-process run, given ``checkpoint_root``).
      cfg: the run's configuration (``resume``, ``keep_checkpoints``, ``checkpoint_every``).
      signals: the stop-request source.
      checkpoint_root: where checkpoints live (default ``rundir.path / "checkpoints"``).
      writer: whether this process writes checkpoints (process 0 of a multi-process run).
      process_local: checkpoints are written and read by single processes (multi-process
        runs gather the state on every process first); it has an effect only when there are
        several processes.
    """

    def __init__(self, rundir: RunDir | None, cfg: Any, signals: StopSignals | None = None,
                 checkpoint_root: Path | None = None, writer: bool = True,
                 process_local: bool = True, progress: bool | None = None):
        super().__init__()
        self.rundir, self.cfg = rundir, cfg
        self.log = MetricsLog(rundir)
        self.signals = signals or StopSignals()
        self.root = checkpoint_root or (rundir.path / "checkpoints" if rundir else None)
        self.writer, self.process_local, self.show_progress = writer, process_local, progress
        self.resumed = False  # set when a checkpoint was restored
        self.last_saved: Path | None = None  # the newest checkpoint this process wrote
        self._saved: dict[str, int] = {}  # newest index saved per model by this process
        self._slots: dict[str, Checkpointer] = {}
        self.started = time.perf_counter()

    # -- files -----------------------------------------------------------------------------
    @property
    def path(self) -> Path:
        return self.rundir.path

    def file(self, name: str) -> Path:
        return self.rundir.file(name)

    def write_json(self, name: str, payload: dict) -> Path:
        return self.rundir.write_json(name, payload)

    # -- RunHooks --------------------------------------------------------------------------
    def restore(self, name: str, template: Any, position_key: str) -> tuple[Any, dict | None]:
        """The newest readable checkpoint of ``name`` (see the module docstring)."""
        if not self.cfg.resume or self.root is None:
            return template, None
        slot = self._slot(name)
        for index in reversed(slot.steps()):
            try:
                state, position = slot.restore(index, template)
            except CheckpointError:
                raise  # a different configuration: never set aside
            except Exception as e:  # orbax raises many types for unreadable files
                self._set_aside(slot, index, e)
                continue
            self.resumed = True
            self._remove_half_deleted(slot, index)
            self.log.truncate_after(position_key, int(position[position_key]), model=name)
            print(f"resuming {name} from {slot.directory}/{index} ({_describe(position)})",
                  file=sys.stderr, flush=True)
            return state, position
        if self.rundir is not None and self.rundir.continuing:
            print(f"nothing of {name} saved in {self.root} yet: starting it from the beginning",
                  file=sys.stderr, flush=True)
            self.log.truncate_after(position_key, -1, model=name)
        return template, None

    def record(self, record: dict, step: int | None = None, prefix: str = "") -> dict:
        return self.log.log(record, step=step, prefix=prefix)

    def records(self, **where) -> list[dict]:
        return self.log.select(**where)

    def end_of_unit(self, name: str, unit: int, total: int, index: int, state: Any,
                    position: dict, wait: bool = False) -> None:
        if unit % self.cfg.checkpoint_every == 0 or unit == total:
            self.save(name, index, state, position, wait=wait)

    def stop_requested(self) -> bool:
        return self.signals.signum is not None

    def interrupt(self, name: str, index: int, state: Any, position: dict) -> None:
        self.save(name, index, state, position, wait=True)
        where = f"at {_describe(position)} of {name}"
        if self.root is not None and self.writer:
            where += f"; saved {self._slot(name).directory}/{index}"
        raise RunInterrupted(self.signals.signum, where)

    def progress(self, total: int, desc: str):
        return progress_bar(total, desc, self.show_progress)

    # -- checkpoints -----------------------------------------------------------------------
    def save(self, name: str, index: int, state: Any, position: dict, wait: bool = False
             ) -> None:
        """Save ``state`` of ``name`` at ``index`` with its ``position`` (this process writes
        only if it is the writer; the state must already be on the host for a
        multi-process run)."""
        if self.root is None or not self.writer:
            return
        slot = self._slot(name)
        if self._saved.get(name) == index:  # saved already at this point (end of a unit)
            if wait:
                slot.wait()
            return
        try:
            slot.save(index, state, dict(position))
            if wait:
                slot.wait()
        except Exception as e:
            raise _as_fs_error(e, slot.directory) from None
        self.last_saved = slot.directory / str(index)
        self._saved[name] = index

    def close(self) -> None:
        """Wait for pending saves; release orbax and the metrics log."""
        errors = []
        for slot in self._slots.values():
            try:
                slot.close()
            except Exception as e:  # report the first; close the others anyway
                errors.append(_as_fs_error(e, slot.directory))
        self._slots.clear()
        self.log.close()
        if errors:
            raise errors[0]

    def _slot(self, name: str) -> Checkpointer:
        if name not in self._slots:
            self._slots[name] = Checkpointer(self.root / name, self.cfg.keep_checkpoints,
                                             process_local=self.process_local)
        return self._slots[name]

    def _remove_half_deleted(self, slot: Checkpointer, restored: int) -> None:
        """Delete the checkpoints older than ``restored`` that a kill left half deleted while
        orbax rotated them out (orbax would go on counting them as steps)."""
        if not self.writer:
            return
        for index in slot.steps():
            if index < restored and not slot.is_complete(index):
                slot.remove(index)
                print(f"removed {slot.directory}/{index}: a half-deleted old checkpoint (a "
                      f"kill during its rotation)", file=sys.stderr, flush=True)

    def _set_aside(self, slot: Checkpointer, index: int, e: Exception) -> None:
        """Rename an unreadable checkpoint so orbax no longer sees it (kept for a post
        mortem) and the run can save that index again."""
        src = slot.directory / str(index)
        dst = slot.directory / f"{index}.unreadable"
        n = 1
        while dst.exists():
            dst, n = slot.directory / f"{index}.unreadable-{n}", n + 1
        if self.writer:
            src.rename(dst)
        print(f"checkpoint {src} is unreadable ({type(e).__name__}); set it aside as "
              f"{dst.name} and trying the one before it", file=sys.stderr, flush=True)
        slot.reload()


def _describe(position: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in position.items())


def _as_fs_error(e: Exception, where: Path) -> Exception:
    """A file-system failure inside orbax as one line; anything else unchanged."""
    if isinstance(e, DlfunError):
        return e
    found = os_error_in(e)
    return fs_error(found, where, "write the checkpoint in") if found is not None else e
