"""A small transformer on the digits' pixels, for the tensor-parallel and FSDP schemes.

Each 8x8 digit is read as a text of 64 grey levels (0..16, row by row) after a start token,
and a decoder-only :class:`dlfun.nn.TransformerLM` predicts every pixel from those before it
(Image GPT's task, on a toy scale). The schemes keep feeding ``(images, labels)`` batches and
turn them into ``(tokens, next tokens)`` inside the step, so batching, resume and the
one-device check are the digits' own.

The ideal traffic of one training step (ring algorithms, bytes each of N devices sends):

* tensor parallel (Megatron): every block needs one all-reduce of its ``(B, T, d)``
  activations after attention and one after the MLP, forward, and the same two for the
  input gradients backward; the vocabulary-split embedding adds one forward and the
  vocabulary-split output layer one backward: ``(4 L + 2)`` all-reduces of ``B T d`` values;
* FSDP: one all-gather of the parameters and one reduce-scatter of the gradients, each
  ``(N-1)/N`` of the parameter bytes.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from ..errors import ConfigError
from ..nn import TransformerLM
from ..train.step import make_predict
from .collectives import ring_allreduce_bytes

GREY_LEVELS = 17
"""Pixel values of the digits (0..16): token ids 0..16."""
START = GREY_LEVELS
"""The token before the first pixel."""
VOCAB = 32
"""Vocabulary size: 18 ids used, padded (as Megatron pads its vocabulary) so it splits
evenly over up to 32 devices."""
PIXELS = 64
"""Sequence length ``T``: the pixels of one 8x8 digit."""


def pixel_tokens(images: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Digits ``(B, 8, 8, 1)`` in [0, 1] -> ``(inputs, targets)``, int32 ``(B, 64)`` each:
    the grey levels row by row (targets), and the same shifted right after ``START``."""
    levels = jnp.round(images.reshape(images.shape[0], -1) * (GREY_LEVELS - 1))
    targets = jnp.clip(levels, 0, GREY_LEVELS - 1).astype(jnp.int32)  # (B, 64)
    start = jnp.full((targets.shape[0], 1), START, jnp.int32)
    return jnp.concatenate([start, targets[:, :-1]], axis=1), targets


def pixel_batch(batch: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
    """A digits batch ``(images, labels)`` -> the language model's ``(inputs, targets)``
    (the labels are not used: the task is the pixels themselves)."""
    return pixel_tokens(batch[0])


def pixel_transformer(layers: int, width: int, heads: int, mlp: int) -> TransformerLM:
    """The transformer of the schemes: ``layers`` pre-norm causal blocks of ``width``
    features, ``heads`` heads and ``mlp`` hidden units, rotary positions, untied output
    layer, :data:`VOCAB` tokens, :data:`PIXELS` positions.

    Raises:
      ConfigError: ``heads`` does not divide ``width``.
    """
    if width % heads:
        raise ConfigError(f"transformer width {width} does not split into {heads} heads; "
                          f"choose a width that is a multiple of the heads")
    return TransformerLM(vocab_size=VOCAB, d_model=width, num_heads=heads, num_layers=layers,
                         mlp_dim=mlp, max_len=PIXELS)


def sample_tokens(rows: int = 1) -> np.ndarray:
    """Zeros ``(rows, 64)`` int32: an input of the right shape for initialisation."""
    return np.zeros((rows, PIXELS), np.int32)


def next_pixel_accuracy(model: TransformerLM, host_state: Callable[[Any], Any]) -> Callable:
    """``accuracy(state, images, labels) -> float``: the share of the pixels of ``images``
    whose grey level the model's most likely next token gets right (one device)."""
    predict = jax.jit(make_predict(model))

    def accuracy(state, images, labels) -> float:
        inputs, targets = pixel_tokens(jnp.asarray(images))
        logits = predict(jax.device_put(host_state(state), jax.devices()[0]), inputs)
        return float(jnp.mean(jnp.argmax(logits, -1) == targets))

    return accuracy


def ideal_traffic(scheme: str, devices: int, batch: int, layers: int, width: int,
                  param_bytes: int, seq_len: int = PIXELS, value_bytes: int = 4) -> dict:
    """The least collective traffic of one training step of the pixel transformer.

    Args:
      scheme: ``"tensor"`` or ``"fsdp"``.
      devices: N, all on the split axis.
      batch: global batch B.
      layers, width: L blocks of d features.
      param_bytes: bytes of all parameters (FSDP).
      seq_len: T (64 pixels).
      value_bytes: bytes of one activation value (4: float32).
    Returns:
      ``bytes_per_device`` (ring algorithms) and ``formula``, the sum in words.
    """
    if scheme == "tensor":
        activations = batch * seq_len * width * value_bytes
        count = 4 * layers + 2
        return dict(bytes_per_device=round(count * ring_allreduce_bytes(activations, devices)),
                    formula=f"{count} all-reduces (4 per block: 2 forward, 2 backward; "
                            f"embedding forward, output layer backward) of B x T x d = "
                            f"{batch} x {seq_len} x {width} values")
    if scheme == "fsdp":
        share = (devices - 1) / devices * param_bytes
        return dict(bytes_per_device=round(2 * share),
                    formula=f"all-gather of the {param_bytes:,} parameter bytes + "
                            f"reduce-scatter of the gradients")
    raise ConfigError(f"no ideal traffic for scheme {scheme!r}; use tensor or fsdp")
