"""experiments.memorization (Zhang et al. 2017) and dlfun.data.randomize_labels."""

import jax
import numpy as np
import pytest

import experiments.memorization as memorization
from dlfun.data import randomize_labels
from dlfun.errors import ConfigError, DataError
from run_helpers import records, smoke


class TestRandomizeLabels:
    labels = np.arange(2000) % 10

    def test_keyed_nested_and_about_the_fraction(self):
        key = jax.random.key(7)
        y5, c5 = randomize_labels(key, self.labels, 0.5, 10)
        again, _ = randomize_labels(key, self.labels, 0.5, 10)
        np.testing.assert_array_equal(y5, again)  # the same key: the same labels
        assert abs(c5.mean() - 0.5) < 0.05
        np.testing.assert_array_equal(y5[~c5], self.labels[~c5])  # the rest untouched
        y2, c2 = randomize_labels(key, self.labels, 0.2, 10)
        assert (c5[c2]).all()  # nested: corrupted at 0.2 -> corrupted at 0.5, identically
        np.testing.assert_array_equal(y2[c2], y5[c2])
        other, _ = randomize_labels(jax.random.key(8), self.labels, 0.5, 10)
        assert not np.array_equal(other, y5)

    def test_full_noise_is_uniform_and_zero_noise_is_identity(self):
        y1, c1 = randomize_labels(jax.random.key(0), self.labels, 1.0, 10)
        assert c1.all()
        # a random class equals the true one 1 time in 10
        assert abs((y1 == self.labels).mean() - 0.1) < 0.03
        assert np.bincount(y1, minlength=10).min() > 150  # all classes drawn, ~200 each
        y0, c0 = randomize_labels(jax.random.key(0), self.labels, 0.0, 10)
        np.testing.assert_array_equal(y0, self.labels)
        assert not c0.any()

    def test_bad_input(self):
        with pytest.raises(ConfigError, match=r"fraction must be in \[0, 1\], got 1.5"):
            randomize_labels(jax.random.key(0), self.labels, 1.5, 10)
        with pytest.raises(DataError, match=r"class ids \(N,\) in \[0, 5\)"):
            randomize_labels(jax.random.key(0), self.labels, 0.5, 5)


def test_random_labels_are_memorized_and_test_accuracy_falls_to_chance(tmp_path):
    cfg, summary = smoke(memorization, tmp_path)
    train, test = summary["train_accuracy"], summary["test_accuracy"]
    # true labels: fitted and generalising; random labels: fitted, not generalising
    assert train["0"] >= 0.95 and test["0"] > 0.7
    assert train["1"] > test["1"] + 0.6
    assert test["1"] < 0.25  # chance is 0.1 (200 training examples, a few epochs)
    # random labels take longer to fit than true ones
    assert summary["epochs_to_fit"]["1"] > summary["epochs_to_fit"]["0"]
    assert summary["corrupted_share"] == {"0": 0.0, "1": 1.0}
    assert summary["train_examples"] == 200
    rec = [r for r in records(tmp_path) if r["model"] == "noise1"]
    assert len(rec) == cfg.epochs and rec[-1]["fit_accuracy"] == pytest.approx(train["1"])
    for f in ("memorization_curves.png", "memorization_accuracy.png"):
        assert (tmp_path / "run" / f).is_file(), f


def test_bad_flags_are_one_line_errors():
    with pytest.raises(ConfigError, match="--label-noise must be 0..1, got 1.5"):
        memorization.Config(label_noise=(0.0, 1.5))
    with pytest.raises(ConfigError, match="--label-noise lists 0.5 more than once"):
        memorization.Config(label_noise=(0.5, 0.5))
