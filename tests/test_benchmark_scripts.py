"""The benchmark scripts run and print what they promise (their figures are not tested), from a
clone alone: the reference models they race against live in ``benchmarks/baselines``."""

import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import gpu_check, lstm_matmul_floor
from benchmarks.baselines import SPECS, flax_models

REPO = Path(__file__).resolve().parent.parent


def test_lstm_matmul_floor_prints_each_group_and_the_budget(capsys):
    lstm_matmul_floor.main(["--seconds", "0.05", "--target-steps-per-s", "25"])
    out = capsys.readouterr().out
    for name in lstm_matmul_floor.groups():
        assert name in out
    assert "sum (a floor under the step time)" in out
    assert "25.0 steps/s allows 40.0 ms per step" in out


# ----------------------------------------------------------------------------- a clean clone
@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    """The package, benchmarks and pyproject copied where no ``../shared`` folder exists."""
    root = tmp_path_factory.mktemp("fresh") / "clone"
    ignore = shutil.ignore_patterns("__pycache__", "bench_results")
    for folder in ("dlfun", "benchmarks"):
        shutil.copytree(REPO / folder, root / folder, ignore=ignore)
    shutil.copy(REPO / "pyproject.toml", root)
    assert not any((p / "shared" / "baselines").exists() for p in root.parents)
    return root


def clean_env() -> dict:
    """This environment without the test suite's 8 simulated devices."""
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "PJRT_NPROC")}
    return dict(env, JAX_PLATFORMS="cpu", PYTHONPATH="")


def script_modules() -> list[str]:
    """Every runnable benchmark module (those with a ``__main__`` block)."""
    files = sorted((REPO / "benchmarks").rglob("*.py"))
    return [".".join(f.relative_to(REPO).with_suffix("").parts) for f in files
            if 'if __name__ == "__main__"' in f.read_text()]


HELP_ALL = """
import contextlib, io, json, runpy, sys
out = {}
for name in sys.argv[1:]:
    sys.argv = [name, "--help"]
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf):
            runpy.run_module(name, run_name="__main__")
        out[name] = "no exit: " + buf.getvalue()
    except SystemExit as e:
        out[name] = buf.getvalue() if e.code in (0, None) else f"exit {e.code}: {buf.getvalue()}"
print(json.dumps(out))
"""


def test_every_benchmark_help_works_in_a_clean_clone(clone):
    modules = script_modules()
    assert {"benchmarks.accelerator", "benchmarks.gpu_check", "benchmarks.mlp_step",
            "benchmarks.baselines.flax_step", "benchmarks.baselines.torch_step"} <= set(modules)
    proc = subprocess.run([sys.executable, "-c", HELP_ALL, *modules], cwd=clone,
                          env=clean_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    helps = json.loads(proc.stdout.strip().splitlines()[-1])
    for name in modules:
        assert helps[name].startswith("usage:"), (name, helps[name][:300])
        assert not re.search(r"``|:[a-z]+:`", helps[name]), (name, "reST markup in --help")
    for name in ("mlp_step", "cnn_step", "lstm_step", "accelerator"):
        assert "--device {cpu,gpu}" in helps[f"benchmarks.{name}"]
    for name in ("mlp_step", "cnn_step", "lstm_step"):
        assert "--cross-check" in helps[f"benchmarks.{name}"]


def test_step_benchmark_asked_for_a_missing_gpu_says_so_in_one_line(clone):
    if shutil.which("nvidia-smi"):
        pytest.skip("this machine may have a GPU: the benchmark would run")
    proc = subprocess.run([sys.executable, "-m", "benchmarks.mlp_step", "--device", "gpu"],
                          cwd=clone, env=clean_env(), capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert proc.stderr.startswith("error: --device gpu") and "--device cpu" in proc.stderr


@pytest.mark.slow  # 8 compiles and 3 processes: 50 s measured on a busy shared 2-core machine
def test_accelerator_smoke_on_cpu_writes_every_row(clone, tmp_path):
    torch_ok = subprocess.run([sys.executable, "-c", "import torch"]).returncode == 0
    contenders = ["dlfun_epoch", "dlfun_step", "bare_jax"] + (["torch_eager"] if torch_ok else [])
    out = tmp_path / "acc.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.accelerator", "--device", "cpu", "--smoke",
         "--models", "mlp", "--batch-sizes", "small", "--seconds", "0.05",
         "--scan-steps", "2", "--peak-size", "128", "--contenders", ",".join(contenders),
         "--out", str(out)], cwd=clone, env=clean_env(), capture_output=True, text=True,
        timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads(out.read_text())
    rows = [r for r in result["rows"] if r["model"] == "mlp"]
    expected = {(4, p, c) for p in ("f32", "bf16") for c in contenders}  # small: 4
    assert {(r["batch"], r["precision"], r["contender"]) for r in rows} == expected
    macs = 784 * 512 + 512 * 512 + 512 * 10
    for r in rows:
        assert "error" not in r, r
        assert r["steps_per_s"] > 0 and r["compile_s"] >= 0
        assert math.isclose(r["tflops"], 6 * macs * r["batch"] * r["steps_per_s"] / 1e12)
        assert math.isclose(r["mfu_pct"], 100 * r["tflops"] / result["peak_bf16"]["tflops"])
        assert r["items_per_s"] == pytest.approx(r["steps_per_s"] * r["batch"])
    epoch = [r for r in rows if r["contender"] == "dlfun_epoch"]
    assert all("2 steps per dispatch" in r["note"] for r in epoch)
    for r in rows:  # every matrix product of dlfun's bf16 step runs in bf16
        if r["contender"] == "dlfun_step" and r["precision"] == "bf16":
            low, total = map(int, re.search(r"bf16 dots/convs (\d+)/(\d+)", r["note"]).groups())
            assert low == total > 0
    assert "Training throughput on cpu" in result["table"]


def test_accelerator_transformer_block_rows_in_f32_and_bf16():
    """The transformer block's contenders, in this process (the MLP test above runs the
    workers as a clone would): every row timed, bf16 matrix products in dlfun's bf16 step."""
    from types import SimpleNamespace

    from benchmarks import accelerator_jax
    from benchmarks.accelerator import transformer_spec

    args = SimpleNamespace(seconds=0.05, scan_steps=2)
    spec = transformer_spec(smoke=True)
    plan = {"f32": ("dlfun_epoch", "dlfun_step"), "bf16": ("dlfun_step", "bare_jax")}
    for precision, contenders in plan.items():
        setup = accelerator_jax.make_setup(spec, spec.batch, precision, smoke=True)
        for contender in contenders:
            r = accelerator_jax.measure(setup, contender, args)
            assert "error" not in r, r
            assert r["steps_per_s"] > 0 and r["unit"] == "tokens"
            assert r["items_per_s"] == pytest.approx(
                r["steps_per_s"] * spec.batch * spec.items_per_example)
            if (precision, contender) == ("bf16", "dlfun_step"):
                low, total = map(int, re.search(r"bf16 dots/convs (\d+)/(\d+)",
                                                r["note"]).groups())
                assert 0 < low <= total
    try:
        import torch
    except ImportError:
        return
    from benchmarks import accelerator_torch

    r = accelerator_torch.measure(spec, spec.batch, "bf16", "torch_eager", torch.device("cpu"),
                                  SimpleNamespace(seconds=0.05, smoke=True))
    assert "error" not in r and r["steps_per_s"] > 0 and r["note"] == "autocast bf16", r


def test_gpu_check_dry_run_plans_every_part_within_seven_minutes(tmp_path, capsys):
    gpu_check.main(["--dry-run", "--out", str(tmp_path)])
    plan = json.loads((tmp_path / "gpu_check.json").read_text())
    parts = {p["part"]: p for p in plan["parts"]}
    assert set(parts) >= {"accelerator_goals", "mlp_step", "cnn_step", "lstm_step"}
    assert sum(p["timeout_s"] for p in plan["parts"]) <= 7 * 60
    for name in ("mlp_step", "cnn_step", "lstm_step"):
        argv = " ".join(parts[name]["argv"])
        assert f"-m benchmarks.{name} " in argv
        assert "--device gpu --rounds 1 --seconds 2" in argv
    for p in plan["parts"]:
        out = Path(p["argv"][p["argv"].index("--out") + 1])
        assert out.parent == tmp_path
        if p["timeout_s"] < gpu_check.MIN_PART_S:  # extras: only in time left unused
            assert p["status"] == "runs only in time left over"
        elif "benchmarks.accelerator" in p["argv"]:
            budget = float(p["argv"][p["argv"].index("--budget") + 1])
            assert budget < p["timeout_s"]  # the driver writes its JSON before being killed
    assert "=== accelerator_goals" in capsys.readouterr().out
    assert not (tmp_path / "environment.json").exists()  # nothing ran


# ----------------------------------------------------------------------------- the references
def traced_macs(fn, *args) -> int:
    """Multiply-adds of every dot and convolution in ``fn``'s jaxpr, read from the shapes (a
    scan's body counted once per iteration)."""
    def walk(jaxpr) -> int:
        total = 0
        for eqn in jaxpr.eqns:
            out = np.prod(eqn.outvars[0].aval.shape)
            if eqn.primitive.name == "dot_general":
                (contract, _), _ = eqn.params["dimension_numbers"]
                total += out * np.prod([eqn.invars[0].aval.shape[d] for d in contract])
            elif eqn.primitive.name == "conv_general_dilated":
                rhs = eqn.invars[1].aval.shape
                spec = eqn.params["dimension_numbers"].rhs_spec  # (out, in, spatial...)
                total += out * np.prod([rhs[d] for d in spec[1:]])
            repeat = eqn.params.get("length", 1) if eqn.primitive.name == "scan" else 1
            for v in eqn.params.values():
                for sub in v if isinstance(v, (tuple, list)) else (v,):
                    inner = getattr(sub, "jaxpr", sub)
                    if hasattr(inner, "eqns"):
                        total += repeat * walk(inner)
        return int(total)

    return walk(jax.make_jaxpr(fn)(*args).jaxpr)


@pytest.mark.parametrize("name", ["mlp", "lenet", "cnn", "resnet20", "lstm"])
def test_analytic_macs_match_the_plain_flax_models(name):
    spec = SPECS[name]
    module = flax_models.MODULES[name]()
    x = jnp.zeros((1, *spec.shape))
    variables = jax.eval_shape(lambda: module.init(jax.random.key(0), x, train=False))
    fwd = lambda v, x: module.apply(v, x, train=False)
    assert traced_macs(fwd, variables, x) == spec.macs


def test_plain_flax_and_pytorch_references_agree_on_the_mlp():
    torch = pytest.importorskip("torch")
    from benchmarks.baselines import torch_models

    x = np.random.default_rng(0).standard_normal((5, 784), dtype=np.float32)
    module = flax_models.MLP()
    params = module.init(jax.random.key(0), x)["params"]
    net = torch_models.mlp()
    with torch.no_grad():
        for i, layer in enumerate(l for l in net if isinstance(l, torch.nn.Linear)):
            layer.weight.copy_(torch.from_numpy(np.array(params[f"Dense_{i}"]["kernel"]).T))
            layer.bias.copy_(torch.from_numpy(np.array(params[f"Dense_{i}"]["bias"])))
        want = net(torch.from_numpy(x)).numpy()
    got = np.asarray(module.apply({"params": params}, x))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name,count", [
    ("mlp", 784 * 512 + 512 + 512 * 512 + 512 + 512 * 10 + 10),
    ("lenet", (25 * 6 + 6) + (150 * 16 + 16) + (400 * 120 + 120) + (120 * 84 + 84) + 850),
    ("resnet20", 272_474),  # He et al.'s ResNet-20 with 1x1 projections (dlfun.nn.ResNet20)
])
def test_plain_flax_and_pytorch_models_have_the_same_parameters(name, count):
    torch = pytest.importorskip("torch")
    from benchmarks.baselines import torch_models

    spec = SPECS[name]
    variables = jax.eval_shape(lambda: flax_models.MODULES[name]().init(
        jax.random.key(0), jnp.zeros((1, *spec.shape)), train=False))
    n_flax = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(variables["params"]))
    n_torch = sum(p.numel() for p in torch_models.MODULES[name]().parameters())
    assert n_flax == n_torch == count


@pytest.mark.parametrize("flag,value", [("--models", "mlp,vgg"), ("--precisions", "fp8"),
                                        ("--contenders", "keras"), ("--batch-sizes", "huge")])
def test_accelerator_names_a_bad_choice_in_one_line(flag, value):
    from benchmarks import accelerator

    with pytest.raises(SystemExit) as e:
        accelerator.main([flag, value, "--out", "/nonexistent/never-written.json"])
    message = str(e.value.code)
    assert message.startswith(f"error: {flag}") and "\n" not in message
