"""What each benchmark model is: input shape, batch sizes, loss, optimizer and analytic FLOPs.

One table shared by the plain-Flax and PyTorch reference steps, dlfun's step benchmarks and
``benchmarks.accelerator``, so every contender trains the same thing. FLOPs are counted
analytically from the matrix products and convolutions alone (2 FLOPs per multiply-add; a
training step counted as 3x the forward pass: the forward product, and the two products of
its backward, for the inputs and for the weights). Element-wise work (activations, batch
norm, the optimizer, LSTM gates) is left out, and so is the fact that the first layer's
input gradient is never computed: the count is the usual "6 x MACs x batch" convention.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LSTM_STEPS, LSTM_INPUTS, LSTM_HIDDEN = 100, 64, 256


@dataclass(frozen=True)
class ModelSpec:
    """One benchmark model.

    Attributes:
      name: key used on the command lines (``mlp``, ``lenet``, ``cnn``, ``resnet20``, ``lstm``).
      title: one-line description for tables.
      shape: one example's input shape, channels last (JAX layout).
      batch: the batch size the CPU step benchmarks use.
      large_batch: the large batch of ``benchmarks.accelerator``.
      loss: "ce" (integer labels over 10 classes) or "mse" (one regression target).
      optimizer: "sgdm" (SGD 0.01, momentum 0.9) or "adam" (Adam 1e-3).
      macs: multiply-adds of one example's forward pass (matmuls and convolutions).
      items_per_example: what the items/s column counts per example (an image: 1; a sequence:
        its time steps, i.e. tokens).
      unit: the item's name ("images" or "tokens").
    """

    name: str
    title: str
    shape: tuple[int, ...]
    batch: int
    large_batch: int
    loss: str
    optimizer: str
    macs: int
    items_per_example: int = 1
    unit: str = "images"

    def train_flops(self, batch: int) -> float:
        """Analytic FLOPs of one training step on ``batch`` examples: 6 x MACs x batch."""
        return 6.0 * self.macs * batch


def conv_macs(out_hw: int, k: int, c_in: int, c_out: int) -> int:
    """Multiply-adds of a k x k convolution with a square output of side ``out_hw``."""
    return out_hw * out_hw * k * k * c_in * c_out


def mlp_macs() -> int:
    """MLP 784-512-512-10, per example."""
    return 784 * 512 + 512 * 512 + 512 * 10


def lenet_macs() -> int:
    """LeNet-5 on 28x28x1 (first convolution padded by 2), per example."""
    return (conv_macs(28, 5, 1, 6) + conv_macs(10, 5, 6, 16)
            + 400 * 120 + 120 * 84 + 84 * 10)


def cnn_macs() -> int:
    """The 4-conv CNN on 32x32x3 (conv 32, 32, pool, conv 64, 64, pool, dense 256, 10)."""
    return (conv_macs(32, 3, 3, 32) + conv_macs(32, 3, 32, 32) + conv_macs(16, 3, 32, 64)
            + conv_macs(16, 3, 64, 64) + 4096 * 256 + 256 * 10)


def resnet20_macs(widths=(16, 32, 64), blocks_per_stage: int = 3, size: int = 32) -> int:
    """ResNet-20 on 32x32x3: stem conv, three stages of basic blocks (the first block of
    stages 2 and 3 strided, with a 1x1 projection shortcut), global pooling, dense 10."""
    total, c_in, hw = conv_macs(size, 3, 3, widths[0]), widths[0], size
    for stage, width in enumerate(widths):
        for block in range(blocks_per_stage):
            if stage > 0 and block == 0:
                hw //= 2
            total += conv_macs(hw, 3, c_in, width) + conv_macs(hw, 3, width, width)
            if c_in != width:
                total += conv_macs(hw, 1, c_in, width)
            c_in = width
    return total + widths[-1] * 10


def lstm_macs(steps: int = LSTM_STEPS, inputs: int = LSTM_INPUTS,
              hidden: int = LSTM_HIDDEN) -> int:
    """One LSTM layer over ``steps`` (4 gates: [x, h] @ W each step) and a Dense(1) head."""
    return steps * (inputs + hidden) * 4 * hidden + hidden


def transformer_block_macs(seq: int, d_model: int, mlp_ratio: int = 4) -> int:
    """One pre-norm transformer block over one sequence: Q, K, V and output projections
    (4 d^2 per token), the MLP (2 * ratio * d^2 per token), attention scores and the weighted
    sum of values (2 * seq * d per token; no causal saving counted)."""
    per_token = 4 * d_model ** 2 + 2 * mlp_ratio * d_model ** 2 + 2 * seq * d_model
    return seq * per_token


SPECS: dict[str, ModelSpec] = {
    "mlp": ModelSpec("mlp", "MLP 784-512-512-10", (784,), 256, 4096, "ce", "sgdm", mlp_macs()),
    "lenet": ModelSpec("lenet", "LeNet-5 28x28x1", (28, 28, 1), 128, 1024, "ce", "sgdm",
                       lenet_macs()),
    "cnn": ModelSpec("cnn", "4-conv CNN 32x32x3", (32, 32, 3), 128, 1024, "ce", "adam",
                     cnn_macs()),
    "resnet20": ModelSpec("resnet20", "ResNet-20 32x32x3", (32, 32, 3), 128, 1024, "ce",
                          "sgdm", resnet20_macs()),
    "lstm": ModelSpec("lstm", f"LSTM h{LSTM_HIDDEN} T{LSTM_STEPS}",
                      (LSTM_STEPS, LSTM_INPUTS), 64, 1024, "mse", "adam", lstm_macs(),
                      items_per_example=LSTM_STEPS, unit="tokens"),
}
STEP_MODELS = tuple(SPECS)


def make_data(spec: ModelSpec, batch: int, num_batches: int, seed: int = 0,
              channels_first: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Random inputs ``(num_batches, batch, *shape)`` float32 and targets: int32 labels
    ``(num_batches, batch)`` for "ce", float32 ``(num_batches, batch, 1)`` for "mse".

    ``channels_first`` moves an image's channels in front (PyTorch's NCHW layout).
    """
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((num_batches, batch, *spec.shape), dtype=np.float32)
    if channels_first and len(spec.shape) == 3:
        x = np.ascontiguousarray(np.moveaxis(x, -1, 2))  # (n, B, C, H, W)
    if spec.loss == "ce":
        y = rng.integers(0, 10, (num_batches, batch)).astype(np.int32)
    else:
        y = rng.standard_normal((num_batches, batch, 1), dtype=np.float32)
    return x, y
