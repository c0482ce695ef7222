"""Class activation maps: where in the image a convolutional classifier finds each class.

CAM (Zhou et al. 2016, "Learning Deep Features for Discriminative Localization"): for a net
that ends in global average pooling (GAP) of the last feature maps ``f_k(x, y)`` followed by a
dense layer with weights ``w_k^c``, the score of class c is ``sum_k w_k^c mean_xy f_k(x, y)
+ b_c``, so the map ``M_c(x, y) = sum_k w_k^c f_k(x, y)`` says how much each position adds to
it (its mean plus the bias is the logit).

Grad-CAM (Selvaraju et al. 2017) extends this to any head: the weights are the gradients of
the class score with respect to the feature maps, averaged over positions. On a GAP + dense
head those gradients are ``w_k^c / (h * w)`` everywhere, so Grad-CAM equals CAM divided by the
number of positions; dlfun uses CAM where the model has a GAP head and Grad-CAM otherwise.
Behind a flatten + dense head (LeNet-5, VGG's "fc" head) the weights differ per position, and
averaging their gradients over positions can cancel exactly the evidence that decided the
class: there Grad-CAM is a rough linearisation, and a GAP model (ResNet-20, ``VGGSmall(head=
"gap")``) gives the maps CAM was designed for.

The models are those of :mod:`dlfun.nn.cnn_models`: they provide ``features`` and
``classify`` methods and a ``gap_dense_path``.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from ..nn.cnn_models import param_at
from ..nn.precision import at_least_float32


def feature_maps(model: nn.Module, variables: dict, x: jax.Array) -> jax.Array:
    """The last convolutional feature maps in eval mode: ``(batch, h, w, k)``, at least float32
    (a bfloat16 model's maps are widened, so the maps below are float32 too)."""
    return at_least_float32(model.apply(variables, x, train=False, method="features"))


def cam(feats: jax.Array, kernel: jax.Array) -> jax.Array:
    """CAM from feature maps ``(batch, h, w, k)`` and the GAP head's dense kernel
    ``(k, classes)``: ``M_c = sum_k w_k^c f_k``, shape ``(batch, h, w, classes)``."""
    return jnp.einsum("bhwk,kc->bhwc", feats, kernel)


def grad_cam(model: nn.Module, variables: dict, feats: jax.Array) -> jax.Array:
    """Grad-CAM maps ``(batch, h, w, classes)`` (before Grad-CAM's final ReLU).

    Args:
      model: a model with a ``classify(features, train)`` method.
      variables: its variables (``params``, and ``batch_stats`` if it has batch norm).
      feats: ``(batch, h, w, k)`` from :func:`feature_maps`.
    """
    def logits(f):  # float32 scores, so the float32 seeds below fit a bfloat16 model too
        return at_least_float32(model.apply(variables, f, train=False, method="classify"))

    out, vjp = jax.vjp(logits, feats)
    batch, classes = out.shape
    # One backward pass per class; in eval mode examples are independent, so the gradient of
    # the batch's summed class-c score gives every example's own gradient.
    seeds = jnp.broadcast_to(jnp.eye(classes)[:, None, :], (classes, batch, classes))
    grads = jax.vmap(lambda s: vjp(s)[0])(seeds)  # (classes, batch, h, w, k)
    alpha = grads.mean(axis=(2, 3))  # (classes, batch, k)
    return jnp.einsum("cbk,bhwk->bhwc", alpha, feats)


def class_activation_maps(model: nn.Module, variables: dict, x: jax.Array) -> jax.Array:
    """Every class's activation map for images ``x (batch, H, W, C)``.

    Returns:
      ``(batch, h, w, classes)`` at the last feature maps' resolution: CAM for models with a
      GAP + dense head (``model.gap_dense_path`` not None), Grad-CAM otherwise.
    """
    feats = feature_maps(model, variables, x)
    path = getattr(model, "gap_dense_path", None)
    if path is None:
        return grad_cam(model, variables, feats)
    return cam(feats, param_at(variables["params"], path)["kernel"])


def upsample_maps(maps: jax.Array, height: int, width: int) -> jax.Array:
    """Bilinear upsampling of ``(batch, h, w, classes)`` maps to ``(batch, height, width,
    classes)``, to overlay them on the input images."""
    b, _, _, c = maps.shape
    return jax.image.resize(maps, (b, height, width, c), "bilinear")
