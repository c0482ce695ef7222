"""Readers for files a user already has: IDX (MNIST / Fashion-MNIST), CIFAR-10 pickles, text.

The test files are written here byte by byte from the formats' specifications (struct for
IDX, hand-assembled pickle opcodes for the Python-2 CIFAR batches), independently of the
readers, and read back exactly. Malformed inputs are checked against the error messages.
"""
import gzip
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest

from dlfun.data import (
    CIFAR10_CLASSES, CharVocab, load_cifar10, load_cifar10_class_names, load_corpus,
    load_fashion_mnist, load_idx_dataset, load_mnist, load_stdlib_corpus, load_text_file,
    read_idx, split_held_out,
)
from dlfun.errors import ConfigError, DataError

RNG = np.random.default_rng(0)


# ---------------------------------------------------------------- IDX writing (from the spec)
def idx_bytes(values: np.ndarray, type_code: int = 0x08) -> bytes:
    """An IDX file: 0x00 0x00 type ndim, big-endian uint32 sizes, big-endian values."""
    big_endian = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    header = bytes([0, 0, type_code, values.ndim]) + struct.pack(f">{values.ndim}I", *values.shape)
    return header + values.astype(big_endian[type_code]).tobytes()


def write_file(path: Path, data: bytes, gz: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


def write_idx_split(folder: Path, split: str = "train", n: int = 5, gz: bool = False,
                    images=None, labels=None):
    """Write an images + labels pair as the real file names; return the arrays written."""
    prefix = "train" if split == "train" else "t10k"
    images = RNG.integers(0, 256, (n, 28, 28), dtype=np.uint8) if images is None else images
    labels = RNG.integers(0, 10, (n,), dtype=np.uint8) if labels is None else labels
    write_file(folder / f"{prefix}-images-idx3-ubyte", idx_bytes(images), gz)
    write_file(folder / f"{prefix}-labels-idx1-ubyte", idx_bytes(labels), gz)
    return images, labels


def test_idx_header_bytes_follow_the_spec():
    # The writer above is the spec: magic 0x00000803 then sizes, as in the real MNIST files.
    raw = idx_bytes(np.zeros((5, 28, 28), np.uint8))
    assert raw[:16] == bytes.fromhex("00000803 00000005 0000001c 0000001c")
    assert len(raw) == 16 + 5 * 28 * 28


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("split", ["train", "test"])
@pytest.mark.parametrize("name,subdir", [
    ("mnist", "mnist"), ("mnist", "MNIST/raw"), ("mnist", ""),
    ("fashion_mnist", "fashion_mnist"), ("fashion_mnist", "FashionMNIST/raw"),
])
def test_idx_dataset_round_trip(tmp_path, gz, split, name, subdir):
    images, labels = write_idx_split(tmp_path / subdir, split, n=7, gz=gz)
    got_images, got_labels = load_idx_dataset(name, tmp_path, split)
    assert got_images.shape == (7, 28, 28, 1) and got_images.dtype == np.uint8
    assert got_labels.shape == (7,) and got_labels.dtype == np.int32
    np.testing.assert_array_equal(got_images[..., 0], images)
    np.testing.assert_array_equal(got_labels, labels.astype(np.int32))


def test_idx_as_float_is_pixels_over_255(tmp_path):
    images, _ = write_idx_split(tmp_path / "mnist", n=3)
    images[0, 0, 0] = 255
    images[0, 0, 1] = 0
    write_idx_split(tmp_path / "mnist", n=3, images=images)
    got, _ = load_mnist(tmp_path, "train", as_float=True)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got[..., 0], images.astype(np.float32) / np.float32(255))
    assert got[0, 0, 0, 0] == 1.0 and got[0, 0, 1, 0] == 0.0


def test_fashion_mnist_and_mnist_use_their_own_subfolders(tmp_path):
    mnist_images, _ = write_idx_split(tmp_path / "mnist", n=2)
    fashion_images, _ = write_idx_split(tmp_path / "fashion_mnist", n=3)
    np.testing.assert_array_equal(load_mnist(tmp_path)[0][..., 0], mnist_images)
    np.testing.assert_array_equal(load_fashion_mnist(tmp_path)[0][..., 0], fashion_images)


def test_plain_file_preferred_over_gz_and_env_var_used(tmp_path, monkeypatch):
    plain, _ = write_idx_split(tmp_path / "mnist", n=2)
    write_idx_split(tmp_path / "mnist", n=4, gz=True)
    monkeypatch.setenv("DLFUN_DATA", str(tmp_path))
    np.testing.assert_array_equal(load_mnist()[0][..., 0], plain)


def test_data_dir_argument_wins_over_env_var(tmp_path, monkeypatch):
    images, _ = write_idx_split(tmp_path / "a" / "mnist", n=2)
    write_idx_split(tmp_path / "b" / "mnist", n=3)
    monkeypatch.setenv("DLFUN_DATA", str(tmp_path / "b"))
    np.testing.assert_array_equal(load_mnist(tmp_path / "a")[0][..., 0], images)


@pytest.mark.parametrize("type_code,dtype", [
    (0x08, np.uint8), (0x09, np.int8), (0x0B, np.int16), (0x0C, np.int32),
    (0x0D, np.float32), (0x0E, np.float64),
])
def test_read_idx_every_type_code_big_endian(tmp_path, type_code, dtype):
    values = (RNG.normal(size=(3, 4, 2)) * 100).astype(dtype)
    path = write_file(tmp_path / "x.idx", idx_bytes(values, type_code))
    got = read_idx(path)
    assert got.dtype == np.dtype(dtype) and got.dtype.isnative
    np.testing.assert_array_equal(got, values)


def test_unknown_dataset_and_split_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown IDX dataset 'kmnist'"):
        load_idx_dataset("kmnist", tmp_path)
    with pytest.raises(ConfigError, match="unknown split 'val'"):
        load_mnist(tmp_path, "val")
    with pytest.raises(ConfigError, match="unknown split 'val'"):
        load_cifar10(tmp_path, "val")


# ------------------------------------------------ CIFAR-10 writing (Python 2 cPickle, protocol 2)
def _str(b: bytes) -> bytes:
    """Python 2 str: SHORT_BINSTRING or BINSTRING."""
    return b"U" + bytes([len(b)]) + b if len(b) < 256 else b"T" + struct.pack("<i", len(b)) + b


def _int(v: int) -> bytes:
    """Python 2 int: BININT1, BININT2 or BININT."""
    if 0 <= v < 256:
        return b"K" + bytes([v])
    if 0 <= v < 65536:
        return b"M" + struct.pack("<H", v)
    return b"J" + struct.pack("<i", v)


def _list(items: list[bytes]) -> bytes:
    return b"](" + b"".join(items) + b"e"  # EMPTY_LIST MARK ... APPENDS


def py2_ndarray_uint8(data: np.ndarray) -> bytes:
    """A 2-D uint8 array as numpy 1.x under Python 2 pickled it (ndarray.__reduce__)."""
    dtype = (b"cnumpy\ndtype\n" + _str(b"u1") + _int(0) + _int(1) + b"\x87R"
             + b"(" + _int(3) + _str(b"|") + b"NNN" + _int(-1) + _int(-1) + _int(0) + b"tb")
    return (b"cnumpy.core.multiarray\n_reconstruct\n" + b"cnumpy\nndarray\n"
            + _int(0) + b"\x85" + _str(b"b") + b"\x87R"
            + b"(" + _int(1) + _int(data.shape[0]) + _int(data.shape[1]) + b"\x86"
            + dtype + b"\x89" + _str(data.tobytes()) + b"tb")


def py2_pickle_dict(entries: dict[bytes, bytes]) -> bytes:
    """PROTO 2, EMPTY_DICT, MARK, key/value pairs, SETITEMS, STOP."""
    return b"\x80\x02}(" + b"".join(_str(k) + v for k, v in entries.items()) + b"u."


def cifar_batch_pickle(data: np.ndarray, labels, drop: bytes | None = None) -> bytes:
    """A CIFAR-10 python-version batch, as in cifar-10-python.tar.gz (optionally lacking a key)."""
    entries = {
        b"batch_label": _str(b"training batch 1 of 5"),
        b"labels": _list([_int(int(v)) for v in labels]),
        b"data": py2_ndarray_uint8(data),
        b"filenames": _list([_str(b"img_%d.png" % i) for i in range(data.shape[0])]),
    }
    entries.pop(drop, None)
    return py2_pickle_dict(entries)


def make_cifar_images(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random HWC images, the same as (N, 3072) R/G/B-plane rows, and labels."""
    images = RNG.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    rows = np.stack([images[..., c].reshape(n, 1024) for c in range(3)], axis=1).reshape(n, 3072)
    return images, rows, RNG.integers(0, 10, (n,))


def write_cifar(folder: Path, n: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """All six batches with ``n`` images each; returns (train images, train labels)."""
    folder.mkdir(parents=True, exist_ok=True)
    all_images, all_labels = [], []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        images, rows, labels = make_cifar_images(n)
        (folder / name).write_bytes(cifar_batch_pickle(rows, labels))
        if name != "test_batch":
            all_images.append(images)
            all_labels.append(labels)
    return np.concatenate(all_images), np.concatenate(all_labels)


def test_py2_pickle_writer_is_a_valid_cifar_batch():
    _, rows, labels = make_cifar_images(2)
    batch = pickle.loads(cifar_batch_pickle(rows, labels), encoding="bytes")
    assert set(batch) == {b"batch_label", b"labels", b"data", b"filenames"}
    np.testing.assert_array_equal(batch[b"data"], rows)
    assert batch[b"labels"] == [int(v) for v in labels]


@pytest.mark.parametrize("subdir", ["cifar-10-batches-py", "cifar10/cifar-10-batches-py", ""])
def test_cifar10_round_trip(tmp_path, subdir):
    images, labels = write_cifar(tmp_path / subdir, n=3)
    got_images, got_labels = load_cifar10(tmp_path, "train")
    assert got_images.shape == (15, 32, 32, 3) and got_images.dtype == np.uint8
    assert got_labels.shape == (15,) and got_labels.dtype == np.int32
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels)
    test_images, _ = load_cifar10(tmp_path, "test", as_float=True)
    assert test_images.shape == (3, 32, 32, 3) and test_images.dtype == np.float32
    assert 0.0 <= test_images.min() and test_images.max() <= 1.0


def test_cifar10_pixel_layout_is_rgb_planes(tmp_path):
    # Row = 1024 red, 1024 green, 1024 blue values, each plane row-major 32x32.
    rows = np.zeros((1, 3072), np.uint8)
    rows[0, 0 * 1024 + 1 * 32 + 2] = 11   # red at (row 1, col 2)
    rows[0, 1 * 1024 + 31] = 22           # green at (row 0, col 31)
    rows[0, 2 * 1024 + 31 * 32] = 33      # blue at (row 31, col 0)
    (tmp_path / "test_batch").write_bytes(cifar_batch_pickle(rows, [4]))
    images, _ = load_cifar10(tmp_path, "test")
    assert (images[0, 1, 2, 0], images[0, 0, 31, 1], images[0, 31, 0, 2]) == (11, 22, 33)
    assert int(images.sum()) == 66


def test_cifar10_python3_repickled_batch_also_reads(tmp_path):
    images, rows, labels = make_cifar_images(4)
    batch = {b"data": rows, b"labels": [int(v) for v in labels]}
    (tmp_path / "test_batch").write_bytes(pickle.dumps(batch, protocol=2))
    got_images, got_labels = load_cifar10(tmp_path, "test")
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels)


def test_cifar10_class_names_from_meta_or_default(tmp_path):
    assert load_cifar10_class_names(tmp_path) == CIFAR10_CLASSES
    names = [b"a%d" % i for i in range(10)]
    meta = py2_pickle_dict({b"num_cases_per_batch": _int(10000),
                            b"label_names": _list([_str(n) for n in names]),
                            b"num_vis": _int(3072)})
    (tmp_path / "batches.meta").write_bytes(meta)
    assert load_cifar10_class_names(tmp_path) == tuple(f"a{i}" for i in range(10))


def test_restricted_unpickler_runs_no_code(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))  # would create the marker file if resolved

    raw = pickle.dumps(Evil(), protocol=2)
    (tmp_path / "test_batch").write_bytes(raw)
    # pickle names open by its module: io.open up to Python 3.12, _io.open from 3.13
    with pytest.raises(DataError, match=rf"global {open.__module__}\.open is not allowed"):
        load_cifar10(tmp_path, "test")
    assert not marker.exists()
    pickle.loads(raw).close()  # the unrestricted unpickler does run it
    assert marker.exists()


# ---------------------------------------------------------------- malformed inputs, one table
MNIST_TRAIN_IMAGES = "train-images-idx3-ubyte"
MNIST_TRAIN_LABELS = "train-labels-idx1-ubyte"


def _with_bad_images(raw: bytes, name: str = MNIST_TRAIN_IMAGES):
    """A case whose images file is ``raw`` (labels are valid for 5 images)."""
    def setup(root: Path):
        write_idx_split(root / "mnist", n=5)
        write_file(root / "mnist" / name, raw)
        return lambda: load_mnist(root)
    return setup


def _with_bad_labels(labels: np.ndarray):
    def setup(root: Path):
        write_idx_split(root / "mnist", n=5, labels=labels)
        return lambda: load_mnist(root)
    return setup


def _good_images(n: int = 5, h: int = 28, w: int = 28) -> bytes:
    return idx_bytes(np.zeros((n, h, w), np.uint8))


def _truncated_gz(root: Path):
    write_idx_split(root / "mnist", n=5, gz=True)
    path = root / "mnist" / (MNIST_TRAIN_IMAGES + ".gz")
    path.write_bytes(path.read_bytes()[:40])
    return lambda: load_mnist(root)


def _missing_files(root: Path):
    (root / "mnist").mkdir()
    return lambda: load_mnist(root)


def _missing_labels(root: Path):
    write_file(root / "mnist" / MNIST_TRAIN_IMAGES, _good_images())
    return lambda: load_mnist(root)


def _env_missing_folder(root: Path):
    os.environ["DLFUN_DATA"] = str(root / "nowhere")
    return lambda: load_mnist()


def _no_data_dir(root: Path):
    os.environ.pop("DLFUN_DATA", None)
    return lambda: load_cifar10()


def _cifar_case(make_bytes):
    def setup(root: Path):
        (root / "test_batch").write_bytes(make_bytes())
        return lambda: load_cifar10(root, "test")
    return setup


def _cifar_rows(n=3):
    return make_cifar_images(n)[1]


def _text_case(raw: bytes):
    def setup(root: Path):
        (root / "corpus.txt").write_bytes(raw)
        return lambda: load_text_file(root / "corpus.txt")
    return setup


# (case id, setup(root) -> thunk, fragments the message must contain; "{root}" is tmp_path)
MALFORMED = [
    ("idx truncated data", _with_bad_images(_good_images()[:-100]),
     ["train-images-idx3-ubyte", "is truncated", "(5, 28, 28) = 3920 data bytes", "holds 3820"]),
    ("idx real header truncated body",
     _with_bad_images(bytes.fromhex("00000803 0000ea60 0000001c 0000001c") + bytes(100)),
     ["is truncated", "(60000, 28, 28) = 47040000 data bytes", "holds 100"]),
    ("idx trailing bytes", _with_bad_images(_good_images() + b"\x00"),
     ["has trailing bytes", "holds 3921"]),
    ("idx truncated header", _with_bad_images(bytes.fromhex("00000803 00000005 0000")),
     ["truncated inside its header", "10 of 16 bytes"]),
    ("idx shorter than magic", _with_bad_images(b"\x00\x00"),
     ["2 bytes, too short for the 4-byte magic number", "expected magic 0x00000803"]),
    ("idx wrong magic", _with_bad_images(b"\x89PNG" + _good_images()[4:]),
     ["wrong magic number 0x89504E47", "expected magic 0x00000803",
      "replace it with the original IDX file"]),
    ("idx unknown type code", _with_bad_images(b"\x00\x00\x07\x03" + _good_images()[4:]),
     ["unknown type code 0x07", "expected magic 0x00000803"]),
    ("idx float type code", _with_bad_images(idx_bytes(np.zeros((5, 28, 28)), 0x0D)),
     ["holds float32 values (type code 0x0D)", "expected magic 0x00000803 (unsigned byte)"]),
    ("idx labels given as images", _with_bad_images(idx_bytes(np.zeros(5, np.uint8))),
     ["has 1 dimension,", "expected magic 0x00000803 (3 dimensions)", "not swapped"]),
    ("idx 27x28 images", _with_bad_images(_good_images(h=27)),
     ["holds 27x28 images, expected 28x28", "replace it with the original"]),
    ("idx count mismatch", _with_bad_images(_good_images(n=6)),
     ["train-labels-idx1-ubyte holds 5 labels but images file", "holds 6 images",
      "same split"]),
    ("idx label out of range", _with_bad_labels(np.array([0, 1, 10, 2, 3], np.uint8)),
     ["train-labels-idx1-ubyte has label 10 at index 2, expected 0..9",
      "replace it with the original labels file"]),
    ("idx gzip without .gz", _with_bad_images(gzip.compress(_good_images())),
     ["gzip-compressed but its name lacks .gz", "train-images-idx3-ubyte.gz"]),
    ("idx truncated gz", _truncated_gz,
     ["train-images-idx3-ubyte.gz is not a valid gzip file", "truncated or corrupt"]),
    ("idx missing files", _missing_files,
     ["mnist train images file not found: tried",
      "{root}/mnist/train-images-idx3-ubyte, {root}/mnist/train-images-idx3-ubyte.gz",
      "{root}/MNIST/raw/train-images-idx3-ubyte", "{root}/MNIST/train-images-idx3-ubyte.gz",
      "{root}/train-images-idx3-ubyte.gz",
      "put train-images-idx3-ubyte or train-images-idx3-ubyte.gz", "--data-dir DIR",
      "DLFUN_DATA=DIR"]),
    ("idx missing labels", _missing_labels,
     ["mnist train labels file not found", "{root}/mnist/train-labels-idx1-ubyte.gz"]),
    ("DLFUN_DATA missing folder", _env_missing_folder,
     ["data folder {root}/nowhere (from DLFUN_DATA) does not exist", "--data-dir",
      "train-images-idx3-ubyte[.gz]"]),
    ("no data folder at all", _no_data_dir,
     ["no data folder given for cifar10", "--data-dir DIR", "DLFUN_DATA=DIR"]),
    ("cifar missing labels key", _cifar_case(lambda: cifar_batch_pickle(
        _cifar_rows(), [0, 1, 2], drop=b"labels")),
     ["test_batch lacks key b'labels'", "cifar-10-python.tar.gz"]),
    ("cifar missing data key", _cifar_case(lambda: cifar_batch_pickle(
        _cifar_rows(), [0, 1, 2], drop=b"data")),
     ["test_batch lacks key b'data'"]),
    ("cifar wrong data shape", _cifar_case(lambda: cifar_batch_pickle(
        np.zeros((3, 3071), np.uint8), [0, 1, 2])),
     ["b'data' of shape (3, 3071)", "expected uint8 (N, 3072)",
      "use the original CIFAR-10 python-version batch"]),
    ("cifar wrong data dtype", _cifar_case(lambda: pickle.dumps(
        {b"data": np.zeros((3, 3072), np.float32), b"labels": [0, 1, 2]}, protocol=2)),
     ["type float32", "expected uint8 (N, 3072)"]),
    ("cifar label out of range", _cifar_case(lambda: cifar_batch_pickle(
        _cifar_rows(), [0, 10, 2])),
     ["test_batch has label 10 at index 1, expected 0..9"]),
    ("cifar label count mismatch", _cifar_case(lambda: cifar_batch_pickle(
        _cifar_rows(), [0, 1])),
     ["b'labels' of shape (2,) for 3 images"]),
    ("cifar not a pickle", _cifar_case(lambda: b"airplane,automobile\n1,2\n"),
     ["test_batch is not a readable CIFAR-10 python pickle",
      "replace it with the original file from cifar-10-python.tar.gz"]),
    ("cifar truncated pickle", _cifar_case(lambda: cifar_batch_pickle(
        _cifar_rows(), [0, 1, 2])[:500]),
     ["test_batch is not a readable CIFAR-10 python pickle"]),
    ("cifar not a dict", _cifar_case(lambda: pickle.dumps([1, 2, 3], protocol=2)),
     ["test_batch holds a list, expected a dict"]),
    ("text empty", _text_case(b""), ["corpus.txt is empty", "give --text a file"]),
    ("text whitespace only", _text_case(b" \n\t\n"), ["corpus.txt is empty (4 bytes"]),
    ("text binary", _text_case(b"abc\x00\x01\x02"),
     ["corpus.txt is binary (NUL byte at offset 3)", "plain-text file"]),
    ("text not utf-8", _text_case("caf\u00e9".encode("latin-1")),
     ["corpus.txt is not UTF-8 text (byte 0xE9 at offset 3)", "convert it to UTF-8"]),
    ("text missing", lambda root: (lambda: load_corpus(root / "absent.txt")),
     ["absent.txt does not exist", "--text"]),
]


@pytest.mark.parametrize("setup,fragments", [c[1:] for c in MALFORMED],
                         ids=[c[0] for c in MALFORMED])
def test_malformed_input_gives_one_clear_line(tmp_path, monkeypatch, setup, fragments):
    # Isolates from the caller's environment and restores DLFUN_DATA after cases that set it.
    monkeypatch.setenv("DLFUN_DATA", "")
    load = setup(tmp_path)
    with pytest.raises(DataError) as info:
        load()
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment.format(root=tmp_path) in message, message


# ---------------------------------------------------------------- text corpus and vocabulary
def test_stdlib_corpus_is_deterministic_and_substantial():
    first, second = load_stdlib_corpus(), load_stdlib_corpus()
    assert first.text == second.text and first.sources == second.sources
    assert len(first.sources) + len(first.skipped) == 36
    assert len(first.sources) >= 30, first.skipped  # every CPython 3.11+ ships these sources
    assert len(first.text) > 1_000_000
    assert first.text.startswith("# ---- argparse ----\n")
    assert "def parse_args" in first.text and "class TarFile" in first.text
    assert load_corpus().text == first.text


def test_text_file_corpus_and_vocab_round_trip(tmp_path):
    text = "hello, world\nnaïve café ✓\n"
    (tmp_path / "t.txt").write_text(text, encoding="utf-8")
    corpus = load_corpus(tmp_path / "t.txt")
    assert corpus.text == text and corpus.sources == (str(tmp_path / "t.txt"),)
    vocab = CharVocab(corpus.text)
    assert vocab.chars == tuple(sorted(set(text))) and vocab.size == len(set(text))
    ids = vocab.encode(text)
    assert ids.dtype == np.int32 and ids.shape == (len(text),)
    assert ids.min() == 0 and ids.max() == vocab.size - 1
    assert vocab.decode(ids) == text
    assert vocab.encode("\n")[0] == 0  # newline sorts first here
    with pytest.raises(DataError, match="character 'Z' is not in the vocabulary"):
        vocab.encode("Z")


def test_stdlib_vocab_round_trip():
    text = load_stdlib_corpus().text
    vocab = CharVocab(text)
    assert 60 <= vocab.size <= 200
    sample = text[100_000:120_000]
    assert vocab.decode(vocab.encode(sample)) == sample


def test_split_held_out_is_contiguous_tail():
    ids = np.arange(100, dtype=np.int32)
    train, held = split_held_out(ids, 0.1)
    np.testing.assert_array_equal(train, np.arange(90))
    np.testing.assert_array_equal(held, np.arange(90, 100))
    with pytest.raises(ConfigError, match="strictly between 0 and 1"):
        split_held_out(ids, 1.0)
    with pytest.raises(DataError, match="too short.*each needs at least 65"):
        split_held_out(ids, 0.1, min_length=65)
