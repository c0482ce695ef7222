"""The pure two-player GAN step: ``step(state, batch, key) -> (state, metrics)``.

One step = ``d_steps`` discriminator updates (each on its own slice of the real batch and its
own fresh noise) followed by one generator update against the updated discriminator, as in
Goodfellow et al. (2014), Algorithm 1. Each player has its own optimizer (in its own
``TrainState``). Undecorated: jit, vmap (several GANs at once) or lax.map it at the call site.
"""

from __future__ import annotations

from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax import lax

from .. import losses
from ..errors import ConfigError, ShapeError
from ..nn.precision import at_least_float32
from ..train.state import TrainState
from ..train.step import NONFINITE_POLICIES, apply_model, guard_nonfinite
from .sample import sample_latent
from .state import GANState

# name -> (discriminator loss (real, fake) -> scalar, generator loss (fake) -> scalar,
#          map from raw discriminator output to the figure reported as d_real / d_fake)
GAN_LOSSES: dict[str, tuple[Callable, Callable, Callable]] = {
    "minimax": (losses.gan_discriminator_loss, losses.gan_generator_loss_minimax,
                jax.nn.sigmoid),
    "nonsaturating": (losses.gan_discriminator_loss, losses.gan_generator_loss_nonsaturating,
                      jax.nn.sigmoid),
    "lsgan": (losses.lsgan_discriminator_loss, losses.lsgan_generator_loss, lambda s: s),
}


def r1_penalty(discriminator: nn.Module, disc: TrainState, params, real: jax.Array,
               key: jax.Array) -> jax.Array:
    """Mean squared norm of the discriminator's input gradient on real data (Mescheder et al.
    2018, "R1"): ``E ||grad_x D(x)||^2``. Pulls D towards flatness where the data is, which
    damps the oscillation around the equilibrium."""
    def total_score(x):
        scores = apply_model(discriminator, disc, params, x, train=True, key=key)[0]
        return jnp.sum(at_least_float32(scores))  # a bfloat16 D's scores summed in float32

    g = jax.grad(total_score)(real)
    return jnp.mean(jnp.sum(jnp.square(g.reshape(g.shape[0], -1)), axis=-1))


def make_gan_step(generator: nn.Module, discriminator: nn.Module, *, latent_dim: int,
                  loss: str = "nonsaturating", d_steps: int = 1, r1_gamma: float = 0.0,
                  nonfinite: str = "stop") -> Callable:
    """Build the two-player step.

    Args:
      generator: latents ``(batch, latent_dim)`` -> samples ``(batch, ...)``.
      discriminator: samples ``(batch, ...)`` -> raw scores ``(batch, 1)``.
      latent_dim: size of the generator's input noise.
      loss: "minimax" (the original game), "nonsaturating" (generator maximises log D(G(z))),
        or "lsgan" (least squares).
      d_steps: discriminator updates per generator update (k in Algorithm 1). The real batch
        is cut into ``d_steps`` equal slices, one per discriminator update; the generator
        update uses as many latents as one slice holds.
      r1_gamma: weight of the R1 gradient penalty ``gamma / 2 * E||grad D(x)||^2`` added to
        the discriminator's loss (0: none).
      nonfinite: "stop", "skip" or "off", as in :func:`dlfun.train.make_train_step`; a
        non-finite loss or gradient of either player drops the whole step's update.

    Returns:
      ``step(state, batch, key) -> (state, metrics)`` where ``batch`` is real data
      ``(d_steps * per_update, ...)`` or a tuple whose first item it is (labels are ignored).
      Metrics (scalars; discriminator figures averaged over its ``d_steps`` updates):
      ``d_loss``, ``g_loss``, ``d_real`` / ``d_fake`` (mean D output on real / generated
      data: probabilities, or raw scores for lsgan), ``d_grad_norm``, ``g_grad_norm``,
      ``r1`` (the penalty before weighting), ``nonfinite``.
    """
    if loss not in GAN_LOSSES:
        raise ConfigError(f"unknown GAN loss {loss!r}; choose one of {', '.join(GAN_LOSSES)}")
    if d_steps < 1 or r1_gamma < 0:
        raise ConfigError(f"need d_steps >= 1 and r1_gamma >= 0, got {d_steps}, {r1_gamma}")
    if nonfinite not in NONFINITE_POLICIES:
        raise ConfigError(f"nonfinite must be one of {NONFINITE_POLICIES}, got {nonfinite!r}")
    d_loss_fn, g_loss_fn, readout = GAN_LOSSES[loss]
    d_update = _make_disc_update(generator, discriminator, latent_dim, d_loss_fn, readout,
                                 r1_gamma)
    g_update = _make_gen_update(generator, discriminator, latent_dim, g_loss_fn)

    def step(state: GANState, batch, key: jax.Array):
        real = batch[0] if isinstance(batch, (tuple, list)) else batch
        reals = _slices(real, d_steps)  # (d_steps, per_update, ...)
        d_key, g_key = jax.random.split(key)
        disc, d_metrics = lax.scan(lambda d, xk: d_update(state.gen, d, *xk), state.disc,
                                   (reals, jax.random.split(d_key, d_steps)))
        gen, g_metrics = g_update(state.gen, disc, g_key, reals.shape[1])
        metrics = {k: jnp.mean(v) for k, v in d_metrics.items()} | g_metrics
        new = state.replace(gen=gen, disc=disc, step=state.step + 1)
        new, dropped = guard_nonfinite(state, new, metrics["d_loss"] + metrics["g_loss"],
                                       metrics["d_grad_norm"] + metrics["g_grad_norm"],
                                       nonfinite)
        return new, metrics | {"nonfinite": dropped}

    return step


def _slices(real: jax.Array, d_steps: int) -> jax.Array:
    """``(d_steps * n, ...)`` -> ``(d_steps, n, ...)``; refuses a batch that does not divide."""
    if real.shape[0] % d_steps:
        raise ShapeError(f"the real batch of {real.shape[0]} examples does not split into "
                         f"{d_steps} discriminator updates; use a batch size divisible by "
                         f"d_steps")
    return real.reshape((d_steps, real.shape[0] // d_steps) + real.shape[1:])


def _make_disc_update(generator, discriminator, latent_dim, d_loss_fn, readout, r1_gamma):
    """``update(gen, disc, real, key) -> (disc, metrics)``: one discriminator update."""
    def update(gen: TrainState, disc: TrainState, real: jax.Array, key: jax.Array):
        z_key, g_drop, d_drop, r_drop = jax.random.split(key, 4)
        z = sample_latent(z_key, real.shape[0], latent_dim)
        # The generator runs in training mode (as it will be trained), but this pass's
        # batch-norm statistics are discarded: only generator updates move them.
        fake = lax.stop_gradient(apply_model(generator, gen, gen.params, z, train=True,
                                             key=g_drop)[0])

        def loss_of(params):
            real_out, stats = apply_model(discriminator, disc, params, real, train=True,
                                          key=d_drop)
            fake_out, stats = apply_model(discriminator, disc.replace(batch_stats=stats),
                                          params, fake, train=True, key=d_drop)
            penalty = (r1_penalty(discriminator, disc, params, real, r_drop) if r1_gamma > 0
                       else jnp.zeros((), jnp.float32))
            loss = d_loss_fn(real_out, fake_out) + 0.5 * r1_gamma * penalty
            return loss, (stats, real_out, fake_out, penalty)

        (loss, (stats, real_out, fake_out, penalty)), grads = jax.value_and_grad(
            loss_of, has_aux=True)(disc.params)
        disc = disc.apply_gradients(grads=grads, batch_stats=stats)
        real_out, fake_out = at_least_float32(real_out), at_least_float32(fake_out)
        return disc, dict(d_loss=loss, d_real=jnp.mean(readout(real_out)),
                          d_fake=jnp.mean(readout(fake_out)), r1=penalty,
                          d_grad_norm=optax.tree.norm(grads))

    return update


def _make_gen_update(generator, discriminator, latent_dim, g_loss_fn):
    """``update(gen, disc, key, n) -> (gen, metrics)``: one generator update on ``n`` latents
    against the (just updated) discriminator, whose parameters and statistics stay fixed."""
    def update(gen: TrainState, disc: TrainState, key: jax.Array, n: int):
        z_key, g_drop, d_drop = jax.random.split(key, 3)
        z = sample_latent(z_key, n, latent_dim)

        def loss_of(params):
            fake, stats = apply_model(generator, gen, params, z, train=True, key=g_drop)
            fake_out, _ = apply_model(discriminator, disc, disc.params, fake, train=True,
                                      key=d_drop)
            return g_loss_fn(fake_out), stats

        (loss, stats), grads = jax.value_and_grad(loss_of, has_aux=True)(gen.params)
        gen = gen.apply_gradients(grads=grads, batch_stats=stats)
        return gen, dict(g_loss=loss, g_grad_norm=optax.tree.norm(grads))

    return update
