"""The shared command line: presets, overrides, --help, and one-line errors for bad input."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import experiments.mlp as mlp
from experiments.__main__ import experiment_names
from dlfun.runs.cli import build_parser, field_docs, parse_config, run_cli
from dlfun.errors import DataError

REPO = Path(__file__).resolve().parent.parent


def test_preset_then_flags():
    cfg = parse_config(mlp.Config, mlp.PRESETS, ["--preset", "smoke", "--epochs", "5",
                                                 "--hidden", "32", "16", "--no-resume"])
    assert cfg.preset == "smoke" and cfg.epochs == 5 and cfg.hidden == (32, 16)
    assert cfg.batch_size == mlp.PRESETS["smoke"].batch_size
    assert parse_config(mlp.Config, mlp.PRESETS, []) == mlp.PRESETS["default"]


def test_an_optional_switch_is_on_off_or_left_to_the_preset():
    import experiments.transformer as tr
    parse = lambda argv: parse_config(tr.Config, tr.PRESETS, argv)  # noqa: E731
    assert parse([]).token_shift is None  # the preset decides: on for recall, off for charlm
    assert parse(["--task", "recall"]).hyper.token_shift is True
    assert parse(["--task", "charlm"]).hyper.token_shift is False
    assert parse(["--task", "recall", "--no-token-shift"]).hyper.token_shift is False
    assert parse(["--token-shift"]).hyper.token_shift is True


def test_a_flag_given_must_take_effect_in_the_configuration_it_is_given_with():
    import experiments.transformer as tr
    parse = lambda argv: parse_config(tr.Config, tr.PRESETS, argv)  # noqa: E731
    cfg = parse(["--task", "charlm", "--compare", "lstm", "--lstm-hidden", "64"])
    assert cfg.lstm_hidden == 64 and cfg.compared == ("lstm",)
    assert parse(["--task", "recall", "--num-values", "5"]).num_values == 5
    # the preset's own values for the other task are not flags given: no refusal
    assert parse(["--preset", "smoke", "--task", "recall"]).sample_length == 12
    with pytest.raises(SystemExit) as e:
        parse(["--task", "charlm", "--lstm-hidden", "64"])  # no LSTM is trained
    assert e.value.code == 2


def test_every_field_is_documented_in_help(capsys):
    with pytest.raises(SystemExit) as e:
        parse_config(mlp.Config, mlp.PRESETS, ["--help"])
    assert e.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    docs = field_docs(mlp.Config)
    for name in ("seed", "run_dir", "resume", "num_seeds", "epochs", "hidden", "dropout"):
        assert docs[name] and docs[name][:30] in out
        assert "--" + name.replace("_", "-") in out
    assert f"(default: {mlp.PRESETS['default'].epochs})" in out


@pytest.mark.parametrize("argv,message", [
    (["--learning-rate", "abc"], "--learning-rate expects a number, got 'abc'"),
    (["--batch-size", "0"], "--batch-size must be 1..1048576, got 0"),
    (["--epochs", "-2"], "--epochs must be 1..1000000, got -2"),
    (["--num-seeds", "0"], "--num-seeds must be 1..4096"),
    (["--optimizer", "adagradx"], "--optimizer must be one of"),
    (["--dataset", "imagenet"], "--dataset must be one of digits, mnist, fashion_mnist"),
    (["--activation", "swish2"], "--activation must be one of"),
    (["--dropout", "1.5"], "--dropout must be in [0, 1)"),
    (["--learning-rate", "nan"], "--learning-rate must be a finite number"),
    (["--weight-decay", "nan"], "--weight-decay must be a finite number"),
    (["--matmul-precision", "fast"], "--matmul-precision must be one of default, high"),
    (["--epochs", "100000000000000000000"], "--epochs must be 1..1000000"),
    (["--seed", "99999999999999999999"], "--seed must be 0..2147483647"),
    (["--resume"], "--resume needs --run-dir"),
    (["--preset", "huge"], "invalid choice: 'huge'"),
    (["--epochs", "3.5"], "--epochs expects an integer, got '3.5'"),
    (["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
])
def test_bad_flags_exit_2_with_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        run_cli(mlp.main, mlp.Config, mlp.PRESETS, argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]  # no usage block before the line that matters


def run_main(argv, capsys):
    with pytest.raises(SystemExit) as e:
        run_cli(mlp.main, mlp.Config, mlp.PRESETS, ["--preset", "smoke", *argv])
    lines = capsys.readouterr().err.strip().splitlines()
    return e.value.code, lines[-1]


def test_resume_of_a_missing_run_starts_it(tmp_path, capsys):
    """A scheduler re-running the same command after a preemption: --resume is idempotent."""
    summary = run_cli(mlp.main, mlp.Config, mlp.PRESETS,
                      ["--preset", "smoke", "--resume", "--run-dir", str(tmp_path / "new")])
    assert summary["status"] == "ok" and summary["resumed"] is False
    assert "starting the run from the beginning" in capsys.readouterr().err


def test_run_dir_that_is_a_file(tmp_path, capsys):
    f = tmp_path / "file.txt"
    f.write_text("keep me")
    code, line = run_main(["--run-dir", str(f)], capsys)
    assert code == 2 and "is a file, not a folder" in line and f.read_text() == "keep me"


def test_existing_run_is_never_overwritten(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"epoch": 1}\n')
    code, line = run_main(["--run-dir", str(run)], capsys)
    assert code == 2 and "already holds files; pass --resume" in line
    assert (run / "metrics.jsonl").read_text() == '{"epoch": 1}\n'
    assert sorted(p.name for p in run.iterdir()) == ["metrics.jsonl"]


def test_resume_with_a_different_config_is_refused(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    saved = dict(experiment="mlp", **json.loads(json.dumps(mlp.PRESETS["smoke"].__dict__)))
    saved["run_dir"] = str(run)
    (run / "config.json").write_text(json.dumps(saved))
    code, line = run_main(["--resume", "--run-dir", str(run), "--hidden", "8"], capsys)
    assert code == 2 and "different configuration (hidden: [64] -> [8])" in line


def test_resume_with_no_checkpoint_starts_from_the_beginning(tmp_path, capsys):
    """Killed before its first checkpoint: --resume starts again and drops stale records."""
    run = tmp_path / "run"
    run.mkdir()
    cfg = dict(experiment="mlp", **mlp.PRESETS["smoke"].__dict__, )
    cfg.update(run_dir=str(run), hidden=list(cfg["hidden"]))
    (run / "config.json").write_text(json.dumps(cfg))
    (run / "metrics.jsonl").write_text('{"model": "mlp", "epoch": 1, "step": 1}\n')
    summary = run_cli(mlp.main, mlp.Config, mlp.PRESETS, ["--resume", "--run-dir", str(run)])
    assert summary["status"] == "ok"
    assert "nothing of mlp saved" in capsys.readouterr().err
    epochs = [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").open()]
    assert epochs == list(range(1, mlp.PRESETS["smoke"].epochs + 1))


@pytest.mark.parametrize("name", experiment_names())
def test_help_reads_as_plain_sentences(name):
    # Docstrings are reST; a terminal shows ``code`` and :func:`x` as typed, so --help strips
    # the markup. A field's sentence keeps its own ending ("..." was cut to " .").
    import importlib
    module = importlib.import_module(f"experiments.{name}")
    text = build_parser(module.Config, module.PRESETS, name,
                        module.__doc__ or "").format_help()
    assert not re.search(r"``|:[a-z]+:`", text), "reST markup in --help"
    assert not re.search(r"[\w,] \.(\s|$)", text), re.search(r".{40}[\w,] \.(\s|$)", text)


def test_dlfun_errors_become_one_line(monkeypatch, capsys):
    def failing_main(cfg):
        raise DataError("MNIST file /x/train-images-idx3-ubyte not found; pass --data-dir DIR")

    with pytest.raises(SystemExit) as e:
        run_cli(failing_main, mlp.Config, mlp.PRESETS, [])
    assert e.value.code == 2
    assert capsys.readouterr().err.strip() == (
        "error: MNIST file /x/train-images-idx3-ubyte not found; pass --data-dir DIR")


def test_a_bug_in_one_process_of_a_multi_process_run_ends_it_with_the_traceback(monkeypatch,
                                                                                capsys):
    # In a jax.distributed run the exit handlers wait for every process at a shutdown barrier
    # while the others wait for this one in a collective: a bug must end the process at once
    # (os._exit) after printing its traceback; measured by hand under dlfun.launch: 10.9 s to
    # exit 1 instead of a hang until --timeout. In one process the exception is raised as is.
    import jax

    def buggy_main(cfg):
        raise RuntimeError("a bug in the training loop")

    class Exited(BaseException):
        pass

    def fake_exit(status):
        raise Exited(status)

    with pytest.raises(RuntimeError, match="a bug in the training loop"):
        run_cli(buggy_main, mlp.Config, mlp.PRESETS, [])
    monkeypatch.setattr(os, "_exit", fake_exit)
    monkeypatch.setattr(jax.distributed, "is_initialized", lambda: True)
    with pytest.raises(Exited) as e:
        run_cli(buggy_main, mlp.Config, mlp.PRESETS, [])
    assert e.value.args == (1,)
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last):")
    assert err.rstrip().endswith("RuntimeError: a bug in the training loop")


def test_real_command_line_exit_code_and_message(tmp_path):
    env = dict(os.environ, DLFUN_DATA=str(tmp_path))
    proc = subprocess.run([sys.executable, "-m", "experiments.mlp", "--dataset", "mnist",
                           "--preset", "smoke", "--run-dir", str(tmp_path / "r")],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "train-images-idx3-ubyte" in last
    assert "Traceback" not in proc.stderr


def test_experiments_are_listed():
    proc = subprocess.run([sys.executable, "-m", "experiments"], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0
    for name in ("mlp", "xor", "regression"):
        assert f"  {name} " in proc.stdout
