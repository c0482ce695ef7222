"""The recurrent experiments' smoke presets learn, write their files, and handle bad input."""

import dataclasses
import json
import shutil

import jax
import numpy as np
import pytest

import experiments.charlm as charlm
import experiments.rnn_memory as rnn_memory
import experiments.seqclass as seqclass
from dlfun.runs.cli import run_cli
from dlfun.data import ADDING_BASELINE_MSE
from dlfun.errors import ConfigError, DataError, NonFiniteError
from dlfun.train.checkpoint import Checkpointer
from run_helpers import checkpoint_index, records, saved_epochs, smoke


# ------------------------------------------------------------------------ rnn_memory
def test_rnn_memory_smoke_lstm_and_gru_solve_short_adding_problems(tmp_path):
    cfg, summary = smoke(rnn_memory, tmp_path)
    longest = max(cfg.lengths)
    for cell in ("lstm", "gru"):  # far below the mean predictor's 1/6
        assert summary[f"{cell}_T{longest}_test_mse"] < 0.15 * ADDING_BASELINE_MSE, cell
    for cell in cfg.cells:
        for t in cfg.lengths:
            rows = [r for r in records(tmp_path) if r["model"] == f"{cell}_T{t}"]
            assert len(rows) == cfg.epochs
            assert rows[-1]["val_loss"] < 0.5 * rows[0]["train_loss"]
        norms = summary["gradient_norms"][cell]
        assert len(norms["init"]) == len(norms["trained"]) == longest
        assert all(n > 0 for n in norms["init"])
        reach = summary[f"{cell}_gradient_reach_trained"]
        assert reach >= 1 and reach <= longest
    run = tmp_path / "run"
    for f in ("mse_table.md", "mse_vs_length.png", "gradient_norms.png", "curves.png",
              "summary.json", "config.json"):
        assert (run / f).is_file(), f
    assert "| lstm |" in (run / "mse_table.md").read_text()
    assert saved_epochs(run / "checkpoints" / f"gru_T{longest}")[-1] == cfg.epochs


def test_rnn_memory_nonfinite_loss_stops_with_reason_in_summary(tmp_path):
    with pytest.raises(NonFiniteError, match="non-finite .* at step"):
        smoke(rnn_memory, tmp_path, cells=("rnn",), optimizer="sgd", learning_rate=1e30)
    saved = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert saved["status"] == "nonfinite" and "at step" in saved["reason"]


def test_rnn_memory_config_errors():
    with pytest.raises(ConfigError, match="--cells"):
        dataclasses.replace(rnn_memory.PRESETS["smoke"], cells=("lstm", "transformer"))
    with pytest.raises(ConfigError, match="--lengths"):
        dataclasses.replace(rnn_memory.PRESETS["smoke"], lengths=(1,))


@pytest.mark.slow
def test_rnn_memory_plain_rnn_fails_where_the_lstm_solves(tmp_path):
    """T=100 with the default settings, shortened (the LSTM's test MSE was 0.0066 after 7
    epochs, 0.0044 after 8; seed 0, 2026-12-06): the plain RNN stays at the mean predictor's
    error while the LSTM solves it, and only its trained gradients reach back to t=1. (The GRU
    solves it too in the default run; the smoke test above has it solve the short problems.)"""
    _, summary = smoke(rnn_memory, tmp_path, lengths=(100,), hidden=64, train_examples=6400,
                       epochs=7, batch_size=64, learning_rate=3e-3, test_examples=1000,
                       gradient_examples=128, cells=("rnn", "lstm"))
    assert summary["rnn_T100_test_mse"] > 0.8 * ADDING_BASELINE_MSE
    assert summary["lstm_T100_test_mse"] < 0.02
    assert summary["rnn_gradient_reach_trained"] < 100
    assert summary["lstm_gradient_reach_trained"] == 100


# -------------------------------------------------------------------------- seqclass
def test_seqclass_smoke_all_cells_far_above_chance(tmp_path):
    cfg, summary = smoke(seqclass, tmp_path)
    assert summary["steps"] == 8
    for cell in cfg.cells:
        assert summary[f"{cell}_test_accuracy"] > 0.6, cell  # chance is 0.1
        rows = [r for r in records(tmp_path) if r["model"] == cell]
        assert rows[-1]["train_loss"] < 0.5 * rows[0]["train_loss"]
    run = tmp_path / "run"
    for f in ("accuracy.png", "val_accuracy.png", "lstm_confusion.png", "gru_curves.png"):
        assert (run / f).is_file(), f


def test_seqclass_reads_pixels_as_a_long_sequence():
    images = np.arange(2 * 8 * 8, dtype=np.float32).reshape(2, 8, 8, 1)
    rows = seqclass.as_sequences(images, "rows")
    pixels = seqclass.as_sequences(images, "pixels")
    assert rows.shape == (2, 8, 8) and pixels.shape == (2, 64, 1)
    np.testing.assert_array_equal(rows[1, 2], images[1, 2, :, 0])
    np.testing.assert_array_equal(pixels[1, 8 * 2 + 3, 0], images[1, 2, 3, 0])


# ---------------------------------------------------------------------------- charlm
def test_charlm_smoke_beats_the_unigram_entropy_and_saves_samples(tmp_path):
    cfg, summary = smoke(charlm, tmp_path)
    per_epoch = summary["held_out_bits_per_char_per_epoch"]
    assert len(per_epoch) == cfg.epochs and per_epoch[-1] < per_epoch[0]
    assert summary["held_out_bits_per_char"] < summary["unigram_bits_per_char"] - 0.5
    assert summary["held_out_chars_scored"] > 0.9 * summary["held_out_chars"]
    text = (tmp_path / "run" / "samples.txt").read_text()
    for t in cfg.temperatures:
        assert f"==== temperature {t} ====" in text
        assert len(summary["samples"][str(t)]) == len(cfg.sample_prompt) + cfg.sample_length
        assert summary["samples"][str(t)].startswith(cfg.sample_prompt)
    rec = records(tmp_path)[-1]
    assert np.isclose(rec["val_bits_per_char"], rec["val_loss"] / np.log(2), rtol=1e-5)
    assert (tmp_path / "run" / "bits_per_char.png").is_file()


def test_charlm_on_a_text_file_resumes_to_the_uninterrupted_run(tmp_path):
    """A run killed after its first checkpoint and resumed ends with the same parameters,
    held-out figures and samples as the run that was never interrupted."""
    path = tmp_path / "cat.txt"
    path.write_text("the cat sat on the mat. " * 400)
    overrides = dict(text=str(path), sample_prompt="the ", epochs=3, temperatures=(0.0, 1.0),
                     sample_length=24)
    _, full = smoke(charlm, tmp_path, "full", **overrides)
    assert full["corpus"] == str(path) and full["vocab_size"] == len(set(path.read_text()))
    assert full["held_out_bits_per_char"] < 0.5 * full["unigram_bits_per_char"]
    assert full["samples"]["0.0"].startswith("the ")
    # the interrupted run: the same directory as it was after epoch 2's checkpoint
    shutil.copytree(tmp_path / "full", tmp_path / "cut")
    shutil.rmtree(tmp_path / "cut" / "checkpoints" / "lstm" / str(
        checkpoint_index(tmp_path / "cut" / "checkpoints" / "lstm", 3)))
    (tmp_path / "cut" / "summary.json").unlink()
    cfg = dataclasses.replace(charlm.PRESETS["smoke"], run_dir=str(tmp_path / "cut"),
                              resume=True, **overrides)
    resumed = charlm.main(cfg)
    assert resumed["resumed"]
    last = checkpoint_index(tmp_path / "full" / "checkpoints" / "lstm", 3)
    a, _ = Checkpointer(tmp_path / "full" / "checkpoints" / "lstm").load_raw(last)
    b, _ = Checkpointer(tmp_path / "cut" / "checkpoints" / "lstm").load_raw(last)
    for x, y in zip(jax.tree.leaves(a["params"]), jax.tree.leaves(b["params"])):
        np.testing.assert_array_equal(x, y)
    assert [r["epoch"] for r in records(tmp_path, "cut")] == [1, 2, 3]
    assert resumed["held_out_bits_per_char_per_epoch"] == full["held_out_bits_per_char_per_epoch"]
    assert resumed["samples"] == full["samples"]


@pytest.mark.parametrize("content,message", [
    (None, "does not exist"),
    (b"", "is empty"),
    (b"   \n\t ", "is empty"),
    (b"ab\x00cd" * 100, "is binary"),
    (b"\xff\xfe caf\xe9", "not UTF-8"),
    (b"short text", "too short"),
])
def test_charlm_bad_text_file_is_one_line_exit_2(tmp_path, capsys, content, message):
    path = tmp_path / "corpus.txt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(SystemExit) as exc:
        run_cli(charlm.main, charlm.Config, charlm.PRESETS,
                argv=["--preset", "smoke", "--text", str(path), "--run-dir",
                      str(tmp_path / "run")])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err


def test_charlm_prompt_outside_the_vocabulary_is_refused_before_training(tmp_path):
    path = tmp_path / "abc.txt"
    path.write_text("abcabcab cabbac " * 200)
    with pytest.raises(DataError, match="sample-prompt 'def '.*'d'"):
        smoke(charlm, tmp_path, text=str(path))
    assert not (tmp_path / "run" / "checkpoints").exists()
