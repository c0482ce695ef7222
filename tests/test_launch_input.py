"""python -m dlfun.launch with bad arguments: one line naming the problem and the fix, exit 2,
no process started; a command that runs and fails still stops the others, naming its rank."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable


def launch(args, timeout=60):
    return subprocess.run([PY, "-m", "dlfun.launch", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def no_shebang_script(tmp_path):
    script = tmp_path / "script.sh"  # executable but not a program: execve says ENOEXEC
    script.write_text("echo started\n")
    script.chmod(0o755)
    return ["--", str(script)]


def plain_file(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not a program\n")
    text.chmod(0o644)
    return ["--", str(text)]


ECHO = ["--", PY, "-c", "print('started')"]  # a command that would run


@pytest.mark.parametrize("args,expected", [
    (["--timeout", "nan", *ECHO], "--timeout nan is not a finite number; use a finite number > 0"),
    (["--timeout", "inf", *ECHO], "--timeout inf is not a finite number; use a finite number > 0"),
    (["--timeout", "-5", *ECHO], "--timeout -5 is out of range; use a finite number > 0"),
    (["--timeout", "0", *ECHO], "--timeout 0 is out of range; use a finite number > 0"),
    (["--timeout", "soon", *ECHO], "--timeout expects a number, got 'soon'"),
    (["--port", "99999", *ECHO], "--port 99999 is out of range; use an integer in [1, 65535]"),
    (["--port", "0", *ECHO], "--port 0 is out of range; use an integer in [1, 65535]"),
    (["--port", "-1", *ECHO], "--port -1 is out of range; use an integer in [1, 65535]"),
    (["--port", "80.5", *ECHO], "--port expects an integer, got '80.5'"),
    (["--nproc", "0", *ECHO], "--nproc 0 is out of range; use an integer in [1, 256]"),
    (["--nproc", "-2", *ECHO], "--nproc -2 is out of range; use an integer in [1, 256]"),
    (["--nproc", "100000", *ECHO], "--nproc 100000 is out of range; use an integer in [1, 256]"),
    (["--nproc", "two", *ECHO], "--nproc expects an integer, got 'two'"),
    (["--devices-per-proc", "0", *ECHO],
     "--devices-per-proc 0 is out of range; use an integer in [1, 1024]"),
    (["--nproc", "2"], "no command given; put it after --, e.g. -- python -m experiments."),
    (["--", "no_such_command"], "command 'no_such_command' not found on PATH; put the program "
                                "to run after --, e.g. -- python -m experiments."),
    (["--", "./no/such/program"], "command './no/such/program' not found; put the program"),
    (plain_file, "notes.txt is not executable; make it so (chmod +x) or run it through its "
                 "interpreter"),
    (no_shebang_script, "cannot start "),
    (["--nproc", "2", "--bogus", *ECHO], "unrecognized arguments: --bogus; see "
                                         "python -m dlfun.launch --help"),
])
def test_bad_arguments_end_in_one_line_and_status_2(tmp_path, args, expected):
    proc = launch(args(tmp_path) if callable(args) else args)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("python -m dlfun.launch: error: ")
    assert expected in lines[0]
    assert "started" not in proc.stdout  # nothing was run


def test_a_port_in_use_is_refused_before_anything_starts():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = launch(["--port", str(port), *ECHO])
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        f"python -m dlfun.launch: error: --port {port} on 127.0.0.1 is in use; choose another "
        "port or leave --port out (a free one is picked)"]
    assert "started" not in proc.stdout


FAIL_ON_RANK_1 = ("import os, sys, time\n"
                  "if os.environ['DLFUN_PROCESS_ID'] == '1':\n"
                  "    sys.exit(4)\n"
                  "print('rank 0 waiting', flush=True)\n"
                  "time.sleep(60)\n")


def test_a_command_that_runs_and_fails_stops_the_others_and_passes_its_status_on():
    proc = launch(["--nproc", "2", "--", PY, "-c", FAIL_ON_RANK_1], timeout=50)
    assert proc.returncode == 4
    assert ("dlfun.launch: rank 1 exited with status 4; stopping the other 1 running "
            "process(es)") in proc.stderr
    assert "Traceback" not in proc.stderr


def test_good_arguments_run_the_command_on_every_rank():
    code = "import os; print('rank', os.environ['DLFUN_PROCESS_ID'], 'of', " \
           "os.environ['DLFUN_NUM_PROCESSES'], os.environ['DLFUN_COORDINATOR'])"
    proc = launch(["--nproc", "3", "--timeout", "30", "--", PY, "-c", code])
    assert proc.returncode == 0, proc.stderr
    for rank in range(3):
        assert f"[rank {rank}] rank {rank} of 3 127.0.0.1:" in proc.stdout
