"""Runs survive SIGKILL and SIGTERM: reduced chaos runs (the full one is
benchmarks/chaos_resume.py)."""

import dataclasses

import pytest

from benchmarks import chaos_resume


@pytest.mark.slow
def test_killed_runs_resume_to_the_uninterrupted_parameters(tmp_path):
    rows = chaos_resume.main(["--experiments", "mlp", "--kills", "3", "--seed", "1",
                              "--out", str(tmp_path / "chaos.json")])
    (row,) = rows
    assert row["kills"] == 3 and row["kills_during_save"] == 1
    assert row["unreadable_checkpoints"] == 0 and row["failed_resumes"] == 0
    assert row["problems"] == [] and row["metrics_once"]
    assert row["bitwise_equal"] and row["max_abs_param_diff"] == 0.0


@pytest.mark.slow
def test_a_sigterm_saves_where_it_stood_and_a_corrupted_checkpoint_is_set_aside(
        tmp_path, monkeypatch):
    # A short schedule: SIGTERM once (exit 143, the line, status "interrupted", a checkpoint
    # at or past the last one), truncate that checkpoint, resume past it.
    mlp = chaos_resume.EXPERIMENTS["mlp"]
    args = list(mlp.args)
    args[args.index("--epochs") + 1] = "12"
    monkeypatch.setitem(chaos_resume.EXPERIMENTS, "mlp",
                        dataclasses.replace(mlp, args=tuple(args), units=12))
    (row,) = chaos_resume.main(["--experiments", "mlp", "--kills", "1", "--signal", "term",
                                "--corrupt", "1", "--seed", "0",
                                "--out", str(tmp_path / "chaos.json")])
    assert row["problems"] == []
    assert row["sigterms"] == 1 and row["kills"] == 0
    assert row["corrupted"] == 1 and row["set_aside"] == 1
    assert row["failed_resumes"] == 0 and row["metrics_once"]
    assert row["bitwise_equal"] and row["max_abs_param_diff"] == 0.0
