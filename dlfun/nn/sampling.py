"""Autoregressive sampling as one compiled ``lax.scan``, with a temperature.

Each step draws a token from ``softmax(logits / temperature)`` and feeds it back. Temperature 0
is greedy decoding (the argmax); temperatures below 1 sharpen the distribution, above 1 flatten
it. The temperature is an array argument, so one compiled sampler serves every temperature.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from ..errors import ShapeError

Array = jax.Array


def pick_token(key: Array, logits: Array, temperature: Array | float) -> Array:
    """One token per row of ``logits (B, V)``: a draw at ``temperature`` > 0, the argmax at 0.

    Returns int32 ``(B,)``.
    """
    temperature = jnp.asarray(temperature, logits.dtype)
    greedy = jnp.argmax(logits, axis=-1)
    # Dividing by a tiny positive number instead of 0 keeps the unused branch finite.
    scaled = logits / jnp.maximum(temperature, jnp.finfo(logits.dtype).tiny)
    drawn = jax.random.categorical(key, scaled, axis=-1)
    return jnp.where(temperature > 0, drawn, greedy).astype(jnp.int32)


def sample_tokens(step: Callable[[Any, Array], tuple[Any, Array]], carry: Any, logits: Array,
                  key: Array, length: int, temperature: Array | float = 1.0) -> Array:
    """Generate ``length`` tokens, feeding each back into ``step``, in one ``lax.scan``.

    Args:
      step: ``step(carry, tokens (B,)) -> (carry, logits (B, V))``, one model step.
      carry: the model state after the prompt.
      logits: ``(B, V)``, the next-token logits after the prompt.
      key: PRNG key (step ``t`` uses ``fold_in(key, t)``).
      length: tokens to generate (static).
      temperature: scalar; 0 means greedy decoding.

    Returns:
      int32 tokens ``(B, length)``.
    """
    def body(state, t):
        carry, logits = state
        token = pick_token(jax.random.fold_in(key, t), logits, temperature)
        carry, logits = step(carry, token)
        return (carry, logits), token

    _, tokens = lax.scan(body, (carry, logits), jnp.arange(length))
    return tokens.T


def sample_language_model(model: nn.Module, variables: Any, key: Array, prompt: Array,
                          length: int, temperature: Array | float = 1.0) -> Array:
    """Continue ``prompt`` with a model that has ``with_carry(tokens, carry)`` (e.g.
    :class:`dlfun.nn.CharLM`). Pure; ``jax.jit`` it with ``length`` static.

    Args:
      model: the Linen module; ``model.apply(variables, tokens (B, T), carry,
        method="with_carry") -> (carry, logits (B, T, V))``.
      variables: its variables (``{"params": ...}``).
      key: PRNG key.
      prompt: ids ``(B, P)``, ``P >= 1``: the text to continue.
      length: tokens to generate.
      temperature: scalar; 0 means greedy decoding.

    Returns:
      int32 ids ``(B, length)``: the continuation (without the prompt).

    A model with a fixed context (an attribute ``max_len``, as :class:`dlfun.nn.TransformerLM`
    and its KV cache) must hold the prompt and every token fed back: ``P + length - 1 <=
    max_len`` (the last token drawn is not fed back).
    """
    _check_context(model, prompt, length)

    def run(tokens, carry):
        return model.apply(variables, tokens, carry, method="with_carry")

    carry, logits = run(prompt, None)

    def step(carry, token):
        carry, logits = run(token[:, None], carry)
        return carry, logits[:, 0]

    return sample_tokens(step, carry, logits[:, -1], key, length, temperature)


def _check_context(model: nn.Module, prompt: Array, length: int) -> None:
    """ShapeError when a model with a fixed ``max_len`` cannot hold the generated text."""
    max_len = getattr(model, "max_len", None)
    if max_len is not None and prompt.shape[-1] + length - 1 > max_len:
        raise ShapeError(f"a {prompt.shape[-1]}-token prompt and {length} sampled tokens need "
                         f"{prompt.shape[-1] + length - 1} positions but the model's max_len is "
                         f"{max_len}; sample fewer tokens, shorten the prompt or raise max_len")
