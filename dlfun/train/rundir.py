"""The run contract: one directory per run with config, metrics, summary, plots, checkpoints.

::

    <run_dir>/config.json      the full configuration (and the dlfun/JAX versions)
    <run_dir>/metrics.jsonl    one JSON object per logged epoch (or step)
    <run_dir>/summary.json     final figures (test_accuracy, wall_seconds, steps, ...)
    <run_dir>/*.png            plots
    <run_dir>/tensorboard/     TensorBoard event files
    <run_dir>/checkpoints/<name>/<step>/   orbax checkpoints, the last N kept

A new run refuses a directory that already holds a run (nothing is overwritten); ``--resume``
continues one and refuses a configuration that differs from the saved one.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import tempfile
import typing
from pathlib import Path
from typing import Any

from ..errors import CheckpointError, ConfigError

# Fields that may differ when resuming. Not "epochs": the number of steps shapes learning-rate
# schedules, so a resumed run with other epochs would not match an uninterrupted one.
RESUMABLE_CHANGES = frozenset({"resume", "run_dir", "preset"})


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Flags every experiment has (the run contract)."""

    seed: int = 0
    """Random seed: model initialisation, data order, dropout (member k of an ensemble uses
    seed + k)."""
    run_dir: str | None = None
    """Run directory (default runs/<experiment>/<timestamp>)."""
    preset: str = "default"
    """Preset of all values: 'default', or 'smoke' (a tiny run of seconds, for tests)."""
    resume: bool = False
    """Continue the run in --run-dir from its newest checkpoint."""
    num_seeds: int = 1
    """Train this many models (seeds seed..seed+K-1) at once in one compiled program."""
    keep_checkpoints: int = 3
    """How many of the newest checkpoints to keep."""

    def __post_init__(self):
        check_positive(self, "num_seeds", "keep_checkpoints")
        if self.resume and not self.run_dir:
            raise ConfigError("--resume needs --run-dir pointing at the run to continue")


def check_positive(cfg: Any, *names: str) -> None:
    """Raise ConfigError naming the flag if any of the fields is not > 0."""
    for name in names:
        value = getattr(cfg, name)
        if not value > 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be positive, got {value}")


def check_choice(cfg: Any, name: str, choices: typing.Iterable[str]) -> None:
    """Raise ConfigError naming the flag if the field is not one of ``choices``."""
    choices = tuple(choices)
    if getattr(cfg, name) not in choices:
        raise ConfigError(f"--{name.replace('_', '-')} must be one of {', '.join(choices)}; "
                          f"got {getattr(cfg, name)!r}")


def check_subset(cfg: Any, name: str, choices: typing.Iterable[str]) -> None:
    """Raise ConfigError naming the flag if the field (a sequence) is empty or names anything
    outside ``choices``."""
    choices, values = tuple(choices), tuple(getattr(cfg, name))
    if not values or any(v not in choices for v in values):
        raise ConfigError(f"--{name.replace('_', '-')} must name {name.replace('_', ' ')} "
                          f"among {', '.join(choices)}; got {', '.join(values) or 'none'}")


def config_to_dict(cfg: Any) -> dict:
    """A JSON-ready dict of a config dataclass."""
    return dataclasses.asdict(cfg)


def config_from_dict(cls: type, data: dict) -> Any:
    """Rebuild a config from :func:`config_to_dict` output (lists become tuples again)."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ConfigError(f"saved config has fields this version does not know: "
                          f"{', '.join(sorted(unknown))}")
    kwargs = {k: tuple(v) if typing.get_origin(hints[k]) is tuple else v
              for k, v in data.items()}
    return cls(**kwargs)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file and rename (never half-written)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def default_run_dir(experiment: str) -> Path:
    """runs/<experiment>/<timestamp> under the current directory."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    return Path("runs") / experiment / stamp


class RunDir:
    """Files of one run. Create with :meth:`open`."""

    def __init__(self, path: Path, experiment: str, resumed: bool):
        self.path = path
        self.experiment = experiment
        self.resumed = resumed

    @classmethod
    def open(cls, cfg: Any, experiment: str) -> "RunDir":
        """Create the run directory of ``cfg`` (or check it, when resuming)."""
        path = Path(cfg.run_dir) if cfg.run_dir else default_run_dir(experiment)
        if path.exists() and not path.is_dir():
            raise ConfigError(f"--run-dir {path} is a file, not a directory; choose a "
                              f"directory path")
        if cfg.resume:
            _check_resumable(path, cfg)
        elif path.is_dir() and any(path.iterdir()):
            raise ConfigError(f"run directory {path} already holds files; pass --resume to "
                              f"continue that run, or choose a new --run-dir")
        path.mkdir(parents=True, exist_ok=True)
        run = cls(path, experiment, resumed=cfg.resume)
        run.write_json("config.json", dict(experiment=experiment, **config_to_dict(cfg)))
        return run

    def file(self, name: str) -> Path:
        """Path of a file in the run directory."""
        return self.path / name

    def write_json(self, name: str, payload: dict) -> Path:
        """Atomically write ``payload`` as pretty JSON."""
        atomic_write_text(self.file(name), json.dumps(payload, indent=2, default=_jsonable))
        return self.file(name)

    def read_json(self, name: str) -> dict:
        return json.loads(self.file(name).read_text())


def _jsonable(x: Any):
    """JSON fallback for numpy/JAX scalars and arrays."""
    if hasattr(x, "tolist"):
        return x.tolist()
    return str(x)


def _check_resumable(path: Path, cfg: Any) -> None:
    """The run to resume must exist and have been made with the same configuration."""
    saved_file = path / "config.json"
    if not saved_file.is_file():
        raise CheckpointError(f"cannot resume: no run in {path} (no config.json there); start "
                              f"it without --resume, or point --run-dir at an existing run")
    saved = json.loads(saved_file.read_text())
    mine = config_to_dict(cfg)
    # An experiment may name more fields that only extend or report a run (e.g. DQN's periods).
    allowed = RESUMABLE_CHANGES | getattr(type(cfg), "resumable_changes", frozenset())
    differ = [k for k in mine if k not in allowed and k in saved
              and _normal(saved[k]) != _normal(mine[k])]
    if differ:
        details = ", ".join(f"{k}: {_normal(saved[k])!r} -> {_normal(mine[k])!r}"
                            for k in differ)
        raise ConfigError(f"cannot resume {path} with a different configuration ({details}); "
                          f"drop those flags to continue the run as it was")
    if not has_checkpoint(path):
        raise CheckpointError(f"cannot resume {path}: it has no checkpoint yet (it stopped "
                              f"before the first one was written); run it again without "
                              f"--resume, in a new --run-dir")


def has_checkpoint(path: Path) -> bool:
    """Whether the run has at least one finished checkpoint (orbax's numbered folders; a
    half-written one still has its temporary name)."""
    return any(p.name.isdigit() for p in (path / "checkpoints").glob("*/*") if p.is_dir())


def _normal(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v
