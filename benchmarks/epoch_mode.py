"""Loop or scan epochs: which is faster for which model on this backend?

``fit`` runs an epoch either as a Python loop of jitted steps (one dispatch per step) or as one
``lax.scan`` over the device-resident training set (one dispatch per epoch). ``--epoch-mode
auto`` picks scan for dense models and the loop for models with convolutions on the CPU; this
script is the measurement behind that rule. For each model and mode it trains with
``dlfun.train.fit`` on the embedded digits (60% of the 1,797 images for training, batch 64)
and reports the median steps/s over the epochs after the first (which compiles).

    python -m benchmarks.epoch_mode [--epochs 12] [--models mlp,lenet]

Prints a table and writes bench_results/epoch_mode.json.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from benchmarks import harness
from dlfun.validate import terminal_text

MODELS = ("mlp", "wide_mlp", "lenet")


def _task(name: str):
    """``(model, train split)``: a dense net on flat 8x8 digits, or LeNet-5 on 32x32 ones."""
    import jax

    from dlfun.data import digits, train_val_test
    from dlfun.data.image_prep import fit_to_size
    from dlfun.data.split import Split
    from dlfun.nn import MLP, LeNet5

    x, y = digits()
    train = train_val_test(jax.random.key(0), x, y, (0.6, 0.2, 0.2)).train
    if name == "lenet":
        return LeNet5(), Split(fit_to_size(train.x.reshape(-1, 8, 8, 1), 32), train.y)
    hidden = (128,) if name == "mlp" else (512, 512)
    return MLP(hidden=hidden, out=10), Split(train.x.reshape(len(train.x), -1), train.y)


def measure(name: str, mode: str, epochs: int, batch_size: int) -> dict:
    import jax

    from dlfun import losses
    from dlfun.optim import make_optimizer
    from dlfun.train import FitOptions, create_train_state, fit, make_train_step, run_keys

    model, train = _task(name)
    init_key, _, _ = keys = run_keys(0)
    state = create_train_state(model, make_optimizer("adam", 1e-3), init_key, train.x[:1])
    step = make_train_step(model, losses.softmax_cross_entropy)
    opts = FitOptions(epochs=epochs, batch_size=batch_size, epoch_mode=mode)
    result = fit(state, step, None, train, None, keys, opts)
    jax.block_until_ready(result.state)
    steps = result.history[0]["step"]  # steps of one epoch
    rates = [steps / r["seconds"] for r in result.history[1:]]
    return dict(model=name, mode=result.epoch_mode, steps_per_epoch=steps,
                first_epoch_s=round(result.history[0]["seconds"], 3),
                steps_per_s=statistics.median(rates))


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=terminal_text(__doc__),
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=12, help="epochs per run (the first compiles)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--models", default=",".join(MODELS), help=f"subset of {','.join(MODELS)}")
    ap.add_argument("--out", type=Path, default=harness.REPO_ROOT / "bench_results" /
                    "epoch_mode.json")
    args = ap.parse_args(argv)
    if args.epochs < 3:
        ap.error("--epochs must be at least 3 (the first epoch compiles and is not timed)")
    rows = []
    for name in [m for m in args.models.split(",") if m]:
        if name not in MODELS:
            ap.error(f"unknown model {name!r}; choose from {', '.join(MODELS)}")
        picked = measure(name, "auto", args.epochs, args.batch_size)  # fit's own choice
        other = "scan" if picked["mode"] == "loop" else "loop"
        per_mode = {picked["mode"]: dict(picked, auto_picks="<-"),
                    other: dict(measure(name, other, args.epochs, args.batch_size),
                                auto_picks="")}
        rows += [per_mode["loop"], per_mode["scan"]]
        rows.append(dict(model=name, mode="scan/loop", steps_per_s=round(
            per_mode["scan"]["steps_per_s"] / per_mode["loop"]["steps_per_s"], 2)))
    text = harness.print_table(rows, ["model", "mode", "steps_per_epoch", "first_epoch_s",
                                      "steps_per_s", "auto_picks"],
                               title="Epoch as a loop of jitted steps vs one lax.scan (fit)")
    harness.write_json(args.out, dict(benchmark="epoch_mode", rows=rows, table=text))
    return rows


if __name__ == "__main__":
    main()
