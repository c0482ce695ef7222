"""experiments.gan in-process: the smoke presets learn, the run contract holds, resume is
bitwise, seeds differ, NaN stops, MNIST files are wired through, flags are checked."""

import dataclasses
import json
import struct

import jax
import numpy as np
import pytest

import experiments.gan as gan
from dlfun.runs.cli import parse_config, preset_config
from dlfun.errors import ConfigError, NonFiniteError
from dlfun.train.checkpoint import Checkpointer
from run_helpers import checkpoint_index, saved_epochs


def smoke(tmp_path, name="run", **overrides):
    base = preset_config(gan.Config, gan.PRESETS, "smoke", overrides)
    cfg = dataclasses.replace(base, run_dir=str(tmp_path / name), **overrides)
    return cfg, gan.main(cfg)


def records(tmp_path, name="run", model="gan"):
    lines = (tmp_path / name / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["model"] == model]


def saved_state(tmp_path, name, epoch):
    """The GAN state saved after ``epoch`` epochs (checkpoints are indexed by step)."""
    ckpt = Checkpointer(tmp_path / name / "checkpoints" / "gan")
    try:
        index = checkpoint_index(tmp_path / name / "checkpoints" / "gan", epoch)
        return ckpt._manager.restore(index)["state"]
    finally:
        ckpt.close()


def test_gaussians8_smoke_learns_modes_and_writes_the_run_contract(tmp_path):
    cfg, summary = smoke(tmp_path, data="gaussians8")
    assert summary["modes_covered_untrained"] <= 1 and summary["high_quality_untrained"] < 0.05
    assert summary["modes_covered"] >= 6 and summary["high_quality"] >= 0.3
    assert not summary["mode_collapse"] and summary["warnings"] == []
    rec = records(tmp_path)
    assert len(rec) == cfg.epochs and rec[-1]["step"] == cfg.epochs * (cfg.train_size // 128)
    assert {"train_d_loss", "train_g_loss", "train_d_real", "modes_covered", "high_quality",
            "coverage", "collapsed"} <= set(rec[0])
    run = tmp_path / "run"
    for f in ("config.json", "metrics.jsonl", "summary.json", "curves.png",
              "samples_over_density.png", "samples/epoch_0001.npy"):
        assert (run / f).is_file(), f
    assert any((run / "tensorboard").iterdir())
    saved = json.loads((run / "summary.json").read_text())
    assert saved["status"] == "ok" and saved["hyperparameters"]["latent_dim"] == 2
    assert saved_epochs(run / "checkpoints" / "gan")[-1] == cfg.epochs


def test_resume_reaches_the_same_state_bitwise(tmp_path):
    smoke(tmp_path, "full", data="gaussians8", epochs=4)
    smoke(tmp_path, "cut", data="gaussians8", epochs=4, checkpoint_every_epochs=2)
    # simulate an interruption after epoch 2: drop the newer checkpoint, then resume
    import shutil
    shutil.rmtree(tmp_path / "cut" / "checkpoints" / "gan" / str(
        checkpoint_index(tmp_path / "cut" / "checkpoints" / "gan", 4)))
    cfg = dataclasses.replace(gan.PRESETS["smoke"]["gaussians8"], run_dir=str(tmp_path / "cut"),
                              data="gaussians8", epochs=4, checkpoint_every_epochs=2, resume=True)
    summary = gan.main(cfg)
    assert summary["resumed"]
    a, b = saved_state(tmp_path, "full", 4), saved_state(tmp_path, "cut", 4)
    assert set(a) == {"gen", "disc", "step", "bad_step"}
    leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(leaves_a) == len(leaves_b) > 20  # both players' parameters and Adam moments
    for x, y in zip(leaves_a, leaves_b):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert [r["epoch"] for r in records(tmp_path, "cut")] == [1, 2, 3, 4]
    assert records(tmp_path, "cut")[-1]["high_quality"] == records(tmp_path, "full")[-1][
        "high_quality"]


def test_vmapped_seeds_train_different_gans(tmp_path):
    _, summary = smoke(tmp_path, data="gaussians8", num_seeds=2, epochs=2)
    assert summary["ensemble_strategy"] == "vmap"
    assert len(summary["high_quality_each"]) == 2
    state = saved_state(tmp_path, "run", 2)
    kernel = np.asarray(state["gen"]["params"]["Dense_0"]["kernel"])
    assert kernel.shape[0] == 2 and not np.allclose(kernel[0], kernel[1])
    g_loss = records(tmp_path)[-1]["train_g_loss_each"]
    assert len(g_loss) == 2 and g_loss[0] != g_loss[1]


def test_nonfinite_losses_stop_with_the_reason_in_the_summary(tmp_path):
    with pytest.raises(NonFiniteError, match=r"non-finite \(d_loss .* at step"):
        smoke(tmp_path, data="gaussians8", learning_rate=1e30, lr_schedule="constant",
              epochs=2)
    saved = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert saved["status"] == "nonfinite" and "lower --learning-rate" in saved["reason"]


@pytest.mark.slow
def test_digits_smoke_learns_scores_with_its_own_classifier_and_resumes(tmp_path):
    cfg, summary = smoke(tmp_path)
    assert summary["classifier"]["test_accuracy"] > 0.8
    assert summary["fid"] < 0.7 * summary["fid_untrained"]
    assert summary["fid_real_vs_real"] < 0.2 * summary["fid"]
    assert summary["classes_covered"] > summary["classes_covered_untrained"]
    assert summary["confidence"] > summary["confidence_untrained"]
    rec = records(tmp_path)
    for k in ("train_d_loss", "train_g_loss"):
        assert abs(rec[-1][k] - rec[0][k]) > 0.02, k  # both players' losses move
    run = tmp_path / "run"
    for f in ("samples.png", "real_samples.png", "interpolation.png", "class_shares.png",
              "curves.png", "samples/epoch_0001.png", "classifier_confusion.png"):
        assert (run / f).is_file(), f
    assert summary["epoch_mode"] == "loop"  # convolutions on CPU
    # resume: the same run cut back to its second-last checkpoint (as if killed before the
    # last save) trains the last epochs again to the same players, the classifier restored
    import shutil
    epochs = cfg.epochs
    shutil.copytree(run, tmp_path / "cut")
    gan_dir = tmp_path / "cut" / "checkpoints" / "gan"
    shutil.rmtree(gan_dir / str(checkpoint_index(gan_dir, epochs)))
    again = gan.main(dataclasses.replace(cfg, run_dir=str(tmp_path / "cut"), resume=True))
    assert again["resumed"]
    classifier = len(records(tmp_path, "run", "classifier"))
    assert classifier > 0 and len(records(tmp_path, "cut", "classifier")) == classifier
    for x, y in zip(jax.tree.leaves(saved_state(tmp_path, "run", epochs)),
                    jax.tree.leaves(saved_state(tmp_path, "cut", epochs))):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.slow
def test_digits_seeds_run_one_at_a_time_on_cpu_and_differ(tmp_path):
    # Conv GANs on the CPU: "auto" steps each seed's own program (vmap makes grouped convs).
    _, summary = smoke(tmp_path, num_seeds=2, epochs=2, classifier_epochs=1)
    assert summary["ensemble_strategy"] == "sequential" and len(summary["fid_each"]) == 2
    assert summary["fid_each"][0] != summary["fid_each"][1]


def write_fake_mnist(folder, n_train=300, n_test=100):
    """MNIST-format IDX files (header from the spec) holding random pixels."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = np.arange(n, dtype=np.uint8) % 10
        for kind, arr in (("images-idx3", images), ("labels-idx1", labels)):
            header = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
            (folder / f"{prefix}-{kind}-ubyte").write_bytes(header + arr.tobytes())


@pytest.mark.slow
def test_mnist_files_run_through_the_28x28_players(tmp_path):
    write_fake_mnist(tmp_path / "data" / "mnist")
    # wiring only (random pixels teach nothing): one epoch of each network
    _, summary = smoke(tmp_path, data="mnist", data_dir=str(tmp_path / "data"), epochs=1,
                       classifier_epochs=1)
    assert summary["status"] == "ok" and np.isfinite(summary["fid"])
    assert summary["fid_samples"] == 200


def test_missing_mnist_files_are_a_data_error(tmp_path):
    from dlfun.errors import DataError
    with pytest.raises(DataError, match="mnist"):
        smoke(tmp_path, data="mnist", data_dir=str(tmp_path / "nothing"))


def test_one_flat_config_per_preset_and_dataset_and_explicit_flags_win(capsys):
    cfg = parse_config(gan.Config, gan.PRESETS, ["--data", "gaussians8", "--latent-dim", "8"])
    ring = gan.PRESETS["default"]["gaussians8"]
    assert cfg == dataclasses.replace(ring, latent_dim=8) and cfg.batch_size == 256
    assert parse_config(gan.Config, gan.PRESETS, []) == gan.PRESETS["default"]["digits"]
    smoke_cfg = parse_config(gan.Config, gan.PRESETS, ["--preset", "smoke", "--data", "mnist"])
    assert smoke_cfg == gan.PRESETS["smoke"]["mnist"] and smoke_cfg.epochs == 1
    # every entry is complete and concrete: no field left for the code to fill in later
    for by_data in gan.PRESETS.values():
        for data, entry in by_data.items():
            assert entry.data == data and None not in {
                getattr(entry, k) for k in gan.HYPERPARAMETERS}
    assert len({gan.PRESETS["default"][d].epochs for d in gan.DATASETS}) > 1
    with pytest.raises(SystemExit) as e:
        parse_config(gan.Config, gan.PRESETS, ["--data", "cifar"])
    assert e.value.code == 2
    assert capsys.readouterr().err.strip().count("\n") == 0
    with pytest.raises(SystemExit):
        parse_config(gan.Config, gan.PRESETS, ["--help"])
    assert "per --data: gaussians8 100, digits 100, mnist 2" in " ".join(
        capsys.readouterr().out.split())
    with pytest.raises(ConfigError, match="--loss must be one of"):
        gan.Config(loss="wasserstein")
    with pytest.raises(ConfigError, match="--d-steps must be positive"):
        gan.Config(d_steps=0)
    with pytest.raises(ConfigError, match="--r1-gamma must be >= 0"):
        gan.Config(r1_gamma=-1.0)


def test_batch_larger_than_the_data_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="more than the 6144 training examples"):
        smoke(tmp_path, data="gaussians8", batch_size=4096, d_steps=2)
