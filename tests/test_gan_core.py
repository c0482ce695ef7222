"""The GAN step: losses against their formulas, the update order and each player's own
optimizer checked by hand on a constant generator and a linear discriminator, purity under
jit, vmapped seeds, d_steps, R1, non-finite handling."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dlfun import losses
from dlfun.errors import ConfigError, ShapeError
from dlfun.gan import GANState, create_gan_state, make_gan_step, r1_penalty
from dlfun.nn import MLP, Dense
from dlfun.train.state import create_train_state

RNG = np.random.default_rng(0)


def softplus(x):
    return np.log1p(np.exp(-np.abs(x))) + np.maximum(x, 0)


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


# ---------------------------------------------------------------- losses
def test_gan_losses_match_their_formulas():
    r = RNG.standard_normal((16, 1)).astype(np.float32)
    f = RNG.standard_normal((16, 1)).astype(np.float32)
    d_real, d_fake = sigmoid(r), sigmoid(f)
    np.testing.assert_allclose(losses.gan_discriminator_loss(r, f),
                               -np.log(d_real).mean() - np.log(1 - d_fake).mean(), rtol=1e-5)
    np.testing.assert_allclose(losses.gan_generator_loss_minimax(f), np.log(1 - d_fake).mean(),
                               rtol=1e-5)
    np.testing.assert_allclose(losses.gan_generator_loss_nonsaturating(f),
                               -np.log(d_fake).mean(), rtol=1e-5)
    np.testing.assert_allclose(losses.lsgan_discriminator_loss(r, f),
                               0.5 * ((r - 1) ** 2).mean() + 0.5 * (f ** 2).mean(), rtol=1e-5)
    np.testing.assert_allclose(losses.lsgan_generator_loss(f), 0.5 * ((f - 1) ** 2).mean(),
                               rtol=1e-5)


def test_gan_losses_stay_finite_for_confident_discriminators():
    big = jnp.array([[80.0], [-80.0]])
    for value in (losses.gan_discriminator_loss(big, -big),
                  losses.gan_generator_loss_minimax(big),
                  losses.gan_generator_loss_nonsaturating(-big)):
        assert np.isfinite(float(value))


def test_minimax_generator_gradient_saturates_and_nonsaturating_does_not():
    # When D confidently rejects fakes (logit -8), log(1 - D) is flat; -log D is steep.
    f = jnp.full((4, 1), -8.0)
    g_minimax = jax.grad(losses.gan_generator_loss_minimax)(f)
    g_nonsat = jax.grad(losses.gan_generator_loss_nonsaturating)(f)
    assert float(jnp.abs(g_minimax).max()) < 1e-3 < 0.2 < float(jnp.abs(g_nonsat).max())


# ---------------------------------------------------------------- a hand-checkable game
class ConstantGenerator(nn.Module):
    """G(z) = b for every latent: the game's generator side in closed form."""

    @nn.compact
    def __call__(self, z):
        b = self.param("b", lambda k, s: jnp.array([0.5, -1.0]), (2,))
        return jnp.broadcast_to(b, (z.shape[0], 2))


def hand_game(d_lr=0.1, g_lr=0.7, d_steps=1, loss="nonsaturating"):
    gen, disc = ConstantGenerator(), Dense(1)
    state = create_gan_state(gen, disc, optax.sgd(g_lr), optax.sgd(d_lr), jax.random.key(3),
                             latent_dim=3, sample_real=jnp.zeros((1, 2)))
    step = make_gan_step(gen, disc, latent_dim=3, loss=loss, d_steps=d_steps)
    return state, step


def numpy_d_update(w, c, b, real, lr):
    """One SGD step on -mean log D(x) - log(1 - D(b)), D(x) = sigmoid(x.w + c)."""
    r, f = real @ w + c, b @ w + c
    dr, df = -sigmoid(-r), sigmoid(f)  # d loss / d logit, per example
    gw = (dr[:, None] * real).mean(0) + df * b
    gc = dr.mean() + df
    return w - lr * gw, c - lr * gc


def test_discriminator_then_generator_each_with_its_own_optimizer():
    state, step = hand_game()
    real = RNG.standard_normal((8, 2)).astype(np.float32)
    new, metrics = jax.jit(step)(state, real, jax.random.key(0))
    w0 = np.asarray(state.disc.params["kernel"])[:, 0].astype(np.float64)
    c0 = float(state.disc.params["bias"][0])
    b0 = np.asarray(state.gen.params["b"], np.float64)
    w1, c1 = numpy_d_update(w0, c0, b0, real.astype(np.float64), lr=0.1)
    np.testing.assert_allclose(np.asarray(new.disc.params["kernel"])[:, 0], w1, rtol=1e-5)
    np.testing.assert_allclose(float(new.disc.params["bias"][0]), c1, rtol=1e-5)
    # the generator step uses the *updated* discriminator (w1, c1) and its own rate 0.7
    b1 = b0 - 0.7 * (-sigmoid(-(b0 @ w1 + c1)) * w1)
    np.testing.assert_allclose(np.asarray(new.gen.params["b"]), b1, rtol=1e-5)
    stale = b0 - 0.7 * (-sigmoid(-(b0 @ w0 + c0)) * w0)
    assert not np.allclose(b1, stale, rtol=1e-3)  # the order is visible in the numbers
    np.testing.assert_allclose(metrics["g_loss"], softplus(-(b0 @ w1 + c1)), rtol=1e-5)
    assert int(new.step) == int(new.gen.step) == int(new.disc.step) == 1


def test_d_steps_use_their_own_slices_of_the_real_batch():
    state, step = hand_game(d_steps=2)
    real = RNG.standard_normal((8, 2)).astype(np.float32)
    new, _ = step(state, real, jax.random.key(0))
    w = np.asarray(state.disc.params["kernel"])[:, 0].astype(np.float64)
    c = float(state.disc.params["bias"][0])
    b0 = np.asarray(state.gen.params["b"], np.float64)
    for part in (real[:4], real[4:]):
        w, c = numpy_d_update(w, c, b0, part.astype(np.float64), lr=0.1)
    np.testing.assert_allclose(np.asarray(new.disc.params["kernel"])[:, 0], w, rtol=1e-5)
    assert (int(new.step), int(new.gen.step), int(new.disc.step)) == (1, 1, 2)
    with pytest.raises(ShapeError, match="divisible by d_steps"):
        step(state, real[:7], jax.random.key(0))


def test_lsgan_and_minimax_generator_gradients_by_hand():
    real = RNG.standard_normal((8, 2)).astype(np.float32)
    for loss, dg_dscore in (("minimax", lambda s: -sigmoid(s)), ("lsgan", lambda s: s - 1.0)):
        state, step = hand_game(loss=loss)
        new, _ = step(state, real, jax.random.key(0))
        w1 = np.asarray(new.disc.params["kernel"])[:, 0].astype(np.float64)
        c1 = float(new.disc.params["bias"][0])
        b0 = np.asarray(state.gen.params["b"], np.float64)
        expected = b0 - 0.7 * dg_dscore(b0 @ w1 + c1) * w1
        np.testing.assert_allclose(np.asarray(new.gen.params["b"]), expected, rtol=1e-5,
                                   err_msg=loss)


def test_r1_penalty_of_a_linear_discriminator_is_its_squared_weight_norm():
    disc = Dense(1)
    ts = create_train_state(disc, optax.sgd(0.1), jax.random.key(0), jnp.zeros((1, 3)))
    w = np.asarray(ts.params["kernel"])[:, 0]
    x = jnp.asarray(RNG.standard_normal((5, 3)), jnp.float32)
    np.testing.assert_allclose(r1_penalty(disc, ts, ts.params, x, jax.random.key(1)),
                               (w ** 2).sum(), rtol=1e-5)


# ---------------------------------------------------------------- purity, jit, vmap
def mlp_game(r1_gamma=0.0, nonfinite="stop", lr=1e-3):
    gen, disc = MLP((16,), 2), MLP((16,), 1, activation="leaky_relu")
    tx = optax.adam(lr, b1=0.5)
    step = make_gan_step(gen, disc, latent_dim=4, r1_gamma=r1_gamma, nonfinite=nonfinite)

    def create(key):
        return create_gan_state(gen, disc, tx, tx, key, 4, jnp.zeros((1, 2)))

    return create, step


def test_step_is_pure_and_compiles_once():
    create, step = mlp_game(r1_gamma=0.1)
    state = create(jax.random.key(0))
    real = jnp.asarray(RNG.standard_normal((32, 2)), jnp.float32)
    eager, m_eager = step(state, real, jax.random.key(1))
    jitted = jax.jit(step)
    a, m_a = jitted(state, real, jax.random.key(1))
    b, _ = jitted(state, real, jax.random.key(1))  # same inputs -> same outputs
    for x, y, z in zip(jax.tree.leaves(eager), jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(y, z)
    assert set(m_a) == {"d_loss", "g_loss", "d_real", "d_fake", "r1", "d_grad_norm",
                        "g_grad_norm", "nonfinite"}
    assert float(m_a["r1"]) > 0 and float(m_a["nonfinite"]) == 0
    jitted(a, real, jax.random.key(2))
    assert jitted._cache_size() == 1  # a new state/key does not recompile
    c, _ = jitted(state, real, jax.random.key(5))  # another key: other noise, other result
    assert not np.allclose(c.gen.params["Dense_0"]["kernel"], a.gen.params["Dense_0"]["kernel"])


def test_vmapped_seeds_differ_and_match_single_runs():
    create, step = mlp_game()
    keys = jax.random.split(jax.random.key(0), 3)
    states = jax.jit(jax.vmap(create))(keys)
    real = jnp.asarray(RNG.standard_normal((3, 16, 2)), jnp.float32)
    step_keys = jax.random.split(jax.random.key(1), 3)
    new, metrics = jax.jit(jax.vmap(step))(states, real, step_keys)
    assert isinstance(new, GANState) and metrics["d_loss"].shape == (3,)
    kernels = np.asarray(new.gen.params["Dense_0"]["kernel"])
    assert not np.allclose(kernels[0], kernels[1]) and not np.allclose(kernels[1], kernels[2])
    single_step, single_create = jax.jit(step), jax.jit(create)
    for k in range(3):
        single, m = single_step(single_create(keys[k]), real[k], step_keys[k])
        np.testing.assert_allclose(kernels[k], single.gen.params["Dense_0"]["kernel"],
                                   rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(metrics["g_loss"][k], m["g_loss"], rtol=1e-5)


def test_nonfinite_step_is_dropped_and_recorded():
    create, step = mlp_game()
    step = jax.jit(step)
    state = jax.jit(create)(jax.random.key(0))
    bad = jnp.full((8, 2), jnp.nan)
    stopped, m = step(state, bad, jax.random.key(1))
    assert float(m["nonfinite"]) == 1.0 and int(stopped.bad_step) == 0
    for x, y in zip(jax.tree.leaves(stopped.gen.params), jax.tree.leaves(state.gen.params)):
        np.testing.assert_array_equal(x, y)
    good = jnp.asarray(RNG.standard_normal((8, 2)), jnp.float32)
    still, _ = step(stopped, good, jax.random.key(2))  # "stop" freezes the state from then on
    assert int(still.step) == 0 and int(still.bad_step) == 0
    skip_step = jax.jit(mlp_game(nonfinite="skip")[1])
    skipped, _ = skip_step(state, bad, jax.random.key(1))
    assert int(skipped.bad_step) == -1 and int(skipped.step) == 1
    moved, _ = skip_step(skipped, good, jax.random.key(2))
    assert int(moved.step) == 2 and int(moved.gen.step) == 1


def test_step_options_are_checked():
    gen, disc = MLP((4,), 2), MLP((4,), 1)
    with pytest.raises(ConfigError, match="unknown GAN loss 'wgan'"):
        make_gan_step(gen, disc, latent_dim=2, loss="wgan")
    with pytest.raises(ConfigError, match="d_steps >= 1"):
        make_gan_step(gen, disc, latent_dim=2, d_steps=0)
    with pytest.raises(ConfigError, match="nonfinite"):
        make_gan_step(gen, disc, latent_dim=2, nonfinite="ignore")
