"""CIFAR-10 from the "python version" batches a user already has (nothing downloads).

The folder ``cifar-10-batches-py`` (from ``cifar-10-python.tar.gz``) holds pickled dicts::

    data_batch_1 .. data_batch_5   {b"data": uint8 (10000, 3072), b"labels": 10000 ints 0..9, ...}
    test_batch                     the same with 10000 test images
    batches.meta                   {b"label_names": [b"airplane", ...], ...}

Each row of ``b"data"`` is 1024 red, then 1024 green, then 1024 blue values of a 32x32 image
in row-major order. The files were written by Python 2, so they are read with
``encoding="bytes"`` (keys are ``bytes``; ``str`` keys from a re-pickled copy work too).

Safety: unpickling can run arbitrary code, so these files are read with
:class:`RestrictedUnpickler`, which only resolves the few globals a CIFAR batch needs
(numpy's ndarray/dtype reconstruction and ``_codecs.encode``) and refuses everything else.
Files are looked for in ``DIR/cifar-10-batches-py/``, ``DIR/cifar10/cifar-10-batches-py/``,
``DIR/cifar10/`` and ``DIR``, where ``DIR`` is ``data_dir`` (``--data-dir``) or ``$DLFUN_DATA``.
"""
from __future__ import annotations

import _codecs
import io
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from dlfun.errors import ConfigError, DataError
from dlfun.data.locate import find_data_file, resolve_data_dir

try:  # numpy >= 2 (numpy 1.26 also has this alias for reading numpy-2 pickles)
    from numpy._core import multiarray as _multiarray
except ImportError:  # pragma: no cover - older numpy
    from numpy.core import multiarray as _multiarray

CIFAR10_SUBDIRS = ("cifar-10-batches-py", "cifar10/cifar-10-batches-py", "cifar10", "")
"""Sub-folders of the data folder tried in order (``""`` = the folder itself)."""

CIFAR10_FILES = {
    "train": tuple(f"data_batch_{i}" for i in range(1, 6)),
    "test": ("test_batch",),
}
"""Split -> batch file names."""

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")
"""The ten class names in label order (as in ``batches.meta``)."""

IMAGE_SHAPE = (32, 32, 3)
ROW_LENGTH = 32 * 32 * 3
NUM_CLASSES = 10

_FIX = ("use the original CIFAR-10 python-version batch from cifar-10-python.tar.gz "
        "(not CIFAR-100, the binary or MATLAB version)")

_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    # Real batches (numpy 1.x / Python 2) name numpy.core; numpy 2 pickles name numpy._core.
    ("numpy.core.multiarray", "_reconstruct"): _multiarray._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _multiarray._reconstruct,
    ("numpy.core.multiarray", "scalar"): _multiarray.scalar,
    ("numpy._core.multiarray", "scalar"): _multiarray.scalar,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    # Python 3 writes bytes under protocol 2 as _codecs.encode(str, "latin1").
    ("_codecs", "encode"): _codecs.encode,
}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only numpy array/dtype reconstruction and ``_codecs.encode``.

    Anything else (``os.system``, ``builtins.eval``, arbitrary classes) raises
    ``pickle.UnpicklingError``, so a hostile file cannot run code while being read.
    """

    def find_class(self, module: str, name: str) -> Any:
        """Return an allowed global or refuse it."""
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed") from None


def read_cifar_pickle(path: Path) -> dict:
    """Unpickle one CIFAR file safely; the top level must be a dict (keys turned into ``str``)."""
    try:
        raw = path.read_bytes()
        obj = RestrictedUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError,
            KeyError, AttributeError, MemoryError, UnicodeDecodeError) as err:
        raise DataError(
            f"CIFAR-10 file {path} is not a readable CIFAR-10 python pickle ({err}): replace it "
            f"with the original file from cifar-10-python.tar.gz (folder cifar-10-batches-py)"
        ) from None
    if not isinstance(obj, dict):
        raise DataError(f"CIFAR-10 file {path} holds a {type(obj).__name__}, expected a dict "
                        f"with keys b'data' and b'labels': {_FIX}")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def check_cifar_batch(path: Path, batch: dict) -> tuple[np.ndarray, np.ndarray]:
    """Validate a batch dict; return its ``data (N, 3072) uint8`` and ``labels (N,) int64``."""
    missing = [f"b'{k}'" for k in ("data", "labels") if k not in batch]
    if missing:
        raise DataError(f"CIFAR-10 file {path} lacks key {' and '.join(missing)} (has "
                        f"{sorted(batch)}): {_FIX}")
    data = batch["data"]
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2
            and data.shape[1] == ROW_LENGTH and data.shape[0] > 0):
        shape = getattr(data, "shape", None)
        dtype = getattr(data, "dtype", type(data).__name__)
        raise DataError(f"CIFAR-10 file {path} has b'data' of shape {shape} and type {dtype}, "
                        f"expected uint8 (N, {ROW_LENGTH}): {_FIX}")
    try:
        labels = np.asarray(batch["labels"], dtype=np.int64)
    except (TypeError, ValueError, OverflowError):
        labels = np.zeros((0, 0))
    if labels.shape != (data.shape[0],):
        raise DataError(f"CIFAR-10 file {path} has b'labels' of shape {labels.shape} for "
                        f"{data.shape[0]} images, expected {data.shape[0]} integers 0..9: {_FIX}")
    bad = np.flatnonzero((labels < 0) | (labels >= NUM_CLASSES))
    if bad.size:
        raise DataError(f"CIFAR-10 file {path} has label {int(labels[bad[0]])} at index "
                        f"{int(bad[0])}, expected 0..{NUM_CLASSES - 1}: {_FIX}")
    return data, labels


def cifar_rows_to_images(data: np.ndarray) -> np.ndarray:
    """``(N, 3072)`` rows (R plane, G plane, B plane) -> ``(N, 32, 32, 3)`` HWC images."""
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # (N, C, H, W) -> (N, H, W, C)


def load_cifar10(data_dir: str | os.PathLike | None = None, split: str = "train",
                 as_float: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Load CIFAR-10 from the user's python-version batches.

    Args:
      data_dir: the data folder (``--data-dir``); ``None`` uses ``$DLFUN_DATA``. See
        ``CIFAR10_SUBDIRS`` for the sub-folders tried.
      split: ``"train"`` (``data_batch_1..5``, 50000 images) or ``"test"`` (``test_batch``, 10000).
      as_float: ``False`` returns uint8 0..255; ``True`` returns float32 in [0, 1] (value / 255).

    Returns:
      ``images`` of shape ``(N, 32, 32, 3)`` (height, width, RGB), uint8 or float32, and
      ``labels`` of shape ``(N,)``, int32 in 0..9.

    Raises:
      DataError: a file is missing (the message lists every path tried), not a safe pickle,
        lacks ``b"data"``/``b"labels"``, has the wrong shape, or a label outside 0..9.
      ConfigError: unknown ``split``.
    """
    if split not in CIFAR10_FILES:
        raise ConfigError(f"unknown split {split!r} for cifar10: choose 'train' or 'test'")
    names = CIFAR10_FILES[split]
    root = resolve_data_dir(data_dir, "cifar10 files cifar-10-batches-py/" + ", ".join(names))
    images, labels = [], []
    for name in names:
        path = find_data_file(root, CIFAR10_SUBDIRS, name, f"cifar10 {split} batch {name}")
        data, batch_labels = check_cifar_batch(path, read_cifar_pickle(path))
        images.append(cifar_rows_to_images(data))
        labels.append(batch_labels)
    images = np.concatenate(images)
    if as_float:
        images = images.astype(np.float32) / np.float32(255.0)
    return np.ascontiguousarray(images), np.concatenate(labels).astype(np.int32)


def load_cifar10_class_names(data_dir: str | os.PathLike | None = None) -> tuple[str, ...]:
    """The class names from ``batches.meta`` if present, else :data:`CIFAR10_CLASSES`.

    Args:
      data_dir: as for :func:`load_cifar10`.

    Returns:
      Ten names in label order.

    Raises:
      DataError: ``batches.meta`` exists but is malformed (not ten names under b"label_names").
    """
    root = resolve_data_dir(data_dir, "cifar10 files cifar-10-batches-py/batches.meta")
    try:
        path = find_data_file(root, CIFAR10_SUBDIRS, "batches.meta", "cifar10 batches.meta")
    except DataError:
        return CIFAR10_CLASSES  # the names are fixed; the file is optional
    names = read_cifar_pickle(path).get("label_names")
    if not (isinstance(names, list) and len(names) == NUM_CLASSES
            and all(isinstance(n, (bytes, str)) for n in names)):
        raise DataError(f"CIFAR-10 file {path} lacks a list of {NUM_CLASSES} names under "
                        f"b'label_names': delete it to use the standard names, or copy it again")
    return tuple(n.decode("utf-8") if isinstance(n, bytes) else n for n in names)
