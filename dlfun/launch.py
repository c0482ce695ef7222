"""Start a multi-process JAX program on this machine (a convenience for trying and testing
multi-process code; on a cluster use its own launcher, e.g. ``srun``).

::

    python -m dlfun.launch --nproc 2 --devices-per-proc 2 -- \\
        python -m experiments.data_parallel --devices 4

starts the command ``--nproc`` times. Each copy gets ``DLFUN_COORDINATOR`` (the loopback
address 127.0.0.1 and a free port), ``DLFUN_NUM_PROCESSES`` and ``DLFUN_PROCESS_ID`` (which
:func:`dlfun.parallel.distributed.initialize` passes to ``jax.distributed.initialize``, binding
the coordinator to that loopback address only, so no other host can reach it) and
``--devices-per-proc`` simulated CPU devices. Output lines are prefixed with ``[rank i]``.
If any process fails, the launcher stops the others and exits with its status, naming the
failed rank, instead of leaving the rest hanging in a collective. Bad arguments (a value out
of range, a command that does not exist, a port in use) end it with one line and status 2.
"""

from __future__ import annotations

import argparse
import errno
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import IO, Sequence

from .errors import ConfigError
from .process_env import (ENV_COORDINATOR, ENV_NUM_PROCESSES, ENV_PROCESS_ID,
                          simulated_device_env)
from .validate import (check_finite_positive, check_int_range, flag_value,
                       terminal_text)

STOP_GRACE_S = 5.0
INTERRUPT_GRACE_S = 60.0
"""Seconds the processes get to checkpoint after the launcher is interrupted (a scheduler's
SIGTERM usually leaves a minute or more before its SIGKILL)."""
POLL_S = 0.1
LOOPBACK = "127.0.0.1"
"""The coordinator's address: every process runs on this machine, and nothing else should
reach the coordinator."""
MAX_PROCS = 256
MAX_DEVICES_PER_PROC = 1024
PROG = "python -m dlfun.launch"
EXAMPLE = "-- python -m experiments.data_parallel --devices 4"


def free_port() -> int:
    """A TCP port on the loopback address that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def check_port_free(port: int) -> None:
    """Raise ConfigError when ``port`` on the loopback address cannot be listened on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((LOOPBACK, port))
        except OSError as e:
            why = "is in use" if e.errno == errno.EADDRINUSE else f"cannot be used ({e.strerror})"
            raise ConfigError(f"--port {port} on {LOOPBACK} {why}; choose another port or "
                              "leave --port out (a free one is picked)") from None


def check_command(command: Sequence[str]) -> None:
    """Raise ConfigError when ``command[0]`` is not an executable program."""
    program = command[0]
    if shutil.which(program) is not None:
        return
    if os.sep in program and os.path.isfile(program):
        raise ConfigError(f"{program} is not executable; make it so (chmod +x) or run it "
                          f"through its interpreter, e.g. -- python {program}")
    where = "not found" if os.sep in program else "not found on PATH"
    raise ConfigError(f"command {program!r} {where}; put the program to run after --, e.g. "
                      f"{EXAMPLE}")


def rank_env(rank: int, nproc: int, devices_per_proc: int, port: int) -> dict[str, str]:
    """The environment of process ``rank``."""
    env = simulated_device_env(devices_per_proc)
    env.update({ENV_COORDINATOR: f"{LOOPBACK}:{port}", ENV_NUM_PROCESSES: str(nproc),
                ENV_PROCESS_ID: str(rank), "PYTHONUNBUFFERED": "1"})
    return env


def _forward(stream: IO[bytes], out: IO[str], prefix: str) -> None:
    """Copy a child's output to ours line by line, prefixed with its rank."""
    for line in iter(stream.readline, b""):
        out.write(prefix + line.decode(errors="replace"))
        out.flush()
    stream.close()


def start(command: Sequence[str], nproc: int, devices_per_proc: int,
          port: int | None = None) -> tuple[list[subprocess.Popen], list[threading.Thread]]:
    """Start ``nproc`` copies of ``command`` (each in its own process group).

    Returns:
      the processes (index = rank) and the threads copying their output.
    Raises:
      ConfigError: the command cannot be started (the ranks already started are stopped).
    """
    port = port or free_port()
    procs, copiers = [], []
    for rank in range(nproc):
        try:
            p = subprocess.Popen(list(command), env=rank_env(rank, nproc, devices_per_proc, port),
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 start_new_session=True)
        except OSError as e:  # e.g. a script without a "#!" line: Exec format error
            stop(procs)
            raise ConfigError(f"cannot start {command[0]} ({e.strerror}); start it with a #! "
                              f"line or through its interpreter, e.g. -- bash {command[0]}"
                              ) from None
        for stream, out in ((p.stdout, sys.stdout), (p.stderr, sys.stderr)):
            copiers.append(threading.Thread(target=_forward, daemon=True,
                                            args=(stream, out, f"[rank {rank}] ")))
            copiers[-1].start()
        procs.append(p)
    return procs, copiers


def stop(procs: Sequence[subprocess.Popen], grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM the still-running processes (and their children), SIGKILL after ``grace_s``."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        alive = [p for p in procs if p.poll() is None]
        for p in alive:
            try:
                os.killpg(p.pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace_s
        while any(p.poll() is None for p in alive) and time.monotonic() < deadline:
            time.sleep(POLL_S)


def describe_exit(code: int) -> str:
    """'status 3' or 'signal SIGKILL'."""
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"status {code}"


def supervise(procs: Sequence[subprocess.Popen], timeout_s: float | None = None) -> int:
    """Wait for all processes; on the first failure (or timeout) stop the rest.

    Returns:
      0 if every process exited 0, else the failed process's status (1 for a signal or the
      timeout). A message naming the failed rank goes to stderr.
    """
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    # When each process ended: one that dies makes the others fail in their next collective
    # moments later, and the one named must be the first, not the lowest rank that has ended
    # by the next poll.
    ended: dict[int, float] = {}

    def note_end(rank: int, p: subprocess.Popen) -> None:
        p.wait()
        ended[rank] = time.monotonic()

    for rank, p in enumerate(procs):
        threading.Thread(target=note_end, args=(rank, p), daemon=True).start()
    while True:
        codes = [p.poll() for p in procs]
        failed = [(r, c) for r, c in enumerate(codes) if c not in (None, 0)]
        if failed:
            time.sleep(POLL_S)  # let the waiters note the order of what ended meanwhile
            codes = [p.poll() for p in procs]
            failed = [(r, c) for r, c in enumerate(codes) if c not in (None, 0)]
            rank, code = min(failed, key=lambda rc: ended.get(rc[0], math.inf))
            print(f"dlfun.launch: rank {rank} exited with {describe_exit(code)}; stopping the "
                  f"other {sum(c is None for c in codes)} running process(es)",
                  file=sys.stderr, flush=True)
            stop(procs)
            return code if code > 0 else 1
        if all(c == 0 for c in codes):
            return 0
        if deadline is not None and time.monotonic() > deadline:
            print(f"dlfun.launch: timed out after {timeout_s:g} s; stopping all processes",
                  file=sys.stderr, flush=True)
            stop(procs)
            return 1
        time.sleep(POLL_S)


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line (the problem and its fix), status 2, without the usage block."""

    def error(self, message: str):
        own = re.fullmatch(r"argument (\S+): (\1 .*)", message)  # from flag_value: has a fix
        line = own.group(2) if own else f"{message}; see {PROG} --help"
        self.exit(2, f"{PROG}: error: {line}\n")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The launcher's arguments, every value checked.

    Raises:
      SystemExit: (status 2, one line on stderr) a value out of range, no command, a command
        that is not an executable program, or a ``--port`` that is in use.
    """
    parser = _Parser(
        prog=PROG, description=terminal_text(__doc__.split("\n\n")[0]),
        usage=f"{PROG} [--nproc P] [--devices-per-proc D] [--port N] [--timeout S] -- "
              "command ...")
    parser.add_argument("--nproc", type=flag_value(int, "--nproc"), default=2,
                        help=f"processes to start, 1 to {MAX_PROCS} (default 2)")
    parser.add_argument("--devices-per-proc", type=flag_value(int, "--devices-per-proc"),
                        default=1,
                        help=f"simulated CPU devices per process, 1 to {MAX_DEVICES_PER_PROC} "
                             "(default 1)")
    parser.add_argument("--port", type=flag_value(int, "--port"), default=None,
                        help=f"coordinator port on {LOOPBACK}, 1 to 65535 (default: a free one)")
    parser.add_argument("--timeout", type=flag_value(float, "--timeout"), default=None,
                        help="stop everything after this many seconds, a number > 0 (default: "
                             "no limit)")
    parser.add_argument("command", nargs=argparse.REMAINDER,
                        help="the program to run, after --")
    args = parser.parse_args(argv)
    if args.command and args.command[0] == "--":
        args.command = args.command[1:]
    if not args.command:
        parser.exit(2, f"{PROG}: error: no command given; put it after --, e.g. {EXAMPLE}\n")
    try:
        check_int_range("nproc", args.nproc, 1, MAX_PROCS)
        check_int_range("devices_per_proc", args.devices_per_proc, 1, MAX_DEVICES_PER_PROC)
        if args.port is not None:
            check_port_free(check_int_range("port", args.port, 1, 65535))
        if args.timeout is not None:
            check_finite_positive("timeout", args.timeout)
        check_command(args.command)
    except ConfigError as e:
        parser.exit(2, f"{PROG}: error: {e}\n")
    return args


class _Signalled(KeyboardInterrupt):
    """The launcher got SIGTERM or SIGINT (``signum``)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _interrupt(signum, frame):
    raise _Signalled(signum)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the launcher; returns the exit status."""
    args = parse_args(argv)
    # The children run in their own sessions, so a SIGTERM to the launcher must reach them.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    try:
        procs, copiers = start(args.command, args.nproc, args.devices_per_proc, args.port)
    except ConfigError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    try:
        return supervise(procs, args.timeout)
    except KeyboardInterrupt as e:
        signum = getattr(e, "signum", signal.SIGINT)
        print(f"dlfun.launch: {signal.Signals(signum).name}: asking every process to save and "
              f"stop (SIGKILL after {INTERRUPT_GRACE_S:.0f} s)", file=sys.stderr)
        # each dlfun process finishes its step, checkpoints and exits 128 + signal
        stop(procs, INTERRUPT_GRACE_S)
        return 128 + signum
    finally:
        for t in copiers:  # let the last lines of output through
            t.join(timeout=STOP_GRACE_S)


if __name__ == "__main__":
    sys.exit(main())
