"""Image classification datasets by name, split into train / validation / test."""

from __future__ import annotations

from dataclasses import dataclass

import jax
from ..errors import ConfigError
from ..validate import flag_name
from .embedded import digits
from .split import Split, Splits, split_indices, train_val_test

IMAGE_DATASETS = ("digits", "mnist", "fashion_mnist", "cifar10")
EMBEDDED_DATASETS = ("digits", "gaussians8")  # in the package: no files, no --data-dir
FASHION_CLASSES = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt",
                   "sneaker", "bag", "ankle boot")


def check_data_dir_used(cfg, *fields: str) -> None:
    """Refuse a ``--data-dir`` that the run would not read: every dataset that ``fields`` of
    ``cfg`` name (``None`` values skipped) is embedded. A user who gives a folder of files and
    forgets ``--dataset mnist`` would otherwise train on the digits without a word."""
    if getattr(cfg, "data_dir", None) is None:
        return
    named = [(f, getattr(cfg, f)) for f in fields if getattr(cfg, f) is not None]
    if named and all(v in EMBEDDED_DATASETS for _, v in named):
        given = " and ".join(f"{flag_name(f)} {v}" for f, v in named)
        raise ConfigError(f"--data-dir {cfg.data_dir} would not be read: {given} is embedded; "
                          f"name the dataset of its files (e.g. {flag_name(named[0][0])} mnist) "
                          f"or drop --data-dir")


@dataclass(frozen=True)
class ImageData:
    """Splits of float32 images ``(N, H, W, C)`` in [0, 1] and int32 labels ``(N,)``."""

    name: str
    splits: Splits
    class_names: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.splits.train.x.shape[1:])


def load_image_dataset(name: str, key: jax.Array, data_dir: str | None = None,
                       val_fraction: float = 0.1) -> ImageData:
    """Load ``name`` and split it reproducibly by ``key``.

    Args:
      name: "digits" (embedded 8x8, split 70/10/20 by ``key``), "mnist", "fashion_mnist"
        (IDX files) or "cifar10" (python pickles): their training files are split into train
        and validation by ``key``; their test files are the test split.
      key: the split key (keep it fixed across seeds so all models see the same test set).
      data_dir: folder of the files (default ``$DLFUN_DATA``); unused for digits.
      val_fraction: share of the training file held out for validation.
    """
    if name == "digits":
        x, y = digits()
        return ImageData(name, train_val_test(key, x, y, (0.7, 0.1, 0.2)),
                         tuple(str(i) for i in range(10)))
    if name in ("mnist", "fashion_mnist"):
        from .idx import load_idx_dataset

        train = load_idx_dataset(name, data_dir, "train", as_float=True)
        test = load_idx_dataset(name, data_dir, "test", as_float=True)
        names = FASHION_CLASSES if name == "fashion_mnist" else tuple(map(str, range(10)))
    elif name == "cifar10":
        from .cifar import load_cifar10, load_cifar10_class_names

        train = load_cifar10(data_dir, "train", as_float=True)
        test = load_cifar10(data_dir, "test", as_float=True)
        names = tuple(load_cifar10_class_names(data_dir))
    else:
        raise ConfigError(f"unknown dataset {name!r}; choose one of {', '.join(IMAGE_DATASETS)}")
    return ImageData(name, _hold_out(key, Split(*train), Split(*test), val_fraction), names)


def _hold_out(key: jax.Array, train: Split, test: Split, val_fraction: float) -> Splits:
    """Split a training file into train and validation; the test file is the test split."""
    tr, va = split_indices(key, len(train), (1.0 - val_fraction, val_fraction))
    return Splits(train.take(tr), train.take(va), test)


def flatten_images(split: Split) -> Split:
    """Images ``(N, H, W, C)`` -> vectors ``(N, H*W*C)`` for dense models."""
    return Split(split.x.reshape(len(split.x), -1), split.y)


def flatten_splits(splits: Splits) -> Splits:
    """:func:`flatten_images` on every split."""
    return Splits(*(flatten_images(s) for s in (splits.train, splits.val, splits.test)))
