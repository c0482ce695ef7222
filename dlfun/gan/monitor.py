"""Per-epoch evaluation of one generator or K at once (stacked seeds): samples from fixed
noise, their scores, and a watch that reports mode collapse instead of failing silently."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ..train.epoch import compiled_over_models
from ..train.state import TrainState
from ..train.step import make_predict
from .evaluate import class_coverage, detect_mode_collapse, feature_stats, frechet_distance
from .evaluate import mode_metrics
from .sample import generate


def make_sampler(generator: nn.Module, num_models: int | None,
                 strategy: str = "vmap") -> Callable[[TrainState, jax.Array], np.ndarray]:
    """``sample(gen_state, z) -> (K, n, ...)`` host array of samples for latents ``z (n, d)``,
    ``K = 1`` for one (unstacked) generator; ``strategy`` "vmap", "map" or "sequential" as in
    :func:`dlfun.train.epoch.compiled_over_models`."""
    def one(gen, z):
        return generate(generator, gen, z)

    if num_models is None:
        jitted = jax.jit(lambda gen, z: one(gen, z)[None])
    else:
        jitted = compiled_over_models(one, (0, None), strategy, num_models)
    return lambda gen, z: np.asarray(jitted(gen, z))


def per_model(figures: list[dict], num_models: int | None) -> dict:
    """``[{name: value} per model]`` -> ``{name: value}`` for one model, ``{name: (K,) array}``
    for K (what :func:`dlfun.train.fit`'s ``on_epoch`` expects)."""
    names = [k for k, v in figures[0].items() if np.ndim(v) == 0]
    if num_models is None:
        return {k: figures[0][k] for k in names}
    return {k: np.array([f[k] for f in figures]) for k in names}


def ring_scores(samples: np.ndarray, centers: np.ndarray, std: float) -> list[dict]:
    """For samples ``(K, n, 2)`` of a ring of Gaussians: per model ``modes_covered``,
    ``high_quality`` and ``coverage`` (modes covered / modes)."""
    out = []
    for s in samples:
        m = mode_metrics(s, centers, std)
        out.append(dict(modes_covered=m["modes_covered"], high_quality=m["high_quality"],
                        coverage=m["modes_covered"] / len(centers),
                        mode_shares=m["mode_shares"]))
    return out


@dataclass
class FeatureClassifier:
    """A trained classifier used as a feature extractor: ``embed`` gives penultimate features,
    ``probs`` class probabilities (both ``(n, ...)`` host arrays, computed in batches)."""

    model: nn.Module
    state: TrainState
    embed_method: Callable
    batch_size: int = 1000
    _fns: dict = field(default_factory=dict, repr=False)

    def _run(self, name: str, fn: Callable, x: np.ndarray) -> np.ndarray:
        if name not in self._fns:
            self._fns[name] = jax.jit(fn)
        parts = [np.asarray(self._fns[name](self.state, jnp.asarray(x[i:i + self.batch_size])))
                 for i in range(0, len(x), self.batch_size)]
        return np.concatenate(parts)

    def embed(self, x: np.ndarray) -> np.ndarray:
        """Penultimate features ``(n, hidden)``."""
        def embed(s, b):
            variables = {"params": s.params} | ({"batch_stats": s.batch_stats}
                                                if s.batch_stats else {})
            return self.model.apply(variables, b, method=self.embed_method)

        return self._run("embed", embed, x)

    def probs(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities ``(n, classes)``."""
        predict = make_predict(self.model)
        return self._run("probs", lambda s, b: jax.nn.softmax(predict(s, b), axis=-1), x)


def image_scores(samples: np.ndarray, classifier: FeatureClassifier,
                 reference: tuple[np.ndarray, np.ndarray]) -> list[dict]:
    """For images ``(K, n, H, W, C)``: per model the classifier-feature Fréchet distance
    ``fid`` to the ``reference`` (mean, covariance) and :func:`class_coverage` figures, with
    ``coverage`` = classes covered / classes."""
    out = []
    for s in samples:
        cov = class_coverage(classifier.probs(s))
        fid = frechet_distance(*feature_stats(classifier.embed(s)), *reference)
        out.append(dict(fid=fid, coverage=cov["classes_covered"] / len(cov["class_shares"]),
                        **cov))
    return out


@dataclass(frozen=True)
class CollapseWatch:
    """Flags mode collapse: coverage below ``threshold`` for ``patience`` epochs in a row,
    judging epochs after the first ``warmup``."""

    threshold: float
    patience: int
    warmup: int = 0

    def episodes(self, coverage: list[float]) -> list[tuple[int, int]]:
        """Collapse episodes ``[(first_epoch, last_epoch)]`` in one model's coverage history."""
        return detect_mode_collapse(coverage, self.threshold, self.patience, self.warmup)

    def collapsed_now(self, coverage: list[float]) -> bool:
        """Whether the newest ``patience`` epochs (at least) were all collapsed."""
        n, p = len(coverage), self.patience
        return n - self.warmup >= p and all(c < self.threshold for c in coverage[n - p:])

    def just_collapsed(self, coverage: list[float]) -> bool:
        """Whether the newest epoch is the ``patience``-th collapsed epoch in a row."""
        n, p = len(coverage), self.patience
        return self.collapsed_now(coverage) and (n - self.warmup == p
                                                 or coverage[n - p - 1] >= self.threshold)

    def message(self, coverage: list[float], model: int | None, what: str) -> str | None:
        """The log line when an episode has just lasted ``patience`` epochs, else None."""
        if not self.just_collapsed(coverage):
            return None
        who = "" if model is None else f" (seed member {model})"
        first = len(coverage) - self.patience + 1
        return (f"WARNING: mode collapse{who}: {what} below {self.threshold:.0%} for "
                f"{self.patience} epochs in a row (epochs {first}-{len(coverage)})")


def coverage_history(records: list[dict], num_models: int | None) -> list[list[float]]:
    """Coverage per epoch for each model from the run's records (``[[...]]`` for one)."""
    if num_models is None:
        return [[r["coverage"] for r in records]]
    return [[r["coverage_each"][k] for r in records] for k in range(num_models)]


def member(tree: Any, k: int) -> Any:
    """Model ``k`` of a stacked pytree (for plots of one member)."""
    return jax.tree.map(lambda a: a[k], tree)
