"""The run directory: one folder per run, locked while a process works in it.

::

    <run_dir>/config.json      the experiment's name and full configuration
    <run_dir>/metrics.jsonl    one JSON object per logged epoch (or period, or step)
    <run_dir>/summary.json     final figures and the run's status (ok, nonfinite, interrupted)
    <run_dir>/*.png            plots
    <run_dir>/tensorboard/     TensorBoard event files
    <run_dir>/checkpoints/<name>/<index>/   orbax checkpoints, the last N kept
    <run_dir>/.lock            holds the pid of the process working in the run

A new run refuses a directory that already holds files (nothing is overwritten). ``--resume``
continues a run of the same experiment with the same configuration; with nothing saved yet it
starts the run from the beginning (a scheduler re-running the command after a preemption gets
the right thing either way). A second process on a locked run is refused. Every file is
written whole (temporary file + rename) as strict JSON: a non-finite number becomes ``null``
and the record says which fields were non-finite.
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import json
import math
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from ..errors import ConfigError, DlfunError
from .config import RESUMABLE_CHANGES, config_from_dict, config_to_dict

LOCK_NAME = ".lock"


class RunDirError(DlfunError, OSError):
    """A run directory that cannot be created, locked, read or written."""


_FIXES = {
    errno.EACCES: "permission denied; choose a --run-dir you can write to",
    errno.EPERM: "operation not permitted; choose a --run-dir you can write to",
    errno.EROFS: "the file system is read-only; choose a --run-dir on a writable disk",
    errno.ENOSPC: "no space left on the device; free some space or choose a --run-dir on "
                  "another disk",
    errno.EDQUOT: "disk quota exceeded; free some space or choose a --run-dir on another disk",
    errno.ENAMETOOLONG: "the name is too long; choose a shorter --run-dir",
    errno.ENOTDIR: "a part of the path is a file, not a folder; choose another --run-dir",
    errno.ENOENT: "a folder on the path does not exist and cannot be made there; choose "
                  "another --run-dir",
    errno.EISDIR: "a folder stands where a file should be; choose another --run-dir",
    errno.ELOOP: "too many symbolic links on the path; choose another --run-dir",
}


def fs_error(e: OSError, path: Path | str, doing: str) -> RunDirError:
    """A one-line :class:`RunDirError` for an ``OSError`` met while ``doing`` ``path``."""
    fix = _FIXES.get(e.errno, f"{e.strerror or e}; check the path or choose another --run-dir")
    return RunDirError(f"cannot {doing} {path}: {fix}")


def os_error_in(e: BaseException) -> OSError | None:
    """The ``OSError`` an exception stands for (itself, its cause or context), or None.
    Libraries (orbax, tensorboardX) often wrap the file-system error they met."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno is not None:
            return e
        if "No space left on device" in str(e):
            return OSError(errno.ENOSPC, "No space left on device")
        e = e.__cause__ or e.__context__
    return None


def strict_json(payload: Any) -> tuple[Any, list[str]]:
    """``payload`` with every non-finite float replaced by ``None``, and the dotted paths of
    those fields (JSON has no NaN or infinity)."""
    bad: list[str] = []

    def clean(x, where):
        if isinstance(x, float) and not math.isfinite(x):
            bad.append(where or "value")
            return None
        if isinstance(x, dict):
            return {k: clean(v, f"{where}.{k}" if where else str(k)) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [clean(v, f"{where}[{i}]") for i, v in enumerate(x)]
        if hasattr(x, "tolist"):  # numpy / JAX scalars and arrays
            return clean(x.tolist(), where)
        return x

    return clean(payload, ""), bad


def dumps_strict(payload: dict, **kwargs) -> str:
    """Strict JSON text of a record; non-finite fields become null and are listed under
    ``"nonfinite_fields"``."""
    clean, bad = strict_json(payload)
    if bad:
        clean["nonfinite_fields"] = bad
    return json.dumps(clean, allow_nan=False, default=str, **kwargs)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file and rename (never half-written)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(fd, "w") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; run files are for reading
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as e:
        raise fs_error(e, path, "write") from None


def default_run_dir(experiment: str) -> Path:
    """runs/<experiment>/<date-time> under the current directory."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    return Path("runs") / experiment / stamp


def read_saved_config(path: Path) -> dict | None:
    """The parsed ``config.json`` of the run in ``path`` (None if there is none).

    Raises:
      ConfigError: the file is not JSON or not an object (hand-edited, truncated, foreign).
    """
    saved = path / "config.json"
    try:
        text = saved.read_text()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise fs_error(e, saved, "read") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{saved} is not valid JSON ({e.msg} at line {e.lineno}); restore "
                          f"it or start a new run in another --run-dir") from None
    if not isinstance(data, dict) or not isinstance(data.get("experiment"), str):
        raise ConfigError(f"{saved} is not a dlfun run configuration (no experiment name); "
                          f"restore it or start a new run in another --run-dir")
    return data


def _check_path(path: Path) -> None:
    """Refuse paths that cannot be a run directory before touching anything."""
    for part in path.absolute().parts:
        if len(part.encode()) > 255:
            raise ConfigError(f"--run-dir has a name of {len(part.encode())} bytes "
                              f"({part[:20]}...); names are limited to 255 bytes: choose a "
                              f"shorter --run-dir")
    if path.is_symlink() and not path.exists():
        raise ConfigError(f"--run-dir {path} is a symbolic link to {os.readlink(path)}, which "
                          f"does not exist; remove the link or choose another --run-dir")
    if path.exists() and not path.is_dir():
        raise ConfigError(f"--run-dir {path} is a file, not a folder; choose a folder path")


def _holds_files(path: Path) -> bool:
    return path.is_dir() and any(p.name != LOCK_NAME for p in path.iterdir())


class RunDir:
    """The folder of one run, locked by this process. Create with :meth:`open`.

    Attributes:
      path: the folder.
      experiment: the experiment's name (part of the run's identity).
      continuing: whether this process continues an earlier attempt of the run (``--resume``
        on a folder holding its config); False for a fresh start.
    """

    def __init__(self, path: Path, experiment: str, continuing: bool, created: list[Path],
                 lock_fd: int):
        self.path = path
        self.experiment = experiment
        self.continuing = continuing
        self._created = created
        self._lock_fd = lock_fd
        self.wrote_results = False

    @classmethod
    def open(cls, cfg: Any, experiment: str) -> "RunDir":
        """Create (or, with ``cfg.resume``, check and continue) the run directory of ``cfg``,
        lock it, and write ``config.json``.

        Raises:
          ConfigError: the path cannot be a run directory, already holds another run, holds
            a different experiment or configuration, or another process works in it.
          RunDirError: the file system refused (permissions, space, names).
        """
        path = Path(cfg.run_dir) if cfg.run_dir else default_run_dir(experiment)
        _check_path(path)
        if not cfg.resume and _holds_files(path):
            raise ConfigError(f"run directory {path} already holds files; pass --resume to "
                              f"continue that run, or choose a new --run-dir")
        created = _make_dirs(path)
        lock_existed = (path / LOCK_NAME).exists()
        try:
            fd = _lock(path)
            try:
                continuing = _check_resumable(path, cfg, experiment) if cfg.resume else False
            except BaseException:
                if not lock_existed:  # refused: leave the folder as it was
                    (path / LOCK_NAME).unlink(missing_ok=True)
                os.close(fd)
                raise
        except BaseException:
            _remove_created(created, path)
            raise
        if cfg.resume and not continuing:
            print(f"nothing to resume in {path} yet: starting the run from the beginning",
                  file=sys.stderr, flush=True)
        run = cls(path, experiment, continuing, created, fd)
        run.write_json("config.json", dict(experiment=experiment,
                                           **config_to_dict(cfg) | {"run_dir": str(path)}))
        return run

    def file(self, name: str) -> Path:
        """Path of a file in the run directory."""
        return self.path / name

    def write_json(self, name: str, payload: dict) -> Path:
        """Atomically write ``payload`` as pretty strict JSON."""
        atomic_write_text(self.file(name), dumps_strict(payload, indent=2))
        return self.file(name)

    def read_json(self, name: str) -> dict:
        return json.loads(self.file(name).read_text())

    def discard(self) -> None:
        """Remove what opening this run created, for a run that failed before it produced
        anything (bad input found late): the command can then be run again as it was."""
        if self.continuing or self.wrote_results:
            return
        for name in ("config.json", "metrics.jsonl", "tensorboard", "checkpoints"):
            p = self.file(name)
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
        self.file(LOCK_NAME).unlink(missing_ok=True)
        _remove_created(self._created, self.path)

    def release(self) -> None:
        """Give up the lock (the process ending does the same)."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


def _make_dirs(path: Path) -> list[Path]:
    """``mkdir -p path``; returns the folders it created, deepest first."""
    missing = []
    p = path.absolute()
    while not p.exists():
        missing.append(p)
        p = p.parent
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        _remove_created(missing, path)
        raise fs_error(e, path, "create the run directory") from None
    return missing


def _remove_created(created: list[Path], path: Path) -> None:
    for p in created:  # deepest first; only folders this process made, and only if empty
        try:
            p.rmdir()
        except OSError:
            break


def _lock(path: Path) -> int:
    """An exclusive lock on ``path/.lock`` held by this process (released when it ends)."""
    lock = path / LOCK_NAME
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise fs_error(e, path, "write in") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise ConfigError(f"run directory {path} is in use by process {holder}; wait for it "
                          f"to end, or choose another --run-dir") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    return fd


def _check_resumable(path: Path, cfg: Any, experiment: str) -> bool:
    """Whether ``--resume`` continues an earlier attempt (True) or starts afresh (False).

    Raises ConfigError if ``path`` holds another experiment's run, another configuration, or
    files that are not a run.
    """
    saved = read_saved_config(path)
    if saved is None:
        if _holds_files(path):
            raise ConfigError(f"cannot resume {path}: it holds files but no run (no "
                              f"config.json); choose the run's own folder or a new --run-dir")
        return False
    if saved["experiment"] != experiment:
        raise ConfigError(f"cannot resume {path} with experiments.{experiment}: it holds a run "
                          f"of experiments.{saved['experiment']}; resume it with that "
                          f"experiment, or choose a new --run-dir")
    saved.pop("experiment")
    saved_cfg = config_to_dict(config_from_dict(type(cfg), saved, f"{path}/config.json"))
    mine = config_to_dict(cfg)
    allowed = RESUMABLE_CHANGES | getattr(type(cfg), "resumable_changes", frozenset())
    differ = [k for k in mine if k not in allowed and _normal(saved_cfg[k]) != _normal(mine[k])]
    if differ:
        details = ", ".join(f"{k}: {_normal(saved_cfg[k])!r} -> {_normal(mine[k])!r}"
                            for k in differ)
        raise ConfigError(f"cannot resume {path} with a different configuration ({details}); "
                          f"drop those flags to continue the run as it was")
    return True


def has_checkpoint(path: Path) -> bool:
    """Whether the run has at least one finished checkpoint (orbax's numbered folders; a
    half-written one still has its temporary name)."""
    return any(p.name.isdigit() for p in (path / "checkpoints").glob("*/*") if p.is_dir())


def _normal(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v
