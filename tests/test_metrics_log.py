"""MetricsLog: records go to metrics.jsonl; TensorBoard files are an extra that may be absent."""

import builtins
import json
import logging

from dlfun.train.metrics_log import MetricsLog
from dlfun.train.rundir import RunDir


def test_records_are_kept_without_tensorboardx(tmp_path, monkeypatch, caplog):
    real_import = builtins.__import__

    def no_tensorboardx(name, *args, **kwargs):
        if name.startswith("tensorboardX"):
            raise ImportError("No module named 'tensorboardX'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboardx)
    (tmp_path / "run").mkdir()
    run = RunDir(tmp_path / "run", "test", resumed=False)
    with caplog.at_level(logging.WARNING):
        metrics = MetricsLog(run)
    assert "pip install tensorboardX" in caplog.text
    metrics.log({"epoch": 1, "loss": 0.5}, step=1)
    metrics.close()
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == [{"epoch": 1, "loss": 0.5}]
    assert not (tmp_path / "run" / "tensorboard").exists() or \
        not any((tmp_path / "run" / "tensorboard").iterdir())
