"""The two benchmark CNNs (LeNet-5 and a 4-conv CNN) on dlfun's conv ops, plus their specs.

Kept in one small place so that dlfun.nn layers can replace ``OpsConv`` / ``max_pool`` later.
The architectures, batch sizes and optimizers match ``shared/baselines/plain_flax_bench.py``.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import optax

from dlfun.nn.conv_ops import conv2d, max_pool2d


class OpsConv(nn.Module):
    """Conv layer on :func:`conv2d`, initialised like ``flax.linen.Conv``: (N,H,W,C)->(N,H',W',F).

    Float32 parameters, computed in the input's dtype (bfloat16 inputs give a bfloat16 conv).
    """

    features: int
    kernel_size: tuple[int, int]
    padding: str | tuple = "SAME"
    impl: str = "auto"

    @nn.compact
    def __call__(self, x):
        shape = (*self.kernel_size, x.shape[-1], self.features)
        kernel = self.param("kernel", nn.initializers.lecun_normal(), shape)
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,))
        y = conv2d(x, kernel.astype(x.dtype), (1, 1), self.padding, impl=self.impl)
        return y + bias.astype(y.dtype)


def max_pool(x, impl):
    """2x2 max-pool, stride 2: (N, H, W, C) -> (N, H/2, W/2, C)."""
    return max_pool2d(x, (2, 2), (2, 2), "VALID", impl=impl)


class LeNet(nn.Module):
    """LeNet-5 on (N, 28, 28, 1) -> logits (N, 10). ``dtype``: computation dtype of the dense
    layers (None: Flax's default, from the inputs and float32 parameters)."""

    impl: str = "auto"
    dtype: Any = None

    @nn.compact
    def __call__(self, x):
        x = nn.relu(OpsConv(6, (5, 5), ((2, 2), (2, 2)), self.impl)(x))
        x = max_pool(x, self.impl)
        x = nn.relu(OpsConv(16, (5, 5), "VALID", self.impl)(x))
        x = max_pool(x, self.impl)
        x = x.reshape((x.shape[0], -1))  # (N, 400)
        x = nn.relu(nn.Dense(120, dtype=self.dtype)(x))
        x = nn.relu(nn.Dense(84, dtype=self.dtype)(x))
        return nn.Dense(10, dtype=self.dtype)(x)


class SmallCNN(nn.Module):
    """conv 32, 32, pool, conv 64, 64, pool, dense 256, 10 on (N, 32, 32, 3) -> (N, 10).
    ``dtype`` as in :class:`LeNet`."""

    impl: str = "auto"
    dtype: Any = None

    @nn.compact
    def __call__(self, x):
        for features in (32, 64):
            x = nn.relu(OpsConv(features, (3, 3), "SAME", self.impl)(x))
            x = nn.relu(OpsConv(features, (3, 3), "SAME", self.impl)(x))
            x = max_pool(x, self.impl)
        x = x.reshape((x.shape[0], -1))  # (N, 4096)
        x = nn.relu(nn.Dense(256, dtype=self.dtype)(x))
        return nn.Dense(10, dtype=self.dtype)(x)


def lenet_macs() -> int:
    """Multiply-adds of one LeNet forward pass, per image."""
    return 28 * 28 * 6 * 25 + 10 * 10 * 16 * 150 + 400 * 120 + 120 * 84 + 84 * 10


def cnn_macs() -> int:
    """Multiply-adds of one SmallCNN forward pass, per image."""
    return (32 * 32 * 32 * 27 + 32 * 32 * 32 * 288 + 16 * 16 * 64 * 288 + 16 * 16 * 64 * 576
            + 4096 * 256 + 256 * 10)


SPECS: dict[str, dict] = {
    "lenet": dict(module=LeNet, batch=128, shape=(28, 28, 1), macs=lenet_macs(),
                  optimizer=lambda: optax.sgd(0.01, momentum=0.9)),
    "cnn": dict(module=SmallCNN, batch=128, shape=(32, 32, 3), macs=cnn_macs(),
                optimizer=lambda: optax.adam(1e-3)),
}


def train_flops(model: str) -> float:
    """FLOPs of one training step (forward 2*MACs, training ~3x forward), as the baselines count."""
    spec = SPECS[model]
    return 6.0 * spec["macs"] * spec["batch"]


def make_train_step(module: nn.Module, tx: optax.GradientTransformation) -> Callable:
    """``step(params, opt_state, x, y) -> (params, opt_state, loss)`` with cross-entropy loss."""
    def loss_fn(params, x, y):
        logits = module.apply({"params": params}, x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    def step(params, opt_state, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return step
