"""python -m experiments.dqn: learning on the smoke presets, the run contract, K seeds, resume,
NaN stop, bad --env values, the gymnasium checks of the trained policy."""

import dataclasses
import importlib.util
import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import experiments.dqn as dqn
from dlfun.errors import ConfigError, NonFiniteError
from dlfun.rl import presets, run_compiled
from dlfun.runs.cli import parse_config
from dlfun.rl.run_compiled import RunOptions
from dlfun.train.checkpoint import Checkpointer
import run_helpers
from run_helpers import records

HAVE_GYM = importlib.util.find_spec("gymnasium") is not None
# Skipping the GIF/gymnasium extras where a test is not about them keeps it short.
QUIET = dict(render=False, gym_eval_episodes=0, random_episodes=20)


def smoke(tmp_path, name="run", **overrides):
    return run_helpers.smoke(dqn, tmp_path, name, **overrides)


def test_cartpole_smoke_learns_and_writes_the_run_contract(tmp_path):
    cfg, summary = smoke(tmp_path)
    # A random policy balances ~22 steps; 13k env steps of DQN must clearly beat it.
    assert summary["random_return"] < 30
    assert max(summary["best_eval_return_each"]) >= max(3 * summary["random_return"], 70)
    rec = records(tmp_path)
    assert [r["period"] for r in rec] == [1, 2, 3, 4]
    assert np.all(np.diff([r["env_steps"] for r in rec]) == cfg.dqn.env_steps_per_period)
    assert rec[-1]["epsilon"] == pytest.approx(cfg.dqn.epsilon_end)
    run = tmp_path / "run"
    for f in ("config.json", "metrics.jsonl", "summary.json", "returns.png", "episode.gif",
              "episode.png"):
        assert (run / f).is_file(), f
    assert any((run / "tensorboard").iterdir())
    assert Checkpointer(run / "checkpoints" / "dqn").steps() == [2, 4]
    saved, meta = Checkpointer(run / "checkpoints" / "policy").load_raw()
    assert meta["env"] == "cartpole" and "params" in saved
    assert summary["render"]["steps"] >= 1 and summary["solved_return"] == 475.0
    gym_eval = summary["gymnasium_eval"]
    if HAVE_GYM:  # the policy learned in pure JAX plays gymnasium's own CartPole-v1
        assert gym_eval["env"] == "CartPole-v1" and gym_eval["episodes"] == cfg.gym_eval_episodes
        assert gym_eval["mean_return"] >= 2 * summary["random_return"]
    else:
        assert gym_eval.startswith("skipped: gymnasium not installed")
    assert json.loads((run / "summary.json").read_text())["status"] == "ok"


def test_one_flat_config_per_preset_and_environment_family(capsys):
    """Each preset holds a complete config per family; flags override it, --env picks it."""
    parse = lambda argv: parse_config(dqn.Config, dqn.PRESETS, argv)  # noqa: E731
    assert parse(["--preset", "smoke", "--env", "breakout"]) == dqn.PRESETS["smoke"]["breakout"]
    cfg = parse(["--env", "gym:Acrobot-v1", "--gamma", "0.9", "--no-double-dqn"])
    assert cfg == dataclasses.replace(dqn.PRESETS["default"]["gym"], env="gym:Acrobot-v1",
                                      gamma=0.9, double_dqn=False)
    assert cfg.dqn == dataclasses.replace(presets.CARTPOLE, gamma=0.9, double_dqn=False)
    assert parse(["--env", "gym:ALE/Pong-v5"]).dqn == presets.ATARI
    assert parse(["--preset", "smoke"]).dqn == presets.CARTPOLE_SMOKE
    assert parse(["--periods", "3"]).dqn.num_evals == 3
    for bad, words in ((["--epsilon-end", "2"], "--epsilon-end"), (["--env", "atari"], "--env"),
                       (["--target-tau", "0"], "--target-tau")):
        with pytest.raises(SystemExit) as e:
            parse(bad)
        err = capsys.readouterr().err
        assert e.value.code == 2 and words in err and err.count("\n") == 1, err


def test_gymnasium_check_says_why_it_is_skipped(monkeypatch):
    opts = RunOptions(1)
    breakout = dqn.PRESETS["smoke"]["breakout"]
    assert dqn.gymnasium_check(breakout, None, None, None, opts) == (
        "skipped: breakout has no gymnasium counterpart")
    none = dataclasses.replace(dqn.PRESETS["smoke"]["cartpole"], gym_eval_episodes=0)
    assert dqn.gymnasium_check(none, None, None, None, opts).startswith("skipped: --gym-eval")
    monkeypatch.setitem(sys.modules, "gymnasium", None)  # makes `import gymnasium` fail
    assert dqn.gymnasium_check(dqn.PRESETS["smoke"]["cartpole"], None, None, None, opts) == (
        "skipped: gymnasium not installed (pip install 'dlfun[rl]')")


def test_two_seeds_train_differently_and_resume_exactly(tmp_path):
    _, summary = smoke(tmp_path, num_seeds=2, seed=5, periods=2, checkpoint_every_periods=1, **QUIET)
    rec = records(tmp_path)
    assert all(len(r["loss_each"]) == 2 and len(r["eval_return_each"]) == 2 for r in rec)
    assert rec[-1]["loss_each"][0] != rec[-1]["loss_each"][1]
    assert rec[-1]["loss"] == pytest.approx(np.mean(rec[-1]["loss_each"]))
    assert len(summary["best_eval_return_each"]) == 2
    kernel = Checkpointer(tmp_path / "run" / "checkpoints" / "policy").load_raw()[0][
        "params"]["params"]["Dense_0"]["kernel"]
    assert kernel.shape == (2, 4, 120) and not np.allclose(kernel[0], kernel[1])
    # the seeds (split over two simulated devices) resume from their checkpoint exactly
    smoke(tmp_path, "cut", num_seeds=2, seed=5, periods=1, checkpoint_every_periods=1, **QUIET)
    cfg = dataclasses.replace(dqn.PRESETS["smoke"]["cartpole"], run_dir=str(tmp_path / "cut"), resume=True,
                              num_seeds=2, seed=5, periods=2, checkpoint_every_periods=1, **QUIET)
    dqn.main(cfg)
    full, _ = Checkpointer(tmp_path / "run" / "checkpoints" / "dqn").load_raw(2)
    cut, _ = Checkpointer(tmp_path / "cut" / "checkpoints" / "dqn").load_raw(2)
    for a, b in zip(jax.tree.leaves(full), jax.tree.leaves(cut)):
        np.testing.assert_array_equal(a, b)


def test_resume_equals_uninterrupted_run(tmp_path):
    smoke(tmp_path, "full", **QUIET)
    smoke(tmp_path, "cut", periods=2, **QUIET)  # "interrupted" after period 2
    cfg = dataclasses.replace(dqn.PRESETS["smoke"]["cartpole"], run_dir=str(tmp_path / "cut"), resume=True,
                              **QUIET)
    assert dqn.main(cfg)["resumed"]
    full, _ = Checkpointer(tmp_path / "full" / "checkpoints" / "dqn").load_raw(4)
    cut, _ = Checkpointer(tmp_path / "cut" / "checkpoints" / "dqn").load_raw(4)
    flat_full, flat_cut = jax.tree.leaves(full), jax.tree.leaves(cut)
    assert len(flat_full) == len(flat_cut) > 10  # params, Adam moments, buffer, envs, key...
    for a, b in zip(flat_full, flat_cut):
        np.testing.assert_array_equal(a, b)
    drop_wall = lambda rs: [{k: v for k, v in r.items() if k != "wall_s"} for r in rs]  # noqa
    assert drop_wall(records(tmp_path, "cut")) == drop_wall(records(tmp_path, "full"))


def test_nonfinite_loss_stops_with_reason_in_summary(tmp_path):
    with pytest.raises(NonFiniteError, match=r"non-finite at env step \d+ \(gradient update"):
        smoke(tmp_path, learning_rate=1e30, **QUIET)
    saved = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert saved["status"] == "nonfinite" and saved["step"] > 0
    assert "no checkpoint has been written yet" in saved["reason"]


def test_nonfinite_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    real = run_compiled.compiled_functions

    def poisoned(*args):
        programs = real(*args)
        calls = []

        def poison_third_period(carry):
            calls.append(1)
            if len(calls) == 3:  # NaN parameters: the first update of period 3 has a NaN loss
                ts = carry.train_state
                carry = carry._replace(train_state=ts.replace(
                    params=jax.tree.map(lambda p: p * jnp.nan, ts.params)))
            return programs.one_period(carry)

        return programs._replace(one_period=poison_third_period)

    monkeypatch.setattr(run_compiled, "compiled_functions", poisoned)
    with pytest.raises(NonFiniteError) as err:
        smoke(tmp_path, **QUIET)
    first_bad = records(tmp_path)[-1]["env_steps"] + dqn.PRESETS["smoke"]["cartpole"].dqn.num_envs
    assert err.value.step == first_bad and f"env step {first_bad} " in str(err.value)
    assert "last good checkpoint is" in str(err.value) and "checkpoints/dqn/2" in str(err.value)
    assert Checkpointer(tmp_path / "run" / "checkpoints" / "dqn").steps() == [2]
    assert [r["period"] for r in records(tmp_path)] == [1, 2]


def test_bad_env_values_are_one_line_errors(tmp_path, monkeypatch, capsys):
    with pytest.raises(ConfigError, match="--env must be cartpole, breakout or gym:<gymnasium"):
        dqn.Config(env="pong")
    with pytest.raises(ConfigError, match="gym: needs a gymnasium id after the colon"):
        dqn.Config(env="gym:")
    with pytest.raises(ConfigError, match="gymnasium runs train one seed"):
        dqn.Config(env="gym:CartPole-v1", num_seeds=2)
    with pytest.raises(SystemExit) as exit_:
        dqn.run_cli(dqn.main, dqn.Config, dqn.PRESETS, argv=["--env", "gym:"])
    assert exit_.value.code == 2 and "needs a gymnasium id" in capsys.readouterr().err
    run_dir = tmp_path / "never"
    if HAVE_GYM:
        with pytest.raises(ConfigError, match="gymnasium has no environment 'NoSuchEnv-v0'"):
            dqn.main(dqn.Config(env="gym:NoSuchEnv-v0", run_dir=str(run_dir)))
    monkeypatch.setitem(sys.modules, "ale_py", None)
    with pytest.raises(ConfigError, match=r"pip install 'dlfun\[(atari|rl)\]'"):
        dqn.main(dqn.Config(env="gym:ALE/Breakout-v5", run_dir=str(run_dir)))
    monkeypatch.setitem(sys.modules, "gymnasium", None)
    with pytest.raises(ConfigError, match=r"pip install 'dlfun\[rl\]'"):
        dqn.main(dqn.Config(env="gym:CartPole-v1", run_dir=str(run_dir)))
    assert not run_dir.exists()  # refused before a run directory was made


@pytest.mark.slow
def test_breakout_smoke_learns(tmp_path):
    _, summary = smoke(tmp_path, env="breakout", gym_eval_episodes=0)
    # Random play breaks ~0.5 bricks per game; 13k env steps of DQN must clearly beat it.
    assert summary["random_return"] < 1.0
    assert max(summary["best_eval_return_each"]) >= summary["random_return"] + 1.0
    assert summary["gymnasium_eval"] == "skipped: breakout has no gymnasium counterpart"
    assert (tmp_path / "run" / "episode.png").is_file()


def test_gym_cartpole_host_loop_runs_and_resumes(tmp_path):
    pytest.importorskip("gymnasium", reason="gymnasium missing (pip install 'dlfun[rl]')")
    small = dict(env="gym:CartPole-v1", iterations_per_eval=100, checkpoint_every_periods=1,
                 gym_eval_episodes=2, random_episodes=5)
    cfg, summary = smoke(tmp_path, periods=2, **small)
    assert summary["gymnasium_eval"]["episodes"] == 2 and summary["render"]["steps"] >= 1
    cfg = dataclasses.replace(cfg, resume=True, periods=3)
    assert dqn.main(cfg)["resumed"]
    assert [r["period"] for r in records(tmp_path)] == [1, 2, 3]
    state, meta = Checkpointer(tmp_path / "run" / "checkpoints" / "dqn").load_raw()
    assert meta["period"] == 3 and meta["env_steps"] == cfg.dqn.prefill_iterations * 8 + 2400
    # the learner continued from its checkpoint: 300 updates in all, not 100 after a restart
    assert int(state["state"]["train_state"]["step"]) == 300
    assert int(state["state"]["buffer"]["size"]) == meta["env_steps"]


@pytest.mark.slow
def test_atari_smoke_run_through_the_experiment(tmp_path):
    pytest.importorskip("gymnasium", reason="gymnasium missing (pip install 'dlfun[rl]')")
    pytest.importorskip("ale_py", reason="ale-py not installed (pip install 'dlfun[atari]')")
    pytest.importorskip("cv2", reason="opencv not installed (pip install 'dlfun[atari]')")
    _, summary = smoke(tmp_path, env="gym:ALE/Breakout-v5", random_episodes=2,
                       gym_eval_episodes=1, render=False)
    rec = records(tmp_path)
    # 1000 prefill + 2 x 200 agent steps = 5600 emulator frames (frame skip 4)
    assert [r["env_steps"] for r in rec] == [1200, 1400]
    assert all(np.isfinite(r["loss"]) for r in rec)
    policy, _ = Checkpointer(tmp_path / "run" / "checkpoints" / "policy").load_raw()
    assert policy["params"]["params"]["Conv_0"]["kernel"].shape == (8, 8, 4, 32)  # Nature DQN


@pytest.mark.devices(2)
def test_seeds_split_over_devices_equal_one_vmapped_program():
    from dlfun.rl import CartPole, DQNConfig, MLPQNetwork

    assert jax.local_device_count() >= 2  # conftest simulates 8 CPU devices
    cfg = DQNConfig(num_envs=4, buffer_size=256, batch_size=16, learning_starts=32,
                    iterations_per_eval=10, eval_episodes=2, target_update_interval=5)
    keys = run_compiled.seed_keys((3, 4))
    out = []
    for max_devices in (None, 1):
        programs = run_compiled.compiled_functions(cfg, CartPole(), MLPQNetwork(2, (16,)), 2,
                                                   max_devices)
        carry = programs.init(*programs.place(keys))
        for _ in range(2):
            carry, metrics = programs.one_period(carry)
        out.append(run_compiled.checkpoint_form(carry))
    assert run_compiled.seed_mesh(2).devices.size == 2 and run_compiled.seed_mesh(2, 1) is None
    # the same computation up to float rounding (XLA picks matmul kernels by batch size)
    for a, b in zip(jax.tree.leaves(out[0]), jax.tree.leaves(out[1])):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)
