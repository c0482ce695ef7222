"""A real text corpus for character-level language models, present on every machine.

By default the corpus is the Python standard library's own source: the fixed list
:data:`STDLIB_CORPUS_MODULES` (36 plain-ASCII, pure-Python modules that exist in every
CPython 3.11+ install), read from ``sysconfig.get_paths()["stdlib"]`` in that order and
joined with a header line ``# ---- <module> ----`` before each file. On CPython 3.11.7 this
is 1,979,182 characters (96 distinct, all ASCII) from all 36 files; other versions differ slightly
because the modules change. An install without some of the sources (e.g. a ``.pyc``-only
build) skips them and :class:`TextCorpus` says how many were used.

Any UTF-8 text file can be used instead (``--text PATH``). An empty, whitespace-only,
binary or non-UTF-8 file raises :class:`~dlfun.errors.DataError`.
"""
from __future__ import annotations

import os
import sysconfig
from pathlib import Path
from typing import NamedTuple

import numpy as np

from dlfun.errors import ConfigError, DataError

STDLIB_CORPUS_MODULES: tuple[str, ...] = (
    "argparse", "ast", "bdb", "calendar", "collections", "configparser", "contextlib",
    "copy", "csv", "dataclasses", "difflib", "doctest", "enum", "gettext", "http.client",
    "inspect", "ipaddress", "json.decoder", "json.encoder", "logging", "optparse", "os",
    "pickle", "pprint", "pydoc", "queue", "random", "shutil", "subprocess", "tarfile",
    "tempfile", "textwrap", "threading", "tokenize", "traceback", "typing",
)
"""Standard-library modules (pure Python, plain ASCII in 3.11) concatenated, in this order."""


class TextCorpus(NamedTuple):
    """A loaded corpus: the text and where it came from."""

    text: str
    """The whole corpus as one string."""
    sources: tuple[str, ...]
    """The files read, in order."""
    skipped: tuple[str, ...]
    """Default corpus only: listed modules whose source was not found on this install."""


def stdlib_module_path(stdlib: Path, module: str) -> Path | None:
    """``a.b`` -> ``<stdlib>/a/b.py`` or ``<stdlib>/a/b/__init__.py``, whichever exists."""
    base = stdlib.joinpath(*module.split("."))
    for path in (base.with_name(base.name + ".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def load_stdlib_corpus(modules: tuple[str, ...] = STDLIB_CORPUS_MODULES) -> TextCorpus:
    """Concatenate the sources of ``modules`` from this interpreter's standard library.

    Args:
      modules: dotted module names; the default is :data:`STDLIB_CORPUS_MODULES`.

    Returns:
      A :class:`TextCorpus`; each file is preceded by a line ``# ---- <module> ----``.

    Raises:
      DataError: none of the sources exists (a stripped install); pass ``--text PATH`` then.
    """
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    parts, sources, skipped = [], [], []
    for module in modules:
        path = stdlib_module_path(stdlib, module)
        if path is None:
            skipped.append(module)
            continue
        parts.append(f"# ---- {module} ----\n" + path.read_text(encoding="utf-8"))
        sources.append(str(path))
    if not parts:
        raise DataError(f"no standard-library sources found under {stdlib} (tried "
                        f"{len(modules)} modules; is this a .pyc-only install?): pass --text PATH "
                        f"to train on any UTF-8 text file instead")
    return TextCorpus("".join(parts), tuple(sources), tuple(skipped))


def load_text_file(path: str | os.PathLike) -> TextCorpus:
    """Read one UTF-8 text file as a corpus.

    Args:
      path: the file (``--text PATH``).

    Returns:
      A :class:`TextCorpus` with the file's text.

    Raises:
      DataError: the file is missing, empty or whitespace-only, contains NUL bytes
        (binary), or is not valid UTF-8.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"text file {path} does not exist or is not a file: give --text the "
                        f"path of a UTF-8 text file, or leave --text out to use the "
                        f"Python-stdlib corpus")
    raw = path.read_bytes()
    if b"\x00" in raw:
        raise DataError(f"text file {path} is binary (NUL byte at offset {raw.index(0)}), "
                        f"expected UTF-8 text: give --text a plain-text file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"text file {path} is not UTF-8 text (byte 0x{raw[err.start]:02X} "
                        f"at offset {err.start}): convert it to UTF-8 or give --text another "
                        f"file") from None
    if not text.strip():
        raise DataError(f"text file {path} is empty ({len(raw)} bytes, no non-space "
                        f"characters): give --text a file with some text in it")
    return TextCorpus(text, (str(path),), ())


def load_corpus(text_path: str | os.PathLike | None = None) -> TextCorpus:
    """The corpus a char model trains on: ``text_path`` if given, else the stdlib corpus."""
    if text_path is None or str(text_path) == "":
        return load_stdlib_corpus()
    return load_text_file(text_path)


class CharVocab:
    """A character vocabulary: the sorted distinct characters of a text, ids ``0..size-1``."""

    def __init__(self, text: str):
        """Build from ``text``; raises DataError if it is empty."""
        if not text:
            raise DataError("cannot build a character vocabulary from empty text: "
                            "give --text a non-empty file")
        self.chars: tuple[str, ...] = tuple(sorted(set(text)))
        self._index = {c: i for i, c in enumerate(self.chars)}

    @property
    def size(self) -> int:
        """Number of distinct characters (the model's input/output width)."""
        return len(self.chars)

    def encode(self, text: str) -> np.ndarray:
        """``text`` -> ids of shape ``(len(text),)``, int32; DataError for an unknown character."""
        try:
            return np.fromiter((self._index[c] for c in text), dtype=np.int32, count=len(text))
        except KeyError as err:
            raise DataError(f"character {err.args[0]!r} is not in the vocabulary of "
                            f"{self.size} characters: build the vocabulary from the whole "
                            f"corpus") from None

    def decode(self, ids) -> str:
        """Ids of shape ``(T,)`` (any integer array or list) -> a string of length ``T``."""
        return "".join(self.chars[int(i)] for i in np.asarray(ids).reshape(-1))


def split_held_out(ids: np.ndarray, held_out_fraction: float = 0.1,
                   min_length: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Split a sequence into a leading training part and a trailing held-out part.

    The split is contiguous (no shuffling), so held-out text never overlaps training text.

    Args:
      ids: token ids of shape ``(T,)``.
      held_out_fraction: fraction of ``T`` kept for held-out, in (0, 1).
      min_length: each part must hold at least this many ids (e.g. context length + 1).

    Returns:
      ``(train (T - k,), held_out (k,))`` with ``k = round(T * held_out_fraction)``.

    Raises:
      ConfigError: fraction outside (0, 1).
      DataError: the text is too short for both parts to reach ``min_length``.
    """
    if not 0.0 < held_out_fraction < 1.0:
        raise ConfigError(f"held-out fraction {held_out_fraction} must be strictly between 0 and 1")
    total = ids.shape[0]
    k = int(round(total * held_out_fraction))
    if min(k, total - k) < min_length:
        raise DataError(f"text of {total} characters is too short: a held-out fraction of "
                        f"{held_out_fraction} leaves {total - k} training and {k} held-out "
                        f"characters, each needs at least {min_length}; use a longer text file "
                        f"(or a shorter --seq-len)")
    return ids[: total - k], ids[total - k:]


class EncodedCorpus(NamedTuple):
    """A corpus encoded and split for a character model: what the model and the report need."""

    vocab: CharVocab
    """The characters of the (cut) text."""
    train: np.ndarray
    """Ids ``(N_train,)``, the leading part."""
    held_out: np.ndarray
    """Ids ``(N_held,)``, the trailing part (never trained on)."""
    sources: int
    """How many files the text came from."""


def load_encoded_corpus(text_path: str | os.PathLike | None = None, max_chars: int = 0,
                        held_out_fraction: float = 0.1, min_length: int = 2) -> EncodedCorpus:
    """Read the corpus (:func:`load_corpus`), keep its first ``max_chars`` characters (0: all),
    build the vocabulary, encode and split it (:func:`split_held_out`, each part at least
    ``min_length`` ids). DataError for an unusable text."""
    corpus = load_corpus(text_path)
    text = corpus.text[:max_chars] if max_chars else corpus.text
    vocab = CharVocab(text)
    train, held = split_held_out(vocab.encode(text), held_out_fraction, min_length=min_length)
    return EncodedCorpus(vocab, train, held, len(corpus.sources))


def encode_prompt(vocab: CharVocab, prompt: str) -> np.ndarray:
    """The ids ``(len(prompt),)`` of a sampling prompt; DataError naming the first character
    the vocabulary lacks."""
    missing = [c for c in prompt if c not in vocab.chars]
    if missing:
        raise DataError(f"--sample-prompt {prompt!r} has {missing[0]!r}, which does not occur "
                        f"in the text; choose a prompt made of the text's characters")
    return vocab.encode(prompt)


def unigram_bits(ids: np.ndarray, vocab_size: int) -> float:
    """Entropy (bits/char) of the character frequencies of ids ``(N,)``: the best a model
    without context can do."""
    p = np.bincount(ids, minlength=vocab_size) / len(ids)
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum())
