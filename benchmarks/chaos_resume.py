"""Interrupt runs at random moments and resume them: do they end bit-for-bit where an
uninterrupted run ends?

For each experiment: one uninterrupted reference run, then a chaos run that is interrupted
``--kills`` times and restarted with ``--resume`` after each interruption (``--resume`` is
idempotent: with nothing saved yet the run starts from the beginning; those restarts are
counted). Each interruption comes after the restarted run has advanced by 1-5 checkpoints'
worth of units (epochs, DQN periods, parallel steps: read from each checkpoint's
``meta/metadata``) plus a random fraction of a second:

* ``--signal kill`` (default): SIGKILL, every third one (the 2nd, 5th, ...) while a checkpoint
  is being written. Every process of the run goes (under ``dlfun.launch`` the ranks run in
  their own sessions, so they are found by the run directory on their command line). The
  newest checkpoint must be readable afterwards.
* ``--signal term``: SIGTERM. The run must exit 143 with a last stderr line "interrupted by
  SIGTERM ...", ``summary.json`` status ``interrupted``, and the checkpoint that line names
  must exist at or past the newest position saved before the signal.
* ``--signal both``: the two alternate (kill, term, kill, ...).

``--corrupt N``: after N of the interruptions every data file of each model's newest
checkpoint is truncated; the resume must set it aside (``<index>.unreadable``) and go on.
``--lock-check``: once per experiment, while the chaos run trains, a second process on the
same run directory with ``--resume`` must be refused (exit 2, "is in use by process").
At the end the final checkpoints of both runs are compared array by array, and
``metrics.jsonl`` must hold each record (model, epoch/period/step) once, as the reference does.

    python -m benchmarks.chaos_resume [--experiments mlp cnn gan dqn charlm data_parallel
        data_parallel_2proc] [--kills 20] [--signal kill|term|both] [--corrupt N]
        [--lock-check] [--seed 0]

Prints a table and writes bench_results/chaos_resume.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import harness
from dlfun.runs.rundir import has_checkpoint
from dlfun.validate import terminal_text

LAUNCHER = ["-m", "dlfun.launch", "--nproc", "2", "--devices-per-proc", "2", "--"]
_DP = ["--preset", "smoke", "--devices", "4", "--epochs", "12", "--max-steps", "none",
       "--no-check", "--checkpoint-every-steps", "2"]


@dataclasses.dataclass(frozen=True)
class Spec:
    """One experiment's chaos schedule.

    Attributes:
      module: ``experiments.<module>``.
      args: flags of a short run that checkpoints often.
      units: the units (epochs, periods or steps) the run trains in all.
      every: units between checkpoints.
      launcher: run it as 2 processes x 2 devices under ``dlfun.launch``.
    """
    module: str
    args: tuple[str, ...]
    units: int
    every: int = 1
    launcher: bool = False


EXPERIMENTS: dict[str, Spec] = {
    "mlp": Spec("mlp", ("--preset", "smoke", "--epochs", "60", "--checkpoint-every-epochs",
                        "1"), 60),
    "cnn": Spec("cnn", ("--preset", "smoke", "--epochs", "30", "--checkpoint-every-epochs", "1",
                        "--cam-images", "0"), 30),
    "gan": Spec("gan", ("--preset", "smoke", "--data", "gaussians8",
                        "--checkpoint-every-epochs", "1"), 24),
    "dqn": Spec("dqn", ("--preset", "smoke", "--periods", "30", "--checkpoint-every-periods",
                        "1"), 30),
    "charlm": Spec("charlm", ("--preset", "smoke", "--epochs", "60",
                              "--checkpoint-every-epochs", "1"), 60),
    # The digits' training split is 19 batches of 64: 12 epochs are 228 steps, a checkpoint
    # every 2 (room for 20 interruptions of 1-5 checkpoints each).
    "data_parallel": Spec("data_parallel", tuple(_DP), 228, every=2),
    "data_parallel_2proc": Spec("data_parallel", tuple(_DP), 228, every=2, launcher=True),
}
TMP_MARK = ".orbax-checkpoint-tmp"
UNIT_KEYS = ("epoch", "period", "step")  # a checkpoint position's unit, first found
STOP_TIMEOUT_S = 600.0


# -- processes -----------------------------------------------------------------------------
def command(name: str, run_dir: Path, resume: bool) -> list[str]:
    spec = EXPERIMENTS[name]
    run = ["-m", f"experiments.{spec.module}", *spec.args, "--run-dir", str(run_dir),
           *(["--resume"] if resume else [])]
    return [sys.executable, *LAUNCHER, sys.executable, *run] if spec.launcher else \
        [sys.executable, *run]


def child_env(name: str) -> dict[str, str]:
    """The launcher sets each rank's devices itself (a simulated-device count inherited from a
    test session would fight it)."""
    if not EXPERIMENTS[name].launcher:
        return dict(os.environ)
    return {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "PJRT_NPROC")}


def launch(name: str, cmd: list[str], err_file: Path) -> subprocess.Popen:
    """Start ``cmd`` in its own session, stderr to ``err_file`` (a pipe nobody reads while
    the run trains could fill up and stall it)."""
    with err_file.open("w") as err:
        return subprocess.Popen(cmd, cwd=harness.REPO_ROOT, stdout=subprocess.DEVNULL,
                                stderr=err, text=True, start_new_session=True,
                                env=child_env(name))


def run_pids(run_dir: Path) -> list[int]:
    """Live processes whose command line names ``run_dir`` (every rank of a launched run)."""
    want, pids = str(run_dir).encode(), []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit() or int(p.name) == os.getpid():
            continue
        try:
            args = (p / "cmdline").read_bytes().split(b"\0")
        except OSError:  # gone meanwhile
            continue
        if want in args:
            pids.append(int(p.name))
    return pids


def kill_run(proc: subprocess.Popen, run_dir: Path, timeout_s: float = 60.0) -> None:
    """SIGKILL the run's process group and every other process of the run; return once none
    is left (a leftover rank would still hold the run's lock)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
    deadline = time.monotonic() + timeout_s
    while pids := run_pids(run_dir):
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"processes {pids} of {run_dir} survive SIGKILL")
        time.sleep(0.05)


# -- progress ------------------------------------------------------------------------------
def checkpoint_dirs(run_dir: Path) -> list[Path]:
    return sorted(p for p in (run_dir / "checkpoints").glob("*") if p.is_dir())


def saving_now(run_dir: Path) -> bool:
    """Whether a checkpoint is being written (orbax's temporary folder exists)."""
    return any(TMP_MARK in p.name for p in (run_dir / "checkpoints").glob("*/*"))


def newest_positions(run_dir: Path) -> dict[str, tuple[int, dict]]:
    """``{model: (index, position)}`` of each model's newest finished checkpoint (folders
    named by digits only; the position is its ``meta/metadata``)."""
    out = {}
    for d in checkpoint_dirs(run_dir):
        try:
            indices = sorted((int(p.name) for p in d.iterdir() if p.name.isdigit()),
                             reverse=True)
        except OSError:
            continue
        for index in indices:
            try:
                position = json.loads((d / str(index) / "meta" / "metadata").read_text())
            except (OSError, ValueError):  # rotated away meanwhile, or unreadable
                continue
            out[d.name] = (index, position)
            break
    return out


def units(position: dict) -> int:
    """The finished units (epochs, periods or steps) at a checkpoint position."""
    return int(next(position[k] for k in UNIT_KEYS if k in position))


def order(position: dict) -> tuple[int, ...]:
    """A position as a tuple that orders like training time (e.g. epoch, then batch)."""
    return tuple(int(v) for v in position.values() if isinstance(v, (int, float)))


def progress(run_dir: Path) -> int:
    """Units of progress: the sum over models of each one's newest finished checkpoint (a
    run that trains several models one after another keeps counting up)."""
    return sum(units(pos) for _, pos in newest_positions(run_dir).values())


# -- checks --------------------------------------------------------------------------------
def newest_readable(run_dir: Path) -> bool:
    """Whether every model's newest checkpoint loads (the state a resume would use)."""
    from dlfun.train.checkpoint import Checkpointer

    for d in checkpoint_dirs(run_dir):
        ck = Checkpointer(d)
        try:
            if ck.steps():
                ck.load_raw()
        except Exception:
            return False
        finally:
            ck.close()
    return True


def corrupt_newest(run_dir: Path) -> int:
    """Truncate to half every data file (under ``state/``) of each model's newest checkpoint;
    returns how many checkpoints were damaged."""
    n = 0
    for model, (index, _) in newest_positions(run_dir).items():
        state = run_dir / "checkpoints" / model / str(index) / "state"
        files = [p for p in state.rglob("*") if p.is_file() and p.stat().st_size > 8]
        for f in files:
            f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
        n += bool(files)
    return n


def set_aside(run_dir: Path) -> int:
    """Checkpoints a resume set aside as unreadable."""
    return sum(".unreadable" in p.name for p in (run_dir / "checkpoints").glob("*/*"))


def metric_keys(run_dir: Path) -> list[tuple]:
    """One key per metrics record: the model and its epoch/period/step."""
    keys = []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        keys.append((r.get("model"), *(r.get(k) for k in UNIT_KEYS)))
    return keys


def final_arrays(run_dir: Path) -> dict:
    """``{model: saved arrays}`` of each model's newest checkpoint."""
    from dlfun.train.checkpoint import Checkpointer

    out = {}
    for d in checkpoint_dirs(run_dir):
        ck = Checkpointer(d)
        out[d.name] = ck.load_raw()[0]
        ck.close()
    return out


def compare(a: dict, b: dict) -> tuple[float, bool]:
    """Max |difference| over all arrays, and whether they are bitwise identical."""
    import jax
    import numpy as np

    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    if jax.tree.structure(a) != jax.tree.structure(b):
        return float("inf"), False
    diffs = [float(np.max(np.abs(x.astype(np.float64) - y))) if x.size else 0.0
             for x, y in zip(la, lb)]
    same = all(x.dtype == y.dtype and x.tobytes() == y.tobytes() for x, y in zip(la, lb))
    return max(diffs, default=0.0), same


def last_line(text: str) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def check_sigterm(proc: subprocess.Popen, run_dir: Path, err_file: Path,
                  before: dict[str, tuple[int, dict]], launched: bool) -> list[str]:
    """The SIGTERMed run's ending, against the contract; returns the problems found."""
    problems = []
    try:
        proc.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        kill_run(proc, run_dir)
        return [f"did not stop within {STOP_TIMEOUT_S:g} s of SIGTERM"]
    if run_pids(run_dir):
        kill_run(proc, run_dir)
        problems.append("processes of the run were left running after the SIGTERM")
    err = err_file.read_text()
    line = last_line(err)
    if launched:  # the ranks' lines come through the launcher, prefixed "[rank N] "
        line = next((ln.split("] ", 1)[1] for ln in reversed(err.splitlines())
                     if ln.startswith("[rank 0] ") and "interrupted by" in ln), line)
    if proc.returncode != 143:
        problems.append(f"exit {proc.returncode}, not 143")
    if not line.startswith("interrupted by SIGTERM"):
        problems.append(f"last stderr line {line[-200:]!r}")
    try:
        status = json.loads((run_dir / "summary.json").read_text()).get("status")
    except (OSError, ValueError):
        status = None
    if status != "interrupted":
        problems.append(f"summary.json status {status!r}")
    # "interrupted by SIGTERM at <position> of <model>; saved <path>; continue with ..."
    saved = Path(line.split("; saved ", 1)[1].split("; ", 1)[0]) if "; saved " in line \
        else None
    if saved is None or not saved.name.isdigit() or not saved.is_dir():
        problems.append(f"no checkpoint named in, or existing at, {line[-200:]!r}")
        return problems
    position = json.loads((saved / "meta" / "metadata").read_text())
    if saved.parent.name in before and order(position) < order(before[saved.parent.name][1]):
        problems.append(f"saved {position} behind the newest before the signal, "
                        f"{before[saved.parent.name][1]}")
    return problems


def lock_holder(run_dir: Path) -> int | None:
    """The pid in the run's ``.lock`` if that process is one of the run's, else None."""
    try:
        pid = int((run_dir / ".lock").read_text().strip() or "0")
    except (OSError, ValueError):
        return None
    return pid if pid in run_pids(run_dir) else None


def start_second(name: str, run_dir: Path, proc: subprocess.Popen, err_file: Path
                 ) -> subprocess.Popen | None:
    """Once the run holds its lock, start a second process on it with ``--resume`` (None if
    the run ended first)."""
    while proc.poll() is None and lock_holder(run_dir) is None:
        time.sleep(0.01)
    return launch(name, command(name, run_dir, True), err_file) if proc.poll() is None \
        else None


def second_refused(second: subprocess.Popen, err_file: Path) -> tuple[bool, str]:
    """Whether the second process was refused (exit 2, naming the holder), and how it
    ended."""
    second.wait()
    err = err_file.read_text()
    return (second.returncode == 2 and "is in use by process" in err,
            f"exit {second.returncode}: {last_line(err)[-300:]}")


# -- the chaos run -------------------------------------------------------------------------
def interrupt_when(proc: subprocess.Popen, run_dir: Path, sig: signal.Signals,
                   during_save: bool, ahead: int, delay: float, launched: bool = False,
                   hold: subprocess.Popen | None = None) -> dict[str, tuple[int, dict]] | None:
    """Signal the run once it has advanced ``ahead`` units beyond its progress now:
    ``delay`` s later, or (``during_save``) as soon as the next checkpoint write starts.
    Counting progress rather than wall time keeps every signal inside training however slow
    start-up is. Returns the newest checkpoints just before the signal, None if the run
    finished first. A SIGTERM goes to the run's process group, or to the launcher alone
    (``launched``), which passes it on to its ranks. No signal while ``hold`` (a second
    process trying the run's lock) still runs."""
    target = progress(run_dir) + ahead
    armed_at = None
    while proc.poll() is None:
        if armed_at is None and progress(run_dir) >= target:
            armed_at = time.perf_counter()
        ready = armed_at is not None and (hold is None or hold.poll() is not None)
        if ready and (saving_now(run_dir) if during_save
                      else time.perf_counter() - armed_at >= delay):
            before = newest_positions(run_dir)
            if sig == signal.SIGKILL:
                kill_run(proc, run_dir)
            else:
                try:
                    (os.kill if launched else os.killpg)(proc.pid, sig)
                except ProcessLookupError:
                    pass
            return before
        time.sleep(0.001 if ready else 0.01)  # reading progress costs the run CPU time
    return None


def chaos_run(name: str, kills: int, sig_mode: str, corrupt: int, check_lock: bool,
              rng: random.Random, work: Path) -> dict:
    """Run ``name`` to completion through ``kills`` interruptions; return the counts."""
    spec = EXPERIMENTS[name]
    run_dir = work / f"{name}_chaos"
    signals = [signal.SIGTERM if sig_mode == "term" or (sig_mode == "both" and i % 2)
               else signal.SIGKILL for i in range(kills)]
    corrupt_after = set(rng.sample(range(kills), min(corrupt, kills)))
    stats = dict(kills=0, kills_during_save=0, sigterms=0, resumes=0, failed_resumes=0,
                 fresh_restarts=0, unreadable_checkpoints=0, corrupted=0, lock_refused=0)
    problems: list[str] = []
    started, done, second = False, 0, None
    while True:
        if started:
            stats["resumes"] += 1
            stats["fresh_restarts"] += int(not has_checkpoint(run_dir))
        err_file = work / f"{name}_chaos.{stats['resumes']}.err"
        proc = launch(name, command(name, run_dir, started), err_file)
        if check_lock and not started:
            second = start_second(name, run_dir, proc, work / f"{name}_second.err")
        started = True
        if done < kills:
            sig = signals[done]
            during_save = sig == signal.SIGKILL and stats["kills"] % 3 == 1
            left_checkpoints = (spec.units - progress(run_dir)) // spec.every - 1
            most = max(1, min(5, left_checkpoints // (kills - done)))
            before = interrupt_when(proc, run_dir, sig, during_save,
                                    rng.randint(1, most) * spec.every, rng.uniform(0.0, 0.1),
                                    spec.launcher, second)
            if before is not None:
                if sig == signal.SIGKILL:
                    stats["kills"] += 1
                    stats["kills_during_save"] += int(during_save)
                    stats["unreadable_checkpoints"] += int(not newest_readable(run_dir))
                else:
                    found = check_sigterm(proc, run_dir, err_file, before, spec.launcher)
                    if proc.returncode == 0:  # the signal came after the last step: done
                        break
                    stats["sigterms"] += 1
                    problems += [f"SIGTERM {stats['sigterms']}: {p}" for p in found]
                if done in corrupt_after:
                    stats["corrupted"] += corrupt_newest(run_dir)
                done += 1
                continue
        proc.wait()
        if proc.returncode == 0:
            break
        stats["failed_resumes"] += 1
        print(f"  {name}: run exited {proc.returncode}: {err_file.read_text()[-500:]}")
        kill_run(proc, run_dir)
        if stats["failed_resumes"] > 3:
            raise RuntimeError(f"{name}: resumed runs keep failing")
    if second is not None:
        refused, how = second_refused(second, work / f"{name}_second.err")
        stats["lock_refused"] = int(refused)
        if not refused:
            problems.append(f"second process not refused ({how})")
    return dict(stats, set_aside=set_aside(run_dir), problems=problems)


def run_experiment(name: str, kills: int, sig_mode: str, corrupt: int, check_lock: bool,
                   seed: int, work: Path) -> dict:
    ref = work / f"{name}_reference"
    t0 = time.perf_counter()
    subprocess.run(command(name, ref, False), cwd=harness.REPO_ROOT, check=True,
                   stdout=subprocess.DEVNULL, env=child_env(name))
    span = time.perf_counter() - t0
    t0 = time.perf_counter()
    stats = chaos_run(name, kills, sig_mode, corrupt, check_lock, random.Random(seed), work)
    chaos = work / f"{name}_chaos"
    max_diff, same = compare(final_arrays(ref), final_arrays(chaos))
    keys = metric_keys(chaos)
    metrics_once = keys == metric_keys(ref) and len(set(keys)) == len(keys)
    if not metrics_once:
        stats["problems"].append(f"metrics.jsonl records differ from the reference's: {keys}")
    for p in stats["problems"]:
        print(f"  {name}: {p}")
    return dict(experiment=name, **stats, metrics_once=metrics_once,
                max_abs_param_diff=max_diff, bitwise_equal=same,
                reference_seconds=round(span, 1),
                chaos_seconds=round(time.perf_counter() - t0, 1))


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=terminal_text(__doc__),
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--experiments", nargs="+", default=list(EXPERIMENTS),
                    choices=list(EXPERIMENTS), help="experiments to torture (default: all)")
    ap.add_argument("--kills", type=int, default=20,
                    help="interruptions per experiment (default 20)")
    ap.add_argument("--signal", choices=("kill", "term", "both"), default="kill",
                    help="SIGKILL, SIGTERM, or the two alternating (default kill)")
    ap.add_argument("--corrupt", type=int, default=0, metavar="N",
                    help="after N of the interruptions, truncate the newest checkpoint")
    ap.add_argument("--lock-check", action="store_true",
                    help="start a second process on each chaos run: it must be refused")
    ap.add_argument("--seed", type=int, default=0, help="seed of the interruption schedule")
    ap.add_argument("--out", type=Path, default=Path("bench_results/chaos_resume.json"))
    ap.add_argument("--keep", action="store_true", help="keep the run directories")
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="dlfun_chaos_"))
    try:
        rows = [run_experiment(n, args.kills, args.signal, args.corrupt, args.lock_check,
                               args.seed, work) for n in args.experiments]
    finally:
        if args.keep:
            print(f"run directories kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    harness.print_table(rows, ["experiment", "kills", "kills_during_save", "sigterms",
                               "resumes", "fresh_restarts", "failed_resumes",
                               "unreadable_checkpoints", "corrupted", "set_aside",
                               "lock_refused", "metrics_once", "max_abs_param_diff",
                               "bitwise_equal"],
                        title="Interrupt (kill -9 / SIGTERM) and resume vs an uninterrupted run")
    harness.write_json(args.out, dict(benchmark="chaos_resume", argv=sys.argv[1:], rows=rows))
    return rows


if __name__ == "__main__":
    main()
