"""CartPole with gymnasium's CartPole-v1 dynamics, as a pure-JAX environment.

Same constants, Euler integration, termination thresholds (|x| > 2.4, |theta| > 12 degrees),
reward 1 on every step (the terminating one included) and truncation at 500 steps, with the
modern split between ``terminated`` and ``truncated``. The physics runs in JAX's default float
type (float32, or float64 under ``jax.enable_x64``); gymnasium integrates in float64 and hands
out float32 observations, so single steps agree to float32 rounding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array


class CartPoleState(NamedTuple):
    """State of one cart-pole.

    Attributes:
      physics: ``(4,)`` float: cart position, cart velocity, pole angle (rad), pole angular
        velocity, the order of gymnasium's observation.
      time: int32 scalar, steps taken in this episode.
    """

    physics: Array
    time: Array


@dataclass(frozen=True)
class CartPole:
    """CartPole-v1 (see the module docstring); methods follow :mod:`dlfun.rl.env`."""

    gravity: float = 9.8
    masscart: float = 1.0
    masspole: float = 0.1
    length: float = 0.5  # half the pole's length, as in gymnasium
    force_mag: float = 10.0
    tau: float = 0.02  # seconds per step
    theta_threshold: float = 12 * 2 * math.pi / 360
    x_threshold: float = 2.4
    max_steps: int = 500
    reset_bound: float = 0.05

    num_actions = 2
    obs_shape = (4,)

    @property
    def obs_dtype(self):
        """Observations are the physics in JAX's default float type."""
        return jnp.zeros(()).dtype

    @property
    def total_mass(self) -> float:
        """Cart plus pole mass."""
        return self.masspole + self.masscart

    @property
    def polemass_length(self) -> float:
        """Pole mass times half-length."""
        return self.masspole * self.length

    def reset(self, key: Array) -> tuple[Array, CartPoleState]:
        """Start state: every component uniform in ``(-reset_bound, reset_bound)``.

        Returns:
          ``obs`` of shape ``(4,)`` and the state.
        """
        physics = jax.random.uniform(key, (4,), jnp.zeros(()).dtype,
                                     -self.reset_bound, self.reset_bound)
        return physics, CartPoleState(physics, jnp.zeros((), jnp.int32))

    def step(self, key: Array, state: CartPoleState, action: Array
             ) -> tuple[Array, CartPoleState, Array, Array, Array, dict]:
        """One 0.02 s Euler step; action 1 pushes right, 0 pushes left.

        Args:
          key: unused (the dynamics are deterministic); kept for the common signature.
          state: the current state.
          action: int scalar in ``{0, 1}``.

        Returns:
          ``(obs (4,), state, reward, terminated, truncated, info={})``; ``reward`` is 1.0.
        """
        del key
        physics = self._euler(state.physics, action)
        x, theta = physics[0], physics[2]
        terminated = (jnp.abs(x) > self.x_threshold) | (jnp.abs(theta) > self.theta_threshold)
        time = state.time + 1
        truncated = time >= self.max_steps
        reward = jnp.ones((), physics.dtype)
        return physics, CartPoleState(physics, time), reward, terminated, truncated, {}

    def _euler(self, physics: Array, action: Array) -> Array:
        """Gymnasium's equations of motion and explicit Euler update, same operation order."""
        x, x_dot, theta, theta_dot = physics[0], physics[1], physics[2], physics[3]
        force = jnp.where(action == 1, self.force_mag, -self.force_mag).astype(physics.dtype)
        costheta, sintheta = jnp.cos(theta), jnp.sin(theta)
        temp = (force + self.polemass_length * jnp.square(theta_dot) * sintheta) / self.total_mass
        thetaacc = (self.gravity * sintheta - costheta * temp) / (
            self.length * (4.0 / 3.0 - self.masspole * jnp.square(costheta) / self.total_mass))
        xacc = temp - self.polemass_length * thetaacc * costheta / self.total_mass
        return jnp.stack([x + self.tau * x_dot, x_dot + self.tau * xacc,
                          theta + self.tau * theta_dot, theta_dot + self.tau * thetaacc])
