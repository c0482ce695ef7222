"""Convolutional nets (LeNet-5, VGG-style, ResNet-20) on digits, MNIST or CIFAR-10, with CAMs.

Trains one model (``--model``) on the embedded 8x8 digits by default (or MNIST /
Fashion-MNIST / CIFAR-10 files with ``--dataset`` and ``--data-dir``) with random shifts
inside the compiled step (plus horizontal flips for CIFAR-10), and reports test accuracy, the
confusion matrix, the first layer's filters, one example's activation maps and class
activation maps (Zhou et al. 2016) for a few test images. ``--num-seeds K`` trains K models in
one program and reports each member, the ensemble, and the ensemble's predictive entropy on
correct vs misclassified examples. ``--preset depth`` (``--compare-depth`` with 15 epochs)
trains LeNet-5, Plain-20, ResNet-20, Plain-56 and ResNet-56 with the same budget and plots
their loss curves together: why residual connections matter.

How the models see the images: LeNet-5 is designed for 32x32 (the digits are upsampled 4x,
MNIST zero-padded by 2); ResNet-20 and VGG are fully convolutional up to their head and see
the digits upsampled 2x to 16x16 (4x4 maps in the last stage) to keep them fast on a CPU;
MNIST (28x28) and CIFAR-10 (32x32) at their own size. ``--image-size`` overrides this.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, ClassVar

import flax.linen as nn
import jax
import numpy as np

from dlfun.runs.cli import run_cli
from dlfun.data.augment import augment_cifar, random_crop
from dlfun.data.image_prep import prepare_splits
from dlfun.data.images import IMAGE_DATASETS, check_data_dir_used, ImageData, load_image_dataset
from dlfun.data.split import Split
from dlfun.errors import ConfigError
from dlfun.nn import LeNet5, Plain20, ResNet20, VGGSmall
from dlfun.optim import SCHEDULES
from dlfun.plots import plot_curves
from dlfun.runs.classifier import TrainedClassifier, train_classifier
from dlfun.runs.config import TrainConfig
from dlfun.runs.experiment import run_experiment
from dlfun.runs.metrics_log import MetricsLog
from dlfun.runs.config import check_choice, check_distinct
from dlfun.runs.run import Run
from dlfun.viz.conv_report import (plot_activation_maps, plot_class_activation_maps,
                                   plot_first_layer_filters)

NAME = "cnn"
MODELS: dict[str, Callable[..., nn.Module]] = {
    "lenet": lambda k, **kw: LeNet5(num_classes=k, **kw),
    "vgg": lambda k, **kw: VGGSmall(num_classes=k, **kw),
    "vgg_gap": lambda k, **kw: VGGSmall(num_classes=k, head="gap", **kw),
    "resnet20": lambda k, **kw: ResNet20(num_classes=k, **kw),
    "plain20": lambda k, **kw: Plain20(num_classes=k, **kw),
    "resnet56": lambda k, **kw: ResNet20(num_classes=k, blocks_per_stage=9, **kw),
    "plain56": lambda k, **kw: Plain20(num_classes=k, blocks_per_stage=9, **kw),
}
# Input side per model for the 8x8 digits (other datasets: LeNet 32, the rest native).
DIGITS_SIZE = {"lenet": 32}
DIGITS_SIZE_OTHERS = 16
MIN_SIZE = {"lenet": 16, "vgg": 8}  # two 5x5 VALID convolutions + pools; three 2x2 pools


@dataclasses.dataclass(frozen=True)
class Config(TrainConfig):
    dataset: str = "digits"
    """digits (embedded 8x8), mnist, fashion_mnist (IDX files) or cifar10 (python pickles)."""
    data_dir: str | None = None
    """Folder with the dataset files (default: $DLFUN_DATA)."""
    model: str = "lenet"
    """lenet, vgg, vgg_gap (VGG with a GAP head), resnet20, plain20, resnet56, plain56."""
    image_size: int = 0
    """Side the images are brought to (upsampled by a whole factor, else zero-padded); 0: the
    model's design size (see the module docstring)."""
    shift: int | None = None
    """Random shifts of up to this many pixels of the model's input (crop after zero padding)
    in training; 0: no augmentation; none: one pixel of the 8x8 digits (size / 8), 2 for
    MNIST, 4 for CIFAR-10 (which also gets random horizontal flips)."""
    schedule: str = "cosine"
    """Learning-rate schedule: constant, cosine, warmup_cosine or step."""
    compare_depth: bool = False
    """Train --compare-models with the same budget and plot their loss curves together."""
    compare_models: tuple[str, ...] = ("lenet", "plain20", "resnet20", "plain56", "resnet56")
    """Models of --compare-depth."""
    cam_images: int = 6
    """Test images shown with class activation maps."""
    split_seed: int = 0
    """Seed of the train/validation/test split (fixed across --seed so runs compare)."""

    ranges: ClassVar[dict[str, tuple]] = {"cam_images": (0, 64), "shift": (0, 64),
                                          "image_size": (0, 512)}

    def unused_because(self, name: str) -> str | None:
        if name == "compare_models" and not self.compare_depth:
            return "without --compare-depth"
        return super().unused_because(name)

    def __post_init__(self):
        super().__post_init__()
        check_choice(self, "dataset", IMAGE_DATASETS)
        check_data_dir_used(self, "dataset")
        check_choice(self, "model", MODELS)
        check_choice(self, "schedule", SCHEDULES)
        for name in self.compare_models:
            if name not in MODELS:
                raise ConfigError(f"--compare-models: unknown model {name!r}; choose from "
                                  f"{', '.join(MODELS)}")
        check_distinct(self, "compare_models")
        if self.image_size < 0 or (self.shift or 0) < 0 or self.cam_images < 0:
            raise ConfigError("--image-size, --shift and --cam-images must be >= 0")
        if self.image_size and (self.shift or 0) >= self.image_size:
            raise ConfigError(f"--shift {self.shift} moves a {self.image_size}-pixel image "
                              f"out of view; pass a shift below {self.image_size}")
        for model in (self.compare_models if self.compare_depth else (self.model,)):
            smallest = MIN_SIZE.get(model.split("_")[0], 4)
            if 0 < self.image_size < smallest:
                raise ConfigError(f"--image-size {self.image_size} is too small for {model}: "
                                  f"it needs at least {smallest}x{smallest} inputs; pass "
                                  f"--image-size {smallest} or more (0: its design size)")


PRESETS = {
    "default": Config(epochs=60, batch_size=64, learning_rate=2e-3, checkpoint_every_epochs=20),
    "smoke": Config(preset="smoke", epochs=3, batch_size=32, learning_rate=2e-3,
                    checkpoint_every_epochs=1, cam_images=2),
    # LeNet-5, then 20 and 56 layers with and without shortcuts, 15 epochs each
    "depth": Config(preset="depth", compare_depth=True, epochs=15, batch_size=64,
                    learning_rate=2e-3, checkpoint_every_epochs=5),
}


def input_size(cfg: Config, model: str, data: ImageData) -> int:
    """The side the model sees: ``--image-size``, else the model's design size."""
    if cfg.image_size:
        return cfg.image_size
    if data.name == "digits":
        return DIGITS_SIZE.get(model, DIGITS_SIZE_OTHERS)
    return 32 if model == "lenet" else data.image_shape[0]


def max_shift(cfg: Config, size: int) -> int:
    """``--shift``, or by default one digit pixel (size / 8), 2 for MNIST, 4 for CIFAR-10."""
    if cfg.shift is not None:
        return cfg.shift
    return {"digits": max(1, size // 8), "cifar10": 4}.get(cfg.dataset, 2)


def augmentation(cfg: Config, size: int) -> Callable | None:
    """``(key, images) -> images`` inside the training step: shifts (and CIFAR flips)."""
    shift = max_shift(cfg, size)
    if shift == 0:
        return None
    if cfg.dataset == "cifar10":
        return lambda key, x: augment_cifar(key, x, shift)
    return lambda key, x: random_crop(key, x, shift)  # digits must not be mirrored


def train_model(cfg: Config, run: Run, log: MetricsLog, data: ImageData, name: str,
                plots: bool = True) -> tuple[TrainedClassifier, nn.Module, Split]:
    """Train model ``name`` on ``data``; returns the result, the model and its test split."""
    size = input_size(cfg, name, data)
    splits = prepare_splits(data.splits, size, standardize=cfg.dataset == "cifar10")
    model = MODELS[name](data.num_classes, **cfg.model_dtypes)
    trained = train_classifier(cfg, run, model, splits, data.class_names, name=name,
                               augment_fn=augmentation(cfg, size), schedule=cfg.schedule,
                               plots=plots)
    trained.report.update(image_size=size, max_shift=max_shift(cfg, size))
    return trained, model, splits.test


def first_member(state, num_models: int | None) -> dict:
    """``{"params", "batch_stats"}`` of the model (member 0 of an ensemble)."""
    if num_models is not None:
        state = jax.tree.map(lambda a: a[0], state)
    variables = {"params": state.params}
    if state.batch_stats:
        variables["batch_stats"] = state.batch_stats
    return variables


def cam_indices(probs: np.ndarray, labels: np.ndarray, count: int) -> np.ndarray:
    """Up to ``count`` test examples: half of them misclassified (if there are such), the
    rest correct, in test-set order."""
    wrong = np.flatnonzero(probs.argmax(-1) != labels)[: count // 2]
    right = np.flatnonzero(probs.argmax(-1) == labels)[: count - len(wrong)]
    return np.concatenate([wrong, right])


def write_pictures(cfg: Config, run: Run, name: str, trained: TrainedClassifier,
                   model: nn.Module, test: Split, class_names: tuple[str, ...]) -> list[str]:
    """First-layer filters, activation maps of test image 0, and CAMs of a few test images
    (member 0 of an ensemble)."""
    variables = first_member(trained.fit.state, cfg.num_models)
    files = [f"{name}_filters.png", f"{name}_activations.png", f"{name}_cam.png"]
    plot_first_layer_filters(model, variables["params"], run.file(files[0]),
                             title=f"{name}: first-layer filters")
    plot_activation_maps(model, variables, test.x[0], run.file(files[1]),
                         title=f"{name}: activations of test image 0 (label "
                               f"{class_names[test.y[0]]})")
    if cfg.cam_images:
        probs = trained.probs if cfg.num_models is None else trained.probs[0]
        idx = cam_indices(probs, test.y, cfg.cam_images)
        kind = "CAM" if model.gap_dense_path is not None else "Grad-CAM"
        plot_class_activation_maps(model, variables, test.x[idx], test.y[idx], class_names,
                                   run.file(files[2]),
                                   title=f"{name}: {kind} per class (* = predicted)")
    return files if cfg.cam_images else files[:2]


def train_one(cfg: Config, run: Run, log: MetricsLog, data: ImageData) -> dict:
    """The single-model (or ensemble) run: train, report, draw."""
    trained, model, test = train_model(cfg, run, log, data, cfg.model)
    pictures = write_pictures(cfg, run, cfg.model, trained, model, test, data.class_names)
    return dict(dataset=cfg.dataset, model=cfg.model, **trained.report, pictures=pictures)


def compare_depth(cfg: Config, run: Run, log: MetricsLog, data: ImageData) -> dict:
    """Train each of ``cfg.compare_models`` with the same budget; plot the curves together."""
    results = {}
    for name in cfg.compare_models:
        trained, model, _ = train_model(cfg, run, log, data, name, plots=False)
        history = log.select(model=name)
        results[name] = dict(depth=model.depth,
                             num_params=trained.report["num_params"],
                             image_size=trained.report["image_size"],
                             first_train_loss=history[0]["train_loss"],
                             final_train_loss=history[-1]["train_loss"],
                             final_val_loss=history[-1].get("val_loss"),
                             test_accuracy=trained.report["test_accuracy"],
                             test_loss=trained.report["test_loss"])
    records = [r for r in log.records if r.get("model") in results]
    plot_curves(records, run.file("depth_loss_curves.png"),
                [("train_loss",), ("val_loss",), ("val_accuracy",)], log_scale=("loss",),
                title="same budget: training and validation loss by depth")
    summary = {f"{m}_{k}": v for m, r in results.items() for k, v in r.items()}
    return dict(dataset=cfg.dataset, mode="compare_depth", **summary, models=results)


def main(cfg: Config) -> dict:
    """Run the experiment and return the summary (also written to summary.json)."""
    def body(run, log):
        data = load_image_dataset(cfg.dataset, jax.random.key(cfg.split_seed), cfg.data_dir)
        if cfg.compare_depth:
            return compare_depth(cfg, run, log, data)
        return train_one(cfg, run, log, data)

    return run_experiment(NAME, cfg, body)


if __name__ == "__main__":
    run_cli(main, Config, PRESETS, prog="python -m experiments.cnn", description=__doc__)
