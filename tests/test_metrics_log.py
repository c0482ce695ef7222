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


def test_tensorboard_writer_starts_without_loading_pytorch(tmp_path):
    """tensorboardX would import PyTorch (seconds) at every run's start; dlfun's writer does
    not, and PyTorch still imports afterwards."""
    import subprocess
    import sys

    import pytest

    code = ("import sys\n"
            "from dlfun.runs.metrics_log import _tensorboard_writer\n"
            f"w = _tensorboard_writer({str(tmp_path / 'tb')!r})\n"
            "w.add_scalar('loss', 0.5, 1); w.close()\n"
            "print('torch' in sys.modules)\n"
            "try:\n    import torch\nexcept ImportError:\n    print('no torch')\n"
            "else:\n    print(torch.tensor([1.0]).sum().item())\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.split()
    assert lines[0] == "False" and any((tmp_path / "tb").iterdir())
    if lines[1:] == ["no", "torch"]:
        pytest.skip("PyTorch not installed: nothing to keep from loading")
    assert lines[1] == "1.0"
