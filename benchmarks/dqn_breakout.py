"""Does DQN learn MinAtar-scale Breakout on a CPU? Greedy return over training vs random play.

Trains ``dlfun.rl.BREAKOUT`` (MinAtar Q-network: conv 16 3x3, dense 128) with the compiled
loop, printing each evaluation as it streams out, then compares the final and best greedy
returns with a uniformly random policy's. Usage::

    python benchmarks/dqn_breakout.py                # 205k env steps, seed 0
    python benchmarks/dqn_breakout.py --periods 4    # shorter
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from harness import print_table, write_json  # noqa: E402
from dlfun.validate import terminal_text  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=terminal_text(__doc__.split("\n")[0]))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--periods", type=int, default=8, help="evaluations (25k env steps each)")
    parser.add_argument("--random-episodes", type=int, default=1000)
    parser.add_argument("--out", default="bench_results/dqn_breakout.json")
    args = parser.parse_args()

    import jax

    from dlfun.rl import BREAKOUT, Breakout, evaluate_episodes, make_train, minatar_q_network

    cfg = dataclasses.replace(BREAKOUT, num_evals=args.periods)
    env, network = Breakout(), minatar_q_network(Breakout.num_actions)
    def log(m):
        print(f"  env steps {int(m['env_steps']):>7d}  greedy {float(m['eval_return']):6.2f}"
              f"  train {float(m['train_return']):6.2f}  loss {float(m['loss']):.4f}", flush=True)

    start = time.perf_counter()
    carry, metrics = jax.jit(make_train(cfg, env, network, on_period=log).train)(
        jax.random.key(args.seed))
    wall = time.perf_counter() - start
    random_returns = evaluate_episodes(env, network.apply, carry.train_state.params,
                                       jax.random.key(10_000), args.random_episodes, epsilon=1.0)
    greedy = np.asarray(metrics["eval_return"])
    rows = [dict(policy="uniform random", mean_return=float(random_returns.mean()),
                 episodes=args.random_episodes),
            dict(policy="DQN greedy, final", mean_return=float(greedy[-1]),
                 episodes=cfg.eval_episodes),
            dict(policy="DQN greedy, best eval", mean_return=float(greedy.max()),
                 episodes=cfg.eval_episodes)]
    print_table(rows, ["policy", "mean_return", "episodes"],
                title=f"Breakout (MinAtar scale), {cfg.total_env_steps} env steps, {wall:.0f} s")
    write_json(args.out, dict(rows=rows, wall_s=wall, env_steps=np.asarray(
        metrics["env_steps"]).tolist(), eval_return=greedy.tolist(),
        config=dataclasses.asdict(cfg)))


if __name__ == "__main__":
    main()
