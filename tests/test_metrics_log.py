"""MetricsLog: records go to metrics.jsonl; TensorBoard files are an extra that may be absent."""

import builtins
import json
import logging

from dlfun.runs import MetricsLog, RunConfig, RunDir


def test_records_are_kept_without_tensorboardx(tmp_path, monkeypatch, caplog):
    real_import = builtins.__import__

    def no_tensorboardx(name, *args, **kwargs):
        if name.startswith("tensorboardX"):
            raise ImportError("No module named 'tensorboardX'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboardx)
    run = RunDir.open(RunConfig(run_dir=str(tmp_path / "run")), "test")
    metrics = MetricsLog(run)
    with caplog.at_level(logging.WARNING):
        metrics.log({"epoch": 1, "loss": 0.5}, step=1)
    assert "pip install tensorboardX" in caplog.text
    metrics.close()
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == [{"epoch": 1, "loss": 0.5}]
    assert not (tmp_path / "run" / "tensorboard").exists() or \
        not any((tmp_path / "run" / "tensorboard").iterdir())
