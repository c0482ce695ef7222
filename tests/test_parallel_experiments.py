"""The parallel experiments' smoke presets run in-process, learn, and agree with one
device."""

import dataclasses
import json

import pytest

import experiments.data_parallel as data_parallel
import experiments.model_parallel as model_parallel
from dlfun.errors import ConfigError


def smoke(module, tmp_path, **overrides):
    cfg = dataclasses.replace(module.PRESETS["smoke"], run_dir=str(tmp_path / "run"),
                              **overrides)
    summary = module.main(cfg)
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "ok"
    assert (tmp_path / "run" / "final_params.npz").is_file()
    return summary


def test_data_parallel_smoke_learns_matches_one_device_and_reports_bytes(tmp_path, capsys):
    s = smoke(data_parallel, tmp_path)
    assert s["last_loss"] < 0.8 * s["first_loss"]
    assert s["matches_1_device"] and s["max_param_diff_vs_1_device"] < 1e-5
    assert 1.0 <= s["collectives"]["ratio_to_ideal"] < 1.03  # gradient + batch-norm stats
    assert s["collectives"]["ops"].keys() == {"all-reduce"}
    out = capsys.readouterr().out
    assert "images/s" in out and "not a speed-up" in out and "ratio" in out


@pytest.mark.parametrize("scheme", model_parallel.SCHEMES)
def test_model_parallel_smoke(scheme, tmp_path):
    s = smoke(model_parallel, tmp_path, scheme=scheme)
    assert s["last_loss"] < 0.85 * s["first_loss"]
    assert s["matches_1_device"]
    fraction, n = s["memory"]["param_fraction"], s["devices"]
    if scheme in ("tensor", "fsdp"):
        assert fraction <= 1 / n + 0.05
    if scheme == "fsdp":
        assert s["collectives"]["ratio_to_ideal"] <= 1.5 + 1e-3
    if scheme == "pipeline":
        assert s["bubble_fraction"] == pytest.approx((n - 1) / (4 + n - 1))
    if scheme == "hybrid":
        assert fraction < 1.0 and "all-gather" in s["collectives"]["ops"]


def test_bad_flags_are_config_errors():
    with pytest.raises(ConfigError, match="multiple of --devices"):
        data_parallel.Config(devices=8, batch_size=12)
    with pytest.raises(ConfigError, match="--method must be one of"):
        data_parallel.Config(method="mpi")
    with pytest.raises(ConfigError, match="--scheme must be one of"):
        model_parallel.Config(scheme="zero")
