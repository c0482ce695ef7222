"""Backpropagation by hand: the deltas of a sigmoid MLP with squared error, as the lectures
derive them by the chain rule, in NumPy float64 (no automatic differentiation).

For layers ``l = 1..L`` with ``z_l = a_{l-1} W_l + b_l`` and ``a_l = sigmoid(z_l)`` (``a_0 = x``)
and the loss ``E = 1/2 sum_n ||a_L - y||^2``:

* output delta ``delta_L = (a_L - y) * a_L * (1 - a_L)`` (``dE/dz_L``: the error times the
  sigmoid's derivative ``sigmoid' = a (1 - a)``);
* hidden delta ``delta_l = (delta_{l+1} W_{l+1}^T) * a_l * (1 - a_l)`` (the next layer's deltas
  sent back through its weights, times this layer's sigmoid derivative);
* gradients ``dE/dW_l = a_{l-1}^T delta_l`` (per example the outer product of the layer's input
  and its delta, summed over the batch) and ``dE/db_l = sum_n delta_l``.

The parameters use :class:`dlfun.nn.MLP`'s layout (``{"Dense_0": {"kernel": (in, out),
"bias": (out,)}, ...}``, ``y = x W + b``), so ``W`` here is the lectures' weight matrix
transposed: their ``W2 delta`` is ``delta @ kernel.T`` here.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from ..errors import ShapeError


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def _layer_names(params: Mapping[str, Any]) -> list[str]:
    """``Dense_0, Dense_1, ...`` in layer order (numerically: ``Dense_10`` after ``Dense_9``)."""
    return sorted(params, key=lambda n: int(n.rsplit("_", 1)[-1]))


def _layers(params: Mapping[str, Any]) -> list[tuple[np.ndarray, np.ndarray]]:
    """``[(kernel, bias), ...]`` in float64, in layer order."""
    return [(np.asarray(params[n]["kernel"], np.float64), np.asarray(params[n]["bias"], np.float64))
            for n in _layer_names(params)]


def sigmoid_mlp_forward(params: Mapping[str, Any], x: np.ndarray) -> list[np.ndarray]:
    """The activations ``[a_0 = x, a_1, ..., a_L]`` of a sigmoid MLP (sigmoid on every layer,
    the output too), each ``(batch, width_l)``, in float64."""
    acts = [np.asarray(x, np.float64)]
    for kernel, bias in _layers(params):
        acts.append(_sigmoid(acts[-1] @ kernel + bias))
    return acts


def sigmoid_mlp_deltas(params: Mapping[str, Any], x: np.ndarray, y: np.ndarray) -> dict:
    """The hand-derived backward pass of a sigmoid MLP with loss ``1/2 sum (a_L - y)^2``.

    Args:
      params: :class:`dlfun.nn.MLP` parameters (``{"Dense_i": {"kernel", "bias"}}``) of an MLP
        with sigmoid hidden and output activations, e.g. ``MLP((2,), 1, activation="sigmoid",
        output_activation="sigmoid")`` for the lectures' 2-2-1 network.
      x: inputs ``(batch, in)``.
      y: targets ``(batch, out)``.

    Returns:
      a dict of float64 arrays: ``loss`` (scalar), ``activations`` (``[x, a_1, ..., a_L]``,
      each ``(batch, width)``), ``deltas`` (``[delta_1, ..., delta_L]``, ``dE/dz_l`` each
      ``(batch, width_l)``) and ``grads`` (the parameters' layout: ``kernel`` ``(in, out)``,
      ``bias`` ``(out,)``).

    Raises:
      ShapeError: ``x`` or ``y`` do not fit the network's first or last layer.
    """
    layers = _layers(params)
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.ndim != 2 or x.shape[1] != layers[0][0].shape[0]:
        raise ShapeError(f"x must be (batch, {layers[0][0].shape[0]}), got {x.shape}")
    if y.shape != (x.shape[0], layers[-1][0].shape[1]):
        raise ShapeError(f"y must be ({x.shape[0]}, {layers[-1][0].shape[1]}), got {y.shape}")
    acts = sigmoid_mlp_forward(params, x)
    out = acts[-1]
    deltas = [(out - y) * out * (1.0 - out)]
    for (kernel, _), a in zip(reversed(layers[1:]), reversed(acts[1:-1])):
        deltas.insert(0, (deltas[0] @ kernel.T) * a * (1.0 - a))
    grads = {name: {"kernel": a_in.T @ d, "bias": d.sum(axis=0)}
             for name, a_in, d in zip(_layer_names(params), acts[:-1], deltas)}
    return dict(loss=0.5 * float(np.sum((out - y) ** 2)), activations=acts, deltas=deltas,
                grads=grads)
