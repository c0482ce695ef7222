"""Pictures of a trained convolutional classifier: first-layer filters, one example's
activation maps, and class activation maps for a few test images."""

from __future__ import annotations

from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ..nn.cnn_models import param_at
from ..nn.precision import at_least_float32
from ..plots import plot_heatmap_overlays, plot_image_grid, plot_image_rows
from .cam import class_activation_maps, upsample_maps


def first_layer_filters(model: nn.Module, params: dict) -> np.ndarray:
    """The first convolution's filters as images ``(out_channels, kh, kw, in_channels)``."""
    kernel = np.asarray(param_at(params, model.first_conv_path)["kernel"])  # (kh, kw, ci, co)
    return kernel.transpose(3, 0, 1, 2)


def plot_first_layer_filters(model: nn.Module, params: dict, path: str | Path,
                             title: str = "") -> Path:
    """Grid of the first convolution's filters (grey for one input channel, RGB for three;
    other channel counts show the channel mean)."""
    filters = first_layer_filters(model, params)
    if filters.shape[-1] not in (1, 3):
        filters = filters.mean(axis=-1, keepdims=True)
    return plot_image_grid(filters, path, [f"filter {i}" for i in range(len(filters))],
                           cols=min(8, len(filters)), title=title)


def activations(model: nn.Module, variables: dict, image: jax.Array) -> dict[str, np.ndarray]:
    """The sown intermediate activations of one image ``(H, W, C)`` in eval mode:
    ``{layer: (h, w, channels)}`` in the order the model computes them."""
    order: list[str] = []

    @jax.jit  # one compiled program: op-by-op dispatch would compile every layer on its own
    def sown(v, x):
        state = model.apply(v, x, train=False, mutable=["intermediates"])[1]["intermediates"]
        order.extend(state)  # the model's order, seen while tracing (jit sorts dict keys)
        return state

    state = sown(variables, jnp.asarray(image)[None])
    # float32 for the plots also from a bfloat16 model
    return {name: np.asarray(at_least_float32(state[name][0][0])) for name in order}


def plot_activation_maps(model: nn.Module, variables: dict, image: jax.Array,
                         path: str | Path, max_channels: int = 16, title: str = "") -> Path:
    """One row per layer: the input, then each sown layer's first ``max_channels`` maps."""
    rows = [("input", np.moveaxis(np.asarray(image), -1, 0))]
    for name, act in activations(model, variables, image).items():
        rows.append((f"{name}\n{act.shape[0]}x{act.shape[1]}x{act.shape[2]}",
                     np.moveaxis(act, -1, 0)[:max_channels]))
    return plot_image_rows(rows, path, max_cols=max_channels, title=title)


def plot_class_activation_maps(model: nn.Module, variables: dict, images: np.ndarray,
                               labels: np.ndarray, class_names, path: str | Path,
                               title: str = "") -> dict:
    """For each image: the image, then every class's activation map (upsampled to the image
    size) laid over it, titled with the class and its probability.

    Returns:
      ``{"maps": (n, h, w, classes), "probs": (n, classes)}`` (the maps before upsampling).
    """
    @jax.jit
    def maps_and_probs(v, x):
        maps = class_activation_maps(model, v, x)
        probs = jax.nn.softmax(at_least_float32(model.apply(v, x, train=False)), axis=-1)
        return maps, upsample_maps(maps, x.shape[1], x.shape[2]), probs

    maps, big, probs = (np.asarray(a) for a in maps_and_probs(variables, jnp.asarray(images)))
    plot_heatmap_overlays(images, np.moveaxis(big, -1, 1), path,
                          [_cam_titles(y, p, class_names) for y, p in zip(labels, probs)],
                          title=title)
    return {"maps": maps, "probs": probs}


def _cam_titles(label: int, probs: np.ndarray, class_names) -> list[str]:
    """"true <class>" over the image, then "<class>: <prob>" per map, * on the prediction."""
    best = int(probs.argmax())
    return [f"true {class_names[label]}"] + [
        f"{name}: {p:.0%}" + (" *" if k == best else "")
        for k, (name, p) in enumerate(zip(class_names, probs))]
