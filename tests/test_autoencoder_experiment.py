"""experiments.autoencoder in-process (reconstruction error far below the digits' variance,
both classifiers learn), the autoencoder modules' shapes and parameter counts, and the PCA
projection against an eigendecomposition."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import experiments.autoencoder as autoencoder
from dlfun.errors import ConfigError, ShapeError
from dlfun.nn import MLP, Autoencoder, ConvDecoder, ConvEncoder, EncoderClassifier
from dlfun.train import count_params
from dlfun.viz import pca_project
from run_helpers import records, smoke


@pytest.mark.slow
def test_smoke_reconstructs_far_below_the_data_variance_and_classifiers_learn(tmp_path):
    cfg, summary = smoke(autoencoder, tmp_path)
    variance, mse = summary["data_variance"], summary["reconstruction_mse"]["mlp"]
    assert 0.05 < variance < 0.1  # the 8x8 digits' per-pixel variance (pixels in [0, 1])
    assert mse < 0.3 * variance  # the mean image would score `variance`
    ae = [r for r in records(tmp_path) if r["model"] == "mlp_autoencoder"]
    assert len(ae) == cfg.epochs and ae[-1]["train_loss"] < 0.5 * ae[0]["train_loss"]
    for start in ("finetune", "scratch"):  # 100 labelled digits, 20 steps; chance 0.1
        assert summary[f"{start}_accuracy"]["mlp"] > 0.3
    assert summary["latent_map"]["mlp"].startswith("PCA of the 16-d codes")
    for f in ("reconstructions.png", "latent_map.png"):
        assert (tmp_path / "run" / f).is_file(), f
    for name in ("mlp_autoencoder", "mlp_finetune", "mlp_scratch"):
        assert any((tmp_path / "run" / "checkpoints" / name).iterdir())


def _shapes(model, x):
    return jax.eval_shape(model.init, jax.random.key(0), x)["params"]


def test_conv_autoencoder_shapes_and_parameter_counts():
    ae = Autoencoder(ConvEncoder(16, (16, 32)), ConvDecoder((8, 8, 1), (32, 16)))
    x = jnp.zeros((3, 8, 8, 1))
    params = _shapes(ae, x)
    # encoder: 3*3*1*16+16, 3*3*16*32+32, (2*2*32)*16+16; decoder mirrors it
    assert count_params(params["encoder"]) == 160 + 4640 + 2064
    assert count_params(params["decoder"]) == 16 * 128 + 128 + 3 * 3 * 32 * 16 + 16 + 3 * 3 * 16 + 1
    out = jax.eval_shape(lambda v: ae.apply({"params": v}, x), params)
    codes = jax.eval_shape(lambda v: ae.apply({"params": v}, x, method=Autoencoder.encode),
                           params)
    assert out.shape == (3, 8, 8, 1) and codes.shape == (3, 16)
    three = Autoencoder(ConvEncoder(4, (8, 8, 8)), ConvDecoder((8, 8, 1), (8, 8, 8)))
    assert jax.eval_shape(lambda k: three.init_with_output(k, x)[0], jax.random.key(0)).shape \
        == (3, 8, 8, 1)


def test_encoder_classifier_takes_the_autoencoders_encoder_parameters():
    enc = MLP((32,), 8)
    ae = Autoencoder(enc, MLP((32,), 64, output_activation="sigmoid"))
    clf = EncoderClassifier(enc.clone(), 10)
    x = jnp.zeros((2, 64))
    ae_params, clf_params = _shapes(ae, x), _shapes(clf, x)
    assert set(clf_params) == {"encoder", "head"}
    assert jax.tree.map(lambda a: a.shape, clf_params["encoder"]) == \
        jax.tree.map(lambda a: a.shape, ae_params["encoder"])
    assert count_params(clf_params["head"]) == 8 * 10 + 10


def test_conv_decoder_refuses_a_size_its_stages_cannot_reach():
    with pytest.raises(ConfigError, match="not a multiple of 8"):
        _shapes(ConvDecoder((12, 12, 1), (8, 8, 8)), jnp.zeros((1, 4)))


def test_pca_project_matches_the_covariance_eigendecomposition():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 5)) @ np.diag([3.0, 2.0, 1.0, 0.5, 0.1]) + 4.0
    points, explained = pca_project(x, 2)
    evals, evecs = np.linalg.eigh(np.cov(x, rowvar=False, ddof=0))
    evals, evecs = evals[::-1], evecs[:, ::-1]
    np.testing.assert_allclose(explained, evals[:2] / evals.sum(), rtol=1e-10)
    np.testing.assert_allclose(points.var(axis=0), evals[:2], rtol=1e-10)
    # the same directions up to sign
    np.testing.assert_allclose(np.abs(points), np.abs((x - x.mean(0)) @ evecs[:, :2]),
                               atol=1e-10)
    with pytest.raises(ShapeError, match="dims"):
        pca_project(x, 6)


def test_bad_flags_are_one_line():
    with pytest.raises(ConfigError, match="--models"):
        autoencoder.Config(models=("vae",))
    with pytest.raises(ConfigError, match="--conv-features needs 1 to 3 stages"):
        autoencoder.Config(conv_features=(8, 8, 8, 8))
