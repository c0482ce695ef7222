"""Breakout at MinAtar scale (10x10 grid) as a pure-JAX environment.

The rules of MinAtar's Breakout (Young & Tian, 2019), without sticky actions: a paddle on the
bottom row, a ball that moves one cell diagonally per step and bounces off the side and top
walls, three rows of bricks (rows 1-3) worth +1 each, a fresh set of bricks when all are gone
and the ball reaches the bottom, and termination when the ball reaches the bottom row without
the paddle under it. After breaking a brick the ball cannot break another on the very next
step (MinAtar's ``strike`` flag). Actions: 0 no-op, 1 left, 2 right.

Observation: ``(10, 10, 4)`` uint8 in {0, 1}, channels paddle, ball, trail (the ball's previous
cell, which shows its direction), brick; row 0 is the top.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array
SIZE = 10


class BreakoutState(NamedTuple):
    """State of one Breakout game; all int32 scalars unless noted.

    Attributes:
      ball_x, ball_y: ball cell (column, row).
      ball_dx, ball_dy: ball direction, each -1 or +1 (dy = +1 moves down).
      last_x, last_y: the ball's previous cell (the trail channel).
      paddle_x: paddle column (the paddle sits on row 9).
      bricks: ``(10, 10)`` bool, True where a brick is.
      strike: bool, a brick was hit on the previous step.
      time: steps taken in this episode.
    """

    ball_x: Array
    ball_y: Array
    ball_dx: Array
    ball_dy: Array
    last_x: Array
    last_y: Array
    paddle_x: Array
    bricks: Array
    strike: Array
    time: Array


def initial_bricks() -> Array:
    """``(10, 10)`` bool with rows 1-3 full of bricks."""
    rows = jnp.arange(SIZE)[:, None]
    return jnp.broadcast_to((rows >= 1) & (rows <= 3), (SIZE, SIZE))


def cell_mask(row: Array, col: Array) -> Array:
    """``(10, 10)`` bool, True only at ``(row, col)``."""
    return (jnp.arange(SIZE)[:, None] == row) & (jnp.arange(SIZE)[None, :] == col)


@dataclass(frozen=True)
class Breakout:
    """MinAtar-scale Breakout (see the module docstring); methods follow :mod:`dlfun.rl.env`."""

    max_steps: int = 1000

    num_actions = 3
    obs_shape = (SIZE, SIZE, 4)
    obs_dtype = jnp.uint8

    def reset(self, key: Array) -> tuple[Array, BreakoutState]:
        """Ball on row 3 at the left edge moving down-right, or at the right edge moving
        down-left (a fair coin); paddle in column 4.

        Returns:
          ``obs`` of shape ``(10, 10, 4)`` and the state.
        """
        right = jax.random.bernoulli(key)
        x = jnp.where(right, SIZE - 1, 0).astype(jnp.int32)
        dx = jnp.where(right, -1, 1).astype(jnp.int32)
        zero = jnp.zeros((), jnp.int32)
        state = BreakoutState(ball_x=x, ball_y=zero + 3, ball_dx=dx, ball_dy=zero + 1, last_x=x,
                              last_y=zero + 3, paddle_x=zero + 4, bricks=initial_bricks(),
                              strike=jnp.zeros((), bool), time=zero)
        return self.observe(state), state

    def observe(self, state: BreakoutState) -> Array:
        """The ``(10, 10, 4)`` uint8 observation of ``state``."""
        planes = [cell_mask(SIZE - 1, state.paddle_x), cell_mask(state.ball_y, state.ball_x),
                  cell_mask(state.last_y, state.last_x), state.bricks]
        return jnp.stack(planes, axis=-1).astype(jnp.uint8)

    def step(self, key: Array, state: BreakoutState, action: Array
             ) -> tuple[Array, BreakoutState, Array, Array, Array, dict]:
        """Move the paddle, then the ball, resolving walls, bricks and the bottom row.

        Args:
          key: unused (the game is deterministic after reset).
          state: the current state.
          action: int scalar, 0 no-op, 1 left, 2 right.

        Returns:
          ``(obs (10, 10, 4), state, reward, terminated, truncated, info={})``; ``reward``
          (float32) is 1 when a brick broke.
        """
        del key
        move = jnp.where(action == 1, -1, jnp.where(action == 2, 1, 0))
        paddle_x = jnp.clip(state.paddle_x + move, 0, SIZE - 1)
        ball = fly(state.ball_x, state.ball_y, state.ball_dx, state.ball_dy)
        ball, bricks, at_brick, hit = hit_bricks(ball, state.ball_y, state.bricks, state.strike)
        ball, bricks, terminated = resolve_bottom(ball, state.ball_x, state.ball_y, at_brick,
                                                  bricks, paddle_x)
        x, y, dx, dy = ball
        time = state.time + 1
        new = BreakoutState(x, y, dx, dy, state.ball_x, state.ball_y, paddle_x, bricks,
                            at_brick, time)
        reward = hit.astype(jnp.float32)
        return self.observe(new), new, reward, terminated, time >= self.max_steps, {}


def fly(x: Array, y: Array, dx: Array, dy: Array) -> tuple[Array, Array, Array, Array]:
    """One diagonal move with reflection off the side and top walls: ``(x, y, dx, dy)``."""
    nx, ny = x + dx, y + dy
    side = (nx < 0) | (nx > SIZE - 1)
    top = ny < 0
    return (jnp.clip(nx, 0, SIZE - 1), jnp.maximum(ny, 0), jnp.where(side, -dx, dx),
            jnp.where(top, -dy, dy))


def hit_bricks(ball, old_y: Array, bricks: Array, strike: Array):
    """Break the brick the ball moved onto (unless one broke on the previous step).

    Returns:
      ``(ball, bricks, at_brick, hit)``: the ball bounced back to its old row when it broke
      a brick, the brick map without that brick, whether the ball's cell holds a brick, and
      whether one broke (the reward).
    """
    x, y, dx, dy = ball
    at_brick = bricks[y, x]  # row 0 never holds bricks, so a top-wall bounce never hits one
    hit = at_brick & ~strike
    bricks = bricks & ~(cell_mask(y, x) & hit)
    return (x, jnp.where(hit, old_y, y), dx, jnp.where(hit, -dy, dy)), bricks, at_brick, hit


def resolve_bottom(ball, old_x: Array, old_y: Array, at_brick: Array, bricks: Array,
                   paddle_x: Array):
    """The ball reaching row 9: bounce off the paddle or end the game.

    A paddle under the ball's previous column sends it back up in the same horizontal
    direction; a paddle under its new column sends it back the way it came. Reaching the
    bottom with no bricks left refills the three brick rows.

    Returns:
      ``(ball, bricks, terminated)``.
    """
    x, y, dx, dy = ball
    bottom = ~at_brick & (y == SIZE - 1)
    bricks = jnp.where(bottom & ~bricks.any(), initial_bricks(), bricks)
    under_old = bottom & (old_x == paddle_x)
    under_new = bottom & ~under_old & (x == paddle_x)
    caught = under_old | under_new
    ball = (x, jnp.where(caught, old_y, y), jnp.where(under_new, -dx, dx),
            jnp.where(caught, -dy, dy))
    return ball, bricks, bottom & ~caught
