"""How fast does dlfun's scan-compiled DQN train CartPole, against a host-loop PyTorch DQN?

Contenders, each in its own process, run interleaved (A B C D A B C D ...), medians reported:

* ``dlfun-1seed``: the compiled loop (``make_train``), one seed, run one evaluation period
  per jitted chunk so the time to solve can be read off (compile included);
* ``dlfun-16seeds``: the same loop vmapped over 16 seeds, the seeds split over one simulated
  CPU device per core (each device runs in its own thread: one vmapped program runs its
  small matmuls on one core) - what ``python -m experiments.dqn --num-seeds 16`` does;
* ``dlfun-16seeds-1dev``: the 16 vmapped seeds as one program on one device;
* ``dlfun-hostloop``: gymnasium's CartPole-v1 stepped in Python, the same jitted agent code;
* ``torch-hostloop``: a straightforward DQN in PyTorch + gymnasium written here, with the
  same hyperparameters (``dlfun.rl.CARTPOLE``: 8 envs, MLP 120-84, Adam 2e-3, batch 128,
  buffer 20k, one update per iteration, double DQN, Huber, clip 10, hard target copy every
  100 updates, epsilon 1 -> 0.05 over 10k steps, greedy evaluation of 10 episodes every 5k
  env steps).

"agent steps/s" counts environment steps of all seeds per second of wall time, evaluation
included; "solve s" is the wall time (compile included) until the first greedy evaluation
with mean return >= 475, within 200k env steps per seed. Usage::

    python benchmarks/dqn_speed.py                 # 3 interleaved rounds, all contenders
    python benchmarks/dqn_speed.py --rounds 1 --contenders dlfun-1seed,torch-hostloop
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from harness import Contender, emit_result, print_table, run_contender, write_json  # noqa: E402
from dlfun.validate import terminal_text  # noqa: E402

SOLVED = 475.0
STEP_LIMIT = 200_000
CONTENDERS = ("dlfun-1seed", "dlfun-16seeds", "dlfun-16seeds-1dev", "dlfun-hostloop",
              "torch-hostloop")


def measure_dlfun(num_seeds: int, gym_episodes: int, devices: int = 1) -> dict:
    """Compiled loop over ``num_seeds`` vmapped seeds (split over ``devices`` simulated CPU
    devices), one evaluation period per chunk: the programs ``python -m experiments.dqn``
    runs (:func:`dlfun.rl.run_compiled.compiled_functions`)."""
    from dlfun.platform import request_cpu_devices

    if devices > 1:
        request_cpu_devices(devices)  # before JAX starts its backend
    import jax

    from dlfun.rl import CARTPOLE as cfg, CartPole, MLPQNetwork
    from dlfun.rl.run_compiled import compiled_functions, seed_keys

    start = time.perf_counter()
    programs = compiled_functions(cfg, CartPole(), MLPQNetwork(2), num_seeds, devices)
    carry = programs.init(*programs.place(seed_keys(tuple(range(num_seeds)))))
    solved_steps, solved_s, ends = [None] * num_seeds, [None] * num_seeds, []
    for _ in range(cfg.num_evals):
        carry, metrics = programs.one_period(carry)
        returns = np.asarray(metrics["eval_return"]).reshape(num_seeds)
        steps = int(np.asarray(metrics["env_steps"]).reshape(-1)[0])
        now = time.perf_counter() - start
        ends.append(now)
        for i in np.flatnonzero((returns >= SOLVED) & (steps <= STEP_LIMIT)):
            if solved_steps[i] is None:
                solved_steps[i], solved_s[i] = steps, now
    steady = (len(ends) - 1) * cfg.env_steps_per_period * num_seeds / (ends[-1] - ends[0])
    out = dict(steps_per_s=steady, first_chunk_s=ends[0], total_s=ends[-1],
               solved=sum(s is not None for s in solved_steps), seeds=num_seeds,
               solved_steps=solved_steps, solved_s=solved_s, devices=jax.local_device_count(),
               solve_s=max(solved_s) if None not in solved_s else None)
    if gym_episodes:
        out["gym_returns"] = gym_check(carry, num_seeds, gym_episodes)
    return out


def gym_check(carry, num_seeds: int, episodes: int) -> list[float]:
    """Mean return of each seed's best parameters over ``episodes`` gymnasium episodes."""
    import jax

    from dlfun.rl import evaluate_gymnasium

    apply_fn = carry.train_state.apply_fn
    seed_params = ([carry.best_params] if num_seeds == 1 else
                   [jax.tree.map(lambda x: x[i], carry.best_params) for i in range(num_seeds)])
    return [float(evaluate_gymnasium(apply_fn, p, "CartPole-v1", episodes=episodes,
                                     seed=1000).mean()) for p in seed_params]


def measure_dlfun_host(max_periods: int) -> dict:
    """gymnasium CartPole-v1 in a Python loop around dlfun's jitted agent functions."""
    import jax

    from dlfun.rl import CARTPOLE as cfg, MLPQNetwork, make_vector_env, run_host_loop

    network = MLPQNetwork(2)
    envs = make_vector_env("CartPole-v1", cfg.num_envs)
    evals = make_vector_env("CartPole-v1", cfg.eval_episodes)
    q_fn = jax.jit(network.apply)

    def greedy_eval(params):
        return run_vector_episodes(evals, lambda obs: np.asarray(q_fn(params, obs)).argmax(1))

    start = time.perf_counter()
    _, records = run_host_loop(cfg, envs, network, jax.random.key(0),
                               max_periods * cfg.iterations_per_eval, eval_fn=greedy_eval)
    setup = time.perf_counter() - start - records[-1]["wall_s"]
    return dict(summarize_host(records), setup_s=setup)


def run_vector_episodes(envs, policy) -> float:
    """One episode per copy of ``envs`` (NEXT_STEP autoreset ignored: stop at first end)."""
    obs, _ = envs.reset(seed=int(np.random.randint(1 << 30)))
    returns = np.zeros(envs.num_envs)
    alive = np.ones(envs.num_envs, bool)
    while alive.any():
        obs, reward, terminated, truncated, _ = envs.step(policy(obs))
        returns += reward * alive
        alive &= ~(terminated | truncated)
    return float(returns.mean())


def summarize_host(records: list[dict]) -> dict:
    """steps/s and time to solve from the per-period records of a host loop."""
    solved = [r for r in records if r["eval_return"] >= SOLVED and r["env_steps"] <= STEP_LIMIT]
    total, first, last = records[-1]["wall_s"], records[0], records[-1]
    # Steady state between the first and last evaluation (no jit compile in the rate), as
    # for the compiled loop; a single period falls back to the whole run.
    rate = ((last["env_steps"] - first["env_steps"]) / (last["wall_s"] - first["wall_s"])
            if len(records) > 1 else last["env_steps"] / total)
    return dict(steps_per_s=rate, total_s=total,
                solved=int(bool(solved)), seeds=1,
                solve_s=solved[0]["wall_s"] if solved else None,
                solved_steps=[solved[0]["env_steps"] if solved else None],
                periods=len(records))


def measure_torch(max_periods: int, threads: int) -> dict:
    """The PyTorch + gymnasium host-loop DQN (same hyperparameters), stopped once solved."""
    import torch

    from dlfun.rl import CARTPOLE as cfg

    torch.set_num_threads(threads)  # 1 beat 2 for these tiny ops (2 spin-wait under load)
    torch.manual_seed(0)
    return summarize_host(torch_dqn(cfg, max_periods))


def torch_dqn(cfg, max_periods: int) -> list[dict]:
    """A plain DQN: gymnasium vector env, numpy replay, torch MLP, one update per iteration."""
    import gymnasium as gym
    import torch

    from dlfun.rl.gym_adapter import make_vector_env, vector_step

    def mlp():
        return torch.nn.Sequential(torch.nn.Linear(4, 120), torch.nn.ReLU(), torch.nn.Linear(
            120, 84), torch.nn.ReLU(), torch.nn.Linear(84, 2))

    q, target = mlp(), mlp()
    target.load_state_dict(q.state_dict())
    opt = torch.optim.Adam(q.parameters(), lr=cfg.learning_rate)
    envs, evals = make_vector_env("CartPole-v1", cfg.num_envs), gym.make_vec(
        "CartPole-v1", cfg.eval_episodes, vectorization_mode="sync")
    buf = TorchReplay(cfg.buffer_size)
    obs, _ = envs.reset(seed=0)
    rng, updates, records, start = np.random.default_rng(0), 0, [], time.perf_counter()
    for it in range(cfg.prefill_iterations + max_periods * cfg.iterations_per_eval):
        steps = it * cfg.num_envs
        eps = 1.0 if it < cfg.prefill_iterations else cfg.epsilon_start + (
            cfg.epsilon_end - cfg.epsilon_start) * min(steps / cfg.epsilon_decay_steps, 1.0)
        with torch.no_grad():
            greedy = q(torch.from_numpy(obs)).argmax(1).numpy()
        explore = rng.random(cfg.num_envs) < eps
        actions = np.where(explore, rng.integers(0, 2, cfg.num_envs), greedy)
        next_act_obs, reward, terminated, truncated, next_obs = vector_step(envs, actions)
        buf.add(obs, actions, reward, next_obs, terminated)
        obs = next_act_obs
        if it < cfg.prefill_iterations:
            continue
        torch_update(q, target, opt, buf.sample(rng, cfg.batch_size), cfg)
        updates += 1
        if updates % cfg.target_update_interval == 0:
            target.load_state_dict(q.state_dict())
        if updates % cfg.iterations_per_eval == 0:
            ret = run_vector_episodes(evals, lambda o: q(torch.from_numpy(o)).argmax(1).numpy())
            records.append(dict(env_steps=steps + cfg.num_envs, eval_return=ret,
                                wall_s=time.perf_counter() - start))
            if ret >= SOLVED:
                break
    return records


class TorchReplay:
    """Circular numpy replay buffer for the PyTorch baseline."""

    def __init__(self, capacity: int):
        self.capacity, self.pos, self.size = capacity, 0, 0
        self.obs = np.zeros((capacity, 4), np.float32)
        self.next_obs = np.zeros((capacity, 4), np.float32)
        self.action = np.zeros(capacity, np.int64)
        self.reward = np.zeros(capacity, np.float32)
        self.terminated = np.zeros(capacity, np.float32)

    def add(self, obs, action, reward, next_obs, terminated):
        idx = (self.pos + np.arange(len(action))) % self.capacity
        self.obs[idx], self.action[idx], self.reward[idx] = obs, action, reward
        self.next_obs[idx], self.terminated[idx] = next_obs, terminated
        self.pos, self.size = (self.pos + len(action)) % self.capacity, min(
            self.size + len(action), self.capacity)

    def sample(self, rng, batch_size: int):
        import torch

        idx = rng.integers(0, self.size, batch_size)
        return [torch.from_numpy(a[idx]) for a in (self.obs, self.action, self.reward,
                                                    self.next_obs, self.terminated)]


def torch_update(q, target, opt, batch, cfg) -> None:
    """One double-DQN step with the Huber loss and global-norm clipping."""
    import torch

    obs, action, reward, next_obs, terminated = batch
    with torch.no_grad():
        next_action = q(next_obs).argmax(1, keepdim=True)
        next_value = target(next_obs).gather(1, next_action).squeeze(1)
        y = reward + cfg.gamma * (1.0 - terminated) * next_value
    pred = q(obs).gather(1, action.unsqueeze(1)).squeeze(1)
    loss = torch.nn.functional.huber_loss(pred, y, delta=cfg.huber_delta)
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(q.parameters(), cfg.max_grad_norm)
    opt.step()


def measure(name: str, args) -> dict:
    """Run one contender in this process."""
    if name == "dlfun-1seed":
        return measure_dlfun(1, args.gym_episodes)
    if name == "dlfun-16seeds":
        return measure_dlfun(16, args.gym_episodes, os.cpu_count() or 1)
    if name == "dlfun-16seeds-1dev":
        return measure_dlfun(16, args.gym_episodes, 1)
    if name == "dlfun-hostloop":
        return measure_dlfun_host(args.host_periods)
    if name == "torch-hostloop":
        return measure_torch(40, args.torch_threads)
    raise SystemExit(f"error: unknown contender {name!r}; choose from {', '.join(CONTENDERS)}")


def available(names: list[str]) -> tuple[list[str], list[str]]:
    """Contenders whose packages import, and notes for the skipped ones."""
    import importlib.util

    have = {m: importlib.util.find_spec(m) is not None for m in ("torch", "gymnasium")}
    keep, notes = [], []
    for n in names:
        missing = [m for m in ("torch", "gymnasium") if not have[m] and (
            m == "gymnasium" and "host" in n or m == "torch" and n.startswith("torch"))]
        (notes.append(f"{n} skipped: {', '.join(missing)} not installed") if missing
         else keep.append(n))
    return keep, notes


def summarize(results: dict[str, list[dict]]) -> list[dict]:
    """Median figures per contender, with the speed ratio to the PyTorch baseline."""
    med = lambda vals: statistics.median(vals) if vals else None  # noqa: E731
    rows = []
    for name, runs in results.items():
        solve = [r["solve_s"] for r in runs if r.get("solve_s") is not None]
        rows.append({"contender": name, "agent steps/s": med([r["steps_per_s"] for r in runs]),
                     "solve s": med(solve), "solved": f"{runs[-1]['solved']}/{runs[-1]['seeds']}",
                     "runs": len(runs), "load avg": med([r["load_avg"] for r in runs])})
    base = next((r["agent steps/s"] for r in rows if r["contender"] == "torch-hostloop"), None)
    for r in rows:
        r["x torch"] = r["agent steps/s"] / base if base else "n/a"
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=terminal_text(__doc__.split("\n")[0]))
    parser.add_argument("--contender", help="measure one contender in this process (internal)")
    parser.add_argument("--contenders", default=",".join(CONTENDERS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--gym-episodes", type=int, default=20,
                        help="gymnasium CartPole-v1 episodes per seed for the final check (0: off)")
    parser.add_argument("--host-periods", type=int, default=10,
                        help="evaluation periods of the dlfun host loop (throughput only)")
    parser.add_argument("--torch-threads", type=int, default=1)
    parser.add_argument("--out", default="bench_results/dqn_speed.json")
    args = parser.parse_args()
    if args.contender:
        # The 1-minute load average says how contended the 2 cores were during this run.
        emit_result(dict(measure(args.contender, args), load_avg=os.getloadavg()[0]))
        return
    names, notes = available(args.contenders.split(","))
    results = {n: [] for n in names}
    for r in range(args.rounds):
        for n in names:
            gym_episodes = args.gym_episodes if r == 0 else 0  # the policy check once is enough
            argv = (sys.executable, __file__, "--contender", n, "--gym-episodes", str(gym_episodes),
                    "--host-periods", str(args.host_periods), "--torch-threads",
                    str(args.torch_threads))
            results[n].append(run_contender(Contender(n, argv), timeout=1800))
            print(f"  round {r + 1}/{args.rounds} {n:<16s} {results[n][-1]['steps_per_s']:.0f} "
                  f"steps/s, solve {results[n][-1]['solve_s']}", flush=True)
    rows = summarize(results)
    print_table(rows, ["contender", "agent steps/s", "x torch", "solve s", "solved", "runs",
                       "load avg"],
                title="DQN on CartPole-v1 (medians; wall time includes compilation)")
    for note in notes:
        print(note)
    write_json(args.out, dict(rows=rows, runs=results, notes=notes))


if __name__ == "__main__":
    main()
