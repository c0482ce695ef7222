"""One shared command-line parser for experiment configs (frozen dataclasses).

Each experiment declares a frozen dataclass whose fields carry a one-line docstring (the
string literal right below the field), and a dict of presets (at least ``"default"`` and
``"smoke"``). :func:`parse_config` turns that into ``--flag`` options: the chosen preset gives
the base values, explicit flags override them. :func:`run_cli` runs ``main(config)``; every
way a run can end has its exit status:

====  ==========================================================================
0     done (``summary.json`` status ``ok``)
2     bad input: a flag, a data file, the run directory, the file system (one line)
3     the loss or gradients became NaN/inf (status ``nonfinite``)
130   SIGINT (Ctrl-C), after saving a checkpoint (status ``interrupted``)
143   SIGTERM, after saving a checkpoint (status ``interrupted``)
====  ==========================================================================
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import os
import sys
import textwrap
import traceback
import types
import typing
from pathlib import Path
from typing import Any, Callable, Mapping

from ..errors import ConfigError, DlfunError, NonFiniteError
from ..platform import resolve_malloc, tune_malloc
from ..validate import flag_name, flag_value, terminal_text
from .config import config_from_dict, describe_range, field_ranges
from .rundir import fs_error, os_error_in, read_saved_config
from .run import RunInterrupted


def field_docs(cls: type) -> dict[str, str]:
    """The docstrings written below each dataclass field, over ``cls`` and its bases."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError):
            continue
        body = tree.body[0].body
        for node, nxt in zip(body, body[1:]):
            if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                    and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)
                    and isinstance(nxt.value.value, str)):
                docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def _shown(value: Any) -> str:
    return ("none" if value is None else " ".join(map(str, value))
            if isinstance(value, tuple) else repr(value))


def _help_text(doc: str, default: Any, limits: tuple | None) -> str:
    """The field's docstring, its accepted range and its default, once each."""
    shown = default if isinstance(default, PerKey) else _shown(default)
    doc = terminal_text(doc)
    parts = [doc if not doc or doc.endswith(".") else doc + "."]
    if limits is not None:
        parts.append(f"Range {describe_range(*limits)}.")
    if "(default" not in doc:
        parts.append(f"(default: {shown})")
    return " ".join(p for p in parts if p).replace("%", "%%")


def _add_field(parser: argparse.ArgumentParser, f: dataclasses.Field, tp: Any, doc: str,
               default: Any, limits: tuple | None = None, repeatable: bool = False) -> None:
    """Add the option for one field (defaults are filled from the preset, not argparse); a
    ``repeatable`` tuple field collects the values of every occurrence of its flag."""
    flag = flag_name(f.name)
    helptext = _help_text(doc, default, limits)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    kw: dict[str, Any] = dict(dest=f.name, default=argparse.SUPPRESS, help=helptext)
    if origin in (typing.Union, types.UnionType) and set(args) == {bool, type(None)}:
        kw["action"] = argparse.BooleanOptionalAction  # absent: None (the preset decides)
    elif origin in (typing.Union, types.UnionType) and type(None) in args:
        inner = next(a for a in args if a is not type(None))
        kw["type"] = _optional(flag_value(inner, flag))
        kw["metavar"] = inner.__name__.upper()
    elif tp is bool:
        kw["action"] = argparse.BooleanOptionalAction
    elif origin is typing.Literal:
        kw["choices"] = list(args)
        kw["type"] = type(args[0])
    elif origin is tuple:
        kw["type"] = flag_value(args[0], flag)
        kw["nargs"] = "+" if args[-1] is Ellipsis else len(args)
        kw["metavar"] = args[0].__name__.upper()
        if repeatable:
            kw["action"] = "extend"
    else:
        kw["type"] = flag_value(tp, flag)
        kw["metavar"] = tp.__name__.upper()
    parser.add_argument(flag, **kw)


def _optional(convert):
    def parse(text: str):
        return None if text.lower() in ("none", "") else convert(text)
    return parse


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (the problem and where to look), exit 2."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def build_parser(config_cls: type, presets: Mapping[str, Any], prog: str,
                 description: str) -> argparse.ArgumentParser:
    """The argparse parser of ``config_cls``; field help shows the default preset's values."""
    parser = OneLineParser(prog=prog, description=terminal_text(description),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    docs = field_docs(config_cls)
    hints = typing.get_type_hints(config_cls)
    ranges = field_ranges(config_cls)
    base = presets["default"]
    by = getattr(config_cls, "preset_by", None)
    hidden = getattr(config_cls, "hidden_flags", frozenset())
    repeatable = getattr(config_cls, "repeatable_flags", frozenset())
    for f in dataclasses.fields(config_cls):
        if f.name in hidden:
            continue
        if f.name == "preset":
            parser.add_argument("--preset", choices=list(presets), default=argparse.SUPPRESS,
                                help=f"{docs.get('preset', 'Preset of all values')} "
                                     "(default: 'default')")
            continue
        _add_field(parser, f, hints[f.name], docs.get(f.name, ""), _default_shown(base, f.name, by),
                   ranges.get(f.name), f.name in repeatable)
    return parser


class PerKey(str):
    """A default that differs with the field that picks the preset's entry (help text)."""


def _default_shown(base, name: str, by: str | None):
    """The default preset's value of ``name``; for presets keyed by a field (``by``), the one
    value they share or each key's value ("digits: 100, mnist: 2")."""
    if not isinstance(base, Mapping):
        return getattr(base, name)
    values = {key: getattr(cfg, name) for key, cfg in base.items()}
    if name == by or len({repr(v) for v in values.values()}) == 1:
        return getattr(next(iter(base.values())), name) if name != by else \
            type(next(iter(base.values()))).__dataclass_fields__[by].default
    return PerKey(f"per --{by.replace('_', '-')}: " + ", ".join(
        f"{key} {_shown(v)}" for key, v in values.items()))


def preset_config(config_cls: type, presets: Mapping[str, Any], name: str = "default",
                  given: Mapping[str, Any] | None = None):
    """The preset ``name``. Presets keyed by a field (``config_cls.preset_by``, e.g. the GAN's
    ``data``) hold one complete config per key: the entry of the value in ``given`` (else the
    field's default), through ``config_cls.preset_key`` (e.g. an environment id to its
    family)."""
    entry = presets[name]
    if not isinstance(entry, Mapping):
        return entry
    by = config_cls.preset_by
    value = (given or {}).get(by, config_cls.__dataclass_fields__[by].default)
    key = config_cls.preset_key(value)
    if key not in entry:
        raise ConfigError(f"--{by.replace('_', '-')} must be one of "
                          f"{', '.join(map(str, entry))}; got {value!r}")
    return entry[key]


def parse_config(config_cls: type, presets: Mapping[str, Any], argv: list[str] | None = None,
                 prog: str | None = None, description: str = "", experiment: str | None = None):
    """Parse ``argv`` into a ``config_cls`` instance: preset values, then explicit flags.

    Invalid values (the dataclass's ``__post_init__`` raising ConfigError) end the program
    with a one-line error (exit status 2): nothing has been written then.
    """
    parser = build_parser(config_cls, presets, prog or sys.argv[0], description)
    ns = {k: tuple(v) if isinstance(v, list) else v  # nargs="+" gives lists
          for k, v in vars(parser.parse_args(argv)).items()}
    preset = ns.pop("preset", "default")
    try:
        name = experiment or experiment_name(prog)
        fresh = preset_config(config_cls, presets, preset, ns)
        base = _resume_base(config_cls, ns, name) or fresh
        cfg = dataclasses.replace(base, **({"preset": preset} if base is fresh else {}), **ns)
        for field in ns:  # the flags given: each must do something
            why = cfg.unused_because(field)
            if why:
                raise ConfigError(f"{flag_name(field)} has no effect {why}; drop it")
        return cfg
    except DlfunError as e:
        parser.exit(2, f"error: {e}\n")


def _resume_base(config_cls: type, ns: dict, experiment: str):
    """With ``--resume --run-dir D``, the configuration saved in D (flags given override it),
    if D holds a run of this experiment (RunDir.open reports the other cases)."""
    if not (ns.get("resume") and ns.get("run_dir")):
        return None
    path = Path(ns["run_dir"])
    if not path.is_dir():
        return None
    data = read_saved_config(path)
    if data is None or data.pop("experiment") != experiment:
        return None
    return config_from_dict(config_cls, data, f"{path}/config.json")


def experiment_name(prog: str | None) -> str:
    """``mlp`` of ``python -m experiments.mlp``."""
    return (prog or sys.argv[0]).split()[-1].rsplit(".", 1)[-1].removesuffix(".py")


def run_cli(main: Callable[[Any], Any], config_cls: type, presets: Mapping[str, Any],
            argv: list[str] | None = None, prog: str | None = None, description: str = ""):
    """Parse the command line, run ``main(config)``, and report user errors in one line.

    Exit status: 0 on success, 2 for bad input/configuration (``DlfunError``), 3 when training
    stopped on a non-finite loss.
    """
    cfg = parse_config(config_cls, presets, argv, prog, description,
                       experiment=_experiment_of(main, prog))
    try:
        # before the first JAX computation: --malloc, else DLFUN_MALLOC, else "system"
        tune_malloc(choice=resolve_malloc(getattr(cfg, "malloc", "auto")))
        return main(cfg)
    except RunInterrupted as e:
        where = f" --run-dir {cfg.run_dir}" if cfg.run_dir else " --run-dir <the run directory>"
        _fail(f"{e}; continue with the same command plus --resume{where}", e.exit_code)
    except NonFiniteError as e:
        _fail(f"error: {e}", 3)
    except DlfunError as e:
        _fail(f"error: {e}", 2, e)
    except KeyboardInterrupt:
        _fail("interrupted before a checkpoint could be saved; continue with --resume "
              "--run-dir <the run directory>", 130)
    except Exception as e:  # a file-system failure deep inside a library: one line too
        found = os_error_in(e)
        if found is None:
            if failed_alone(e):
                _crash_alone()
            raise
        _fail(f"error: {fs_error(found, found.filename or 'a file', 'write')}", 2, e)


def _experiment_of(main: Callable, prog: str | None) -> str:
    """The experiment's name: ``mlp`` for ``experiments.mlp.main``, also when that module runs
    as ``__main__`` (``python -m experiments.mlp``: its spec keeps the real name)."""
    module = sys.modules.get(main.__module__)
    spec = getattr(module, "__spec__", None)
    name = spec.name if spec is not None else main.__module__
    return experiment_name(prog) if name == "__main__" else name.rsplit(".", 1)[-1]


def _fail(message: str, status: int, error: BaseException | None = None):
    print(message, file=sys.stderr, flush=True)
    if error is not None and failed_alone(error):
        # One process of a multi-process run failed (e.g. process 0 could not write a file).
        # jax.distributed's exit handler would wait for the others at a shutdown barrier,
        # while they wait for this one in their next collective: a hang until a timeout,
        # minutes away. End now: the launcher sees the status and stops the others.
        sys.stdout.flush()
        os._exit(status)
    sys.exit(status)


def _crash_alone():
    """End this process of a multi-process run on an unexpected exception (a bug: the
    traceback is printed), at once and with status 1, for the reason given in :func:`_fail`.
    What the exception passed on its way up has been cleaned up (checkpoint saves waited for,
    files closed); only the exit handlers are skipped, the one that would hang among them. A
    checkpoint cut short this way is handled as after a kill: resume sets it aside."""
    traceback.print_exc()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(1)


def failed_alone(error: BaseException) -> bool:
    """Whether ``error`` ended this process of a multi-process run while the others go on
    (errors that every process raises at the same point, such as a refused run directory,
    carry ``shared_by_all_processes``)."""
    jax = sys.modules.get("jax")
    return (jax is not None and jax.distributed.is_initialized()
            and not getattr(error, "shared_by_all_processes", False))
