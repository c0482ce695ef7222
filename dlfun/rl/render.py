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

    The track spans ``[-2 x_threshold, 2 x_threshold]`` like gymnasium's renderer; the cart
    is a dark box on the track and the pole a line of ``pole_length`` metres at angle theta.
    """
    x, _, theta, _ = (float(v) for v in np.asarray(obs))
    image = np.full((height, width, 3), 255, np.uint8)
    scale = width / (4 * x_threshold)
    cart_x, track_y = int(width / 2 + x * scale), int(height * 0.75)
    image[track_y, :] = 0
    image[track_y - 10:track_y + 5, max(cart_x - 15, 0):max(cart_x + 15, 0)] = 40
    t = np.linspace(0.0, 1.0, 200)[:, None]
    tip = np.asarray([np.sin(theta), -np.cos(theta)]) * pole_length * scale
    points = (np.asarray([cart_x, track_y - 10]) + t * tip).round().astype(int)
    inside = (points[:, 0] >= 0) & (points[:, 0] < width) & (points[:, 1] >= 0) & (
        points[:, 1] < height)
    for dx in (-2, -1, 0, 1, 2):
        cols = np.clip(points[inside, 0] + dx, 0, width - 1)
        image[points[inside, 1], cols] = (200, 150, 100)
    return image
