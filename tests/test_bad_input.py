"""Malformed input of every kind: each exits non-zero with one line naming the problem and
the fix, and never deletes or overwrites an existing run directory."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

import experiments.activations as activations
import experiments.adversarial as adversarial
import experiments.autoencoder as autoencoder
import experiments.charlm as charlm
import experiments.cnn as cnn
import experiments.data_parallel as data_parallel
import experiments.dqn as dqn
import experiments.forgetting as forgetting
import experiments.gan as gan
import experiments.mlp as mlp
import experiments.memorization as memorization
import experiments.model_parallel as model_parallel
import experiments.regression as regression
import experiments.regularization as regularization
import experiments.rnn_memory as rnn_memory
import experiments.transfer as transfer
import experiments.transformer as transformer
import experiments.uncertainty as uncertainty
import experiments.xor as xor
from dlfun.runs.cli import run_cli
from test_data_readers import idx_bytes, write_cifar, write_file, write_idx_split

MODULES = {"mlp": mlp, "xor": xor, "regression": regression, "gan": gan,
           "data_parallel": data_parallel, "model_parallel": model_parallel, "cnn": cnn,
           "charlm": charlm, "rnn_memory": rnn_memory, "dqn": dqn, "transformer": transformer,
           "transfer": transfer, "uncertainty": uncertainty, "forgetting": forgetting,
           "adversarial": adversarial, "autoencoder": autoencoder,
           "activations": activations, "memorization": memorization,
           "regularization": regularization}


def mnist_dir(root: Path, defect: str) -> Path:
    """A folder of MNIST files in the real IDX format with one ``defect``."""
    d = root / "mnist"
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (6, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, (6,), dtype=np.uint8)
    write_idx_split(d, "train", images=images, labels=labels)
    write_idx_split(d, "test", images=images, labels=labels)
    train_images = d / "train-images-idx3-ubyte"
    if defect == "truncated":
        raw = train_images.read_bytes()
        train_images.write_bytes(raw[: len(raw) // 2])
    elif defect == "magic":
        train_images.write_bytes(b"\x00\x00\x08\x07" + train_images.read_bytes()[4:])
    elif defect == "dims":
        write_file(train_images, idx_bytes(images[:, :27, :]))
    elif defect == "label":
        write_file(d / "train-labels-idx1-ubyte", idx_bytes(np.full(6, 10, np.uint8)))
    elif defect == "count":
        write_file(d / "train-labels-idx1-ubyte", idx_bytes(labels[:5]))
    elif defect == "missing":
        train_images.unlink()
    return root


def cifar_dir(root: Path, defect: str) -> Path:
    """CIFAR-10 python batches (real pickle format) with one ``defect``."""
    d = root / "cifar-10-batches-py"
    write_cifar(d, n=2)
    batch = d / "data_batch_3"
    if defect == "truncated":
        batch.write_bytes(batch.read_bytes()[:100])
    elif defect == "missing":
        batch.unlink()
    return root


def text_file(root: Path, text: str) -> Path:
    path = root / "corpus.txt"
    path.write_text(text)
    return path


def an_existing_run(root: Path) -> Path:
    """A finished-looking run directory with a config saved by the smoke preset."""
    run = root / "old_run"
    run.mkdir()
    cfg = dict(experiment="mlp", **mlp.PRESETS["smoke"].__dict__)
    cfg.update(run_dir=str(run), hidden=list(cfg["hidden"]))
    (run / "config.json").write_text(json.dumps(cfg))
    (run / "metrics.jsonl").write_text('{"epoch": 1, "train_loss": 2.3}\n')
    return run


# (experiment, argv builder (tmp_path -> list), exit code, fragments of the message)
CASES = [
    ("mlp", lambda t: ["--dataset", "imagenet"], 2, ["--dataset must be one of", "digits"]),
    ("mlp", lambda t: ["--batch-size", "0"], 2, ["--batch-size must be 1..1048576, got 0"]),
    ("mlp", lambda t: ["--batch-size", "-4"], 2, ["--batch-size must be 1..1048576, got -4"]),
    ("mlp", lambda t: ["--batch-size", "5000"], 2,
     ["batch size 5000 is larger than the training set", "at most"]),
    ("mlp", lambda t: ["--learning-rate", "fast"], 2, ["--learning-rate expects a number"]),
    ("mlp", lambda t: ["--learning-rate", "-0.1"], 2, ["--learning-rate must be >= 1e-12"]),
    ("mlp", lambda t: ["--learning-rate", "inf"], 2, ["--learning-rate must be a finite"]),
    ("mlp", lambda t: ["--weight-decay", "nan"], 2, ["--weight-decay must be a finite"]),
    ("mlp", lambda t: ["--epochs", "100000000000000000000"], 2, ["--epochs must be 1..1000000"]),
    ("mlp", lambda t: ["--seed", "99999999999999999999"], 2, ["--seed must be 0..2147483647"]),
    ("mlp", lambda t: ["--epochs", "1e20"], 2, ["--epochs expects an integer"]),
    ("cnn", lambda t: ["--shift", "1000"], 2, ["--shift must be 0..64"]),
    ("cnn", lambda t: ["--cam-images", "100000"], 2, ["--cam-images must be 0..64"]),
    ("charlm", lambda t: ["--forget-bias", "nan"], 2, ["--forget-bias must be a finite"]),
    ("transformer", lambda t: ["--heads", "3"], 2, ["--heads 3 must divide --d-model 32"]),
    ("transformer", lambda t: ["--task", "recall", "--compare", "rnn"], 2,
     ["--compare must be auto, none, or cells among lstm, gru for --task recall; got rnn"]),
    ("dqn", lambda t: ["--gamma", "5"], 2, ["--gamma must be 0..1"]),
    ("dqn", lambda t: ["--buffer-size", "10", "--batch-size", "32"], 2,
     ["replay buffer (10 transitions) is smaller than a batch (32)"]),
    ("data_parallel", lambda t: ["--num-seeds", "2"], 2, ["unrecognized arguments: --num-seeds"]),
    ("mlp", lambda t: ["--epochs", "0"], 2, ["--epochs must be 1..1000000"]),
    ("mlp", lambda t: ["--epochs", "two"], 2, ["--epochs expects an integer"]),
    ("mlp", lambda t: ["--num-seeds", "0"], 2, ["--num-seeds must be 1..4096"]),
    ("mlp", lambda t: ["--optimizer", "adamax2"], 2, ["--optimizer must be one of", "adam"]),
    ("mlp", lambda t: ["--epoch-mode", "fast"], 2, ["--epoch-mode must be one of", "scan"]),
    ("mlp", lambda t: ["--ensemble", "turbo"], 2, ["--ensemble must be one of", "sequential"]),
    ("mlp", lambda t: ["--hidden", "0"], 2, ["--hidden needs one or more positive"]),
    ("mlp", lambda t: ["--dropout", "1"], 2, ["--dropout must be in [0, 1)"]),
    ("mlp", lambda t: ["--activation", "swishy"], 2, ["--activation must be one of", "relu"]),
    ("mlp", lambda t: ["--keep-checkpoints", "0"], 2, ["--keep-checkpoints must be 1..1000"]),
    ("mlp", lambda t: ["--checkpoint-every-epochs", "0"], 2, ["--checkpoint-every-epochs must be 1..1000000"]),
    ("mlp", lambda t: ["--weight-decay", "-1"], 2, ["--weight-decay must be 0..10"]),
    ("mlp", lambda t: ["--preset", "huge"], 2, ["invalid choice: 'huge'"]),
    ("mlp", lambda t: ["--no-such-flag"], 2, ["unrecognized arguments: --no-such-flag"]),
    ("mlp", lambda t: ["--resume"], 2, ["--resume needs --run-dir"]),
    ("mlp", lambda t: ["--run-dir", str(t / "a_file.txt")], 2, ["is a file, not a folder"]),
    ("mlp", lambda t: ["--run-dir", str(t / "old_run")], 2,
     ["already holds files", "pass --resume", "new --run-dir"]),
    ("mlp", lambda t: ["--resume", "--run-dir", str(t / "old_run"), "--hidden", "7"], 2,
     ["different configuration (hidden: [64] -> [7])", "drop those flags"]),
    ("mlp", lambda t: ["--dataset", "mnist"], 2, ["DLFUN_DATA", "--data-dir"]),
    ("mlp", lambda t: ["--dataset", "mnist", "--data-dir", str(t / "no_such_dir")], 2,
     ["no_such_dir", "does not exist"]),
    ("mlp", lambda t: ["--dataset", "mnist", "--data-dir", str(mnist_dir(t, "missing"))], 2,
     ["train-images-idx3-ubyte", "--data-dir"]),
    ("mlp", lambda t: ["--dataset", "mnist", "--data-dir", str(mnist_dir(t, "truncated"))], 2,
     ["train-images-idx3-ubyte", "truncated"]),
    ("mlp", lambda t: ["--dataset", "mnist", "--data-dir", str(mnist_dir(t, "magic"))], 2,
     ["train-images-idx3-ubyte", "magic"]),
    ("mlp", lambda t: ["--dataset", "mnist", "--data-dir", str(mnist_dir(t, "dims"))], 2,
     ["train-images-idx3-ubyte", "28"]),
    ("mlp", lambda t: ["--dataset", "mnist", "--data-dir", str(mnist_dir(t, "label"))], 2,
     ["train-labels-idx1-ubyte", "10"]),
    ("mlp", lambda t: ["--dataset", "mnist", "--data-dir", str(mnist_dir(t, "count"))], 2,
     ["train-labels-idx1-ubyte", "5"]),
    # a folder of files given with an embedded dataset: the files would be silently unused
    ("mlp", lambda t: ["--data-dir", str(mnist_dir(t, "none"))], 2,
     ["would not be read: --dataset digits is embedded", "--dataset mnist", "drop --data-dir"]),
    ("gan", lambda t: ["--data-dir", str(t)], 2, ["--data digits is embedded", "--data mnist"]),
    ("gan", lambda t: ["--train-size", "5000"], 2, ["--train-size is for --data gaussians8"]),
    ("transfer", lambda t: ["--data-dir", str(t)], 2, ["--source digits is embedded"]),
    ("uncertainty", lambda t: ["--data-dir", str(t / "nowhere")], 2,
     ["nowhere", "does not exist", "fashion_mnist"]),
    # more labels than the data has (few_labels would give all there is under the asked name)
    ("transfer", lambda t: ["--labels-per-class", "100000"], 2,
     ["--labels-per-class 100000 is more than the smallest class of task B's training split "
      "holds (120)", "or 0 for all"]),
    # a value listed twice would be trained twice and reported under one key
    ("forgetting", lambda t: ["--methods", "plain", "ewc", "plain"], 2,
     ["--methods lists plain more than once"]),
    ("adversarial", lambda t: ["--eps", "0.1", "0.2", "0.1"], 2,
     ["--eps lists 0.1 more than once"]),
    ("memorization", lambda t: ["--train-examples", "100000"], 2,
     ["--train-examples 100000 is more than the training split holds", "leave it unset"]),
    ("regularization", lambda t: ["--sizes", "50", "100000"], 2,
     ["--sizes 100000 is more than the training split holds", "or 0 for all"]),
    ("activations", lambda t: ["--grad-examples", "100000"], 2,
     ["--grad-examples 100000 is more than the training split holds", "use at most"]),
    ("autoencoder", lambda t: ["--labels-per-class", "5000"], 2,
     ["--labels-per-class 5000 is more than the smallest class of the digits' training",
      "use at most"]),
    ("forgetting", lambda t: ["--rehearsal-per-class", "5000"], 2,
     ["--rehearsal-per-class 5000 is more than", "use at most"]),
    # a flag given that this configuration never reads: refused, not silently ignored
    ("transformer", lambda t: ["--task", "recall", "--text", str(text_file(t, "abc " * 9))], 2,
     ["--text has no effect with --task recall (a charlm flag); drop it"]),
    ("transformer", lambda t: ["--task", "charlm", "--lengths", "64", "128"], 2,
     ["--lengths has no effect with --task charlm (a recall flag)"]),
    ("cnn", lambda t: ["--compare-models", "lenet", "resnet20"], 2,
     ["--compare-models has no effect without --compare-depth"]),
    ("forgetting", lambda t: ["--methods", "plain", "rehearsal", "--ewc-strength", "5"], 2,
     ["--ewc-strength has no effect without ewc in --methods"]),
    ("model_parallel", lambda t: ["--scheme", "tensor", "--microbatches", "2"], 2,
     ["--microbatches has no effect with --scheme tensor (a pipeline flag)"]),
    ("data_parallel", lambda t: ["--no-check", "--tolerance", "0.1"], 2,
     ["--tolerance has no effect with --no-check"]),
    ("mlp", lambda t: ["--optimizer", "adam", "--momentum", "0.5"], 2,
     ["--momentum has no effect with the optimizer adam (only momentum and nesterov"]),
    # an experiment with its own unused flags still refuses the shared ones
    ("forgetting", lambda t: ["--optimizer", "adam", "--momentum", "0.5"], 2,
     ["--momentum has no effect with the optimizer adam"]),
    ("transformer", lambda t: ["--momentum", "0.5"], 2,
     ["--momentum has no effect with the optimizer adam"]),
    ("dqn", lambda t: ["--cpu-devices", "2"], 2,
     ["--cpu-devices has no effect with --num-seeds 1"]),
    ("xor", lambda t: ["--hidden", "0"], 2, ["--hidden must be positive"]),
    ("regression", lambda t: ["--optimizer", "lbfgs"], 2, ["--optimizer must be one of"]),
    ("gan", lambda t: ["--data", "faces"], 2, ["--data must be one of"]),
    ("data_parallel", lambda t: ["--devices", "8", "--batch-size", "100"], 2,
     ["--batch-size 100 must be a multiple of --devices 8"]),
    ("data_parallel", lambda t: ["--devices", "16", "--batch-size", "64"], 2,
     ["fewer than the 16 asked for", "XLA_FLAGS="]),
    ("data_parallel", lambda t: ["--method", "magic"], 2, ["--method must be one of"]),
    ("model_parallel", lambda t: ["--scheme", "ring"], 2, ["--scheme must be one of"]),
    ("model_parallel", lambda t: ["--scheme", "hybrid", "--model-devices", "3"], 2,
     ["--model-devices 3 does not divide --devices 4; use --model-devices 2"]),
    ("model_parallel", lambda t: ["--scheme", "pipeline", "--microbatches", "5"], 2,
     ["--batch-size 64 cannot be split into --microbatches 5 equal micro-batches",
      "use --batch-size 60"]),
    ("model_parallel", lambda t: ["--scheme", "pipeline", "--pipeline-blocks", "2"], 2,
     ["--devices 4, which needs at least 4 blocks; use --pipeline-blocks 4"]),
    ("model_parallel", lambda t: ["--scheme", "tensor", "--devices", "6", "--batch-size", "60"],
     2, ["splits the MLP's hidden units (256, 256) over --devices 6", "use --devices 4"]),
    ("model_parallel", lambda t: ["--scheme", "fsdp", "--devices", "3", "--batch-size", "48"],
     2, ["splits the MLP's hidden units (256, 256) over --devices 3", "use --devices 2"]),
    ("model_parallel", lambda t: ["--scheme", "hybrid", "--model-devices", "8"], 2,
     ["--model-devices 8 is more than --devices 4; use --model-devices 4"]),
    ("cnn", lambda t: ["--model", "alexnet"], 2, ["--model must be one of", "resnet20"]),
    ("cnn", lambda t: ["--dataset", "cifar10", "--data-dir", str(t / "nowhere")], 2,
     ["nowhere", "does not exist", "data_batch_1"]),
    ("cnn", lambda t: ["--dataset", "cifar10", "--data-dir", str(cifar_dir(t, "missing"))], 2,
     ["data_batch_3", "--data-dir"]),
    ("cnn", lambda t: ["--dataset", "cifar10", "--data-dir", str(cifar_dir(t, "truncated"))],
     2, ["data_batch_3", "not a readable CIFAR-10 python pickle"]),
    ("charlm", lambda t: ["--text", str(text_file(t, "  \n\n "))], 2,
     ["corpus.txt", "empty"]),
    ("charlm", lambda t: ["--text", str(t / "none.txt")], 2,
     ["none.txt", "does not exist"]),
    ("rnn_memory", lambda t: ["--cells", "lstm,xyz"], 2, ["--cells must name cells among"]),
    ("dqn", lambda t: ["--env", "pong"], 2, ["--env must be cartpole, breakout or gym:"]),
    ("dqn", lambda t: ["--num-seeds", "0"], 2, ["--num-seeds must be 1..1024"]),
]


def fingerprint(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("name,argv,code,fragments", CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_bad_input_gives_one_clear_line(name, argv, code, fragments, tmp_path, capsys,
                                        monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DLFUN_DATA", raising=False)
    (tmp_path / "a_file.txt").write_text("not a run")
    old = an_existing_run(tmp_path)
    before = fingerprint(old)
    args = argv(tmp_path)
    module = MODULES[name]
    with pytest.raises(SystemExit) as e:
        run_cli(module.main, module.Config, module.PRESETS, ["--preset", "smoke", *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == code
    assert err, "no message"
    line = err[-1]
    assert "Traceback" not in "\n".join(err)
    for fragment in fragments:
        assert fragment in line, (fragment, line)
    assert fingerprint(old) == before  # nothing of the existing run was touched
    assert (tmp_path / "a_file.txt").read_text() == "not a run"


def test_the_table_is_large_enough():
    assert len(CASES) >= 30
