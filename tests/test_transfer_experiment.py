"""The transfer experiment in-process: the linear probe learns task B on frozen features that
stay bitwise the pretrained ones."""

import json
import struct

import numpy as np
import pytest

import experiments.transfer as transfer
from dlfun.errors import ConfigError
from run_helpers import smoke


@pytest.mark.slow
def test_smoke_probe_learns_on_frozen_features(tmp_path):
    _, summary = smoke(transfer, tmp_path)
    assert summary["task_a_test_accuracy"] > 0.8  # digits 0-4, chance 0.2
    acc = summary["test_accuracy"]
    assert acc["scratch"]["10"] > 0.4 and acc["linear_probe"]["10"] > 0.3  # chance 0.2
    assert summary["frozen_parameters_unchanged"] == {"linear_probe": True}


def test_frozen_unchanged_sees_a_changed_bit():
    pre = {"conv1": {"kernel": np.ones(3, np.float32)}, "fc3": {"kernel": np.ones(2)}}
    same = {"conv1": {"kernel": np.ones(3, np.float32)}, "fc3": {"kernel": np.zeros(2)}}
    assert transfer.frozen_unchanged(pre, same, "linear_probe")
    nudged = {"conv1": {"kernel": np.nextafter(np.ones(3, np.float32), 2)}, "fc3": same["fc3"]}
    assert not transfer.frozen_unchanged(pre, nudged, "linear_probe")


def test_bad_flags_are_one_line():
    with pytest.raises(ConfigError, match="--methods"):
        transfer.Config(methods=("scratch", "distill"))


def write_idx(path, arr):
    """An IDX file as MNIST's (magic 0x0000 08 ndim, big-endian sizes, then the bytes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    path.write_bytes(header + arr.tobytes())


def write_blocks(folder, seed, n_train=400, n_test=100):
    """MNIST-format files whose class ``c`` is a bright 7x7 block at its own place (and noise):
    learnable, with features shared by two such datasets."""
    rng = np.random.default_rng(seed)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
        for i, c in enumerate(labels):
            r, col = 7 * (c // 4) + (c % 2), 7 * (c % 4)
            images[i, r:r + 7, col:col + 7] = 220
        write_idx(folder / f"{prefix}-images-idx3-ubyte", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", labels)


@pytest.mark.slow
def test_across_datasets_every_source_class_pretrains_and_every_target_class_is_learned(
        tmp_path):
    write_blocks(tmp_path / "data" / "mnist", 0)
    write_blocks(tmp_path / "data" / "fashion_mnist", 1)
    cfg, summary = smoke(transfer, tmp_path, source="mnist", target="fashion_mnist",
                         data_dir=str(tmp_path / "data"), pretrain_examples=300)
    assert summary["source"] == "mnist" and summary["target"] == "fashion_mnist"
    assert summary["task_a_test_accuracy"] > 0.8  # all ten block places, chance 0.1
    acc = summary["test_accuracy"]
    # frozen source features tell the ten target classes apart: above what any head of five
    # classes could reach on them (measured 0.9)
    assert acc["linear_probe"]["10"] > 0.6
    assert summary["frozen_parameters_unchanged"] == {"linear_probe": True}
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    pretrain = [r for r in map(json.loads, lines) if r.get("model") == "pretrain"]
    assert [r["epoch"] for r in pretrain if "val_accuracy" in r] == list(
        range(1, cfg.epochs + 1))


def test_across_datasets_needs_the_files_and_one_channel(tmp_path):
    from dlfun.errors import DataError
    with pytest.raises(DataError, match="fashion"):
        transfer.main(transfer.Config(source="digits", target="fashion_mnist",
                                      data_dir=str(tmp_path), run_dir=str(tmp_path / "run"),
                                      preset="smoke"))
    with pytest.raises(ConfigError, match="--source mnist and --target cifar10 differ"):
        transfer.Config(source="mnist", target="cifar10")
    with pytest.raises(ConfigError, match="--source must be one of"):
        transfer.Config(source="imagenet")
