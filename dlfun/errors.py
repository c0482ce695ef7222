"""User-facing errors: each message names the problem and how to fix it.

The command-line entry points catch :class:`DlfunError` and print its message as one
line (``error: ...``) with exit status 2 instead of a traceback.
"""


class DlfunError(Exception):
    """Base class of errors caused by the user's input, configuration or files."""


class ConfigError(DlfunError, ValueError):
    """An invalid configuration value or flag."""


class DataError(DlfunError, ValueError):
    """A dataset file that is missing, truncated or malformed."""


class ShapeError(DlfunError, ValueError):
    """An array whose shape does not fit the layer or model it is given to."""


class CheckpointError(DlfunError, RuntimeError):
    """A checkpoint that is missing, unreadable, or from a different configuration."""


class NonFiniteError(DlfunError, FloatingPointError):
    """The loss or gradients became NaN or infinite during training (``step`` says when)."""

    step: int | None = None

    @classmethod
    def at_step(cls, step: int, message: str) -> "NonFiniteError":
        err = cls(message)
        err.step = step
        return err
