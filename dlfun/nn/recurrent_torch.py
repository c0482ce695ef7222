"""Copy recurrent weights between dlfun and PyTorch's ``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU``.

PyTorch stores ``weight_ih (G*H, I)``, ``weight_hh (G*H, H)``, ``bias_ih (G*H,)`` and
``bias_hh (G*H,)`` per layer and direction, gate blocks in the same order as dlfun (LSTM
``i, f, g, o``; GRU ``r, z, n``). dlfun keeps the transposes ``w_ih``, ``w_hh`` and one bias
``b = bias_ih + bias_hh`` (the GRU candidate's ``b_hn`` stays separate, since the reset gate
multiplies it). Two conventions differ for the GRU, both handled here:

* PyTorch applies the reset gate after the recurrent matmul: only ``GRUCell(reset_after=True)``
  matches it exactly (converting a ``reset_after=False`` GRU raises ``ConfigError``);
* PyTorch's update gate is dlfun's ``1 - z``: its weights and bias change sign (exact).

Arrays go in as numpy (or anything ``np.asarray`` takes, torch tensors included) and come out
as numpy ``float32``; wrap the result in ``jax.numpy`` or pass it to ``apply`` as is.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from dlfun.errors import ConfigError, ShapeError

from .recurrent import Bidirectional
from .recurrent_cells import GRUCell, LSTMCell, RNNCell

GATES = {"rnn": 1, "lstm": 4, "gru": 3}


def _np(a) -> np.ndarray:
    """A float32 numpy copy of ``a`` (numpy array, list, or torch tensor)."""
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    return np.array(a, dtype=np.float32)


def _update_gate_sign(cell: str, gates: int, width: int) -> np.ndarray:
    """``(G*H,)`` factors: -1 on the GRU update gate block (PyTorch's z is our 1 - z), else 1."""
    sign = np.ones(gates * width, np.float32)
    if cell == "gru":
        sign[width:2 * width] = -1.0
    return sign


def cell_params_from_torch(cell: str, weight_ih, weight_hh, bias_ih=None,
                           bias_hh=None) -> dict[str, np.ndarray]:
    """One layer and direction of a PyTorch RNN/LSTM/GRU as dlfun cell parameters.

    Args:
      cell: ``"rnn"``, ``"lstm"`` or ``"gru"`` (the GRU becomes ``GRUCell(reset_after=True)``).
      weight_ih: ``(G*H, I)``; weight_hh: ``(G*H, H)``.
      bias_ih, bias_hh: ``(G*H,)`` each, or both None for ``bias=False``.

    Returns:
      ``{'w_ih': (I, G*H), 'w_hh': (H, G*H)}`` plus ``'b': (G*H,)`` (and ``'b_hn': (H,)`` for a
      GRU) when biases are given.
    """
    weight_ih, weight_hh = _np(weight_ih), _np(weight_hh)
    width = weight_hh.shape[1]
    rows = GATES[cell] * width
    if weight_ih.shape[0] != rows or weight_hh.shape[0] != rows:
        raise ShapeError(f"a PyTorch {cell} layer with hidden size {width} has weight_ih "
                         f"({rows}, I) and weight_hh ({rows}, {width}); got "
                         f"{weight_ih.shape} and {weight_hh.shape}; check the cell type")
    sign = _update_gate_sign(cell, GATES[cell], width)
    out = {"w_ih": weight_ih.T * sign, "w_hh": weight_hh.T * sign}
    if (bias_ih is None) != (bias_hh is None):
        raise ConfigError("pass both bias_ih and bias_hh, or neither (PyTorch bias=False)")
    if bias_ih is not None:
        bias_ih, bias_hh = _np(bias_ih), _np(bias_hh)
        if cell == "gru":  # b_hn sits inside r * (...): it cannot merge into b
            out["b_hn"] = bias_hh[2 * width:].copy()
            bias_hh = np.concatenate([bias_hh[: 2 * width], np.zeros(width, np.float32)])
        out["b"] = (bias_ih + bias_hh) * sign
    return out


def cell_params_to_torch(cell: str, params: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """dlfun cell parameters as PyTorch's ``weight_ih``, ``weight_hh``, ``bias_ih``, ``bias_hh``.

    The combined bias goes to ``bias_ih``; ``bias_hh`` is zero except a GRU's ``b_hn`` part.

    Args:
      cell: ``"rnn"``, ``"lstm"`` or ``"gru"``.
      params: a cell's parameters (``w_ih``, ``w_hh``, optionally ``b`` and ``b_hn``).

    Returns:
      ``{'weight_ih': (G*H, I), 'weight_hh': (G*H, H)}`` plus the biases when ``params`` has
      them.
    """
    w_ih, w_hh = _np(params["w_ih"]), _np(params["w_hh"])
    width = w_hh.shape[0]
    if cell == "gru" and "b" in params and "b_hn" not in params:
        raise ConfigError("this GRU has reset_after=False (the slides' form), which PyTorch's "
                          "nn.GRU cannot express; build it with GRUCell(reset_after=True)")
    sign = _update_gate_sign(cell, GATES[cell], width)
    out = {"weight_ih": (w_ih * sign).T.copy(), "weight_hh": (w_hh * sign).T.copy()}
    if "b" in params:
        out["bias_ih"] = _np(params["b"]) * sign
        out["bias_hh"] = np.zeros_like(out["bias_ih"])
        if cell == "gru":
            out["bias_hh"][2 * width:] = _np(params["b_hn"])
    return out


def _layer_keys(k: int, bidirectional: bool) -> dict[str, str]:
    """dlfun sub-tree name -> PyTorch key suffix for layer ``k`` ("" = no sub-tree)."""
    if bidirectional:
        return {"forward_layer": f"_l{k}", "backward_layer": f"_l{k}_reverse"}
    return {"": f"_l{k}"}


def _cell_kind(model) -> tuple[str, bool, bool]:
    """``(kind, use_bias, bidirectional)`` of a :class:`StackedRNN`, checked for PyTorch."""
    first = model.layers[0]
    bidirectional = isinstance(first, Bidirectional)
    cell = first.forward_layer.cell if bidirectional else first.cell
    kinds = {RNNCell: "rnn", LSTMCell: "lstm", GRUCell: "gru"}
    kind = kinds.get(type(cell))
    if kind is None:
        raise ConfigError(f"no PyTorch equivalent for {type(cell).__name__}")
    if kind == "gru" and not cell.reset_after:
        raise ConfigError("this GRU has reset_after=False (the slides' form), which PyTorch's "
                          "nn.GRU cannot express; build it with reset_after=True")
    return kind, cell.use_bias, bidirectional


def _layer_params(layer: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    """The cell parameters of one direction of one layer's params."""
    return layer[name]["cell"] if name else layer["cell"]


def params_from_torch(model, state_dict: Mapping[str, Any]) -> dict:
    """A PyTorch ``nn.RNN``/``nn.LSTM``/``nn.GRU`` state dict as params of ``model``.

    Args:
      model: a :class:`StackedRNN` as built by :func:`make_rnn` with the PyTorch module's
        sizes (``make_rnn('gru', H, ..., reset_after=True)`` for a GRU).
      state_dict: ``module.state_dict()`` (keys ``weight_ih_l0``, ``bias_hh_l1_reverse``, ...),
        tensors or numpy arrays.

    Returns:
      the ``params`` tree (``{'layers_0': ...}``); use it as ``model.apply({'params': p}, x)``.
    """
    kind, use_bias, bidirectional = _cell_kind(model)
    if use_bias != ("bias_ih_l0" in state_dict):
        raise ConfigError(f"the model has use_bias={use_bias} but the state dict "
                          f"{'has' if 'bias_ih_l0' in state_dict else 'lacks'} biases; build "
                          "the model with use_bias matching the PyTorch module's bias flag")
    out = {}
    for k in range(len(model.layers)):
        layer = {}
        for name, suffix in _layer_keys(k, bidirectional).items():
            if "weight_ih" + suffix not in state_dict:
                raise ConfigError(f"state dict has no weight_ih{suffix}; build the model with "
                                  "the PyTorch module's num_layers and bidirectional")
            p = cell_params_from_torch(kind, *(state_dict.get(key + suffix) for key in
                                               ("weight_ih", "weight_hh", "bias_ih", "bias_hh")))
            layer.update({"cell": p} if not name else {name: {"cell": p}})
        out[f"layers_{k}"] = layer
    return out


def params_to_torch(model, params: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Params of ``model`` (a :class:`StackedRNN`) as a PyTorch state dict of numpy arrays.

    Load it with ``module.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})``.
    """
    kind, _, bidirectional = _cell_kind(model)
    params = params.get("params", params)
    out = {}
    for k in range(len(model.layers)):
        for name, suffix in _layer_keys(k, bidirectional).items():
            sub = cell_params_to_torch(kind, _layer_params(params[f"layers_{k}"], name))
            out.update({key + suffix: v for key, v in sub.items()})
    return out
