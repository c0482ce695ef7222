"""Adversarial examples under an L-infinity budget: FGSM and PGD, as pure functions.

Both attacks take ``loss_fn(params, x, y) -> scalar`` (the mean loss of a batch; any model
and loss closed over) and move the inputs ``x`` to raise it, each input by at most ``eps``
per pixel:

* FGSM (Goodfellow et al. 2015, "Explaining and harnessing adversarial examples", eq. in
  section 3): ``x + eps * sign(grad_x L(x, y))``, one step of the linearised loss's maximiser
  over the eps-ball.
* PGD (Madry et al. 2018, "Towards deep learning models resistant to adversarial attacks",
  eq. 2): from a uniform random start in the ball, ``steps`` iterations of
  ``x <- Proj(x + step_size * sign(grad_x L(x, y)))``, projecting back onto the ball around
  the clean input and onto the valid pixel range after every step.

``pixel_range=(lo, hi)`` clips the result to the inputs' valid range (a perturbed image is
still an image), so where the clean pixel sits within ``eps`` of a bound the perturbation is
smaller than ``eps`` there; ``pixel_range=None`` leaves inputs unbounded. ``eps`` may be a
traced scalar, so one compiled program sweeps many budgets under ``jax.vmap``.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax import lax

InputLoss = Callable[[Any, jax.Array, jax.Array], jax.Array]
PixelRange = tuple[float, float] | None


def _clip(x: jax.Array, pixel_range: PixelRange) -> jax.Array:
    return x if pixel_range is None else jnp.clip(x, pixel_range[0], pixel_range[1])


def input_gradient(loss_fn: InputLoss, params: Any, x: jax.Array, y: jax.Array) -> jax.Array:
    """``grad_x loss_fn(params, x, y)``, the same shape as ``x``; no gradient reaches
    ``params`` (an attack inside a training step must not train through itself)."""
    return jax.grad(loss_fn, argnums=1)(lax.stop_gradient(params), x, y)


def fgsm(loss_fn: InputLoss, params: Any, x: jax.Array, y: jax.Array, eps,
         *, pixel_range: PixelRange = (0.0, 1.0)) -> jax.Array:
    """Fast gradient sign method: ``clip(x + eps * sign(grad_x L))``.

    Args:
      loss_fn: ``(params, inputs, targets) -> scalar`` loss to raise.
      params: the model's parameters (held fixed).
      x: clean inputs ``(batch, ...)``.
      y: targets ``(batch, ...)``.
      eps: the L-infinity budget per input element (a scalar, may be traced).
      pixel_range: ``(lo, hi)`` the result is clipped to, or None.

    Returns:
      adversarial inputs, ``x``'s shape; before clipping every element moved by exactly
      ``eps`` (or 0 where the gradient is exactly 0).
    """
    g = input_gradient(loss_fn, params, x, y)
    return lax.stop_gradient(_clip(x + eps * jnp.sign(g), pixel_range))


def project_linf(x_adv: jax.Array, x: jax.Array, eps, pixel_range: PixelRange) -> jax.Array:
    """The nearest point to ``x_adv`` in the eps-ball around ``x`` within the pixel range
    (per element: the intersection of two boxes is a box, so clipping twice is exact)."""
    return _clip(jnp.clip(x_adv, x - eps, x + eps), pixel_range)


def pgd(loss_fn: InputLoss, params: Any, x: jax.Array, y: jax.Array, eps, *,
        step_size, steps: int, key: jax.Array | None = None,
        pixel_range: PixelRange = (0.0, 1.0)) -> jax.Array:
    """Projected gradient descent on the negative loss (L-infinity PGD of Madry et al.).

    Args:
      loss_fn, params, x, y, eps, pixel_range: as in :func:`fgsm`.
      step_size: the sign-gradient step per iteration (Madry et al. use ``2.5 * eps / steps``
        so the walk can cross the ball); a scalar, may be traced.
      steps: iterations (static).
      key: the random start, uniform in the eps-ball; None starts at ``x`` (then the first
        step with ``step_size == eps`` is FGSM).

    Returns:
      adversarial inputs, ``x``'s shape, within ``eps`` of ``x`` and inside ``pixel_range``.
    """
    start = x
    if key is not None:
        start = x + jax.random.uniform(key, x.shape, x.dtype, -1.0, 1.0) * eps
    start = project_linf(start, x, eps, pixel_range)

    def one_step(_, xa):
        g = input_gradient(loss_fn, params, xa, y)
        return project_linf(xa + step_size * jnp.sign(g), x, eps, pixel_range)

    return lax.stop_gradient(lax.fori_loop(0, steps, one_step, start))
