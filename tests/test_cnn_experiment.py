"""The CNN experiment in-process: smoke runs that must learn, on the digits and on MNIST and
CIFAR-10 files written here in the real formats; ensemble, resume and depth comparison."""

import dataclasses
import json
import shutil

import jax
import numpy as np
import pytest

import experiments.cnn as cnn
from dlfun.runs.cli import parse_config
from dlfun.data.image_prep import fit_to_size, prepare_splits
from dlfun.data.split import Split, Splits
from dlfun.errors import ConfigError
from dlfun.train.checkpoint import Checkpointer
from run_helpers import checkpoint_index, saved_epochs
from test_data_readers import cifar_batch_pickle, idx_bytes  # the formats' byte-level writers

RNG = np.random.default_rng(0)


def smoke(tmp_path, name="run", **overrides):
    cfg = dataclasses.replace(cnn.PRESETS["smoke"], run_dir=str(tmp_path / name), **overrides)
    return cfg, cnn.main(cfg)


def saved_pictures(run):
    return json.loads((run / "summary.json").read_text())["pictures"]


def records(tmp_path, name="run"):
    lines = (tmp_path / name / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """One run of the smoke preset, shared by the tests that read it."""
    tmp_path = tmp_path_factory.mktemp("cnn_smoke")
    cfg, summary = smoke(tmp_path)
    return tmp_path, cfg, summary


def test_smoke_learns_and_writes_the_run_contract_and_pictures(smoke_run):
    tmp_path, cfg, summary = smoke_run
    assert summary["test_accuracy"] > 0.6  # chance is 0.1
    rec = records(tmp_path)
    assert len(rec) == cfg.epochs and rec[-1]["train_loss"] < 0.6 * rec[0]["train_loss"]
    run = tmp_path / "run"
    for f in ("config.json", "metrics.jsonl", "summary.json"):
        assert (run / f).is_file(), f
    for f in ("lenet_curves.png", "lenet_confusion.png", "lenet_filters.png",
              "lenet_activations.png", "lenet_cam.png"):
        assert (run / f).stat().st_size > 5000, f  # a drawn picture, not an empty canvas
    assert saved_pictures(run) == ["lenet_filters.png", "lenet_activations.png", "lenet_cam.png"]
    assert saved_epochs(run / "checkpoints" / "lenet")[-1] == cfg.epochs
    saved = json.loads((run / "summary.json").read_text())
    assert saved["status"] == "ok" and saved["num_params"] == 61_706
    assert saved["image_size"] == 32 and saved["max_shift"] == 4  # 8x8 upsampled 4x
    assert np.sum(saved["confusion_matrix"]) == saved["test_examples"] == 359


def test_ensemble_reports_members_ensemble_and_entropy(tmp_path):
    _, summary = smoke(tmp_path, num_seeds=2, cam_images=0)
    acc = summary["member_test_accuracy"]
    assert len(acc) == 2 and min(acc) > 0.5
    assert acc[0] != acc[1] or summary["test_loss"] > 0  # members differ (own init and data)
    assert summary["ensemble_strategy"] == "sequential"  # "auto" for conv models on the CPU
    assert summary["test_accuracy"] >= min(acc)
    assert summary["entropy_misclassified"] > summary["entropy_correct"]


def test_resume_equals_uninterrupted_run(smoke_run, tmp_path):
    full, cfg, _ = smoke_run
    smoke(tmp_path, "cut", cam_images=0)
    # Interrupted before its last epoch: the newest checkpoint is the one before. (The cosine
    # schedule spans the configured epochs, so the interrupted run was started with the same.)
    last = checkpoint_index(tmp_path / "cut" / "checkpoints" / "lenet", cfg.epochs)
    shutil.rmtree(tmp_path / "cut" / "checkpoints" / "lenet" / str(last))
    resumed = dataclasses.replace(cfg, run_dir=str(tmp_path / "cut"), cam_images=0, resume=True)
    assert cnn.main(resumed)["resumed"]
    a = Checkpointer(full / "run" / "checkpoints" / "lenet")._manager.restore(last)
    b = Checkpointer(tmp_path / "cut" / "checkpoints" / "lenet")._manager.restore(last)
    for x, y in zip(jax.tree.leaves(a["state"]), jax.tree.leaves(b["state"])):
        assert np.array_equal(np.asarray(x), np.asarray(y))
    assert [r["epoch"] for r in records(tmp_path, "cut")] == list(range(1, cfg.epochs + 1))


# ------------------------------------------------ MNIST / CIFAR-10 files in the real formats
def learnable_images(n, side, channels):
    """Images whose class (0..9) is a bright 6x6 square at one of ten places, on noise."""
    labels = RNG.integers(0, 10, n)
    images = RNG.integers(0, 60, (n, side, side, channels))
    for i, y in enumerate(labels):
        r, c = 2 + 10 * (y // 5), 1 + 5 * (y % 5)
        images[i, r:r + 6, c:c + 6, y % channels] = 255
    return images.astype(np.uint8), labels.astype(np.uint8)


def write_mnist(folder, n_train, n_test):
    folder.mkdir(parents=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images, labels = learnable_images(n, 28, 1)
        (folder / f"{prefix}-images-idx3-ubyte").write_bytes(idx_bytes(images[..., 0]))
        (folder / f"{prefix}-labels-idx1-ubyte").write_bytes(idx_bytes(labels))


def write_cifar10(folder, per_batch):
    folder.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        images, labels = learnable_images(per_batch, 32, 3)
        rows = images.transpose(0, 3, 1, 2).reshape(per_batch, 3072)  # R, G, B planes
        (folder / name).write_bytes(cifar_batch_pickle(rows, labels))


def test_mnist_files_smoke_learns(tmp_path):
    write_mnist(tmp_path / "data" / "mnist", 400, 100)
    _, summary = smoke(tmp_path, dataset="mnist", data_dir=str(tmp_path / "data"), epochs=4,
                       cam_images=2)
    assert summary["test_examples"] == 100 and summary["image_size"] == 32  # 28 padded by 2
    assert summary["test_accuracy"] > 0.4  # chance 0.1


def test_cifar10_files_smoke_learns_with_flips_and_crops(tmp_path):
    write_cifar10(tmp_path / "data" / "cifar-10-batches-py", 80)
    _, summary = smoke(tmp_path, dataset="cifar10", data_dir=str(tmp_path / "data"), epochs=4,
                       cam_images=2)
    assert summary["test_examples"] == 80 and summary["max_shift"] == 4
    assert summary["test_accuracy"] > 0.3  # chance 0.1
    assert (tmp_path / "run" / "lenet_filters.png").is_file()


def test_missing_files_are_one_line_data_errors(tmp_path):
    from dlfun.errors import DataError

    with pytest.raises(DataError, match="--data-dir"):
        smoke(tmp_path, dataset="cifar10", data_dir=str(tmp_path / "nothing"))


# ------------------------------------------------ depth comparison, data preparation, config
@pytest.mark.slow
def test_compare_depth_residual_net_trains_faster_than_its_plain_twin(tmp_path):
    # 3 epochs at 8x8: ResNet-20 reached a training loss of ~0.4, Plain-20 ~1.3 (seeds 0, 1)
    _, summary = smoke(tmp_path, compare_depth=True, compare_models=("plain20", "resnet20"),
                       image_size=8)
    assert set(summary["models"]) == {"plain20", "resnet20"}
    assert summary["resnet20_depth"] == summary["plain20_depth"] == 20
    for m in ("plain20", "resnet20"):
        assert summary[f"{m}_final_train_loss"] < summary[f"{m}_first_train_loss"]
    assert summary["resnet20_final_train_loss"] < 0.5 * summary["plain20_final_train_loss"]
    assert (tmp_path / "run" / "depth_loss_curves.png").is_file()


def test_fit_to_size_upsamples_by_whole_factors_and_pads_otherwise():
    x = RNG.random((2, 8, 8, 1)).astype(np.float32)
    up = fit_to_size(x, 32)
    assert up.shape == (2, 32, 32, 1)
    np.testing.assert_allclose(up.mean(axis=(1, 2)), x.mean(axis=(1, 2)), rtol=0.05)
    m = RNG.random((2, 28, 28, 1)).astype(np.float32)
    padded = fit_to_size(m, 32)
    np.testing.assert_array_equal(padded[:, 2:30, 2:30], m)
    assert padded[:, :2].max() == 0 and padded[:, 30:].max() == 0
    assert fit_to_size(m, 28) is m
    with pytest.raises(ConfigError, match="smaller than the images"):
        fit_to_size(m, 16)


def test_prepare_splits_standardises_with_training_statistics():
    x = RNG.random((10, 4, 4, 3)).astype(np.float32) * [1.0, 2.0, 3.0]
    s = Split(x, np.zeros(10, np.int32))
    out = prepare_splits(Splits(s, s, Split(x[:2] + 1.0, s.y[:2])), 4, standardize=True)
    np.testing.assert_allclose(out.train.x.mean(axis=(0, 1, 2)), 0.0, atol=1e-5)
    np.testing.assert_allclose(out.train.x.std(axis=(0, 1, 2)), 1.0, atol=1e-4)
    std = x.std(axis=(0, 1, 2))
    np.testing.assert_allclose(out.test.x - out.train.x[:2], 1.0 / std * np.ones((2, 4, 4, 3)),
                               rtol=1e-4)


def test_cam_examples_mix_misclassified_and_correct():
    probs = np.eye(3)[[0, 1, 2, 0, 1]]
    labels = np.array([0, 2, 2, 1, 1])  # examples 1 and 3 are wrong
    np.testing.assert_array_equal(cnn.cam_indices(probs, labels, 4), [1, 3, 0, 2])
    all_right = [0, 2, 4]
    np.testing.assert_array_equal(cnn.cam_indices(probs[all_right], labels[all_right], 2),
                                  [0, 1])


def test_cli_flags_and_bad_values():
    cfg = parse_config(cnn.Config, cnn.PRESETS, ["--model", "resnet20", "--shift", "0",
                                                 "--compare-depth",
                                                 "--compare-models", "lenet", "plain20"])
    assert cfg.model == "resnet20" and cfg.shift == 0
    assert cfg.compare_models == ("lenet", "plain20") and cfg.epochs == 60
    assert cnn.augmentation(cfg, 16) is None
    with pytest.raises(SystemExit) as e:
        parse_config(cnn.Config, cnn.PRESETS, ["--model", "alexnet"])
    assert e.value.code == 2
    with pytest.raises(ConfigError, match="compare-models"):
        cnn.Config(compare_models=("lenet", "vgg19"))
    with pytest.raises(ConfigError, match="too small for lenet.*at least 16x16"):
        cnn.Config(image_size=12)
    cnn.Config(image_size=12, model="resnet20")  # fully convolutional: fine
