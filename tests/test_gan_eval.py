"""GAN evaluation (Fréchet distance, modes and quality, class coverage, collapse detection),
sampling helpers, the ring data, and the GAN layers (upsampling, DCGAN players, SmallCNN)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dlfun.data import ring_centers, ring_of_gaussians
from dlfun.errors import ConfigError, ShapeError
from dlfun.gan import (class_coverage, detect_mode_collapse, feature_frechet_distance,
                       feature_stats, frechet_distance, interpolate_latents, mode_metrics)
from dlfun.gan.monitor import CollapseWatch, per_model, ring_scores
from dlfun.nn import DCGANDiscriminator, DCGANGenerator, SmallCNN, doublings, upsample_nearest
from dlfun.train.state import count_params

RNG = np.random.default_rng(0)


def random_cov(d, rank=None):
    a = RNG.standard_normal((d, rank or d))
    return a @ a.T / d


# ---------------------------------------------------------------- Fréchet distance
def test_frechet_identical_stats_is_zero_and_shift_is_squared_distance():
    mu, cov = RNG.standard_normal(6), random_cov(6)
    assert frechet_distance(mu, cov, mu, cov) == pytest.approx(0.0, abs=1e-9)
    shift = RNG.standard_normal(6)
    assert frechet_distance(mu, cov, mu + shift, cov) == pytest.approx((shift ** 2).sum(),
                                                                     rel=1e-9, abs=1e-9)


def test_frechet_of_commuting_covariances_is_the_closed_form():
    # diagonal covariances: tr(S1 + S2 - 2 sqrt(S1 S2)) = sum (sqrt(a) - sqrt(b))^2
    a, b = RNG.uniform(0.1, 3, 5), RNG.uniform(0.1, 3, 5)
    m1, m2 = RNG.standard_normal(5), RNG.standard_normal(5)
    expected = ((m1 - m2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    assert frechet_distance(m1, np.diag(a), m2, np.diag(b)) == pytest.approx(expected, rel=1e-9)


def test_frechet_general_covariances_match_the_eigenvalue_route():
    # tr((S1 S2)^1/2) = sum of sqrt of the (real, non-negative) eigenvalues of S1 S2
    s1, s2 = random_cov(7), random_cov(7)
    m1, m2 = RNG.standard_normal(7), RNG.standard_normal(7)
    tr_sqrt = np.sqrt(np.clip(np.linalg.eigvals(s1 @ s2).real, 0, None)).sum()
    expected = ((m1 - m2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt
    assert frechet_distance(m1, s1, m2, s2) == pytest.approx(expected, rel=1e-7)


def test_frechet_is_stable_for_singular_covariances():
    s1, s2 = random_cov(20, rank=3), random_cov(20, rank=5)  # fewer samples than features
    mu = np.zeros(20)
    assert frechet_distance(mu, s1, mu, s1) == pytest.approx(0.0, abs=1e-8)
    value = frechet_distance(mu, s1, mu, s2)
    assert np.isfinite(value) and value > 0


def test_feature_frechet_between_known_gaussians():
    # N(0, I) vs N(m, 4I) in d dimensions: ||m||^2 + d (1 + 4 - 2 * 2) = ||m||^2 + d
    d, n = 4, 200_000
    m = np.array([1.0, -0.5, 0.0, 2.0])
    a = RNG.standard_normal((n, d))
    b = m + 2.0 * RNG.standard_normal((n, d))
    assert feature_frechet_distance(a, b) == pytest.approx((m ** 2).sum() + d, rel=0.01)
    mu, cov = feature_stats(b)
    np.testing.assert_allclose(mu, m, atol=0.02)
    np.testing.assert_allclose(cov, 4 * np.eye(d), atol=0.05)


def test_frechet_shapes_are_checked():
    with pytest.raises(ShapeError, match="means"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(ShapeError, match="at least 2"):
        feature_stats(np.zeros((1, 3)))


# ---------------------------------------------------------------- modes, quality, coverage
def test_mode_metrics_on_hand_made_samples():
    centers = ring_centers(8, 2.0)
    std = 0.02
    at = np.repeat(centers[:5], 19, axis=0)  # 95 samples on 5 centres
    near = centers[5] + np.array([[0.059, 0.0]])  # 1 sample just inside 3 std of mode 5
    far = np.array([[0.0, 0.0], [1.0, 1.0], [centers[6, 0] + 0.07, centers[6, 1]],
                    [3.0, 0.0]])  # 4 samples nowhere near (one just outside 3 std)
    m = mode_metrics(np.concatenate([at, near, far]), centers, std)
    assert m["modes_covered"] == 6  # mode 5 holds 1 of 100 samples: exactly 1%
    assert m["high_quality"] == pytest.approx(0.96)
    np.testing.assert_allclose(m["mode_shares"], [0.19] * 5 + [0.01, 0.0, 0.0])
    with pytest.raises(ShapeError):
        mode_metrics(np.zeros((4, 3)), centers, std)


def test_ring_data_is_on_the_circle_and_balanced():
    x, comp = ring_of_gaussians(jax.random.key(0), 16000)
    centers = ring_centers()
    np.testing.assert_allclose(np.linalg.norm(centers, axis=1), 2.0, rtol=1e-6)
    dev = x - centers[comp]
    assert dev.std() == pytest.approx(0.02, rel=0.03)
    assert np.bincount(comp, minlength=8).min() > 1800
    m = mode_metrics(x, centers, 0.02)
    assert m["modes_covered"] == 8 and m["high_quality"] > 0.98  # 3 std in 2-D holds 98.9%
    with pytest.raises(ConfigError):
        ring_of_gaussians(jax.random.key(0), 10, std=0.0)


def test_class_coverage_shares_and_confidence():
    probs = np.zeros((10, 4))
    probs[np.arange(10), [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]] = 0.7
    probs[:, 3] += 0.1
    c = class_coverage(probs)
    np.testing.assert_allclose(c["class_shares"], [0.4, 0.3, 0.3, 0.0])
    assert c["min_class_share"] == 0.0 and c["classes_covered"] == 3
    assert c["confidence"] == pytest.approx(0.7)


# ---------------------------------------------------------------- mode collapse
def test_detect_mode_collapse_episodes():
    cov = [0.2, 0.9, 0.5, 0.5, 0.5, 1.0, 0.5, 0.5, 0.4, 0.3]
    assert detect_mode_collapse(cov, 0.75, 3) == [(3, 5), (7, 10)]
    assert detect_mode_collapse(cov, 0.75, 5) == []
    assert detect_mode_collapse(cov, 0.75, 1, warmup=2) == [(3, 5), (7, 10)]
    assert detect_mode_collapse(cov, 0.75, 1) == [(1, 1), (3, 5), (7, 10)]
    assert detect_mode_collapse([], 0.5, 2) == []


def test_collapse_watch_fires_on_a_collapsed_sample_set():
    centers = ring_centers()
    healthy = centers[np.arange(800) % 8] + 0.01 * RNG.standard_normal((800, 2))
    collapsed = centers[[2]] + 0.01 * RNG.standard_normal((800, 2))  # one mode only
    watch = CollapseWatch(threshold=0.75, patience=3, warmup=1)
    history, messages = [], []
    for epoch, samples in enumerate([collapsed, healthy, collapsed, collapsed, collapsed,
                                     collapsed, healthy], start=1):
        scores = ring_scores(samples[None], centers, 0.02)
        history.append(scores[0]["coverage"])
        messages.append(watch.message(history, None, "modes covered"))
    assert history[0] == 1 / 8 and history[1] == 1.0
    assert [m is not None for m in messages] == [False, False, False, False, True, False, False]
    assert "mode collapse" in messages[4] and "epochs 3-5" in messages[4]
    assert watch.episodes(history) == [(3, 6)]
    assert watch.collapsed_now(history[:6]) and not watch.collapsed_now(history)


def test_per_model_collects_scalars():
    figs = [dict(a=1.0, b=np.zeros(3)), dict(a=2.0, b=np.ones(3))]
    assert per_model(figs[:1], None) == {"a": 1.0}
    np.testing.assert_array_equal(per_model(figs, 2)["a"], [1.0, 2.0])


# ---------------------------------------------------------------- sampling helpers
def test_interpolation_runs_on_the_great_circle_between_the_ends():
    z = jax.random.normal(jax.random.key(0), (3, 5))
    w = jax.random.normal(jax.random.key(1), (3, 5))
    path = np.asarray(interpolate_latents(z, w, 7))
    assert path.shape == (3, 7, 5)
    np.testing.assert_allclose(path[:, 0], z, atol=1e-5)
    np.testing.assert_allclose(path[:, -1], w, atol=1e-5)
    # equal-norm ends: slerp keeps the norm; parallel ends: it falls back to a straight line
    zn = z / jnp.linalg.norm(z, axis=1, keepdims=True)
    wn = w / jnp.linalg.norm(w, axis=1, keepdims=True)
    np.testing.assert_allclose(np.linalg.norm(interpolate_latents(zn, wn, 5), axis=-1), 1.0,
                               rtol=1e-5)
    same = np.asarray(interpolate_latents(z, 2 * z, 3))
    np.testing.assert_allclose(same[:, 1], 1.5 * np.asarray(z), rtol=1e-5)


# ---------------------------------------------------------------- layers
def test_upsample_nearest_matches_kron():
    x = RNG.standard_normal((2, 3, 4, 5)).astype(np.float32)
    ref = np.stack([np.stack([np.kron(x[b, :, :, c], np.ones((2, 3))) for c in range(5)], -1)
                    for b in range(2)])
    np.testing.assert_array_equal(upsample_nearest(x, (2, 3)), ref)
    assert upsample_nearest(x[0], 2).shape == (6, 8, 5)
    with pytest.raises(ShapeError):
        upsample_nearest(x[0, 0], 2)


def test_doublings():
    assert [doublings(s) for s in (8, 28, 32, 7, 6)] == [1, 2, 3, 0, 1]


@pytest.mark.parametrize("shape,gen_f,disc_f", [((8, 8, 1), (64, 32), (32, 64)),
                                                ((28, 28, 1), (16, 8, 4), (4, 8, 16))])
def test_dcgan_players_shapes_and_parameter_counts(shape, gen_f, disc_f):
    h, w, c = shape
    gen = DCGANGenerator(shape, gen_f)
    z = jnp.zeros((3, 10))
    variables = jax.jit(gen.init)(jax.random.key(0), z)  # jitted: eager init is slow
    out = jax.jit(gen.apply)(variables, z)
    assert out.shape == (3, h, w, c) and float(out.min()) >= 0 and float(out.max()) <= 1
    s = 2 ** (len(gen_f) - 1)
    base = h // s * w // s * gen_f[0]
    expected = 10 * base + 2 * gen_f[0]  # dense (no bias) + batch norm
    for f_in, f_out in zip(gen_f, gen_f[1:]):
        expected += 9 * f_in * f_out + 2 * f_out  # conv (no bias) + batch norm
    expected += 9 * gen_f[-1] * c + c  # output conv with bias
    assert count_params(variables["params"]) == expected
    assert count_params(variables["batch_stats"]) == 2 * sum(gen_f)

    disc = DCGANDiscriminator(disc_f)
    x = jnp.zeros((3, h, w, c))
    dv = jax.jit(disc.init)(jax.random.key(1), x)
    assert jax.jit(disc.apply)(dv, x).shape == (3, 1)
    size, expected, c_in = h, 0, c
    for f in disc_f:
        expected += 16 * c_in * f + f
        size, c_in = -(-size // 2), f
    expected += size * size * c_in + 1
    assert count_params(dv["params"]) == expected


def test_generator_refuses_sizes_it_cannot_reach():
    with pytest.raises(ConfigError, match="divisible by 4"):
        DCGANGenerator((10, 10, 1), (8, 8, 8)).init(jax.random.key(0), jnp.zeros((1, 2)))


def test_small_cnn_logits_features_and_parameter_count():
    model = SmallCNN(num_classes=10, features=(4, 6), hidden=12)
    x = jnp.zeros((2, 8, 8, 1))
    v = jax.jit(model.init)(jax.random.key(0), x)
    assert jax.jit(model.apply)(v, x).shape == (2, 10)
    feats = model.apply(v, jnp.ones((2, 8, 8, 1)), method=SmallCNN.embed)
    assert feats.shape == (2, 12) and float(feats.min()) >= 0  # after the ReLU
    expected = (9 * 1 * 4 + 4) + (9 * 4 * 6 + 6) + (2 * 2 * 6 * 12 + 12) + (12 * 10 + 10)
    assert count_params(v["params"]) == expected
