"""Tuned DQN configurations for dlfun's own environments."""

from .dqn import DQNConfig

CARTPOLE = DQNConfig()
"""CartPole: MLP 120-84, 8 envs, one update per 8 env steps, 201k env steps (40 evaluations).

Over seeds 0-9 and 10-19 every seed reached a greedy return of 500 within 200k steps.
"""

BREAKOUT = DQNConfig(num_envs=8, batch_size=64, buffer_size=100_000, learning_rate=1e-3,
                     target_update_interval=500, epsilon_decay_steps=100_000,
                     learning_starts=5_000, iterations_per_eval=3_125, num_evals=8,
                     eval_episodes=10)
"""MinAtar-scale Breakout with :func:`dlfun.rl.minatar_q_network`: 205k env steps."""
