"""Finding dataset files a user already has: ``--data-dir DIR`` or ``DLFUN_DATA=DIR``.

Nothing is ever downloaded. A reader asks :func:`resolve_data_dir` for the folder (the
explicit argument wins, else the environment variable) and :func:`find_data_file` for each
file, which tries a short, fixed list of conventional sub-folders. When a file is missing,
the error lists every path tried and how to supply the file.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from dlfun.errors import DataError

DATA_ENV_VAR = "DLFUN_DATA"
"""Environment variable naming the default data folder (used when no ``--data-dir`` is given)."""


def resolve_data_dir(data_dir: str | os.PathLike | None, needed: str) -> Path:
    """Return the data folder: ``data_dir`` if given, else ``$DLFUN_DATA``.

    Args:
      data_dir: the folder from ``--data-dir`` or a caller, or ``None`` to use ``$DLFUN_DATA``.
      needed: what the caller will look for there, for the error message
        (e.g. ``"mnist files train-images-idx3-ubyte[.gz], ..."``).

    Returns:
      The folder as a :class:`~pathlib.Path`; it exists and is a directory.

    Raises:
      DataError: neither is set, or the folder does not exist.
    """
    if data_dir is not None and str(data_dir) != "":
        path, source = Path(data_dir).expanduser(), "--data-dir"
    elif os.environ.get(DATA_ENV_VAR):
        path, source = Path(os.environ[DATA_ENV_VAR]).expanduser(), DATA_ENV_VAR
    else:
        raise DataError(
            f"no data folder given for {needed}: pass --data-dir DIR or set "
            f"{DATA_ENV_VAR}=DIR (nothing is downloaded; DIR must already hold the files)"
        )
    if not path.is_dir():
        raise DataError(
            f"data folder {path} (from {source}) does not exist or is not a folder: "
            f"point --data-dir or {DATA_ENV_VAR} at the folder that holds {needed}"
        )
    return path


def candidate_paths(root: Path, subdirs: Sequence[str], filename: str,
                    allow_gz: bool = False) -> list[Path]:
    """Every path tried for ``filename`` under ``root``, in order (``""`` = ``root`` itself)."""
    names = [filename, filename + ".gz"] if allow_gz else [filename]
    return [root / sub / name for sub in subdirs for name in names]


def find_data_file(root: Path, subdirs: Sequence[str], filename: str, what: str,
                   allow_gz: bool = False) -> Path:
    """Find ``filename`` (or ``filename.gz``) in ``root`` or one of its conventional sub-folders.

    Args:
      root: the data folder from :func:`resolve_data_dir`.
      subdirs: sub-folders to try in order, ``""`` meaning ``root`` itself.
      filename: the file's conventional name, e.g. ``"train-images-idx3-ubyte"``.
      what: a few words for the error message, e.g. ``"mnist train images"``.
      allow_gz: also accept ``filename + ".gz"`` (plain is preferred when both exist).

    Returns:
      The first existing candidate path.

    Raises:
      DataError: none exists; the message lists every path tried and how to supply the file.
    """
    tried = candidate_paths(root, subdirs, filename, allow_gz)
    for path in tried:
        if path.is_file():
            return path
    shown = ", ".join(str(p) for p in tried)
    wanted = f"{filename} or {filename}.gz" if allow_gz else filename
    raise DataError(
        f"{what} not found: tried {shown}; put {wanted} in one of these folders and pass "
        f"--data-dir DIR or set {DATA_ENV_VAR}=DIR (nothing is downloaded)"
    )
