"""What a training loop asks of the run that drives it, as one small interface.

The loops in dlfun (:func:`dlfun.train.fit`, the compiled and host DQN loops, the parallel
step loop) never open files, parse flags or handle signals themselves. They call a
:class:`RunHooks` object: *restore* a state (or start from the given one), *record* a metrics
record, report the *end of a unit* of work (an epoch, a period, a step: the run decides
whether that is a checkpoint), ask whether a *stop* was requested (a signal), and *interrupt*
(save the state where it stands, then end the run). The default :class:`RunHooks` does none of
that: a library user calling ``fit`` from their own code gets plain training, no files.

``dlfun.runs.Run`` implements the same methods over a run directory (checkpoints, metrics
log, lock, signals); the loops cannot tell the difference.
"""

from __future__ import annotations

from typing import Any


class RunHooks:
    """No run directory: nothing restored or saved, records kept in memory only, no stop
    requests. Make one per training call (it holds that call's records)."""

    resumed = False

    def __init__(self):
        self._records: list[dict] = []

    def restore(self, name: str, template: Any, position_key: str) -> tuple[Any, dict | None]:
        """``(state, position)``: the newest saved state of ``name`` and the position saved with
        it (e.g. ``{"epoch": 3, "batch": 0}``), or ``(template, None)`` to start afresh.
        ``position_key`` names the position field that orders metric records, so that records
        after the restored point can be dropped (the resumed run writes them again)."""
        return template, None

    def record(self, record: dict, step: int | None = None, prefix: str = "") -> dict:
        """Keep one metrics record (a flat dict of numbers and strings)."""
        self._records.append(record)
        return record

    def records(self, **where) -> list[dict]:
        """The records kept so far whose fields equal ``where``."""
        return [r for r in self._records if all(r.get(k) == v for k, v in where.items())]

    def end_of_unit(self, name: str, unit: int, total: int, index: int, state: Any,
                    position: dict, wait: bool = False) -> None:
        """``unit`` (1-based) of ``total`` is done; save ``state`` at ``position`` if the run's
        policy says so (``index``, e.g. the global step, orders the saves; ``wait``: return
        only once the save is on disk, for a loop whose next call donates ``state``)."""

    def stop_requested(self) -> bool:
        """Whether the run was asked to stop (SIGTERM/SIGINT) and should save and end."""
        return False

    def interrupt(self, name: str, index: int, state: Any, position: dict) -> None:
        """Save ``state`` at ``position`` (``index`` orders saves) and end the run (raises)."""

    def progress(self, total: int, desc: str):
        """A progress bar with ``update(n)``, ``set_postfix(dict)`` and ``close()``."""
        return _NoBar()


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, *args, **kwargs) -> None:
        pass

    def close(self) -> None:
        pass

