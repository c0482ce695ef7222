"""The run layer's promises (README "The run contract"): lock, idempotent resume, signals, a
corrupted newest checkpoint, strict JSON, nothing left by a run that could not start, and one
line for every file-system failure."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import experiments.mlp as mlp
import experiments.regression as regression
from dlfun import platform
from dlfun.errors import NonFiniteError
from dlfun.runs import RunConfig, RunDir, run_cli, run_experiment
from dlfun.runs.rundir import dumps_strict
from dlfun.train.checkpoint import Checkpointer

REPO = Path(__file__).resolve().parent.parent
SMOKE = ["--preset", "smoke"]


def cli(module, argv):
    """``run_cli`` of an experiment module: ``(exit status, summary or None)``."""
    try:
        return 0, run_cli(module.main, module.Config, module.PRESETS, argv)
    except SystemExit as e:
        return e.code, None


def final_params(run_dir: Path, name: str = "mlp") -> dict:
    arrays, _ = Checkpointer(run_dir / "checkpoints" / name).load_raw()
    return arrays["params"]


def assert_same_params(a: dict, b: dict) -> None:
    import jax
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(x, y)


def command(*argv: str) -> list[str]:
    return [sys.executable, "-m", "experiments.mlp", *SMOKE, *argv]


def test_a_second_process_on_a_locked_run_is_refused(tmp_path):
    run = tmp_path / "run"
    holder = RunDir.open(RunConfig(run_dir=str(run)), "mlp")
    before = sorted(p.name for p in run.iterdir())
    proc = subprocess.run(command("--resume", "--run-dir", str(run)), cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    holder.release()
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert f"is in use by process {os.getpid()}" in line
    assert sorted(p.name for p in run.iterdir()) == before  # nothing written twice


@pytest.mark.slow
def test_sigterm_saves_where_it_stands_and_resume_is_bitwise_equal(tmp_path):
    args = ["--epochs", "40", "--epoch-mode", "loop", "--checkpoint-every-epochs", "1000"]
    whole = tmp_path / "whole"
    assert cli(mlp, [*SMOKE, *args, "--run-dir", str(whole)])[0] == 0
    run = tmp_path / "cut"
    proc = subprocess.Popen(command(*args, "--run-dir", str(run)), cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    for _ in range(2400):  # wait (at most 2 minutes) until the epochs are being logged
        if (run / "metrics.jsonl").exists():
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("interrupted by SIGTERM") and "--resume" in last
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    saved = Checkpointer(run / "checkpoints" / "mlp").steps()
    assert len(saved) == 1  # the only checkpoint is the one the signal asked for
    # as a scheduler re-runs it: only --resume and the folder (the saved config is the base)
    # (glibc's malloc tuned for this process: where memory comes from changes no number)
    proc = subprocess.run([sys.executable, "-m", "experiments.mlp", "--resume", "--run-dir",
                           str(run), "--malloc", "tuned"], cwd=REPO, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "DLFUN_MALLOC": "system"})
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((run / "summary.json").read_text())
    assert summary["resumed"] is True
    if platform._glibc() is not None:
        assert summary["malloc"].startswith("glibc malloc, tuned"), summary["malloc"]
    assert json.loads((whole / "summary.json").read_text())["malloc"] == "system malloc"
    assert_same_params(final_params(run), final_params(whole))


def truncate_checkpoint(step_dir: Path) -> None:
    for f in sorted(p for p in step_dir.rglob("*") if p.is_file() and p.stat().st_size > 8):
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def test_a_corrupted_newest_checkpoint_is_set_aside_and_the_run_finishes(tmp_path, capsys):
    args = [*SMOKE, "--epochs", "4", "--epoch-mode", "loop"]
    whole, run = tmp_path / "whole", tmp_path / "run"
    assert cli(mlp, [*args, "--run-dir", str(whole)])[0] == 0
    shutil.copytree(whole, run)  # the same finished run, in another folder
    slot = run / "checkpoints" / "mlp"
    newest = max(int(p.name) for p in slot.iterdir() if p.name.isdigit())
    truncate_checkpoint(slot / str(newest))
    for attempt in range(2):  # a second resume must work too (no StepAlreadyExists)
        code, summary = cli(mlp, [*args, "--run-dir", str(run), "--resume"])
        assert code == 0 and summary["resumed"] is True
    assert (slot / f"{newest}.unreadable").is_dir()
    assert "unreadable" in capsys.readouterr().err
    assert_same_params(final_params(run), final_params(whole))
    epochs = [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").open()]
    assert epochs == [1, 2, 3, 4]  # the epoch trained again is logged once


@pytest.mark.parametrize("lost", [("state", "commit_success.txt"),
                                  ("_CHECKPOINT_METADATA", "meta")])
def test_an_old_checkpoint_half_deleted_by_a_kill_during_rotation_is_removed(tmp_path, capsys,
                                                                            lost):
    args = [*SMOKE, "--epochs", "4", "--epoch-mode", "loop"]
    whole, run = tmp_path / "whole", tmp_path / "run"
    assert cli(mlp, [*args, "--run-dir", str(whole)])[0] == 0
    shutil.copytree(whole, run)
    slot = run / "checkpoints" / "mlp"
    oldest, *_, newest = sorted(int(p.name) for p in slot.iterdir() if p.name.isdigit())
    for name in lost:  # what rmtree had taken when the kill came
        target = slot / str(oldest) / name
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    code, summary = cli(mlp, [*args, "--run-dir", str(run), "--resume"])
    assert code == 0 and summary["resumed"] is True
    assert not (slot / str(oldest)).exists() and (slot / str(newest)).is_dir()
    assert "half-deleted" in capsys.readouterr().err
    assert_same_params(final_params(run), final_params(whole))
    ckpt = Checkpointer(slot)  # the complete ones are kept, and complete
    try:
        assert ckpt.steps() and all(ckpt.is_complete(s) for s in ckpt.steps())
    finally:
        ckpt.close()


def test_resume_refuses_another_experiments_run(tmp_path, capsys):
    run = tmp_path / "reg"
    assert cli(regression, [*SMOKE, "--run-dir", str(run)])[0] == 0
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    code, _ = cli(mlp, [*SMOKE, "--resume", "--run-dir", str(run)])
    assert code == 2
    assert "holds a run of experiments.regression" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before


def test_a_run_that_cannot_start_leaves_nothing_behind(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DLFUN_DATA", str(tmp_path / "empty"))
    run = tmp_path / "runs" / "r"
    code, _ = cli(mlp, [*SMOKE, "--dataset", "mnist", "--run-dir", str(run)])
    assert code == 2 and "train-images-idx3-ubyte" in capsys.readouterr().err
    assert not run.exists() and not (tmp_path / "runs").exists()
    assert cli(mlp, [*SMOKE, "--run-dir", str(run)])[0] == 0  # the corrected command runs


@pytest.mark.parametrize("content,message", [
    ("{not json", "is not valid JSON"),
    ("[1, 2]", "is not a dlfun run configuration"),
    ('{"experiment": "mlp", "epochs": "three"}', "not a valid --epochs value"),
    ('{"experiment": "mlp", "no_such_field": 1}', "fields this version does not know"),
])
def test_a_hand_edited_config_is_one_line(tmp_path, capsys, content, message):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(content)
    code, _ = cli(mlp, [*SMOKE, "--resume", "--run-dir", str(run)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0]
    assert (run / "config.json").read_text() == content


def test_a_foreign_metrics_line_is_skipped(tmp_path):
    run = tmp_path / "run"
    assert cli(mlp, [*SMOKE, "--run-dir", str(run)])[0] == 0
    with (run / "metrics.jsonl").open("a") as f:
        f.write("42\n")
    code, summary = cli(mlp, [*SMOKE, "--resume", "--run-dir", str(run)])
    assert code == 0 and summary["status"] == "ok"


def under_a_file(t: Path) -> Path:
    (t / "f").write_text("x")
    return t / "f" / "run"


def dangling_link(t: Path) -> Path:
    (t / "link").symlink_to(t / "gone")
    return t / "link"


@pytest.mark.parametrize("make,message", [
    (under_a_file, "a part of the path is a file"),
    (lambda t: t / ("x" * 300), "limited to 255 bytes"),
    (lambda t: Path("/proc/dlfun-run"), "cannot create the run directory /proc/dlfun-run"),
    (dangling_link, "does not exist; remove"),
])
def test_run_dirs_that_cannot_be_made_are_one_line(tmp_path, capsys, make, message):
    code, _ = cli(mlp, [*SMOKE, "--run-dir", str(make(tmp_path))])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err


def test_run_files_are_readable_by_others(tmp_path):
    run = tmp_path / "run"
    assert cli(regression, [*SMOKE, "--run-dir", str(run)])[0] == 0
    for name in ("config.json", "summary.json"):
        assert (run / name).stat().st_mode & 0o777 == 0o644
    assert json.loads((run / "config.json").read_text())["run_dir"] == str(run)


def test_strict_json_has_no_nan():
    text = dumps_strict({"loss": float("nan"), "each": [1.0, float("inf")], "ok": 2})
    data = json.loads(text)
    assert data == {"loss": None, "each": [1.0, None], "ok": 2,
                    "nonfinite_fields": ["loss", "each[1]"]}


def test_skip_policy_dropping_every_update_fails(tmp_path):
    def body(run, log):
        log.log({"epoch": 1, "updates": 5, "skipped_updates": 5})
        return {}

    cfg = RunConfig(run_dir=str(tmp_path / "run"))
    with pytest.raises(NonFiniteError, match="every update was non-finite"):
        run_experiment("test", cfg, body)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "nonfinite" and summary["skipped_share"] == 1.0


def test_experiments_run_from_any_folder(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "experiments.xor", "--help"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "--learning-rate" in proc.stdout


def test_a_wrong_experiment_name_lists_the_names(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "experiments", "nosuch"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1
    assert "no experiment 'nosuch'" in lines[0] and "mlp" in lines[0]


def test_parallel_experiments_stop_on_a_nonfinite_loss(tmp_path):
    import dataclasses

    import experiments.data_parallel as data_parallel
    cfg = dataclasses.replace(data_parallel.PRESETS["smoke"], run_dir=str(tmp_path / "run"),
                              learning_rate=1e30, check=False)
    with pytest.raises(NonFiniteError, match="non-finite"):
        data_parallel.main(cfg)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "nonfinite" and "Infinity" not in (tmp_path / "run" /
                                                                    "summary.json").read_text()


def test_a_stop_at_a_checkpointed_epoch_end_saves_once(tmp_path):
    """SIGTERM seen right after an epoch whose checkpoint was just written: the run ends with
    that checkpoint (not a second save of the same step, which orbax refuses)."""
    from dlfun import losses
    from dlfun.data.split import Split
    from dlfun.nn import MLP
    from dlfun.runs import Run, RunInterrupted, TrainConfig
    from dlfun.runs.training import train_supervised

    cfg = TrainConfig(run_dir=str(tmp_path / "run"), epochs=3, batch_size=8,
                      checkpoint_every_epochs=1, epoch_mode="scan")
    run = Run(RunDir.open(cfg, "test"), cfg)
    run.signals.signum = signal.SIGTERM  # as if the signal arrived during the first epoch
    x = np.random.default_rng(0).normal(size=(32, 3)).astype(np.float32)
    with pytest.raises(RunInterrupted, match="epoch 1, batch 0"):
        train_supervised(cfg, run, MLP((4,), 1), losses.mse, Split(x, x[:, :1]), None)
    run.close()
    run.rundir.release()
    assert Checkpointer(tmp_path / "run" / "checkpoints" / "model").steps() == [4]
