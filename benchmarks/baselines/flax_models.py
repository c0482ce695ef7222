"""The benchmark models in plain Flax Linen, written the way a typical user writes them.

``flax.linen``'s own layers (``nn.Dense``, ``nn.Conv``, ``nn.BatchNorm``, ``nn.max_pool``,
``nn.RNN`` over ``nn.OptimizedLSTMCell``), an Optax optimizer and one ``jax.jit``-ed step
``value_and_grad`` -> ``tx.update`` -> ``apply_updates``: no dlfun code at all. These are the
reference the dlfun step benchmarks race against. Every module takes ``dtype`` (the
computation dtype; parameters stay float32), as Flax's layers do.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from .specs import LSTM_HIDDEN, ModelSpec


class MLP(nn.Module):
    """784-512-512-10 with ReLU: ``(B, 784) -> (B, 10)``."""

    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = True):
        for width in (512, 512):
            x = nn.relu(nn.Dense(width, dtype=self.dtype)(x))
        return nn.Dense(10, dtype=self.dtype)(x)


class LeNet(nn.Module):
    """LeNet-5 for 28x28 images (first convolution padded by 2): ``(B, 28, 28, 1) -> (B, 10)``."""

    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = True):
        x = nn.max_pool(nn.relu(nn.Conv(6, (5, 5), padding=2, dtype=self.dtype)(x)), (2, 2),
                        strides=(2, 2))
        x = nn.max_pool(nn.relu(nn.Conv(16, (5, 5), padding="VALID", dtype=self.dtype)(x)),
                        (2, 2), strides=(2, 2))
        x = x.reshape((x.shape[0], -1))  # (B, 5*5*16)
        x = nn.relu(nn.Dense(120, dtype=self.dtype)(x))
        x = nn.relu(nn.Dense(84, dtype=self.dtype)(x))
        return nn.Dense(10, dtype=self.dtype)(x)


class SmallCNN(nn.Module):
    """conv 32, 32, pool, conv 64, 64, pool, dense 256, 10: ``(B, 32, 32, 3) -> (B, 10)``."""

    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = True):
        for width in (32, 64):
            x = nn.relu(nn.Conv(width, (3, 3), dtype=self.dtype)(x))
            x = nn.relu(nn.Conv(width, (3, 3), dtype=self.dtype)(x))
            x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = x.reshape((x.shape[0], -1))  # (B, 8*8*64)
        x = nn.relu(nn.Dense(256, dtype=self.dtype)(x))
        return nn.Dense(10, dtype=self.dtype)(x)


class ResidualBlock(nn.Module):
    """relu(shortcut(x) + bn(conv(relu(bn(conv(x)))))), 1x1 projection where the shape changes."""

    width: int
    stride: int = 1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = True):
        conv = lambda w, k, s: nn.Conv(w, (k, k), (s, s), padding=k // 2, use_bias=False,
                                       dtype=self.dtype)
        norm = lambda: nn.BatchNorm(use_running_average=not train, momentum=0.9,
                                    dtype=self.dtype)
        y = nn.relu(norm()(conv(self.width, 3, self.stride)(x)))
        y = norm()(conv(self.width, 3, 1)(y))
        if self.stride != 1 or x.shape[-1] != self.width:
            x = norm()(conv(self.width, 1, self.stride)(x))
        return nn.relu(x + y)


class ResNet20(nn.Module):
    """ResNet-20 for 32x32 images (three stages of 3 blocks, 16/32/64 channels, global average
    pooling, dense 10): ``(B, 32, 32, 3) -> (B, 10)``."""

    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = True):
        x = nn.Conv(16, (3, 3), padding=1, use_bias=False, dtype=self.dtype)(x)
        x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9,
                                 dtype=self.dtype)(x))
        for stage, width in enumerate((16, 32, 64)):
            for block in range(3):
                stride = 2 if stage > 0 and block == 0 else 1
                x = ResidualBlock(width, stride, self.dtype)(x, train)
        return nn.Dense(10, dtype=self.dtype)(jnp.mean(x, axis=(1, 2)))


class LSTMRegressor(nn.Module):
    """One LSTM layer (``nn.RNN`` over ``nn.OptimizedLSTMCell``), Dense(1) on the last hidden
    state: ``(B, T, I) -> (B, 1)``."""

    hidden: int = LSTM_HIDDEN
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = True):
        (_, h), _ = nn.RNN(nn.OptimizedLSTMCell(self.hidden, dtype=self.dtype),
                           return_carry=True)(x)
        return nn.Dense(1, dtype=self.dtype)(h)


MODULES: dict[str, type[nn.Module]] = {"mlp": MLP, "lenet": LeNet, "cnn": SmallCNN,
                                       "resnet20": ResNet20, "lstm": LSTMRegressor}


def make_optimizer(kind: str) -> optax.GradientTransformation:
    """"sgdm": SGD 0.01 with momentum 0.9; "adam": Adam 1e-3."""
    return optax.sgd(0.01, momentum=0.9) if kind == "sgdm" else optax.adam(1e-3)


def loss_value(kind: str, out: jax.Array, y: jax.Array) -> jax.Array:
    """Mean cross-entropy (integer labels) or MSE, computed in float32."""
    out = out.astype(jnp.float32)
    if kind == "ce":
        return optax.softmax_cross_entropy_with_integer_labels(out, y).mean()
    return jnp.mean((out - y) ** 2)


def make_step(module: nn.Module, tx: optax.GradientTransformation, loss: str) -> Callable:
    """``step(variables, opt_state, x, y) -> (variables, opt_state, loss)``: one training step.

    ``variables`` is the ``init`` dict (``params``, plus ``batch_stats`` for ResNet-20, whose
    running averages are updated as in any Flax training loop).
    """
    def loss_fn(params, rest, x, y):
        out, new_rest = module.apply({"params": params, **rest}, x, train=True,
                                     mutable=list(rest))
        return loss_value(loss, out, y), new_rest

    def step(variables, opt_state, x, y):
        params = variables["params"]
        rest = {k: v for k, v in variables.items() if k != "params"}
        (value, rest), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, rest, x, y)
        updates, opt_state = tx.update(grads, opt_state, params)
        return {"params": optax.apply_updates(params, updates), **rest}, opt_state, value

    return step


def build(spec: ModelSpec, dtype=jnp.float32) -> tuple[nn.Module, optax.GradientTransformation,
                                                         Callable]:
    """``(module, optimizer, step)`` of the plain-Flax reference for ``spec``."""
    module, tx = MODULES[spec.name](dtype=dtype), make_optimizer(spec.optimizer)
    return module, tx, make_step(module, tx, spec.loss)
