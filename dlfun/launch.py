"""Start a multi-process JAX program on this machine (a convenience for trying and testing
multi-process code; on a cluster use its own launcher, e.g. ``srun``).

::

    python -m dlfun.launch --nproc 2 --devices-per-proc 2 -- \\
        python -m experiments.data_parallel --devices 4

starts the command ``--nproc`` times. Each copy gets ``DLFUN_COORDINATOR`` (localhost and a
free port), ``DLFUN_NUM_PROCESSES`` and ``DLFUN_PROCESS_ID`` (which
:func:`dlfun.parallel.distributed.initialize` passes to ``jax.distributed.initialize``) and
``--devices-per-proc`` simulated CPU devices. Output lines are prefixed with ``[rank i]``.
If any process fails, the launcher stops the others and exits with its status, naming the
failed rank, instead of leaving the rest hanging in a collective.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import IO, Sequence

from .process_env import (ENV_COORDINATOR, ENV_NUM_PROCESSES, ENV_PROCESS_ID,
                          simulated_device_env)

STOP_GRACE_S = 5.0
POLL_S = 0.1


def free_port() -> int:
    """A TCP port on localhost that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rank_env(rank: int, nproc: int, devices_per_proc: int, port: int) -> dict[str, str]:
    """The environment of process ``rank``."""
    env = simulated_device_env(devices_per_proc)
    env.update({ENV_COORDINATOR: f"localhost:{port}", ENV_NUM_PROCESSES: str(nproc),
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
    """
    port = port or free_port()
    procs, copiers = [], []
    for rank in range(nproc):
        p = subprocess.Popen(list(command), env=rank_env(rank, nproc, devices_per_proc, port),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             start_new_session=True)
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
    while True:
        codes = [p.poll() for p in procs]
        failed = [(r, c) for r, c in enumerate(codes) if c not in (None, 0)]
        if failed:
            rank, code = failed[0]
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


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m dlfun.launch", description=__doc__.split("\n\n")[0],
        usage="python -m dlfun.launch [--nproc P] [--devices-per-proc D] -- command ...")
    parser.add_argument("--nproc", type=int, default=2, help="processes to start (default 2)")
    parser.add_argument("--devices-per-proc", type=int, default=1,
                        help="simulated CPU devices per process (default 1)")
    parser.add_argument("--port", type=int, default=None,
                        help="coordinator port on localhost (default: a free one)")
    parser.add_argument("--timeout", type=float, default=None,
                        help="stop everything after this many seconds (default: no limit)")
    parser.add_argument("command", nargs=argparse.REMAINDER,
                        help="the program to run, after --")
    args = parser.parse_args(argv)
    if args.command and args.command[0] == "--":
        args.command = args.command[1:]
    if not args.command:
        parser.error("no command given; put it after --, e.g. -- python -m "
                     "experiments.data_parallel --devices 4")
    if args.nproc < 1 or args.devices_per_proc < 1:
        parser.error("--nproc and --devices-per-proc must be at least 1")
    return args


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    """Run the launcher; returns the exit status."""
    args = parse_args(argv)
    # The children run in their own sessions, so a SIGTERM to the launcher must reach them.
    signal.signal(signal.SIGTERM, _interrupt)
    procs, copiers = start(args.command, args.nproc, args.devices_per_proc, args.port)
    try:
        return supervise(procs, args.timeout)
    except KeyboardInterrupt:
        print("dlfun.launch: interrupted; stopping all processes", file=sys.stderr)
        stop(procs)
        return 130
    finally:
        for t in copiers:  # let the last lines of output through
            t.join(timeout=STOP_GRACE_S)


if __name__ == "__main__":
    sys.exit(main())
