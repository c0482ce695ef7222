"""The benchmark models in PyTorch, and the training step a typical PyTorch user writes.

Inputs are NCHW (PyTorch's layout). ``make_trainer`` returns ``one_step(x, y) -> loss``:
``zero_grad`` -> forward under ``torch.autocast`` (bf16 only) -> loss -> ``backward`` ->
``opt.step()``, eager or with the model wrapped in ``torch.compile``. On CUDA, float32 matmuls
and convolutions may use TF32, as JAX's default precision does on the GPU
(:func:`configure_device`). Importing this module imports torch.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .specs import LSTM_HIDDEN, LSTM_INPUTS, ModelSpec


def mlp() -> nn.Module:
    """784-512-512-10 with ReLU."""
    return nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(),
                         nn.Linear(512, 10))


def lenet() -> nn.Module:
    """LeNet-5 for (B, 1, 28, 28), first convolution padded by 2."""
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(16 * 5 * 5, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10))


def small_cnn() -> nn.Module:
    """conv 32, 32, pool, conv 64, 64, pool, dense 256, 10 for (B, 3, 32, 32)."""
    layers, c_in = [], 3
    for width in (32, 64):
        layers += [nn.Conv2d(c_in, width, 3, padding=1), nn.ReLU(),
                   nn.Conv2d(width, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
        c_in = width
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(64 * 8 * 8, 256), nn.ReLU(),
                         nn.Linear(256, 10))


class ResidualBlock(nn.Module):
    """relu(shortcut(x) + bn(conv(relu(bn(conv(x)))))), 1x1 projection where the shape changes."""

    def __init__(self, c_in: int, width: int, stride: int):
        super().__init__()
        self.conv_a = nn.Conv2d(c_in, width, 3, stride, 1, bias=False)
        self.bn_a = nn.BatchNorm2d(width)
        self.conv_b = nn.Conv2d(width, width, 3, 1, 1, bias=False)
        self.bn_b = nn.BatchNorm2d(width)
        self.shortcut = nn.Identity()
        if stride != 1 or c_in != width:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, width, 1, stride, bias=False),
                                          nn.BatchNorm2d(width))

    def forward(self, x):
        y = F.relu(self.bn_a(self.conv_a(x)))
        return F.relu(self.shortcut(x) + self.bn_b(self.conv_b(y)))


class ResNet20(nn.Module):
    """ResNet-20 for (B, 3, 32, 32): stem, three stages of 3 blocks (16/32/64), GAP, dense 10."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(16), nn.ReLU())
        blocks, c_in = [], 16
        for stage, width in enumerate((16, 32, 64)):
            for block in range(3):
                blocks.append(ResidualBlock(c_in, width, 2 if stage and not block else 1))
                c_in = width
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        return self.fc(self.blocks(self.stem(x)).mean(dim=(2, 3)))


class LSTMRegressor(nn.Module):
    """``nn.LSTM`` (one layer), Linear(1) on the last hidden state: (B, T, I) -> (B, 1)."""

    def __init__(self, inputs: int = LSTM_INPUTS, hidden: int = LSTM_HIDDEN):
        super().__init__()
        self.lstm = nn.LSTM(inputs, hidden, batch_first=True)
        self.head = nn.Linear(hidden, 1)

    def forward(self, x):
        _, (h, _) = self.lstm(x)
        return self.head(h[-1])


MODULES: dict[str, Callable[[], nn.Module]] = {"mlp": mlp, "lenet": lenet, "cnn": small_cnn,
                                               "resnet20": ResNet20, "lstm": LSTMRegressor}


def configure_device(device: str) -> torch.device:
    """``torch.device`` for "cpu" or "gpu"; on the GPU allow TF32 (JAX's default there).

    Raises:
      SystemExit(2) with one line when "gpu" is asked for and CUDA is not available.
    """
    if device == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        print("error: --device gpu, but PyTorch sees no CUDA device here; run with --device cpu "
              "or install a CUDA build of torch", flush=True)
        raise SystemExit(2)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    return torch.device("cuda")


def synchronize(dev: torch.device) -> None:
    """Wait for queued GPU work (a no-op on the CPU, where eager PyTorch is synchronous)."""
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def make_optimizer(kind: str, params) -> torch.optim.Optimizer:
    """"sgdm": SGD 0.01 with momentum 0.9; "adam": Adam 1e-3."""
    if kind == "sgdm":
        return torch.optim.SGD(params, lr=0.01, momentum=0.9)
    return torch.optim.Adam(params, lr=1e-3)


def make_trainer(spec: ModelSpec, dev: torch.device, *, compiled: bool = False,
                 bf16: bool = False, model: nn.Module | None = None) -> Callable:
    """``one_step(x, y) -> loss`` (a tensor; not synchronized) for the spec's model.

    Args:
      spec: the model, loss and optimizer.
      dev: where to train.
      compiled: wrap the model in ``torch.compile`` (forward and backward compiled; the
        optimizer step stays eager, as most users leave it).
      bf16: run the forward under ``torch.autocast(dtype=torch.bfloat16)`` (parameters and
        optimizer state stay float32; the loss is computed in float32).
      model: a module to train instead of the spec's (the transformer block).
    """
    torch.manual_seed(0)
    model = (model or MODULES[spec.name]()).to(dev).train()
    opt = make_optimizer(spec.optimizer, model.parameters())
    forward = torch.compile(model) if compiled else model
    loss_of = F.cross_entropy if spec.loss == "ce" else F.mse_loss

    def one_step(x, y):
        opt.zero_grad(set_to_none=True)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
            out = forward(x)
        out = out.float()
        if spec.loss != "ce" and out.shape != y.shape:  # one target per example (a sequence)
            y = y.reshape(y.shape[:1] + (1,) * (out.dim() - 1)).expand_as(out)
        loss = loss_of(out, y)
        loss.backward()
        opt.step()
        return loss

    return one_step


def to_device(x, y, spec: ModelSpec, dev: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """numpy batch (NCHW images) -> tensors on ``dev``; labels as int64 (``cross_entropy``)."""
    xt = torch.from_numpy(x).to(dev)
    yt = torch.from_numpy(y).to(dev)
    return xt, (yt.long() if spec.loss == "ce" else yt)
