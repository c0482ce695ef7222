"""How far to trust a classifier's probabilities: calibration (reliability bins, expected
calibration error) and telling in- from out-of-distribution inputs by a score (AUROC).
Host-side numpy on predicted class probabilities."""

from __future__ import annotations

import numpy as np

from ..errors import ShapeError


def reliability_bins(probs: np.ndarray, labels: np.ndarray,
                     num_bins: int = 15) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Confidence (the max probability) against accuracy in equal-width bins.

    Bin ``b`` holds the examples with confidence in ``(b/B, (b+1)/B]`` (the first bin also
    takes confidence 0), as in Guo et al. 2017, "On calibration of modern neural networks".

    Args:
      probs: class probabilities ``(N, C)``.
      labels: int labels ``(N,)``.
      num_bins: B.

    Returns:
      ``(confidence, accuracy, count)``, each ``(B,)``: the mean confidence and the accuracy
      of each bin's examples (0 for an empty bin), and how many there are.
    """
    probs, labels = np.asarray(probs, np.float64), np.asarray(labels)
    if probs.ndim != 2 or labels.shape != probs.shape[:1]:
        raise ShapeError(f"reliability_bins expects probabilities (N, C) and labels (N,), got "
                         f"{probs.shape} and {labels.shape}")
    conf = probs.max(-1)
    correct = (probs.argmax(-1) == labels).astype(np.float64)
    idx = np.clip(np.ceil(conf * num_bins).astype(np.int64) - 1, 0, num_bins - 1)
    count = np.bincount(idx, minlength=num_bins).astype(np.float64)
    safe = np.maximum(count, 1.0)
    confidence = np.bincount(idx, weights=conf, minlength=num_bins) / safe
    accuracy = np.bincount(idx, weights=correct, minlength=num_bins) / safe
    return confidence, accuracy, count.astype(np.int64)


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray,
                               num_bins: int = 15) -> float:
    """ECE: ``sum_b (n_b / N) |accuracy_b - confidence_b|`` over :func:`reliability_bins`
    (0 for a perfectly calibrated classifier; at most 1)."""
    confidence, accuracy, count = reliability_bins(probs, labels, num_bins)
    return float(np.sum(count / count.sum() * np.abs(accuracy - confidence)))


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of ``values`` ``(N,)`` in ascending order, tied values sharing the mean of
    their ranks."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    last = np.cumsum(counts)  # the rank of the last member of each group of equal values
    return (last - (counts - 1) / 2.0)[inverse.reshape(-1)]


def auroc(positive_scores: np.ndarray, negative_scores: np.ndarray) -> float:
    """Area under the ROC curve of telling positives from negatives by a score (higher means
    positive): the Mann-Whitney rank statistic ``P(s_pos > s_neg) + P(s_pos = s_neg) / 2``.

    Args:
      positive_scores: ``(P,)`` scores of the positives (e.g. max-probability on test digits).
      negative_scores: ``(Q,)`` scores of the negatives (e.g. on out-of-distribution inputs).

    Returns:
      a float in [0, 1]: 1 separates perfectly, 0.5 is chance.
    """
    pos = np.asarray(positive_scores, np.float64).reshape(-1)
    neg = np.asarray(negative_scores, np.float64).reshape(-1)
    if not len(pos) or not len(neg):
        raise ShapeError(f"auroc needs at least one positive and one negative score, got "
                         f"{len(pos)} and {len(neg)}")
    ranks = average_ranks(np.concatenate([pos, neg]))
    u = ranks[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2.0
    return float(u / (len(pos) * len(neg)))
