"""MNIST and Fashion-MNIST from the original IDX files a user already has (nothing downloads).

The IDX format (LeCun et al.): a 4-byte magic number ``0x00 0x00 <type code> <ndim>``,
then ``ndim`` big-endian uint32 sizes, then the values in big-endian C order. MNIST and
Fashion-MNIST use the same four file names, each optionally gzipped::

    train-images-idx3-ubyte[.gz]  magic 0x00000803, sizes (60000, 28, 28), uint8 pixels
    train-labels-idx1-ubyte[.gz]  magic 0x00000801, size  (60000,),        uint8 labels 0..9
    t10k-images-idx3-ubyte[.gz]   magic 0x00000803, sizes (10000, 28, 28)
    t10k-labels-idx1-ubyte[.gz]   magic 0x00000801, size  (10000,)

They are looked for in ``DIR/<dataset>/`` (also the torchvision layout ``DIR/MNIST/raw/``)
and then in ``DIR`` itself, where ``DIR`` is ``data_dir`` (``--data-dir``) or ``$DLFUN_DATA``.
Every defect (missing, truncated, wrong magic, wrong type or shape, count mismatch, label
out of range) raises :class:`~dlfun.errors.DataError` naming the file and the fix.
"""
from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from dlfun.errors import ConfigError, DataError
from dlfun.data.locate import find_data_file, resolve_data_dir

IDX_TYPES: dict[int, tuple[str, np.dtype]] = {
    0x08: ("unsigned byte", np.dtype(">u1")),
    0x09: ("signed byte", np.dtype(">i1")),
    0x0B: ("int16", np.dtype(">i2")),
    0x0C: ("int32", np.dtype(">i4")),
    0x0D: ("float32", np.dtype(">f4")),
    0x0E: ("float64", np.dtype(">f8")),
}
"""IDX type code -> (name, big-endian numpy dtype)."""

IDX_DATASETS: dict[str, tuple[str, ...]] = {
    "mnist": ("mnist", "MNIST/raw", "MNIST", ""),
    "fashion_mnist": ("fashion_mnist", "fashion-mnist", "FashionMNIST/raw", "FashionMNIST", ""),
}
"""Dataset name -> sub-folders of the data folder tried in order (``""`` = the folder itself)."""

IDX_FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
"""Split -> (images file name, labels file name), each also accepted with ``.gz``."""

IMAGE_SIZE = 28
_FRESH_COPY = "replace it with a fresh copy of the original file"
NUM_CLASSES = 10


def read_idx_bytes(path: str | os.PathLike) -> bytes:
    """Read a whole IDX file, decompressing it when its name ends in ``.gz``."""
    path = Path(path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"IDX file {path} does not exist: check the path or --data-dir") from None
    except (gzip.BadGzipFile, EOFError, zlib.error) as err:
        raise DataError(
            f"IDX file {path} is not a valid gzip file ({err}): it is truncated or corrupt; "
            f"copy it again, or decompress it and drop the .gz suffix"
        ) from None


def _dims(n: int) -> str:
    """``1 dimension``, ``3 dimensions``."""
    return f"{n} dimension" + ("" if n == 1 else "s")


def expected_magic(type_code: int, ndim: int) -> str:
    """The magic number for ``type_code`` and ``ndim`` as text, e.g. ``0x00000803``."""
    return f"0x{(type_code << 8) | ndim:08X}"


def check_idx_magic(path: Path, raw: bytes, want: str, expect_type: int | None,
                    expect_ndim: int | None) -> None:
    """Validate the 4-byte magic number against the IDX format and the expected type/ndim."""
    if len(raw) < 4:
        raise DataError(f"IDX file {path} is truncated: {len(raw)} bytes, too short for the "
                        f"4-byte magic number ({want}); {_FRESH_COPY}")
    if raw[:2] == b"\x1f\x8b":
        raise DataError(f"IDX file {path} is gzip-compressed but its name lacks .gz: "
                        f"rename it to {path.name}.gz or decompress it")
    type_code, ndim = raw[2], raw[3]
    if raw[:2] != b"\x00\x00" or ndim == 0:
        raise DataError(f"IDX file {path} has wrong magic number 0x{raw[:4].hex().upper()} "
                        f"({want}): it is not an IDX file; replace it with the original IDX file")
    if type_code not in IDX_TYPES:
        raise DataError(f"IDX file {path} has unknown type code 0x{type_code:02X} (known: "
                        f"{', '.join(f'0x{c:02X}' for c in IDX_TYPES)}; {want}): it is corrupt; "
                        f"replace it with the original IDX file")
    if expect_type is not None and type_code != expect_type:
        raise DataError(f"IDX file {path} holds {IDX_TYPES[type_code][0]} values (type code "
                        f"0x{type_code:02X}), {want} ({IDX_TYPES[expect_type][0]}): replace it "
                        f"with the original {IDX_TYPES[expect_type][0]} IDX file")
    if expect_ndim is not None and ndim != expect_ndim:
        raise DataError(f"IDX file {path} has {_dims(ndim)}, {want} ({_dims(expect_ndim)}): "
                        f"check that the images and labels files are not swapped or renamed")


def parse_idx_header(path: Path, raw: bytes, expect_type: int | None = None,
                     expect_ndim: int | None = None) -> tuple[np.dtype, tuple[int, ...], int]:
    """Validate an IDX header; return (big-endian dtype, sizes, offset of the first value)."""
    if expect_type is not None and expect_ndim is not None:
        want = f"expected magic {expected_magic(expect_type, expect_ndim)}"
    else:
        want = "expected an IDX file"
    check_idx_magic(path, raw, want, expect_type, expect_ndim)
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"IDX file {path} is truncated inside its header ({len(raw)} of "
                        f"{header} bytes); {_FRESH_COPY}")
    sizes = struct.unpack(f">{ndim}I", raw[4:header])
    return IDX_TYPES[raw[2]][1], tuple(sizes), header


def read_idx(path: str | os.PathLike, expect_type: int | None = None,
             expect_ndim: int | None = None) -> np.ndarray:
    """Read one IDX file (plain or ``.gz``) into a numpy array, validating it completely.

    Args:
      path: the file; a name ending in ``.gz`` is decompressed.
      expect_type: the required type code (``0x08`` = unsigned byte), or ``None`` for any.
      expect_ndim: the required number of dimensions, or ``None`` for any.

    Returns:
      An array of the header's sizes, e.g. ``(N, 28, 28)``, in native byte order.

    Raises:
      DataError: truncated or over-long data, wrong magic number, unknown or unexpected
        type code or number of dimensions.
    """
    path = Path(path)
    raw = read_idx_bytes(path)
    dtype, sizes, offset = parse_idx_header(path, raw, expect_type, expect_ndim)
    expected = math.prod(sizes) * dtype.itemsize  # Python ints: no overflow on a corrupt header
    found = len(raw) - offset
    if found != expected:
        problem = "is truncated" if found < expected else "has trailing bytes"
        raise DataError(f"IDX file {path} {problem}: its header promises sizes {sizes} = "
                        f"{expected} data bytes but it holds {found}; {_FRESH_COPY}")
    values = np.frombuffer(raw, dtype=dtype, offset=offset).reshape(sizes)
    return values.astype(dtype.newbyteorder("="))


def check_idx_images(path: Path, images: np.ndarray) -> None:
    """Require images of shape ``(N, 28, 28)`` with ``N > 0``."""
    if images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise DataError(f"IDX file {path} holds {images.shape[1]}x{images.shape[2]} images, "
                        f"expected {IMAGE_SIZE}x{IMAGE_SIZE}: replace it with the original "
                        f"MNIST or Fashion-MNIST images file")
    if images.shape[0] == 0:
        raise DataError(f"IDX file {path} holds 0 images: replace it with the original images file")


def check_idx_labels(path: Path, labels: np.ndarray, images_path: Path, count: int) -> None:
    """Require ``count`` labels, each in ``0..9``."""
    if labels.shape[0] != count:
        raise DataError(f"IDX file {path} holds {labels.shape[0]} labels but images file "
                        f"{images_path} holds {count} images: use the two files of the same split")
    bad = np.flatnonzero(labels >= NUM_CLASSES)
    if bad.size:
        raise DataError(f"IDX file {path} has label {int(labels[bad[0]])} at index {int(bad[0])}, "
                        f"expected 0..{NUM_CLASSES - 1}: replace it with the original labels file")


def idx_file_paths(name: str, data_dir: str | os.PathLike | None,
                   split: str) -> tuple[Path, Path]:
    """Locate the (images, labels) files of ``name``/``split``; errors list every path tried."""
    if name not in IDX_DATASETS:
        raise ConfigError(f"unknown IDX dataset {name!r}: choose one of {sorted(IDX_DATASETS)}")
    if split not in IDX_FILES:
        raise ConfigError(f"unknown split {split!r} for {name}: choose 'train' or 'test'")
    files = IDX_FILES[split]
    needed = f"{name} files " + ", ".join(f"{f}[.gz]" for f in files)
    root = resolve_data_dir(data_dir, needed)
    kinds = ("images", "labels")
    return tuple(find_data_file(root, IDX_DATASETS[name], f, f"{name} {split} {kind} file",
                                allow_gz=True) for f, kind in zip(files, kinds))


def load_idx_dataset(name: str, data_dir: str | os.PathLike | None = None,
                     split: str = "train", as_float: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Load MNIST or Fashion-MNIST from the user's IDX files.

    Args:
      name: ``"mnist"`` or ``"fashion_mnist"``.
      data_dir: the data folder (``--data-dir``); ``None`` uses ``$DLFUN_DATA``. The files are
        looked for in ``DIR/<name>/`` (see ``IDX_DATASETS`` for the other sub-folders) and ``DIR``.
      split: ``"train"`` (60000 examples in the real files) or ``"test"`` (10000).
      as_float: ``False`` returns the raw uint8 pixels 0..255; ``True`` returns float32 in [0, 1]
        (pixel / 255).

    Returns:
      ``images`` of shape ``(N, 28, 28, 1)``, uint8 (or float32 when ``as_float``), and
      ``labels`` of shape ``(N,)``, int32 in 0..9.

    Raises:
      DataError: a file is missing (the message lists every path tried) or malformed.
      ConfigError: unknown ``name`` or ``split``.
    """
    images_path, labels_path = idx_file_paths(name, data_dir, split)
    images = read_idx(images_path, expect_type=0x08, expect_ndim=3)
    check_idx_images(images_path, images)
    labels = read_idx(labels_path, expect_type=0x08, expect_ndim=1)
    check_idx_labels(labels_path, labels, images_path, images.shape[0])
    images = images[..., None]  # (N, 28, 28, 1): channels-last like every dlfun image
    if as_float:
        images = images.astype(np.float32) / np.float32(255.0)
    return images, labels.astype(np.int32)


def load_mnist(data_dir: str | os.PathLike | None = None, split: str = "train",
               as_float: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """MNIST digits; see :func:`load_idx_dataset` (``images (N, 28, 28, 1)``, ``labels (N,)``)."""
    return load_idx_dataset("mnist", data_dir, split, as_float)


def load_fashion_mnist(data_dir: str | os.PathLike | None = None, split: str = "train",
                       as_float: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST; see :func:`load_idx_dataset` (``images (N, 28, 28, 1)``, ``labels (N,)``)."""
    return load_idx_dataset("fashion_mnist", data_dir, split, as_float)
