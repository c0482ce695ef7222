"""Frames (RGB uint8 arrays, numpy) of dlfun's environments, e.g. for a rollout's video."""

from __future__ import annotations

import numpy as np

# paddle, ball, trail, brick
MINATAR_COLOURS = np.asarray([[60, 120, 220], [240, 240, 240], [120, 120, 120], [220, 90, 60]],
                             np.uint8)


def minatar_frame(obs, scale: int = 16) -> np.ndarray:
    """One ``(10, 10, C)`` 0/1 observation as a ``(10 * scale, 10 * scale, 3)`` uint8 image.

    Each channel gets a colour (later channels drawn over earlier ones); empty cells are black.
    """
    obs = np.asarray(obs)
    image = np.zeros((*obs.shape[:2], 3), np.uint8)
    for c in range(obs.shape[-1]):
        image[obs[..., c] > 0] = MINATAR_COLOURS[c % len(MINATAR_COLOURS)]
    return np.kron(image, np.ones((scale, scale, 1), np.uint8))


def cartpole_frame(obs, width: int = 300, height: int = 200, x_threshold: float = 2.4,
                   pole_length: float = 1.0) -> np.ndarray:
    """A CartPole observation ``(4,)`` drawn as a ``(height, width, 3)`` uint8 image.

    The picture spans the track ``[-x_threshold, x_threshold]`` like gymnasium's renderer (a
    cart at the edge is about to terminate); the cart is a dark box (1/12 of the width) on
    the track and the pole a line of ``pole_length`` metres at angle theta.
    """
    x, _, theta, _ = (float(v) for v in np.asarray(obs))
    image = np.full((height, width, 3), 255, np.uint8)
    scale = width / (2 * x_threshold)  # pixels per metre
    cart_x, track_y = int(width / 2 + x * scale), int(height * 0.75)
    half_w, cart_h = max(width // 24, 2), max(height * 3 // 40, 2)
    image[track_y, :] = 0
    image[track_y - cart_h:track_y + cart_h // 2,
          min(max(cart_x - half_w, 0), width):min(max(cart_x + half_w, 0), width)] = 40
    t = np.linspace(0.0, 1.0, 400)[:, None]
    tip = np.asarray([np.sin(theta), -np.cos(theta)]) * pole_length * scale
    points = (np.asarray([cart_x, track_y - cart_h]) + t * tip).round().astype(int)
    inside = (points[:, 0] >= 0) & (points[:, 0] < width) & (points[:, 1] >= 0) & (
        points[:, 1] < height)
    for dx in range(-(width // 150), width // 150 + 1):
        cols = np.clip(points[inside, 0] + dx, 0, width - 1)
        image[points[inside, 1], cols] = (200, 150, 100)
    return image


def atari_frame(obs, scale: int = 2) -> np.ndarray:
    """The newest frame of an ``(84, 84, 4)`` uint8 frame stack as a grey RGB image."""
    grey = np.asarray(obs)[..., -1]
    return np.kron(np.repeat(grey[..., None], 3, axis=-1), np.ones((scale, scale, 1), np.uint8))


def observation_frames(env_name: str, observations) -> np.ndarray | None:
    """RGB frames ``(T, H, W, 3)`` uint8 of an episode's observations ``(T, *obs_shape)``.

    Args:
      env_name: ``cartpole``, ``breakout``, ``gym:CartPole-v1`` or ``gym:ALE/<game>``.
      observations: the recorded observations.

    Returns:
      The frames, or None for an environment without a renderer here.
    """
    draw = {"cartpole": cartpole_frame, "gym:CartPole-v1": cartpole_frame,
            "breakout": minatar_frame}.get(env_name)
    if draw is None and env_name.startswith("gym:ALE/"):
        draw = atari_frame
    if draw is None:
        return None
    return np.stack([draw(o) for o in np.asarray(observations)])
