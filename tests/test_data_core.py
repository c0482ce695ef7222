"""Embedded datasets, reproducible splits, standardisation, batching by key."""

import jax
import numpy as np
import pytest

from dlfun import data
from dlfun.data.images import flatten_splits, load_image_dataset
from dlfun.errors import ConfigError, DataError


def test_xor_table():
    x, y = data.xor()
    assert x.shape == (4, 2) and y.tolist() == [int(a) ^ int(b) for a, b in x]


@pytest.mark.parametrize("fn,d", [(data.apartments, 4), (data.advertising, 3)])
def test_regression_tables(fn, d):
    t = fn()
    assert t.features.shape == (24, d) and t.targets.shape == (24,)
    assert len(t.feature_names) == d and np.isfinite(t.features).all()


def test_advertising_newspaper_carries_no_signal_but_tv_does():
    t = data.advertising()
    corr = [abs(np.corrcoef(t.features[:, j], t.targets)[0, 1]) for j in range(3)]
    assert corr[1] > 0.3 and corr[2] < corr[0] and corr[2] < corr[1]


def test_digits_bundled():
    x, y = data.digits()
    assert x.shape == (1797, 8, 8, 1) and x.dtype == np.float32
    assert 0.0 <= x.min() and x.max() == 1.0 and sorted(set(y.tolist())) == list(range(10))
    from sklearn.datasets import load_digits  # read from its file: exactly scikit-learn's

    d = load_digits()
    np.testing.assert_array_equal(x[..., 0], d.images.astype(np.float32) / 16.0)
    np.testing.assert_array_equal(y, d.target)


def test_digits_fall_back_to_scikit_learn_when_its_file_moved(monkeypatch):
    import importlib.util

    x, y = data.digits()
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    x2, y2 = data.digits()
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(y, y2)


def test_split_is_reproducible_disjoint_and_complete():
    parts = data.split_indices(jax.random.key(3), 101, (0.7, 0.1, 0.2))
    again = data.split_indices(jax.random.key(3), 101, (0.7, 0.1, 0.2))
    other = data.split_indices(jax.random.key(4), 101, (0.7, 0.1, 0.2))
    assert all(np.array_equal(a, b) for a, b in zip(parts, again))
    assert not np.array_equal(parts[0], other[0])
    assert sorted(np.concatenate(parts).tolist()) == list(range(101))
    assert [len(p) for p in parts] == [71, 10, 20]


def test_split_fraction_errors():
    with pytest.raises(ConfigError, match="sum to 1"):
        data.split_indices(jax.random.key(0), 10, (0.5, 0.2))


def test_standardize_uses_training_statistics():
    rng = np.random.default_rng(0)
    tr, te = rng.normal(5, 3, (200, 2)), rng.normal(5, 3, (50, 2))
    tr_s, te_s, (mean, std) = data.standardize(tr, te)
    np.testing.assert_allclose(tr_s.mean(0), 0, atol=1e-7)
    np.testing.assert_allclose(tr_s.std(0), 1, atol=1e-6)
    np.testing.assert_allclose(te_s, (te - mean) / std)


def test_batch_indices_permute_every_epoch_differently():
    key = jax.random.key(0)
    b0 = np.asarray(data.batch_indices(key, 0, 50, 8))
    b1 = np.asarray(data.batch_indices(key, 1, 50, 8))
    assert b0.shape == (6, 8) and len(set(b0.ravel().tolist())) == 48
    assert np.array_equal(b0, np.asarray(data.batch_indices(key, 0, 50, 8)))
    assert not np.array_equal(b0, b1)


def test_iterate_batches_follows_batch_indices():
    x = np.arange(20)[:, None].astype(np.float32)
    y = np.arange(20)
    idx = np.asarray(data.batch_indices(jax.random.key(1), 2, 20, 6))
    batches = list(data.iterate_batches(jax.random.key(1), 2, x, y, 6))
    assert [b[1].tolist() for b in batches] == idx.tolist()


@pytest.mark.parametrize("bs,match", [(0, "at least 1"), (-3, "at least 1"),
                                      (51, "larger than the training set \\(50 examples\\)")])
def test_batch_size_errors(bs, match):
    with pytest.raises(ConfigError, match=match):
        data.num_batches(50, bs)


def test_digits_splits_and_flattening():
    d = load_image_dataset("digits", jax.random.key(0))
    s = d.splits
    assert len(s.train) + len(s.val) + len(s.test) == 1797 and d.num_classes == 10
    flat = flatten_splits(s)
    assert flat.train.x.shape == (len(s.train), 64)


def test_unknown_dataset_and_missing_files(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="unknown dataset 'imagenet'"):
        load_image_dataset("imagenet", jax.random.key(0))
    monkeypatch.delenv("DLFUN_DATA", raising=False)
    with pytest.raises(DataError, match="DLFUN_DATA"):
        load_image_dataset("mnist", jax.random.key(0), str(tmp_path))
