"""Runs survive SIGKILL: a reduced chaos run (the full one, with SIGTERM and corrupted
checkpoints too, is benchmarks/chaos_resume.py; SIGTERM and a corrupted newest checkpoint
have their own tests in test_run_layer.py)."""


import pytest

from benchmarks import chaos_resume


@pytest.mark.slow
def test_killed_runs_resume_to_the_uninterrupted_parameters(tmp_path):
    rows = chaos_resume.main(["--experiments", "mlp", "--kills", "2", "--seed", "1",
                              "--out", str(tmp_path / "chaos.json")])
    (row,) = rows
    assert row["kills"] == 2 and row["kills_during_save"] == 1
    assert row["unreadable_checkpoints"] == 0 and row["failed_resumes"] == 0
    assert row["problems"] == [] and row["metrics_once"]
    assert row["bitwise_equal"] and row["max_abs_param_diff"] == 0.0
