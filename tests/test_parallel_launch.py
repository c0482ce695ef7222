"""Several processes: 2 processes x 2 devices train to the parameters of 1 process x 4
devices; a dead process makes the launcher stop the others and exit, naming it."""

import dataclasses
import fcntl
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import experiments.data_parallel as data_parallel
from dlfun.launch import parse_args
from dlfun.parallel.distributed import _dlfun_env_args, cluster_launcher, launched_by_dlfun
from dlfun.parallel.params_file import load_params

ROOT = Path(__file__).resolve().parent.parent


def launch(args, timeout=600):
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "PJRT_NPROC")}
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "dlfun.launch", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
    return proc, time.monotonic() - t0


@pytest.mark.devices(4)
def test_two_processes_of_two_devices_equal_one_process_of_four(tmp_path, capsys):
    # One process, 4 of this session's 8 devices: the experiment's smoke preset learns,
    # matches one device and sends one gradient all-reduce (+ batch-norm statistics).
    cfg = dataclasses.replace(data_parallel.PRESETS["smoke"], devices=4,
                              run_dir=str(tmp_path / "one"))
    s = data_parallel.main(cfg)
    assert s["last_loss"] < 0.8 * s["first_loss"]
    assert s["matches_1_device"] and s["max_param_diff_vs_1_device"] < 1e-5
    ratio = s["collectives"]["ratio_to_ideal"]
    assert ratio >= 1.0 and ratio < 1.03
    assert s["collectives"]["ops"].keys() == {"all-reduce"}
    out = capsys.readouterr().out
    assert "images/s" in out and "not a speed-up" in out and "ratio" in out
    # The same run as 2 processes x 2 devices, started by the launcher.
    proc, _ = launch(["--nproc", "2", "--devices-per-proc", "2", "--timeout", "500", "--",
                      sys.executable, "-m", "experiments.data_parallel", "--preset", "smoke",
                      "--devices", "4", "--no-check", "--run-dir", str(tmp_path / "two")])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "[rank 0]" in proc.stdout and "2 process(es)" in proc.stdout
    one = load_params(tmp_path / "one" / "final_params.npz")
    two = load_params(tmp_path / "two" / "final_params.npz")
    assert set(one) == set(two) and "Dense_0/kernel" in one
    for k in one:
        np.testing.assert_allclose(two[k], one[k], atol=1e-6, rtol=0, err_msg=k)
    assert not np.allclose(one["Dense_0/kernel"], 0)


CRASH = """
import os, sys
from dlfun.parallel.distributed import initialize
rank, n = initialize()
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P
mesh = jax.make_mesh((jax.device_count(),), ("data",),
                     axis_types=(jax.sharding.AxisType.Auto,))
if rank == 1:
    os._exit(5)  # dies without a word; rank 0 is left waiting in the collective below
x = jax.make_array_from_process_local_data(NamedSharding(mesh, P("data")), np.ones((2, 4)))
while True:
    jax.block_until_ready(jax.jit(jnp.sum, out_shardings=NamedSharding(mesh, P()))(x))
"""


def test_a_dead_process_stops_the_others_within_60_s():
    proc, seconds = launch(["--nproc", "2", "--devices-per-proc", "2", "--", sys.executable,
                            "-c", CRASH], timeout=120)
    assert proc.returncode == 5
    assert "rank 1 exited with status 5; stopping the other 1 running process" in proc.stderr
    assert seconds < 60


def test_the_launcher_names_the_process_that_ended_first(monkeypatch, capsys):
    # Rank 1 dies; rank 0 fails after it (as in its next collective). Both have ended when the
    # launcher next looks (a long poll interval here): it must name rank 1, not the lowest rank.
    import dlfun.launch as launch_module
    monkeypatch.setattr(launch_module, "POLL_S", 1.0)
    procs = [subprocess.Popen(["sh", "-c", "sleep 0.3; exit 1"], start_new_session=True),
             subprocess.Popen(["sh", "-c", "sleep 0.1; exit 9"], start_new_session=True)]
    assert launch_module.supervise(procs) == 9
    assert "rank 1 exited with status 9" in capsys.readouterr().err


def test_a_run_that_process_0_refuses_ends_every_process_with_its_one_line(tmp_path):
    # Another process holds the run directory's lock: process 0 refuses the run, and the
    # other process must end with the same line at once, not wait in a training collective
    # until the coordinator's 30 s timeout and end in a traceback.
    run = tmp_path / "run"
    run.mkdir()
    with (run / ".lock").open("w") as holder:
        fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)
        holder.write(str(os.getpid()))
        holder.flush()
        proc, seconds = launch(["--nproc", "2", "--devices-per-proc", "2", "--timeout", "120",
                                "--", sys.executable, "-m", "experiments.data_parallel",
                                "--preset", "smoke", "--devices", "4", "--run-dir", str(run),
                                "--resume"], timeout=180)
    assert proc.returncode == 2, proc.stderr[-2000:]
    line = f"error: run directory {run} is in use by process {os.getpid()}"
    for rank in (0, 1):
        assert f"[rank {rank}] {line}" in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert seconds < 25
    assert sorted(p.name for p in run.iterdir()) == [".lock"]  # nothing written


# Process 0 alone fails in the middle of training (as when its disk fills up while it
# writes the first epoch's record); process 1 goes on into the next collective.
FAIL_ON_PROCESS_0 = """
import os, runpy, sys
from dlfun.process_env import ENV_PROCESS_ID
if os.environ.get(ENV_PROCESS_ID) == "0":
    from dlfun.errors import ConfigError
    from dlfun.runs.run import Run
    def record(self, *args, **kwargs):
        raise ConfigError("cannot write metrics.jsonl (simulated: no space left)")
    Run.record = record
sys.argv = ["data_parallel", *sys.argv[1:]]
runpy.run_module("experiments.data_parallel", run_name="__main__")
"""


def test_a_process_that_fails_alone_ends_the_run_at_once(tmp_path):
    # jax.distributed's exit handler waits for every process at a shutdown barrier, and
    # process 1 waits for process 0 in a collective: without ending at once, the run hangs
    # until the launcher's --timeout (or for ever without one).
    proc, seconds = launch(["--nproc", "2", "--devices-per-proc", "2", "--timeout", "110", "--",
                            sys.executable, "-c", FAIL_ON_PROCESS_0, "--preset", "smoke",
                            "--devices", "4", "--no-check", "--max-steps", "12",
                            "--run-dir", str(tmp_path / "run")], timeout=180)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "[rank 0] error: cannot write metrics.jsonl (simulated" in proc.stderr
    assert "dlfun.launch: rank 0 exited with status 2" in proc.stderr, proc.stderr[-2000:]
    assert seconds < 90


# Process 0 lists the addresses its coordinator listens on (from the kernel's socket tables).
LISTENING = """
import ipaddress, os, socket, struct
from dlfun.parallel.distributed import initialize
rank, n = initialize()
if rank == 0:
    port = int(os.environ["DLFUN_COORDINATOR"].rsplit(":", 1)[1])
    found = []
    for table, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
        for row in open(table).read().splitlines()[1:]:
            cols = row.split()
            address, hex_port = cols[1].split(":")
            if int(hex_port, 16) == port and cols[3] == "0A":  # 0A: LISTEN
                # The kernel prints each 32-bit word of the address in host byte order.
                raw = b"".join(struct.pack("=I", int(address[i:i + 8], 16))
                               for i in range(0, len(address), 8))
                ip = ipaddress.ip_address(socket.inet_ntop(family, raw))
                found.append(str(getattr(ip, "ipv4_mapped", None) or ip))  # ::ffff:a.b.c.d
    print("listening on", found)
"""


@pytest.mark.skipif(not Path("/proc/net/tcp6").exists(), reason="needs Linux /proc/net")
def test_the_coordinator_listens_on_the_loopback_address_only():
    proc, _ = launch(["--nproc", "2", "--timeout", "100", "--", sys.executable, "-c",
                      LISTENING], timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "[rank 0] listening on ['127.0.0.1']" in proc.stdout, proc.stdout


def test_launcher_needs_a_command():
    with pytest.raises(SystemExit):
        parse_args(["--nproc", "2"])
    assert parse_args(["--nproc", "3", "--", sys.executable, "x.py"]).command == [sys.executable,
                                                                             "x.py"]


def test_dlfun_launch_binds_the_coordinator_to_the_address_it_is_reached_at(monkeypatch):
    monkeypatch.setenv("DLFUN_COORDINATOR", "127.0.0.1:4321")
    monkeypatch.setenv("DLFUN_NUM_PROCESSES", "2")
    monkeypatch.setenv("DLFUN_PROCESS_ID", "1")
    monkeypatch.delenv("JAX_COORDINATOR_BIND_ADDRESS", raising=False)
    assert _dlfun_env_args() == dict(coordinator_address="127.0.0.1:4321", num_processes=2,
                                     process_id=1, coordinator_bind_address="127.0.0.1:4321")
    monkeypatch.setenv("JAX_COORDINATOR_BIND_ADDRESS", "[::]:4321")  # the user's choice wins
    assert _dlfun_env_args()["coordinator_bind_address"] == "[::]:4321"


def test_cluster_and_dlfun_launch_detection():
    assert cluster_launcher({"SLURM_NTASKS": "4"}) == "SLURM (srun)"
    assert cluster_launcher({"SLURM_NTASKS": "1"}) is None
    assert cluster_launcher({}) is None
    assert launched_by_dlfun({"DLFUN_COORDINATOR": "localhost:1234"})
    assert not launched_by_dlfun({})


# Rank 1 of a data-parallel run dies (a simulated crash) once a checkpoint exists.
DIE_AFTER_CHECKPOINT = """
import os, runpy, sys, threading, time
from pathlib import Path
from dlfun.process_env import ENV_PROCESS_ID
run_dir, args = Path(sys.argv[1]), sys.argv[2:]
if os.environ.get(ENV_PROCESS_ID) == "1":
    def die():
        while not any(p.name.isdigit() for p in run_dir.glob("checkpoints/*/*")):
            time.sleep(0.005)
        os._exit(9)
    threading.Thread(target=die, daemon=True).start()
sys.argv = ["data_parallel", *args]
runpy.run_module("experiments.data_parallel", run_name="__main__")
"""


@pytest.mark.devices(4)
def test_a_run_whose_rank_died_resumes_from_its_last_checkpoint(tmp_path):
    run = tmp_path / "two"
    args = ["--preset", "smoke", "--devices", "4", "--no-check", "--max-steps", "16",
            "--checkpoint-every-steps", "2", "--run-dir", str(run)]
    launcher = ["--nproc", "2", "--devices-per-proc", "2", "--timeout", "300", "--"]
    proc, seconds = launch([*launcher, sys.executable, "-c", DIE_AFTER_CHECKPOINT, str(run),
                            *args])
    assert proc.returncode != 0 and "rank 1 exited with status 9" in proc.stderr
    assert seconds < 120
    assert not (run / "final_params.npz").exists()  # it really died before the end
    proc, _ = launch([*launcher, sys.executable, "-m", "experiments.data_parallel", *args,
                      "--resume"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["resumed"] and 2 <= summary["start_step"] < 16 and summary["steps"] == 16 - summary["start_step"]
    # One process, 4 devices, no interruption: the same parameters.
    cfg = dataclasses.replace(data_parallel.PRESETS["smoke"], devices=4, max_steps=16,
                              check=False, run_dir=str(tmp_path / "one"))
    data_parallel.main(cfg)
    one = load_params(tmp_path / "one" / "final_params.npz")
    two = load_params(run / "final_params.npz")
    for k in one:
        np.testing.assert_allclose(two[k], one[k], atol=1e-6, rtol=0, err_msg=k)
