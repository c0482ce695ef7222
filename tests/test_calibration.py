"""Calibration and out-of-distribution metrics against hand-computed cases and brute force."""

import numpy as np
import pytest

from dlfun.errors import ShapeError
from dlfun.train.calibration import (auroc, average_ranks, expected_calibration_error,
                                     reliability_bins)

RNG = np.random.default_rng(0)


def test_ece_of_a_hand_computed_case():
    # confidences 0.9, 0.9, 0.6, 0.6 with 2 bins: (0, .5] is empty, (.5, 1] holds all four
    # at mean confidence 0.75; 2 of 4 correct: ECE = |0.5 - 0.75| = 0.25
    probs = np.array([[0.9, 0.1], [0.1, 0.9], [0.6, 0.4], [0.4, 0.6]])
    labels = np.array([0, 0, 0, 0])
    assert expected_calibration_error(probs, labels, num_bins=2) == pytest.approx(0.25)
    # 10 bins: bin (.8, .9] has the two 0.9s (1 correct: |0.5 - 0.9| = 0.4), bin (.5, .6]
    # the two 0.6s (1 correct: |0.5 - 0.6| = 0.1): ECE = 0.5 * 0.4 + 0.5 * 0.1 = 0.25
    conf, acc, count = reliability_bins(probs, labels, num_bins=10)
    assert count.tolist() == [0, 0, 0, 0, 0, 2, 0, 0, 2, 0]
    np.testing.assert_allclose(conf[[5, 8]], [0.6, 0.9])
    np.testing.assert_allclose(acc[[5, 8]], [0.5, 0.5])
    assert expected_calibration_error(probs, labels, num_bins=10) == pytest.approx(0.25)


def test_ece_is_zero_when_confidence_equals_accuracy_and_bins_are_right_closed():
    # four examples at confidence 0.75, three of them right
    probs = np.tile([[0.75, 0.25]], (4, 1))
    assert expected_calibration_error(probs, np.array([0, 0, 0, 1]), num_bins=4) == 0.0
    # confidence exactly 0.5 belongs to (0.25, 0.5], not (0.5, 0.75]
    _, _, count = reliability_bins(np.array([[0.5, 0.5]]), np.array([0]), num_bins=4)
    assert count.tolist() == [0, 1, 0, 0]


def brute_force_auroc(pos, neg):
    """P(pos > neg) + P(pos == neg) / 2 over all pairs (float64)."""
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0) + 0.5 * (diff == 0)).mean())


def test_auroc_hand_cases_and_ties():
    assert auroc([0.9, 0.8], [0.1, 0.2, 0.3]) == 1.0
    assert auroc([0.1], [0.9]) == 0.0
    assert auroc([0.5, 0.5], [0.5]) == 0.5
    # pos {3, 1}, neg {2, 1}: pairs (3>2, 3>1, 1<2, 1=1) -> (1 + 1 + 0 + 0.5) / 4
    assert auroc([3.0, 1.0], [2.0, 1.0]) == 0.625
    np.testing.assert_array_equal(average_ranks(np.array([5.0, 1.0, 5.0, 3.0])),
                                  [3.5, 1.0, 3.5, 2.0])


def test_auroc_equals_pair_counting_and_sklearn():
    pos = RNG.integers(0, 20, 200) / 10.0  # many ties
    neg = RNG.integers(0, 15, 150) / 10.0
    assert auroc(pos, neg) == pytest.approx(brute_force_auroc(pos, neg), abs=1e-12)
    metrics = pytest.importorskip("sklearn.metrics", reason="scikit-learn not installed")
    labels = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    assert auroc(pos, neg) == pytest.approx(metrics.roc_auc_score(labels, np.r_[pos, neg]))


def test_bad_shapes_are_one_line():
    with pytest.raises(ShapeError, match="at least one positive"):
        auroc([], [0.1])
    with pytest.raises(ShapeError, match=r"\(N, C\)"):
        reliability_bins(np.ones(3), np.zeros(3))
