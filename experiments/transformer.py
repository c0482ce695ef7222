"""Decoder-only transformer vs recurrent nets: a character language model and associative recall.

``--task charlm`` (default) trains a :class:`dlfun.nn.TransformerLM` (pre-norm blocks, rotary
positions, causal attention) on the same text as ``experiments.charlm``: the Python standard
library's source, or ``--text FILE``, its last 10% held out. Training reads random windows of
``--seq-len`` characters (the context); after every epoch the held-out bits per character is
measured on fixed, non-overlapping windows, each read from an empty context, as charlm does for
its LSTM. ``--compare lstm`` trains charlm's default LSTM (2 x 256, its own schedule) in the
same run for a comparison on the same machine at the same load (``bits_vs_time.png``: held-out
bits/char against training seconds). At the end: samples at several temperatures (one compiled
sampler; prompt and sample fit in the trained context), ``attention.png`` (a few heads of the
first and last block on a held-out line) and ``summary.json`` with ``test_bits_per_char``
(held-out), ``train_wall_s`` (seconds of training steps, compilation included, evaluations
excluded) and ``num_params``.

``--task recall``: multi-query associative recall. A sequence of length T stores ``T/4`` pairs
``key value`` (distinct keys) in its first half, then asks ``T/2`` queries (stored keys, drawn
with replacement; the answers are not in the input, so elimination cannot help); at each query
the model must predict the value stored with that key (chance: ``1 / --num-values``). All
queries are scored: one query per sequence gives too little signal to learn on a CPU in
minutes. For each T in ``--lengths`` a transformer, and an LSTM and a GRU (``--compare``) with
about as many parameters (one recurrent layer, its width chosen to the transformer's count),
train for the same steps on freshly drawn sequences; ``summary.json`` has
``recall_accuracy[model][T]`` on held-out sequences and ``recall_accuracy.png`` plots it. The
transformer has a token shift here (``--token-shift``, see :class:`dlfun.nn.TransformerLM`):
each position also sees the previous token's embedding, so one attention layer can match a
query against the stored keys. Without it (``--no-token-shift``) the two blocks must first
compose a previous-token head with a matching head (an induction circuit): in the default
preset's 512 steps they reached 14.6% at T = 64 and 8.3% at T = 256, against 100% with it.

Hyperparameters left unset (``--epochs``, ``--d-model``, ...) take the task's values of the
preset (``--preset default`` or ``smoke``): see ``HYPER``.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import optax

from dlfun.data import Split, associative_recall
from dlfun.data.text import EncodedCorpus, encode_prompt, load_encoded_corpus
from dlfun.errors import ConfigError
from dlfun.nn import CharLM, TransformerLM, attention_maps
from dlfun.optim import SCHEDULES
from dlfun.plots import plot_attention_maps, plot_series
from dlfun.runs.cli import run_cli
from dlfun.runs.config import TrainConfig, check_choice, check_distinct, check_positive
from dlfun.runs.experiment import run_experiment
from dlfun.runs.language_model import (describe_language_model, first_member,
                                       plot_bits_per_char, sample_texts, write_samples)
from dlfun.runs.training import train_language_model, train_supervised
from dlfun.train.state import count_params

NAME = "transformer"
TASKS = ("charlm", "recall")
LSTM_SEQ_LEN = 128
"""charlm's default window, for the ``--compare lstm`` model."""


@dataclasses.dataclass(frozen=True)
class Hyper:
    """One task's hyperparameters in a preset (a Config field left at None takes these)."""

    epochs: int
    batch_size: int
    learning_rate: float
    warmup_steps: int
    d_model: int
    layers: int
    heads: int
    seq_len: int = 0
    """charlm: the context (characters per training window)."""
    compare_cells: tuple[str, ...] = ()
    """The recurrent cells of ``--compare auto``."""
    train_examples: int = 0
    """recall: sequences per epoch (drawn fresh in every step)."""
    token_shift: bool = False
    """The transformer adds the previous token's embedding to each position's (see
    :class:`dlfun.nn.TransformerLM`)."""


HYPER = {
    "default": {
        "charlm": Hyper(epochs=4, batch_size=32, learning_rate=3e-3, warmup_steps=100,
                        d_model=128, layers=4, heads=4, seq_len=128),
        "recall": Hyper(epochs=4, batch_size=64, learning_rate=3e-3, warmup_steps=50,
                        d_model=64, layers=2, heads=2, compare_cells=("lstm", "gru"),
                        train_examples=8192, token_shift=True),
    },
    "smoke": {
        "charlm": Hyper(epochs=2, batch_size=32, learning_rate=3e-3, warmup_steps=10,
                        d_model=32, layers=1, heads=2, seq_len=16),
        "recall": Hyper(epochs=2, batch_size=32, learning_rate=3e-3, warmup_steps=10,
                        d_model=32, layers=2, heads=2, train_examples=4096, token_shift=True),
    },
}


CHARLM_FLAGS = frozenset({"text", "max_chars", "held_out_fraction", "seq_len", "temperatures",
                          "sample_length", "sample_prompt", "attention_chars",
                          "attention_heads_shown"})
LSTM_FLAGS = frozenset({"lstm_hidden", "lstm_layers", "lstm_epochs"})
RECALL_FLAGS = frozenset({"lengths", "num_keys", "num_values", "train_examples", "test_examples",
                          "rnn_embed", "data_seed"})


@dataclasses.dataclass(frozen=True)
class Config(TrainConfig):
    ranges: ClassVar[dict] = {"dropout": (0.0, 0.9), "held_out_fraction": (0.001, 0.9),
                              "attention_heads_shown": (1, 64), "attention_chars": (2, 512)}

    task: str = "charlm"
    """charlm (character language model) or recall (associative recall vs LSTM/GRU)."""
    epochs: int | None = None
    """Passes over the training set (None: the preset's value for --task)."""
    batch_size: int | None = None
    """Examples per step (None: the preset's value for --task)."""
    learning_rate: float | None = None
    """Peak learning rate (None: the preset's value for --task)."""
    warmup_steps: int | None = None
    """Steps of linear warm-up before the cosine decay (None: the preset's value)."""
    schedule: str = "warmup_cosine"
    """Learning-rate schedule: constant, cosine, warmup_cosine or step."""
    d_model: int | None = None
    """Width of the transformer's residual stream (None: the preset's value)."""
    layers: int | None = None
    """Transformer blocks (None: the preset's value)."""
    heads: int | None = None
    """Attention heads per block; must divide --d-model (None: the preset's value)."""
    token_shift: bool | None = None
    """Add the previous token's embedding (a learned E x E matrix, zero at init) to each
    position's: the "smeared key" that lets one attention layer do recall (None: the
    preset's: on for recall, off for charlm)."""
    mlp_ratio: int = 4
    """MLP hidden size of each block as a multiple of --d-model."""
    dropout: float = 0.0
    """Dropout on the embeddings and every residual branch."""
    clip_norm: float = 1.0
    """Clip the global gradient norm to this value before each update."""
    compare: tuple[str, ...] = ("auto",)
    """Recurrent cells trained beside the transformer (charlm: lstm, with charlm's default
    shape; recall: lstm and/or gru at the transformer's parameter count); none: no other
    model; auto: the preset's (charlm: none; recall: lstm gru)."""
    # --- charlm
    text: str | None = None
    """charlm: UTF-8 text file to train on (default: the Python standard library's source)."""
    max_chars: int = 0
    """charlm: use only the first N characters of the text (0: all of it)."""
    held_out_fraction: float = 0.1
    """charlm: fraction of the text (its tail) held out for bits/char."""
    seq_len: int | None = None
    """charlm: the context, characters per training window (None: the preset's value)."""
    temperatures: tuple[float, ...] = (0.5, 0.8, 1.0)
    """charlm: sampling temperatures of the saved samples (0: greedy)."""
    sample_length: int = 120
    """charlm: characters per sample; the prompt and the sample must fit the context
    (--seq-len): beyond the positions it was trained on the model writes garbage."""
    sample_prompt: str = "def "
    """charlm: text the samples continue (its characters must occur in the corpus)."""
    attention_chars: int = 48
    """charlm: characters of the held-out line whose attention maps are drawn."""
    attention_heads_shown: int = 4
    """charlm: heads drawn per block (first and last block) in attention.png."""
    lstm_hidden: int = 256
    """charlm --compare lstm: hidden units of each LSTM layer (charlm's default)."""
    lstm_layers: int = 2
    """charlm --compare lstm: stacked LSTM layers (charlm's default)."""
    lstm_epochs: int = 5
    """charlm --compare lstm: epochs of the LSTM (charlm's default: lr 2e-3, cosine)."""
    # --- recall
    lengths: tuple[int, ...] = (64, 128, 256)
    """recall: sequence lengths T (multiples of 4): T/4 pairs, then T/2 queries."""
    num_keys: int = 128
    """recall: size of the key alphabet (at least max(--lengths)/4)."""
    num_values: int = 32
    """recall: size of the value alphabet (chance accuracy is 1/this)."""
    train_examples: int | None = None
    """recall: sequences per epoch, drawn fresh in every step (None: the preset's value)."""
    test_examples: int = 2000
    """recall: held-out sequences per length (the reported accuracy)."""
    rnn_embed: int = 32
    """recall: embedding size of the LSTM/GRU inputs."""
    data_seed: int = 0
    """recall: seed of the generated sequences (fixed across --seed so runs compare)."""

    nonfinite_advice: ClassVar[str] = ("lower --learning-rate or --clip-norm, or pass "
                                       "--skip-nonfinite to drop such updates")

    def __post_init__(self):
        super().__post_init__()
        check_choice(self, "task", TASKS)
        check_choice(self, "preset", HYPER)
        check_choice(self, "schedule", SCHEDULES)
        check_distinct(self, "lengths")
        check_distinct(self, "compare")
        for name in ("epochs", "batch_size", "learning_rate", "d_model", "layers", "heads",
                     "seq_len", "train_examples"):
            if getattr(self, name) is not None:
                check_positive(self, name)
        if self.warmup_steps is not None and self.warmup_steps < 0:
            raise ConfigError(f"--warmup-steps must be >= 0, got {self.warmup_steps}")
        check_positive(self, "mlp_ratio", "clip_norm", "sample_length", "lstm_hidden",
                       "lstm_layers", "lstm_epochs", "num_values", "test_examples",
                       "rnn_embed")
        cells = ("lstm",) if self.task == "charlm" else ("lstm", "gru")
        if self.compare not in (("auto",), ("none",)) and (
                not self.compare or any(c not in cells for c in self.compare)):
            raise ConfigError(f"--compare must be auto, none, or cells among {', '.join(cells)} "
                              f"for --task {self.task}; got {' '.join(self.compare) or 'nothing'}")
        if self.hyper.d_model % self.hyper.heads:
            raise ConfigError(f"--heads {self.hyper.heads} must divide --d-model "
                              f"{self.hyper.d_model}; e.g. --heads 4 --d-model 128")
        if any(t < 0 or not math.isfinite(t) for t in self.temperatures):
            raise ConfigError(f"--temperatures must be >= 0, got {self.temperatures}")
        if not self.sample_prompt:
            raise ConfigError("--sample-prompt must not be empty; give a few characters")
        room = self.hyper.seq_len - len(self.sample_prompt) + 1
        if self.task == "charlm" and self.sample_length > room:
            raise ConfigError(f"--sample-length {self.sample_length} and the prompt do not fit "
                              f"the context --seq-len {self.hyper.seq_len}; use --sample-length "
                              f"{room} or less")
        if not self.lengths or any(t < 4 or t % 4 for t in self.lengths):
            raise ConfigError(f"--lengths must be multiples of 4, got {self.lengths}")
        if self.task == "recall" and self.num_keys < max(self.lengths) // 4:
            raise ConfigError(f"--num-keys must be >= {max(self.lengths) // 4} (the pairs of "
                              f"the longest sequence hold distinct keys), got {self.num_keys}")

    def unused_because(self, name: str) -> str | None:
        if name in CHARLM_FLAGS and self.task != "charlm":
            return f"with --task {self.task} (a charlm flag)"
        if name in RECALL_FLAGS and self.task != "recall":
            return f"with --task {self.task} (a recall flag)"
        if name in LSTM_FLAGS and (self.task != "charlm" or "lstm" not in self.compared):
            return "without --task charlm --compare lstm (it shapes that LSTM)"
        return super().unused_because(name)

    @property
    def hyper(self) -> Hyper:
        """This task's hyperparameters with the ones given explicitly."""
        given = {f.name: getattr(self, f.name) for f in dataclasses.fields(Hyper)
                 if getattr(self, f.name, None) is not None}
        return dataclasses.replace(HYPER[self.preset][self.task], **given)

    @property
    def compared(self) -> tuple[str, ...]:
        """The recurrent cells trained beside the transformer."""
        return {("auto",): self.hyper.compare_cells, ("none",): ()}.get(self.compare, self.compare)

    @property
    def training(self) -> "Config":
        """This config with the task's epochs, batch size and learning rate filled in (what
        :func:`train_language_model` and :func:`train_supervised` read)."""
        h = self.hyper
        return dataclasses.replace(self, epochs=h.epochs, batch_size=h.batch_size,
                                   learning_rate=h.learning_rate)


PRESETS = {
    "default": Config(checkpoint_every_epochs=1),
    "smoke": Config(preset="smoke", max_chars=20_000, sample_length=12, lengths=(16,),
                    num_keys=8, num_values=8, test_examples=256, rnn_embed=16,
                    attention_chars=12, attention_heads_shown=2, lstm_hidden=32,
                    lstm_layers=1, lstm_epochs=1, checkpoint_every_epochs=1),
}


def transformer(cfg: Config, vocab_size: int, max_len: int) -> TransformerLM:
    """The transformer of ``cfg`` (rotary positions, so ``max_len`` only sizes the KV cache)."""
    h = cfg.hyper
    return TransformerLM(vocab_size, h.d_model, h.heads, h.layers, cfg.mlp_ratio * h.d_model,
                         max_len, dropout_rate=cfg.dropout, partitioned=False,
                         token_shift=h.token_shift, **cfg.model_dtypes)


def main(cfg: Config) -> dict:
    """Run ``cfg.task``; return the summary (also in summary.json)."""
    def body(run, log):
        return run_charlm(cfg, run) if cfg.task == "charlm" else run_recall(cfg, run)

    return run_experiment(NAME, cfg, body)


# ------------------------------------------------------------------------------------- charlm
def run_charlm(cfg: Config, run) -> dict:
    """Train the transformer (and the LSTM of ``--compare lstm``) on the text; report."""
    h = cfg.hyper
    corpus = load_encoded_corpus(cfg.text, cfg.max_chars, cfg.held_out_fraction,
                                 min_length=2 * max(h.seq_len, LSTM_SEQ_LEN) + 1)
    prompt = encode_prompt(corpus.vocab, cfg.sample_prompt)
    model = transformer(cfg, corpus.vocab.size, h.seq_len)
    fit = train_language_model(cfg.training, run, model, corpus.train, corpus.held_out,
                               seq_len=h.seq_len, name="transformer", clip_norm=cfg.clip_norm,
                               schedule=cfg.schedule, warmup_steps=h.warmup_steps)
    params = first_member(fit.state.params, cfg.num_models)
    samples = sample_texts(model, params, corpus.vocab, cfg.sample_prompt, prompt,
                           length=cfg.sample_length, temperatures=cfg.temperatures,
                           seed=cfg.seed)
    write_samples(run.file("samples.txt"), samples)
    summary = describe_language_model(corpus, fit.history, seq_len=h.seq_len,
                                      corpus_name=cfg.text or "python-stdlib",
                                      num_params=count_params(params))
    summary.update(test_bits_per_char=summary["held_out_bits_per_char"],
                   train_wall_s=train_seconds(fit.history), context=h.seq_len)
    histories = {"transformer": fit.history}
    if "lstm" in cfg.compared:
        lstm = train_lstm(cfg, run, corpus)
        histories["lstm"] = lstm.pop("history")
        summary["lstm"] = lstm
    write_attention(cfg, run, model, params, corpus)
    plot_bits_per_char(run.file("bits_per_char.png"), histories,
                       summary["unigram_bits_per_char"], title="Character-level transformer")
    plot_against_time(run, histories, summary["unigram_bits_per_char"])
    return dict(summary, samples=samples)


def train_lstm(cfg: Config, run, corpus: EncodedCorpus) -> dict:
    """charlm's default LSTM (``--lstm-hidden``, ``--lstm-layers``; 128-character windows, lr
    2e-3 with cosine decay, batch 32) on the same text: its figures and records."""
    lstm_cfg = dataclasses.replace(cfg.training, epochs=cfg.lstm_epochs, batch_size=32,
                                   learning_rate=2e-3)
    model = CharLM(corpus.vocab.size, "lstm", cfg.lstm_hidden, cfg.lstm_layers, 64,
                   **cfg.model_dtypes)
    fit = train_language_model(lstm_cfg, run, model, corpus.train, corpus.held_out,
                               seq_len=LSTM_SEQ_LEN, name="lstm", clip_norm=1.0,
                               schedule="cosine")
    return dict(test_bits_per_char=round(fit.history[-1]["val_bits_per_char"], 4),
                held_out_bits_per_char_per_epoch=[round(r["val_bits_per_char"], 4)
                                                  for r in fit.history],
                train_wall_s=train_seconds(fit.history),
                num_params=count_params(first_member(fit.state.params, cfg.num_models)),
                history=fit.history)


def train_seconds(history: list[dict]) -> float:
    """Seconds spent in training steps (compilation included, evaluations excluded), summed
    over the epochs (a resumed run's restored epochs included)."""
    return round(sum(r["seconds"] for r in history), 1)


def plot_against_time(run, histories: dict[str, list[dict]], unigram: float) -> None:
    """``bits_vs_time.png``: held-out bits/char after each epoch against training seconds."""
    series = {name: (np.cumsum([r["seconds"] for r in h]).tolist(),
                     [r["val_bits_per_char"] for r in h]) for name, h in histories.items()}
    plot_series({"held-out bits/char": series}, run.file("bits_vs_time.png"),
                "training seconds (same machine, same run)", "bits per character",
                hlines={"unigram entropy": unigram}, title="At equal wall time")


def write_attention(cfg: Config, run, model: TransformerLM, params,
                    corpus: EncodedCorpus) -> None:
    """``attention.png``: heads of the first and last block on the first held-out line."""
    n = cfg.attention_chars
    newline = corpus.vocab.chars.index("\n") if "\n" in corpus.vocab.chars else -1
    starts = np.flatnonzero(corpus.held_out[:-n] == newline) + 1
    start = int(starts[0]) if len(starts) else 0
    ids = corpus.held_out[start:start + n]
    maps = np.asarray(jax.jit(attention_maps, static_argnums=0)(
        model, {"params": params}, jnp.asarray(ids)[None]))
    shown = min(cfg.attention_heads_shown, model.num_heads)
    blocks = sorted({0, model.num_layers - 1})
    plot_attention_maps(np.concatenate([maps[b, 0, :shown] for b in blocks]),
                        [corpus.vocab.chars[i] for i in ids], run.file("attention.png"),
                        titles=[f"block {b} head {k}" for b in blocks for k in range(shown)],
                        cols=shown, title="Attention on a held-out line (row: query character)")


# ------------------------------------------------------------------------------------- recall
def recall_data(cfg: Config, steps: int) -> tuple[Split, Split, object]:
    """The training placeholder rows (one per sequence of an epoch: the sequences themselves
    are drawn inside each step), the fixed held-out sequences of length ``steps`` and the
    generator ``(key, batch) -> (inputs, targets)``."""
    def generate(key, batch):
        return associative_recall(key, batch, steps, cfg.num_keys, cfg.num_values)

    n = cfg.hyper.train_examples
    placeholder = Split(np.zeros((n, 1), np.int32), np.zeros(n, np.int32))
    x, y = (np.asarray(a) for a in generate(
        jax.random.fold_in(jax.random.key(cfg.data_seed), steps), cfg.test_examples))
    return placeholder, Split(x, y), generate


def query_loss(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """Mean cross-entropy of logits ``(B, T, V)`` at the query positions (targets ``(B, T)``,
    -1 elsewhere)."""
    asked = targets >= 0
    ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32),
                                                         jnp.maximum(targets, 0))
    return jnp.sum(jnp.where(asked, ce, 0.0)) / jnp.maximum(jnp.sum(asked), 1)


def query_accuracy(logits: jax.Array, targets: jax.Array) -> dict[str, jax.Array]:
    """``accuracy``: the share of queries whose argmax is the answer."""
    asked = targets >= 0
    right = (jnp.argmax(logits, -1) == targets) & asked
    return {"accuracy": jnp.sum(right) / jnp.maximum(jnp.sum(asked), 1)}


def recurrent_lm(cell: str, vocab_size: int, hidden: int, embed: int, **dtypes) -> CharLM:
    """One recurrent layer over token embeddings, logits at every step (``dtypes``: the
    layers' ``dtype``/``param_dtype``)."""
    return CharLM(vocab_size, cell, hidden, 1, embed, **dtypes)


def params_of(model, steps: int) -> int:
    """Parameter count of ``model`` on ``(1, steps)`` ids (shapes only, nothing computed)."""
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, steps), jnp.int32))
    return count_params(shapes["params"])


def hidden_for_budget(cell: str, vocab_size: int, embed: int, budget: int) -> int:
    """The recurrent width whose one-layer model has the parameter count nearest ``budget``
    (the count grows with the width: bisection on the closed form of the cell)."""
    gates = {"rnn": 1, "gru": 3, "lstm": 4}[cell]

    def count(h):  # embedding + cell (w_ih, w_hh, bias) + head
        return vocab_size * embed + gates * h * (embed + h + 1) + (h + 1) * vocab_size

    lo, hi = 1, 4096
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (mid + 1, hi) if count(mid) < budget else (lo, mid)
    return min((lo, max(lo - 1, 1)), key=lambda h: abs(count(h) - budget))


def recall_models(cfg: Config, steps: int) -> dict:
    """The transformer and the recurrent models of about its parameter count."""
    vocab = cfg.num_keys + cfg.num_values
    models = {"transformer": transformer(cfg, vocab, steps)}
    budget = params_of(models["transformer"], steps)
    for cell in cfg.compared:
        models[cell] = recurrent_lm(cell, vocab, hidden_for_budget(cell, vocab, cfg.rnn_embed,
                                                                   budget), cfg.rnn_embed,
                                     **cfg.model_dtypes)
    return models


def train_recall(cfg: Config, run, name: str, model, steps: int) -> dict:
    """Train one model on freshly drawn sequences of length ``steps``; its held-out accuracy
    (measured after every epoch; the last is reported) and figures."""
    t0 = time.perf_counter()
    train, held_out, generate = recall_data(cfg, steps)
    fit = train_supervised(cfg.training, run, model, query_loss, train, held_out,
                           name=name, metrics_fn=query_accuracy, schedule=cfg.schedule,
                           clip_norm=cfg.clip_norm, warmup_steps=cfg.hyper.warmup_steps,
                           generate_fn=generate)
    last = fit.history[-1]
    each = {"accuracy_each": last["val_accuracy_each"]} if "val_accuracy_each" in last else {}
    return dict(accuracy=round(last["val_accuracy"], 4), **each,
                accuracy_per_epoch=[round(r["val_accuracy"], 4) for r in fit.history],
                num_params=count_params(first_member(fit.state.params, cfg.num_models)),
                train_wall_s=train_seconds(fit.history),
                seconds=round(time.perf_counter() - t0, 1))


def run_recall(cfg: Config, run) -> dict:
    """Every model at every length; ``recall_accuracy[model][T]`` and the plot."""
    table: dict[str, dict[str, dict]] = {}
    for steps in sorted(cfg.lengths):
        for name, model in recall_models(cfg, steps).items():
            res = train_recall(cfg, run, f"{name}_T{steps}", model, steps)
            table.setdefault(name, {})[str(steps)] = res
            print(f"  {name:>11s} T={steps:<4d} held-out accuracy {res['accuracy']:.4f} "
                  f"({res['num_params']} parameters, {res['seconds']:.0f} s)", flush=True)
    lengths = sorted(cfg.lengths)
    plot_series({"associative recall": {
        name: (lengths, [rows[str(t)]["accuracy"] for t in lengths])
        for name, rows in table.items()}}, run.file("recall_accuracy.png"),
        "sequence length T", "held-out accuracy", hlines={"chance": 1 / cfg.num_values},
        title="Associative recall at equal parameters and steps")
    return dict(recall_accuracy={name: {t: r["accuracy"] for t, r in rows.items()}
                                 for name, rows in table.items()},
                chance_accuracy=1 / cfg.num_values, table=table,
                steps=cfg.hyper.epochs * (cfg.hyper.train_examples // cfg.hyper.batch_size))


if __name__ == "__main__":
    run_cli(main, Config, PRESETS, prog="python -m experiments.transformer", description=__doc__)
