"""Pure-JAX environments: CartPole against gymnasium, batching/auto-reset, Breakout mechanics."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dlfun.rl import Breakout, BreakoutState, CartPole, CartPoleState, auto_reset_step
from dlfun.rl import reset_batch, step_batch


def balancing_action(obs) -> int:
    """A linear controller that keeps gymnasium's CartPole up for the full 500 steps."""
    x, x_dot, theta, theta_dot = obs
    return int(theta + 0.5 * theta_dot + 0.05 * x + 0.1 * x_dot > 0)


def gym_cartpole(seed):
    gym = pytest.importorskip("gymnasium", reason="gymnasium missing (pip install 'dlfun[rl]')")
    env = gym.make("CartPole-v1")
    obs, _ = env.reset(seed=seed)
    return env, obs


def state_from_gym(env, time) -> CartPoleState:
    physics = jnp.asarray(env.unwrapped.state, jnp.float32)
    return CartPoleState(physics, jnp.asarray(time, jnp.int32))


def test_cartpole_matches_gymnasium_stepwise_until_truncation():
    # Each step starts both from gymnasium's (float64) state: one step must agree to float32
    # rounding. A free-running comparison cannot stay within float32 for 500 steps: the
    # upright pole amplifies any rounding difference by ~e^(4 t) (t in seconds).
    env, obs = gym_cartpole(seed=7)
    step = jax.jit(CartPole().step)
    for t in range(500):
        state = state_from_gym(env, t)
        action = balancing_action(obs)
        obs, reward, terminated, truncated, _ = env.step(action)
        ours, _, our_reward, our_term, our_trunc, _ = step(jax.random.key(0), state, action)
        np.testing.assert_allclose(np.asarray(ours), obs, rtol=1e-5, atol=1e-6)
        assert (float(our_reward), bool(our_term), bool(our_trunc)) == (reward, terminated,
                                                                        truncated), t
    assert truncated and not terminated and t == 499


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cartpole_free_run_matches_gymnasium_until_termination(seed):
    env, obs = gym_cartpole(seed)
    step = jax.jit(CartPole().step)
    state = state_from_gym(env, 0)
    np.testing.assert_array_equal(np.asarray(state.physics), obs)
    actions = np.random.default_rng(seed).integers(0, 2, size=500)
    for t, action in enumerate(actions):
        obs, reward, terminated, truncated, _ = env.step(int(action))
        ours, state, our_reward, our_term, our_trunc, _ = step(jax.random.key(0), state, action)
        np.testing.assert_allclose(np.asarray(ours), obs, rtol=1e-4, atol=1e-4)
        assert (bool(our_term), bool(our_trunc), float(our_reward)) == (terminated, truncated,
                                                                        reward)
        if terminated:
            break
    assert terminated and t < 200  # random play drops the pole well before the time limit


def test_cartpole_reset_range_and_keys():
    env = CartPole()
    obs, state = env.reset(jax.random.key(0))
    assert obs.shape == (4,) and obs.dtype == jnp.float32 and int(state.time) == 0
    obs_batch, _ = reset_batch(env, jax.random.key(1), 256)
    assert obs_batch.shape == (256, 4)
    assert float(jnp.abs(obs_batch).max()) < 0.05
    assert len(np.unique(np.asarray(obs_batch[:, 0]))) == 256  # independent keys per env


def test_cartpole_truncates_and_terminates_together_like_gymnasium():
    # At the time limit a failing pole is both terminated and truncated (gymnasium's TimeLimit).
    env = CartPole(max_steps=3)
    state = CartPoleState(jnp.asarray([0.0, 0.0, 0.2, 1.0]), jnp.asarray(2, jnp.int32))
    _, state, _, terminated, truncated, _ = env.step(jax.random.key(0), state, 1)
    assert bool(terminated) and bool(truncated) and int(state.time) == 3


def test_vmapped_step_equals_single_steps():
    env = CartPole()
    obs, state = reset_batch(env, jax.random.key(0), 5)
    actions = jnp.asarray([0, 1, 1, 0, 1], jnp.int32)
    batched = jax.vmap(env.step)(jax.random.split(jax.random.key(1), 5), state, actions)
    for i in range(5):
        single = env.step(jax.random.key(1), jax.tree.map(lambda x: x[i], state), actions[i])
        np.testing.assert_array_equal(np.asarray(batched[0][i]), np.asarray(single[0]))


def test_auto_reset_keeps_final_obs_and_restarts():
    env = CartPole(max_steps=2)
    obs, state = env.reset(jax.random.key(0))
    step = jax.jit(lambda k, s, a: auto_reset_step(env, k, s, a))
    obs1, state1, _, _, trunc1, info1 = step(jax.random.key(1), state, 1)
    assert not bool(trunc1)
    np.testing.assert_array_equal(np.asarray(obs1), np.asarray(info1["final_obs"]))
    obs2, state2, _, term2, trunc2, info2 = step(jax.random.key(2), state1, 1)
    assert bool(trunc2) and not bool(term2) and int(state2.time) == 0
    expected_final = jax.jit(env.step)(jax.random.key(0), state1, 1)[0]
    np.testing.assert_array_equal(np.asarray(info2["final_obs"]), np.asarray(expected_final))
    assert float(jnp.abs(obs2).max()) < 0.05  # a fresh start state, not the continued one
    assert not np.allclose(np.asarray(obs2), np.asarray(expected_final))


def test_step_batch_shapes_and_independent_resets():
    env = Breakout()
    obs, state = reset_batch(env, jax.random.key(0), 64)
    assert obs.shape == (64, 10, 10, 4) and obs.dtype == jnp.uint8
    starts = np.asarray(state.ball_x)
    assert set(starts.tolist()) == {0, 9}  # both start sides occur
    obs, state, reward, term, trunc, info = jax.jit(lambda k, s, a: step_batch(env, k, s, a))(
        jax.random.key(1), state, jnp.zeros(64, jnp.int32))
    assert obs.shape == info["final_obs"].shape == (64, 10, 10, 4)
    assert reward.shape == term.shape == trunc.shape == (64,)


def breakout_state(**changes) -> BreakoutState:
    _, state = Breakout().reset(jax.random.key(0))
    i32 = lambda v: jnp.asarray(v, jnp.int32)  # noqa: E731
    return state._replace(**{k: (v if k in ("bricks", "strike") else i32(v))
                             for k, v in changes.items()})


def test_breakout_ball_bounces_off_side_and_top_walls():
    env = Breakout()
    state = breakout_state(ball_x=9, ball_y=5, ball_dx=1, ball_dy=-1)
    _, state, *_ = env.step(jax.random.key(0), state, 0)
    assert (int(state.ball_x), int(state.ball_y), int(state.ball_dx)) == (9, 4, -1)
    state = breakout_state(ball_x=4, ball_y=0, ball_dx=1, ball_dy=-1,
                           bricks=jnp.zeros((10, 10), bool))
    _, state, *_ = env.step(jax.random.key(0), state, 0)
    assert (int(state.ball_y), int(state.ball_dy)) == (0, 1)


def test_breakout_brick_removal_gives_reward_and_bounce():
    env = Breakout()
    state = breakout_state(ball_x=4, ball_y=4, ball_dx=1, ball_dy=-1)  # moving up into row 3
    obs, new, reward, terminated, _, _ = env.step(jax.random.key(0), state, 0)
    assert float(reward) == 1.0 and not bool(terminated)
    assert not bool(new.bricks[3, 5]) and int(new.bricks.sum()) == 29
    assert (int(new.ball_x), int(new.ball_y), int(new.ball_dy)) == (5, 4, 1)
    assert int(obs[3, 5, 3]) == 0 and int(obs[4, 5, 1]) == 1 and int(obs[4, 4, 2]) == 1


def test_breakout_losing_the_ball_terminates_and_paddle_catches():
    env = Breakout()
    falling = breakout_state(ball_x=2, ball_y=8, ball_dx=1, ball_dy=1, paddle_x=4)  # lands at x=3
    _, _, reward, terminated, truncated, _ = env.step(jax.random.key(0), falling, 0)
    assert bool(terminated) and not bool(truncated) and float(reward) == 0.0
    # Paddle under the ball's previous column: it goes back up, same horizontal direction.
    _, state, _, terminated, _, _ = env.step(jax.random.key(0), falling._replace(
        paddle_x=jnp.asarray(2, jnp.int32)), 0)
    assert not bool(terminated)
    assert (int(state.ball_x), int(state.ball_y), int(state.ball_dx), int(state.ball_dy)) == (
        3, 8, 1, -1)
    # Paddle moving under the landing column: the ball goes back the way it came.
    _, state, _, terminated, _, _ = env.step(jax.random.key(0), falling, 1)  # paddle 4 -> 3
    assert not bool(terminated)
    assert (int(state.ball_dx), int(state.ball_dy)) == (-1, -1)


def test_breakout_paddle_moves_and_stays_on_board():
    env = Breakout()
    state = breakout_state(paddle_x=0)
    for action, expected in [(1, 0), (2, 1), (2, 2), (0, 2)]:
        _, state, *_ = env.step(jax.random.key(0), state, action)
        assert int(state.paddle_x) == expected


def test_breakout_matches_gymnax_minatar():
    """Side by side with gymnax's MinAtar Breakout (optional reference) from the same states."""
    gymnax = pytest.importorskip("gymnax", reason="gymnax not installed (optional reference)")
    genv, params = gymnax.make("Breakout-MinAtar")
    env = Breakout(max_steps=params.max_steps_in_episode)
    gstep = jax.jit(lambda s, a: genv.step_env(jax.random.key(0), s, a, params))
    step = jax.jit(lambda s, a: env.step(jax.random.key(0), s, a))
    directions = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]])
    rng, total_reward, refills = np.random.default_rng(0), 0.0, 0
    for episode in range(8):
        gobs, gstate = genv.reset_env(jax.random.key(episode), params)
        if episode % 2:  # a nearly cleared wall, so that refills happen too
            bricks = np.zeros((10, 10), np.float32)
            bricks[rng.integers(1, 4, 2), rng.integers(0, 10, 2)] = 1
            gstate = gstate.replace(brick_map=jnp.asarray(bricks))
        dx, dy = directions[int(gstate.ball_dir)]
        state = breakout_state(ball_x=gstate.ball_x, ball_y=gstate.ball_y, ball_dx=dx, ball_dy=dy,
                               last_x=gstate.last_x, last_y=gstate.last_y, paddle_x=gstate.pos,
                               bricks=jnp.asarray(gstate.brick_map, bool))
        np.testing.assert_array_equal(np.asarray(env.observe(state)),
                                      np.asarray(genv.get_obs(gstate)))
        for t in range(params.max_steps_in_episode):
            # Mostly chase the ball (long games, many bricks), sometimes a random action.
            target = int(state.ball_x) + int(state.ball_dx)
            chase = 1 if target < int(state.paddle_x) else 2 if target > int(state.paddle_x) else 0
            action = chase if rng.random() < 0.9 else int(rng.integers(3))
            gobs, gstate, greward, gdone, _ = gstep(gstate, jnp.asarray(action))
            bricks_before = int(state.bricks.sum())
            obs, state, reward, terminated, truncated, _ = step(state, action)
            np.testing.assert_array_equal(np.asarray(obs), np.asarray(gobs))
            assert float(reward) == float(greward)
            assert bool(terminated) == bool(gdone)  # gymnax's step_env leaves out the time limit
            total_reward += float(reward)
            refills += int(state.bricks.sum()) > bricks_before
            if gdone or truncated:
                break
    assert total_reward > 20 and refills >= 2


def test_frames_for_rendering():
    from dlfun.rl import cartpole_frame, minatar_frame

    frame = cartpole_frame(np.asarray([0.0, 0.0, 0.1, 0.0]))
    assert frame.shape == (200, 300, 3) and frame.dtype == np.uint8
    pole = np.all(frame == (200, 150, 100), axis=-1)
    rows, cols = np.nonzero(pole)
    assert pole.sum() > 50 and cols[rows.argmin()] > 150  # tilted right (theta > 0) at the tip
    obs, _ = Breakout().reset(jax.random.key(0))
    image = minatar_frame(obs, scale=4)
    assert image.shape == (40, 40, 3)
    np.testing.assert_array_equal(image[2 * 4, 0], [220, 90, 60])  # a brick in row 2
    np.testing.assert_array_equal(image[9 * 4, 4 * 4], [60, 120, 220])  # paddle at column 4
