"""Kill runs at random moments and resume them: do they end bit-for-bit where an
uninterrupted run ends?

For each experiment: one uninterrupted reference run, then a chaos run that is killed with
SIGKILL ``--kills`` times (each after the restarted run has written 1-5 new checkpoints plus a
random fraction of a second, and every third time while a checkpoint is being written) and
restarted with ``--resume`` after each kill (from scratch if no checkpoint exists
yet). After every kill the newest checkpoint must be readable. At the end the final
checkpoints of both runs are compared array by array.

    python -m benchmarks.chaos_resume [--experiments mlp cnn gan dqn] [--kills 20] [--seed 0]

Prints a table (kills, resumes, failed resumes, unreadable checkpoints, max |Δparam|, bitwise
equal) and writes bench_results/chaos_resume.json.
"""

from __future__ import annotations

import argparse
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

# Each experiment's arguments for a short run with a checkpoint after every epoch (period for
# DQN), and how many checkpoints that run writes: each kill waits for 1-5 new ones, fewer when
# the kills still to come need the rest.
EXPERIMENTS: dict[str, tuple[list[str], int]] = {
    "mlp": (["--preset", "smoke", "--epochs", "60", "--checkpoint-every-epochs", "1"], 60),
    "cnn": (["--preset", "smoke", "--epochs", "30", "--checkpoint-every-epochs", "1",
             "--cam-images", "0"], 30),
    "gan": (["--preset", "smoke", "--data", "gaussians8", "--checkpoint-every-epochs", "1"],
            24),
    "dqn": (["--preset", "smoke", "--periods", "30", "--checkpoint-every-periods", "1"], 30),
}
TMP_MARK = ".orbax-checkpoint-tmp"


def command(name: str, run_dir: Path, resume: bool) -> list[str]:
    return [sys.executable, "-m", f"experiments.{name}", *EXPERIMENTS[name][0],
            "--run-dir", str(run_dir), *(["--resume"] if resume else [])]


def launch(cmd: list[str]) -> subprocess.Popen:
    return subprocess.Popen(cmd, cwd=harness.REPO_ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def checkpoint_dirs(run_dir: Path) -> list[Path]:
    return sorted(p for p in (run_dir / "checkpoints").glob("*") if p.is_dir())


def saving_now(run_dir: Path) -> bool:
    """Whether a checkpoint is being written (orbax's temporary folder exists)."""
    return any(TMP_MARK in p.name for p in (run_dir / "checkpoints").glob("*/*"))


def newest_step(run_dir: Path) -> int:
    """Progress in checkpoints: the sum over models of each one's newest finished step (a run
    that trains several models one after another keeps counting up)."""
    total = 0
    for d in checkpoint_dirs(run_dir):
        total += max((int(p.name) for p in d.iterdir() if p.name.isdigit()), default=0)
    return total


def kill_when(proc: subprocess.Popen, run_dir: Path, during_save: bool, new_checkpoints: int,
              delay: float) -> bool:
    """SIGKILL the run once it has written ``new_checkpoints`` checkpoints beyond the newest at
    launch: ``delay`` s later, or (``during_save``) as soon as the next write starts. Counting
    progress rather than wall time keeps every kill inside training however slow start-up
    is. False if the run finished first."""
    target = newest_step(run_dir) + new_checkpoints
    armed_at = None
    while proc.poll() is None:
        if armed_at is None and newest_step(run_dir) >= target:
            armed_at = time.perf_counter()
        if armed_at is not None and (saving_now(run_dir) if during_save
                                     else time.perf_counter() - armed_at >= delay):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.001)
    return False


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


def chaos_run(name: str, kills: int, rng: random.Random, work: Path) -> dict:
    """Run ``name`` to completion through ``kills`` SIGKILLs; return the counts."""
    total = EXPERIMENTS[name][1]
    run_dir = work / f"{name}_chaos"
    stats = dict(kills=0, kills_during_save=0, resumes=0, failed_resumes=0, fresh_restarts=0,
                 unreadable_checkpoints=0)
    started = False
    while True:
        resume = started and has_checkpoint(run_dir)
        if started and not resume:
            shutil.rmtree(run_dir)  # killed before its first checkpoint: start over
            stats["fresh_restarts"] += 1
        stats["resumes"] += int(resume)
        proc = launch(command(name, run_dir, resume))
        started = True
        if stats["kills"] < kills:
            during_save = stats["kills"] % 3 == 2
            left = total - max(newest_step(run_dir), 0) - 1
            most = max(1, min(5, left // (kills - stats["kills"])))
            if kill_when(proc, run_dir, during_save, rng.randint(1, most), rng.uniform(0.0, 0.1)):
                stats["kills"] += 1
                stats["kills_during_save"] += int(during_save)
                stats["unreadable_checkpoints"] += int(not newest_readable(run_dir))
                continue
        err = proc.communicate()[1]
        if proc.returncode != 0:
            stats["failed_resumes"] += 1
            print(f"  {name}: run exited {proc.returncode}: {err.strip()[-500:]}")
            if stats["failed_resumes"] > 3:
                raise RuntimeError(f"{name}: resumed runs keep failing")
            continue
        return stats


def run_experiment(name: str, kills: int, seed: int, work: Path) -> dict:
    ref = work / f"{name}_reference"
    t0 = time.perf_counter()
    subprocess.run(command(name, ref, False), cwd=harness.REPO_ROOT, check=True,
                   stdout=subprocess.DEVNULL)
    span = time.perf_counter() - t0
    stats = chaos_run(name, kills, random.Random(seed), work)
    max_diff, same = compare(final_arrays(ref), final_arrays(work / f"{name}_chaos"))
    return dict(experiment=name, **stats, max_abs_param_diff=max_diff, bitwise_equal=same,
                reference_seconds=round(span, 1))


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--experiments", nargs="+", default=list(EXPERIMENTS),
                    choices=list(EXPERIMENTS), help="experiments to torture (default: all)")
    ap.add_argument("--kills", type=int, default=20, help="SIGKILLs per experiment (default 20)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the kill schedule")
    ap.add_argument("--out", type=Path, default=Path("bench_results/chaos_resume.json"))
    ap.add_argument("--keep", action="store_true", help="keep the run directories")
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="dlfun_chaos_"))
    try:
        rows = [run_experiment(n, args.kills, args.seed, work) for n in args.experiments]
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    harness.print_table(rows, ["experiment", "kills", "kills_during_save", "resumes",
                               "fresh_restarts", "failed_resumes", "unreadable_checkpoints",
                               "max_abs_param_diff", "bitwise_equal"],
                        title="Kill -9 and resume vs an uninterrupted run")
    harness.write_json(args.out, dict(benchmark="chaos_resume", rows=rows))
    return rows


if __name__ == "__main__":
    main()
