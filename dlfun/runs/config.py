"""Run configurations: the flags every experiment has, and their validation.

A configuration is a frozen dataclass; each field has a one-line docstring (the string below
it), which becomes its ``--help``. Validation happens when the dataclass is built, i.e. at
parse time, before anything is written:

* every ``int`` field lies in ``[0, 2**31 - 1]`` unless the class's ``ranges`` says otherwise,
  and every ``float`` field is finite (a NaN or an infinity is never a sensible flag value);
* ``ranges`` (merged over the class and its bases) gives a field's closed range ``(lo, hi)``
  (``None``: unbounded on that side), shown in ``--help``;
* ``__post_init__`` adds the checks that involve several fields.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, ClassVar, Iterable

import jax.numpy as jnp

from ..errors import ConfigError
from ..platform import MALLOC_FLAGS
from ..nn.precision import PRECISIONS, Dtype, compute_dtype
from ..optim import HYPERPARAMETERS, OPTIMIZERS
from ..train.epoch import ENSEMBLE_STRATEGIES, EPOCH_MODES
from .sweep import parse_sweep

MATMUL_PRECISIONS = ("default", "high", "highest")
INT_MAX = 2**31 - 1
"""The largest integer flag value (seeds and counts go into int32 arrays)."""

# Fields that may differ when resuming: where the run is, and how this process gets its memory
# (malloc changes no number; the summary records what each attempt used). Not "epochs": the
# number of steps shapes learning-rate schedules, so a resumed run with other epochs would not
# match an uninterrupted one.
RESUMABLE_CHANGES = frozenset({"resume", "run_dir", "preset", "malloc"})


def flag(name: str) -> str:
    """``--flag-name`` of field ``flag_name``."""
    return "--" + name.replace("_", "-")


def field_ranges(cls: type) -> dict[str, tuple]:
    """The ``ranges`` declared over ``cls`` and its bases (subclasses win)."""
    out: dict[str, tuple] = {}
    for klass in reversed(cls.__mro__):
        out.update(klass.__dict__.get("ranges", {}))
    return out


def _scalar_type(tp: Any) -> type | None:
    """int/float/str/bool of a field type, looking through ``X | None`` and ``tuple[X, ...]``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return _scalar_type(inner[0]) if len(inner) == 1 else None
    if origin is tuple:
        return _scalar_type(args[0]) if args else None
    return tp if tp in (int, float, str, bool) else None


def describe_range(lo, hi) -> str:
    """``"1..100"``, ``">= 0"``, ``"<= 5"``."""
    if lo is not None and hi is not None:
        return f"{lo:g}..{hi:g}" if isinstance(lo, float) or isinstance(hi, float) else f"{lo}..{hi}"
    return f">= {lo:g}" if lo is not None else f"<= {hi:g}"


def check_fields(cfg: Any) -> None:
    """Range-check every numeric field of ``cfg`` (see the module docstring)."""
    cls = type(cfg)
    hints = typing.get_type_hints(cls)
    ranges = field_ranges(cls)
    for f in dataclasses.fields(cls):
        kind = _scalar_type(hints[f.name])
        value = getattr(cfg, f.name)
        if kind not in (int, float) or value is None:
            continue
        for v in (value if isinstance(value, tuple) else (value,)):
            _check_value(f.name, v, kind, ranges.get(f.name))


def _check_value(name: str, v: Any, kind: type, declared: tuple | None) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ConfigError(f"{flag(name)} expects {'an integer' if kind is int else 'a number'}, "
                          f"got {v!r}")
    if kind is float and not math.isfinite(v):
        raise ConfigError(f"{flag(name)} must be a finite number, got {v}")
    lo, hi = declared if declared is not None else ((0, INT_MAX) if kind is int else (None, None))
    if kind is int:  # whatever is declared, ints go into int32 arrays
        lo = max(lo, -INT_MAX) if lo is not None else -INT_MAX
        hi = min(hi, INT_MAX) if hi is not None else INT_MAX
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise ConfigError(f"{flag(name)} must be {describe_range(lo, hi)}, got {v}")


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Flags every experiment has (the run contract)."""

    ranges: ClassVar[dict[str, tuple]] = {"num_seeds": (1, 4096), "keep_checkpoints": (1, 1000)}
    preset_by: ClassVar[str | None] = None
    """A field whose value picks the preset's entry (e.g. the GAN's ``data``): then each
    preset maps :meth:`preset_key` of that value to one complete config (see
    :func:`dlfun.runs.cli.preset_config`)."""

    @classmethod
    def preset_key(cls, value):
        """The key of the ``preset_by`` field's ``value`` among a preset's entries."""
        return value

    seed: int = 0
    """Random seed: model initialisation, data order, dropout (member k of an ensemble uses
    seed + k)."""
    run_dir: str | None = None
    """Run directory (default runs/<experiment>/<date-time>)."""
    preset: str = "default"
    """Preset of all values: 'default', or 'smoke' (a tiny run of seconds, for tests)."""
    resume: bool = False
    """Continue the run in --run-dir from its newest checkpoint; with no checkpoint there yet,
    start it from the beginning (so a scheduler can re-run the same command)."""
    num_seeds: int = 1
    """Train this many models (seeds seed..seed+K-1) at once in one compiled program."""
    keep_checkpoints: int = 3
    """How many of the newest checkpoints to keep."""
    matmul_precision: str = "default"
    """Float32 matmul/convolution precision (JAX's jax_default_matmul_precision): default
    (float32 on CPUs; TF32 on recent NVIDIA GPUs; bfloat16 passes on TPUs), high (TF32 or 3
    bfloat16 passes), highest (true float32 everywhere, slower on accelerators)."""
    precision: str = "f32"
    """Computation precision of the models: f32 (float32 throughout) or bf16 (matmuls and
    convolutions in bfloat16; parameters, optimizer state, losses, softmax and batch-norm
    statistics stay float32)."""

    malloc: str = "auto"
    """CPU: how glibc serves XLA's large per-step scratch buffers. auto: DLFUN_MALLOC when set,
    else system (measured faster or even for every experiment); tuned: one malloc arena, large
    blocks kept for reuse (faster for the LSTM step benchmark, whose scratch exceeds glibc's
    32 MiB mmap limit); system: glibc as it comes."""

    def __post_init__(self):
        check_fields(self)
        check_choice(self, "matmul_precision", MATMUL_PRECISIONS)
        check_choice(self, "malloc", MALLOC_FLAGS)
        check_choice(self, "precision", PRECISIONS)
        if self.resume and not self.run_dir:
            raise ConfigError("--resume needs --run-dir pointing at the run to continue")

    def unused_because(self, name: str) -> str | None:
        """Why field ``name``'s flag has no effect in this configuration (e.g. "with --task
        recall (a charlm flag)"), or None. :func:`dlfun.runs.cli.parse_config` refuses such a
        flag when it is given on the command line, rather than run without it."""
        return None

    @property
    def checkpoint_every(self) -> int:
        """Units (epochs, periods or steps, as the experiment's flag says) between saves."""
        for name in ("checkpoint_every_epochs", "checkpoint_every_periods",
                     "checkpoint_every_steps"):
            if hasattr(self, name):
                return getattr(self, name)
        return 1

    @property
    def model_dtypes(self) -> dict[str, Dtype]:
        """``{"dtype", "param_dtype"}`` keyword arguments of the run's models for
        ``--precision``: the computation dtype, and float32 parameters (so the gradients and
        the optimizer state are float32 too)."""
        return {"dtype": compute_dtype(self.precision), "param_dtype": jnp.float32}

    nonfinite_advice: ClassVar[str] = "lower --learning-rate"
    """What the message of a non-finite stop advises (only flags the experiment has)."""


@dataclasses.dataclass(frozen=True)
class TrainConfig(RunConfig):
    """Flags of experiments that train with :func:`dlfun.train.fit`."""

    ranges: ClassVar[dict[str, tuple]] = {
        "epochs": (1, 1_000_000), "batch_size": (1, 1_048_576),
        "learning_rate": (1e-12, None), "weight_decay": (0.0, 10.0), "momentum": (0.0, 1.0),
        "checkpoint_every_epochs": (1, 1_000_000)}
    sweepable: ClassVar[tuple[str, ...]] = HYPERPARAMETERS
    """The hyperparameters ``--sweep`` may vary (an experiment that builds its own optimizers
    or reads a hyperparameter outside ``dlfun.runs.training`` narrows it, to () for none)."""
    repeatable_flags: ClassVar[frozenset] = frozenset({"sweep"})

    epochs: int = 10
    """Passes over the training set."""
    batch_size: int = 64
    """Examples per training step."""
    learning_rate: float = 1e-3
    """Peak learning rate of the optimizer."""
    optimizer: str = "adam"
    """One of sgd, momentum, nesterov, adam, adamw, rmsprop."""
    weight_decay: float = 0.0
    """Weight decay (decoupled for adamw, L2 otherwise)."""
    momentum: float = 0.9
    """Momentum of --optimizer momentum and nesterov."""
    sweep: tuple[str, ...] = ()
    """Train a grid of hyperparameter values at once, vmapped in one compiled program like
    --num-seeds: NAME=V1,V2,... with NAME learning_rate, weight_decay or momentum; repeat the
    flag for a grid; every point trains --num-seeds seeds; the summary's "sweep" has one record
    per point (default: none)."""
    epoch_mode: str = "auto"
    """auto, loop (Python loop of jitted steps) or scan (the epoch in one lax.scan)."""
    ensemble: str = "auto"
    """How --num-seeds models run together: auto (vmap for dense models; for convolutional
    ones on CPU, sequential), vmap, map (lax.map) or sequential (one compiled step per model)."""
    skip_nonfinite: bool = False
    """Drop updates whose loss or gradients are NaN/inf instead of stopping the run (the
    summary counts them; a run that drops every update fails)."""
    checkpoint_every_epochs: int = 1
    """Save a checkpoint every this many epochs (and at the end, and on SIGTERM/SIGINT)."""

    nonfinite_advice: ClassVar[str] = ("lower --learning-rate, or pass --skip-nonfinite to drop "
                                       "such updates")

    def __post_init__(self):
        super().__post_init__()
        check_choice(self, "optimizer", OPTIMIZERS)
        check_choice(self, "epoch_mode", EPOCH_MODES)
        check_choice(self, "ensemble", ENSEMBLE_STRATEGIES)
        self._check_sweep()

    def unused_because(self, name: str) -> str | None:
        if name == "momentum" and not set(self.optimizers_used) & {"momentum", "nesterov"}:
            used = "/".join(dict.fromkeys(self.optimizers_used))
            return f"with the optimizer {used} (only momentum and nesterov have momentum)"
        return super().unused_because(name)

    @property
    def optimizers_used(self) -> tuple[str, ...]:
        """The optimizers this run trains with (``--optimizer``; an experiment comparing
        several says which)."""
        return (self.optimizer,)

    def _check_sweep(self) -> None:
        """``--sweep``: known sweepable names, values in each field's range, a grid that fits."""
        axes = self.sweep_axes
        ranges = field_ranges(type(self))
        for name, values in axes:
            for v in values:
                try:
                    _check_value(name, v, float, ranges.get(name))
                except ConfigError as e:
                    raise ConfigError(f"--sweep {name}: {e}".replace(f"{flag(name)} ", "", 1)
                                      ) from None
        if "momentum" in dict(axes) and self.optimizer not in ("momentum", "nesterov"):
            raise ConfigError(f"--sweep momentum: --optimizer {self.optimizer} has no momentum; "
                              f"use --optimizer momentum or nesterov")
        if axes and self.num_models > 4096:
            raise ConfigError(f"--sweep: {len(self.sweep_points)} points x {self.num_seeds} "
                              f"seeds = {self.num_models} models, more than 4096; use fewer")

    @property
    def sweep_axes(self) -> list[tuple[str, tuple[float, ...]]]:
        """``[(field name, values), ...]`` of ``--sweep`` ([] without a sweep)."""
        return parse_sweep(self.sweep, self.sweepable,
                           [f.name for f in dataclasses.fields(self)])

    @property
    def sweep_points(self) -> list[dict[str, float]] | None:
        """The grid's points (``{name: value}``, the first axis slowest), or None."""
        from ..train.sweep import sweep_grid

        axes = self.sweep_axes
        return sweep_grid(axes) if axes else None

    @property
    def num_models(self) -> int | None:
        """K for an ensemble run (``--num-seeds`` > 1) or a sweep (points x seeds, always
        stacked), else None (one unstacked model)."""
        if self.sweep:
            return len(self.sweep_points) * self.num_seeds
        return self.num_seeds if self.num_seeds > 1 else None

    @property
    def nonfinite_policy(self) -> str:
        return "skip" if self.skip_nonfinite else "stop"


def check_positive(cfg: Any, *names: str) -> None:
    """Raise ConfigError naming the flag if any of the fields is not > 0."""
    for name in names:
        value = getattr(cfg, name)
        if not value > 0:
            raise ConfigError(f"{flag(name)} must be positive, got {value}")


def check_choice(cfg: Any, name: str, choices: Iterable[str]) -> None:
    """Raise ConfigError naming the flag if the field is not one of ``choices``."""
    choices = tuple(choices)
    if getattr(cfg, name) not in choices:
        raise ConfigError(f"{flag(name)} must be one of {', '.join(choices)}; "
                          f"got {getattr(cfg, name)!r}")


def check_subset(cfg: Any, name: str, choices: Iterable[str]) -> None:
    """Raise ConfigError naming the flag if the field (a sequence) is empty or names anything
    outside ``choices``."""
    choices, values = tuple(choices), tuple(getattr(cfg, name))
    if not values or any(v not in choices for v in values):
        raise ConfigError(f"{flag(name)} must name {name.replace('_', ' ')} "
                          f"among {', '.join(choices)}; got {', '.join(values) or 'none'}")
    check_distinct(cfg, name)


def check_distinct(cfg: Any, name: str) -> None:
    """Raise ConfigError if the field (a sequence of things to compare: methods, budgets,
    lengths) repeats a value; each would be trained again and reported under one key."""
    values = tuple(getattr(cfg, name))
    repeated = list(dict.fromkeys(v for v in values if values.count(v) > 1))
    if repeated:
        raise ConfigError(f"{flag(name)} lists {', '.join(map(str, repeated))} more than once; "
                          f"give each value once")


def config_to_dict(cfg: Any) -> dict:
    """A JSON-ready dict of a config dataclass."""
    return dataclasses.asdict(cfg)


def config_from_dict(cls: type, data: Any, source: str = "saved config") -> Any:
    """Rebuild a config from :func:`config_to_dict` output (lists become tuples again).

    Raises:
      ConfigError: ``data`` is not such a dict (a hand-edited or foreign file), names fields
        this version does not know, or holds values of the wrong kind.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{source} is not a dlfun run configuration (a JSON object was "
                          f"expected, found {type(data).__name__}); restore it from a backup "
                          f"or start a new run in another --run-dir")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ConfigError(f"{source} has fields this version does not know: "
                          f"{', '.join(sorted(unknown))}; start a new run in another --run-dir")
    kwargs = {}
    for k, v in data.items():
        if typing.get_origin(hints[k]) is tuple and isinstance(v, list):
            v = tuple(v)
        if not _fits(hints[k], v):
            raise ConfigError(f"{source} holds {k}={v!r}, which is not a valid "
                              f"{flag(k)} value; restore the file or start a new --run-dir")
        kwargs[k] = v
    try:
        return cls(**kwargs)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None


def _fits(tp: Any, v: Any) -> bool:
    """Whether a JSON value has the kind a field of type ``tp`` holds."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(a, v) for a in args)
    if tp is type(None):
        return v is None
    if origin is tuple:
        inner = args[0] if args else Any
        return isinstance(v, tuple) and all(_fits(inner, x) for x in v)
    if origin is typing.Literal:
        return v in args
    if tp is bool:
        return isinstance(v, bool)
    if tp is int:
        return isinstance(v, int) and not isinstance(v, bool)
    if tp is float:
        return isinstance(v, (int, float)) and not isinstance(v, bool)
    if tp is str:
        return isinstance(v, str)
    return True
