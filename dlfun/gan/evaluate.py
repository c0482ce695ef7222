"""Measuring a generator: modes and sample quality on a known mixture, class coverage and a
classifier-feature Fréchet distance on images, and mode-collapse detection.

Host-side numpy (float64 where precision matters); the samples come from the device.
"""

from __future__ import annotations

import numpy as np

from ..errors import ShapeError


def mode_metrics(samples: np.ndarray, centers: np.ndarray, std: float,
                 radius_stds: float = 3.0, min_share: float = 0.01) -> dict:
    """Modes covered and sample quality on a Gaussian mixture with known centres.

    Args:
      samples: generated points ``(n, d)``.
      centers: the mixture's centres ``(m, d)``.
      std: the components' standard deviation.
      radius_stds: a sample is "high quality" within ``radius_stds * std`` of a centre.
      min_share: a mode counts as covered when at least this share of all samples lies
        within that radius of its centre.

    Returns:
      ``modes_covered`` (int), ``high_quality`` (share of samples near any centre) and
      ``mode_shares`` (``(m,)`` share of samples near each centre).
    """
    samples, centers = np.asarray(samples, np.float64), np.asarray(centers, np.float64)
    if samples.ndim != 2 or centers.ndim != 2 or samples.shape[1] != centers.shape[1]:
        raise ShapeError(f"mode_metrics needs samples (n, d) and centers (m, d), got "
                         f"{samples.shape} and {centers.shape}")
    dist = np.linalg.norm(samples[:, None, :] - centers[None, :, :], axis=-1)  # (n, m)
    near = dist <= radius_stds * std
    shares = near.mean(axis=0)
    return dict(modes_covered=int((shares >= min_share).sum()),
                high_quality=float(near.any(axis=1).mean()), mode_shares=shares)


def class_coverage(probs: np.ndarray) -> dict:
    """How generated images spread over a classifier's classes.

    Args:
      probs: the classifier's class probabilities on generated images ``(n, classes)``.

    Returns:
      ``class_shares`` ``(classes,)`` (share of samples predicted as each class),
      ``min_class_share``, ``classes_covered`` (classes with at least half their fair share,
      ``0.5 / classes``) and ``confidence`` (mean probability of the predicted class).
    """
    probs = np.asarray(probs, np.float64)
    k = probs.shape[-1]
    shares = np.bincount(probs.argmax(-1), minlength=k) / len(probs)
    return dict(class_shares=shares, min_class_share=float(shares.min()),
                classes_covered=int((shares >= 0.5 / k).sum()),
                confidence=float(probs.max(-1).mean()))


def feature_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``(d,)`` and covariance ``(d, d)`` (unbiased) of features ``(n, d)``, float64."""
    f = np.asarray(features, np.float64)
    if f.ndim != 2 or len(f) < 2:
        raise ShapeError(f"feature_stats needs at least 2 feature rows (n, d), got {f.shape}")
    return f.mean(axis=0), np.cov(f, rowvar=False)


def _psd_sqrt(a: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix by eigendecomposition
    (round-off negative eigenvalues clipped to zero)."""
    w, v = np.linalg.eigh((a + a.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray,
                     sigma2: np.ndarray) -> float:
    """Fréchet (2-Wasserstein) distance between Gaussians N(mu1, sigma1) and N(mu2, sigma2):
    ``||mu1 - mu2||^2 + tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^{1/2})``.

    ``tr((sigma1 sigma2)^{1/2})`` is computed as ``tr((A sigma2 A)^{1/2})`` with
    ``A = sigma1^{1/2}``: the same eigenvalues, but a symmetric PSD matrix, so an
    eigendecomposition in float64 gives it without the complex round-off a general matrix
    square root (scipy.linalg.sqrtm) produces on near-singular covariances.

    Args:
      mu1, mu2: means ``(d,)``.
      sigma1, sigma2: covariances ``(d, d)``.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != mu1.shape * 2:
        raise ShapeError(f"frechet_distance needs means (d,) and covariances (d, d) of one d, "
                         f"got {mu1.shape}, {s1.shape}, {mu2.shape}, {s2.shape}")
    a = _psd_sqrt(s1)
    cross = np.linalg.eigvalsh((a @ s2 @ a + (a @ s2 @ a).T) / 2)
    tr_sqrt = np.sqrt(np.clip(cross, 0.0, None)).sum()
    value = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2.0 * tr_sqrt
    return float(max(value, 0.0))


def feature_frechet_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """:func:`frechet_distance` between the feature statistics of two sets ``(n, d)``."""
    return frechet_distance(*feature_stats(features_a), *feature_stats(features_b))


def detect_mode_collapse(coverage: list[float], threshold: float, patience: int,
                         warmup: int = 0) -> list[tuple[int, int]]:
    """Episodes in which coverage stayed below ``threshold`` for ``patience`` epochs or more.

    Args:
      coverage: one figure per epoch (epoch 1 first), e.g. modes covered / modes.
      threshold: coverage below this counts as collapsed.
      patience: how many consecutive collapsed epochs make an episode.
      warmup: the first ``warmup`` epochs are not judged (a generator still learning covers
        little without having collapsed).

    Returns:
      ``[(first_epoch, last_epoch), ...]``, 1-based and inclusive; empty when none.
    """
    episodes, start = [], None
    for epoch, c in enumerate(list(coverage) + [np.inf], start=1):
        if c < threshold and epoch > warmup:
            start = epoch if start is None else start
            continue
        if start is not None and epoch - start >= patience:
            episodes.append((start, epoch - 1))
        start = None
    return episodes
