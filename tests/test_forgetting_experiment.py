"""experiments.forgetting in-process: plain training on task B forgets task A; rehearsal and
EWC forget less; the run contract (curves, checkpoints, summary)."""

import pytest

import experiments.forgetting as forgetting
from dlfun.errors import ConfigError
from run_helpers import records, saved_epochs, smoke


@pytest.mark.slow
def test_plain_forgets_task_a_and_rehearsal_and_ewc_forget_less(tmp_path):
    cfg, summary = smoke(forgetting, tmp_path)
    before = summary["task_a_accuracy_before_b"]
    after, drop = summary["task_a_accuracy_after_b"], summary["task_a_drop"]
    assert before > 0.9  # digits 0-4, chance 0.2
    assert drop["plain"] >= 0.3  # forgetting: 30 points at least, even in the tiny run
    # measured: plain 0.55, rehearsal 0.22, EWC 0.09 (seed 0)
    assert drop["rehearsal"] < drop["plain"] - 0.15 and drop["ewc"] < drop["plain"] - 0.15
    assert summary["task_b_accuracy"]["plain"] > 0.8  # task B was learned (chance 0.2)
    assert min(summary["task_b_accuracy"].values()) > 0.5
    assert drop["plain"] == pytest.approx(before - after["plain"])
    # the curve: A's accuracy after every epoch of B, the last one the summary's figure
    plain = [r for r in records(tmp_path) if r["model"] == "shared_plain"]
    assert [r["epoch"] for r in plain] == list(range(1, cfg.epochs_b + 1))
    assert plain[-1]["task_a_accuracy"] == pytest.approx(after["plain"])
    ewc = [r for r in records(tmp_path) if r["model"] == "shared_ewc"]
    assert all(r["train_penalty"] >= 0 for r in ewc) and ewc[-1]["train_penalty"] > 0
    run = tmp_path / "run"
    assert (run / "forgetting_curves.png").is_file()
    assert saved_epochs(run / "checkpoints" / "shared_task_a")[-1] == cfg.epochs
    for name in ("shared_plain", "shared_rehearsal", "shared_ewc"):
        assert saved_epochs(run / "checkpoints" / name)[-1] == cfg.epochs_b


def test_bad_flags_are_one_line():
    with pytest.raises(ConfigError, match="--methods"):
        forgetting.Config(methods=("plain", "distill"))
    with pytest.raises(ConfigError, match="--heads"):
        forgetting.Config(heads=("multi",))
