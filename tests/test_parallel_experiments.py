"""The parallel experiments' smoke presets run in-process, learn, and agree with one
device."""

import dataclasses
import json
import shutil

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

import experiments.data_parallel as data_parallel
import experiments.model_parallel as model_parallel
from dlfun.errors import ConfigError
from dlfun.optim import make_optimizer
from dlfun.parallel import build_scheme, max_bytes_per_device


def smoke(module, tmp_path, **overrides):
    cfg = dataclasses.replace(module.PRESETS["smoke"], run_dir=str(tmp_path / "run"),
                              **overrides)
    summary = module.main(cfg)
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "ok"
    assert (tmp_path / "run" / "final_params.npz").is_file()
    return summary


# tensor and fsdp are checked against one device in test_parallel_sharding; here the two
# schemes that exercise the most of the experiment's machinery.
@pytest.mark.devices(4)
@pytest.mark.parametrize("scheme", ["hybrid", "pipeline"])
def test_model_parallel_smoke(scheme, tmp_path):
    s = smoke(model_parallel, tmp_path, scheme=scheme)
    assert s["last_loss"] < 0.85 * s["first_loss"]
    assert s["matches_1_device"]
    fraction, n = s["memory"]["param_fraction"], s["devices"]
    if scheme == "pipeline":
        assert s["bubble_fraction"] == pytest.approx((n - 1) / (4 + n - 1))
    if scheme == "hybrid":
        assert fraction < 1.0 and "all-gather" in s["collectives"]["ops"]


@pytest.mark.devices(4)
@pytest.mark.parametrize("name,mesh,spec", [
    ("tensor", {"data": 1, "model": 4}, P(None, "model")),
    ("fsdp", {"data": 4, "model": 1}, P(None, "data")),
    ("hybrid", {"data": 2, "model": 2}, P(None, "model")),
])
def test_schemes_build_their_mesh_and_split_the_parameters(name, mesh, spec):
    x = np.zeros((8, 8, 8, 1), np.float32)
    scheme = build_scheme(name, 4, x, make_optimizer("sgd", 0.1), jax.random.key(0))
    assert dict(scheme.mesh.shape) == mesh
    assert scheme.state.params["Dense_0"]["kernel"].sharding.spec == spec
    fraction = max_bytes_per_device(scheme.state.params) / scheme.param_bytes
    assert fraction <= (1 / 4 + 0.05 if name != "hybrid" else 1.0)


def test_bad_flags_are_config_errors():
    with pytest.raises(ConfigError, match="multiple of --devices"):
        data_parallel.Config(devices=8, batch_size=12)
    with pytest.raises(ConfigError, match="--method must be one of"):
        data_parallel.Config(method="mpi")
    with pytest.raises(ConfigError, match="--scheme must be one of"):
        model_parallel.Config(scheme="zero")
    with pytest.raises(ConfigError, match="unknown scheme 'dp_mpi'"):
        build_scheme("dp_mpi", 2, np.zeros((2, 8, 8, 1)), make_optimizer("sgd", 0.1),
                     jax.random.key(0))


@pytest.mark.devices(4)
@pytest.mark.parametrize("module,overrides", [
    (data_parallel, dict(method="pmap")),
    (model_parallel, dict(scheme="fsdp")),
], ids=["data_parallel-pmap", "model_parallel-fsdp"])
def test_resume_from_an_older_checkpoint_equals_the_uninterrupted_run(module, overrides,
                                                                      tmp_path):
    s = smoke(module, tmp_path, checkpoint_every_steps=2, **overrides)
    folder = next((tmp_path / "run" / "checkpoints").iterdir())
    steps = sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit())
    assert steps[-1] == s["steps"]
    final = np.load(tmp_path / "run" / "final_params.npz")
    final = {k: final[k] for k in final.files}
    for p in steps[-2:]:  # as if the run had died after writing the third-newest one
        shutil.rmtree(folder / str(p))
    cfg = dataclasses.replace(module.PRESETS["smoke"], run_dir=str(tmp_path / "run"),
                              checkpoint_every_steps=2, resume=True, **overrides)
    resumed = module.main(cfg)
    assert resumed["resumed"] and resumed["start_step"] == steps[-3]
    # the one-device reference trains from scratch; the resumed run lands where it did before
    assert resumed["max_param_diff_vs_1_device"] == s["max_param_diff_vs_1_device"]
    again = np.load(tmp_path / "run" / "final_params.npz")
    for k, v in final.items():
        np.testing.assert_array_equal(again[k], v, err_msg=k)


@pytest.mark.devices(4)
def test_resume_without_a_checkpoint_starts_again(tmp_path, capsys):
    """Killed before its first checkpoint: --resume trains from the beginning (idempotent)."""
    smoke(data_parallel, tmp_path, check=False)
    shutil.rmtree(tmp_path / "run" / "checkpoints")
    cfg = dataclasses.replace(data_parallel.PRESETS["smoke"], run_dir=str(tmp_path / "run"),
                              check=False, resume=True)
    summary = data_parallel.main(cfg)
    assert summary["start_step"] == 0 and summary["resumed"] is False
    assert "starting it from the beginning" in capsys.readouterr().err
