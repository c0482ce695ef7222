"""Range checks for configuration values, each failing with one line that names the flag,
the value and the accepted range (a :class:`~dlfun.errors.ConfigError`).

Pure Python (no JAX import), so a command line can be checked before anything starts::

    check_int_range("num_seeds", 0, 1, 64)
    # ConfigError: --num-seeds 0 is out of range; use an integer in [1, 64]

``name`` is a config field (``"weight_decay"``) or a flag (``"--weight-decay"``); messages
always show the flag form. Every check returns the value (as ``int`` or ``float``) so that it
can be used inline: ``self.seed = check_seed(seed)``.
"""

from __future__ import annotations

import math
import numbers
import re
from typing import Any

from .errors import ConfigError

SEED_MAX = 2**31 - 1
"""Largest seed accepted: ``jax.random.key`` keeps only the low 32 bits of a seed (2**32
and 0 give the same key) and seeds held in int32 arrays must not wrap."""


def flag_name(name: str) -> str:
    """``"weight_decay"`` -> ``"--weight-decay"`` (a name already starting with ``-`` is kept)."""
    return name if name.startswith("-") else "--" + name.replace("_", "-")


def _shown(value: Any) -> str:
    """The value as a user would type it: ``5``, ``0.5``, ``1e+20``, ``nan``, ``'x'``."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return str(int(value))
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        x = float(value)
        return str(int(x)) if x.is_integer() and abs(x) < 1e16 else repr(x)
    return repr(value)


def _interval(lo: float | None, hi: float | None, lo_closed: bool = True,
              hi_closed: bool = True) -> str:
    """``[0, 1)``, ``>= 1``, ``<= 5`` or (no bounds) ``""``."""
    if lo is not None and hi is not None:
        return f"{'[' if lo_closed else '('}{_shown(lo)}, {_shown(hi)}{']' if hi_closed else ')'}"
    if lo is not None:
        return f"{'>=' if lo_closed else '>'} {_shown(lo)}"
    if hi is not None:
        return f"{'<=' if hi_closed else '<'} {_shown(hi)}"
    return ""


def _where(lo, hi, lo_closed: bool = True, hi_closed: bool = True) -> str:
    """``in [1, 5]``, ``>= 1``: the tail of an "use a value ..." sentence."""
    text = _interval(lo, hi, lo_closed, hi_closed)
    return f"in {text}" if lo is not None and hi is not None else text


def check_int_range(name: str, value: Any, lo: int | None = None, hi: int | None = None) -> int:
    """An integer in ``[lo, hi]`` (either bound ``None``: unbounded on that side).

    Args:
      name: the config field or flag, e.g. ``"num_seeds"``.
      value: the value given; ``bool`` and non-integral numbers are refused.
      lo, hi: inclusive bounds.

    Returns:
      ``int(value)``.

    Raises:
      ConfigError: one line, e.g. ``--port 99999 is out of range; use an integer in [1, 65535]``.
    """
    flag = flag_name(name)
    expected = f"an integer {_where(lo, hi)}".rstrip()
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConfigError(f"{flag} expects an integer, got {_shown(value)}; use {expected}")
    value = int(value)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ConfigError(f"{flag} {value} is out of range; use {expected}")
    return value


def check_seed(value: Any, count: int = 1, name: str = "seed") -> int:
    """A random seed such that the seeds ``value .. value + count - 1`` all lie in
    ``[0, SEED_MAX]`` (``count`` > 1 for runs that train seeds ``seed + k`` side by side).

    Returns:
      ``int(value)``.

    Raises:
      ConfigError: e.g. ``--seed 99999999999999999999 is out of range; use an integer in
      [0, 2147483647]``.
    """
    count = check_int_range("count", count, 1)
    return check_int_range(name, value, 0, SEED_MAX - (count - 1))


def _as_float(flag: str, value: Any, expected: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(f"{flag} expects a number, got {_shown(value)}; use {expected}")
    try:
        return float(value)
    except OverflowError:  # an int beyond float's range
        return math.inf if value > 0 else -math.inf


def check_finite(name: str, value: Any) -> float:
    """A finite number (not NaN or infinite).

    Returns:
      ``float(value)``.

    Raises:
      ConfigError: e.g. ``--forget-bias nan is not a finite number; use a finite number``.
    """
    return check_float_range(name, value)


def check_finite_positive(name: str, value: Any) -> float:
    """A finite number above zero (a time, a learning rate, a scale).

    Returns:
      ``float(value)``.

    Raises:
      ConfigError: e.g. ``--timeout -5 is out of range; use a finite number > 0``.
    """
    return check_float_range(name, value, 0.0, None, lo_inclusive=False)


def check_float_range(name: str, value: Any, lo: float | None = None, hi: float | None = None,
                      *, lo_inclusive: bool = True, hi_inclusive: bool = True) -> float:
    """A finite number between ``lo`` and ``hi`` (either ``None``: unbounded on that side).

    Args:
      name: the config field or flag.
      value: the value given (NaN and infinities are always refused).
      lo, hi: the bounds; ``lo_inclusive``/``hi_inclusive`` say whether they are allowed.

    Returns:
      ``float(value)``.

    Raises:
      ConfigError: e.g. ``--weight-decay -1 is out of range; use a finite number >= 0``, or
      ``--weight-decay nan is not a finite number; ...``.
    """
    flag = flag_name(name)
    expected = f"a finite number {_where(lo, hi, lo_inclusive, hi_inclusive)}".rstrip()
    x = _as_float(flag, value, expected)
    below = lo is not None and (x < lo or (x == lo and not lo_inclusive))
    above = hi is not None and (x > hi or (x == hi and not hi_inclusive))
    if not math.isfinite(x):
        raise ConfigError(f"{flag} {_shown(x)} is not a finite number; use {expected}")
    if below or above:
        raise ConfigError(f"{flag} {_shown(x)} is out of range; use {expected}")
    return x


def check_fraction(name: str, value: Any, *, lo_inclusive: bool = True,
                   hi_exclusive: bool = True) -> float:
    """A number between 0 and 1; by default in ``[0, 1)`` (a dropout rate, a split share).

    Args:
      name: the config field or flag.
      value: the value given.
      lo_inclusive: whether 0 is allowed.
      hi_exclusive: whether 1 is refused.

    Returns:
      ``float(value)``.

    Raises:
      ConfigError: e.g. ``--dropout 1 is out of range; use a finite number in [0, 1)``.
    """
    return check_float_range(name, value, 0.0, 1.0, lo_inclusive=lo_inclusive,
                             hi_inclusive=not hi_exclusive)


def flag_value(kind: type, flag: str):
    """An argparse ``type=`` converter to ``kind`` (int, float, str) whose error names the
    flag and the kind of value it expects."""
    import argparse

    words = {int: "an integer", float: "a number", str: "a string"}[kind]

    def convert(text: str):
        try:
            return kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} expects {words}, got {text!r}") from None

    return convert


def check_at_most(value: int, available: int, flag: str, what: str, also: str = "") -> None:
    """Refuse a count the data cannot supply (a slice would quietly give fewer while the run
    reports the number asked): one line naming the flag and the largest value that works."""
    if value > available:
        raise ConfigError(f"{flag} {value} is more than {what} holds ({available}); use at "
                          f"most {available}{also}")


def terminal_text(doc: str) -> str:
    """A reST docstring as ``--help`` shows it on a terminal: ``code`` and
    :role:`target` markup become the plain text inside them."""
    doc = re.sub(r":[a-z]+:`~?([^`]+)`", r"\1", doc)
    return re.sub(r"``(.+?)``", r"\1", doc, flags=re.S)
