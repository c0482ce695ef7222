"""Character-level language model (multi-layer LSTM or GRU) on real text: bits/char and samples.

By default the text is the Python standard library's own source: a fixed list of 36 modules
(``dlfun.data.STDLIB_CORPUS_MODULES``, about 2 million characters), present on every machine
with Python; ``--text PATH`` trains on any UTF-8 text file instead. The last 10% of the text is
held out (a contiguous tail, never trained on).

Training draws random windows of ``--seq-len`` characters (an epoch is about one pass over the
training text). After every epoch the held-out bits per character (mean cross-entropy in nats
/ ln 2) is measured on fixed, non-overlapping windows covering the held-out text (each window
from the zero state; the held-out characters scored are ``1 .. K*seq_len``, counted in
``summary.json`` as ``held_out_chars_scored``); the training figure is the mean over the
epoch's steps. At the end, text sampled at a few temperatures is written to ``samples.txt``
(the sampler is one ``lax.scan``, compiled once for all temperatures); ``bits_per_char.png``
plots the curves against the unigram entropy of the training text.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar
import math

import jax
import numpy as np

from dlfun.runs.cli import run_cli
from dlfun.data.text import CharVocab, load_corpus, split_held_out
from dlfun.data.windows import covered_targets
from dlfun.errors import ConfigError, DataError
from dlfun.nn import CharLM, sample_language_model
from dlfun.nn.recurrent import CELLS
from dlfun.optim import SCHEDULES
from dlfun.plots import plot_series
from dlfun.runs.config import TrainConfig
from dlfun.runs.experiment import run_experiment
from dlfun.runs.training import train_language_model
from dlfun.runs.config import check_choice, check_positive
from dlfun.train.state import count_params

NAME = "charlm"


@dataclasses.dataclass(frozen=True)
class Config(TrainConfig):
    text: str | None = None
    """UTF-8 text file to train on (default: the Python standard library's source)."""
    max_chars: int = 0
    """Use only the first N characters of the text (0: all of it)."""
    held_out_fraction: float = 0.1
    """Fraction of the text (its tail) held out for bits/char."""
    cell: str = "lstm"
    """Recurrent cell: lstm, gru or rnn."""
    hidden: int = 256
    """Hidden units of every recurrent layer."""
    layers: int = 2
    """Stacked recurrent layers."""
    embed_dim: int = 64
    """Size of the character embedding."""
    seq_len: int = 128
    """Characters per training window (backpropagation through time spans one window)."""
    clip_norm: float = 1.0
    """Clip the global gradient norm to this value before each update."""
    forget_bias: float = 1.0
    """Initial forget-gate bias of an LSTM."""
    schedule: str = "cosine"
    """Learning-rate schedule: constant, cosine, warmup_cosine or step."""
    temperatures: tuple[float, ...] = (0.5, 0.8, 1.0)
    """Sampling temperatures of the saved samples (0: greedy)."""
    sample_length: int = 600
    """Characters per sample."""
    sample_prompt: str = "def "
    """Text the samples continue (its characters must occur in the corpus)."""

    nonfinite_advice: ClassVar[str] = ("lower --learning-rate or --clip-norm, or pass "
                                       "--skip-nonfinite to drop such updates")

    def __post_init__(self):
        super().__post_init__()
        check_positive(self, "hidden", "layers", "embed_dim", "seq_len", "clip_norm",
                       "sample_length")
        check_choice(self, "cell", CELLS)
        check_choice(self, "schedule", SCHEDULES)
        if self.max_chars < 0:
            raise ConfigError(f"--max-chars must be >= 0 (0: all), got {self.max_chars}")
        if any(t < 0 or not math.isfinite(t) for t in self.temperatures):
            raise ConfigError(f"--temperatures must be >= 0, got {self.temperatures}")
        if not self.sample_prompt:
            raise ConfigError("--sample-prompt must not be empty; give a few characters")


PRESETS = {
    "default": Config(epochs=5, batch_size=32, learning_rate=2e-3, checkpoint_every_epochs=1),
    "smoke": Config(preset="smoke", max_chars=60_000, hidden=64, layers=1, embed_dim=16,
                    seq_len=32, epochs=2, batch_size=32, learning_rate=1e-2,
                    sample_length=80, checkpoint_every_epochs=1),
}


@dataclasses.dataclass(frozen=True)
class Corpus:
    """The encoded text, split, with what the report needs to describe it."""

    vocab: CharVocab
    train: np.ndarray
    held_out: np.ndarray
    sources: int


def load_encoded(cfg: Config) -> Corpus:
    """Read, cut to ``max_chars``, encode and split the corpus (DataError for bad input)."""
    corpus = load_corpus(cfg.text)
    text = corpus.text[: cfg.max_chars] if cfg.max_chars else corpus.text
    vocab = CharVocab(text)
    train, held = split_held_out(vocab.encode(text), cfg.held_out_fraction,
                                 min_length=2 * cfg.seq_len + 1)
    return Corpus(vocab, train, held, len(corpus.sources))


def encode_prompt(vocab: CharVocab, prompt: str) -> np.ndarray:
    """The prompt's ids; DataError naming the character the corpus lacks."""
    missing = [c for c in prompt if c not in vocab.chars]
    if missing:
        raise DataError(f"--sample-prompt {prompt!r} has {missing[0]!r}, which does not occur "
                        f"in the text; choose a prompt made of the text's characters")
    return vocab.encode(prompt)


def unigram_bits(ids: np.ndarray, vocab_size: int) -> float:
    """Entropy (bits/char) of the character frequencies of ``ids``: the best a model without
    context can do."""
    p = np.bincount(ids, minlength=vocab_size) / len(ids)
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum())


def main(cfg: Config) -> dict:
    """Train the language model and sample from it; return the summary."""
    def body(run, log):
        corpus = load_encoded(cfg)
        prompt = encode_prompt(corpus.vocab, cfg.sample_prompt)
        model = CharLM(corpus.vocab.size, cfg.cell, cfg.hidden, cfg.layers, cfg.embed_dim,
                       cfg.forget_bias, **cfg.model_dtypes)
        fit = train_language_model(cfg, run, model, corpus.train, corpus.held_out,
                                   seq_len=cfg.seq_len, name=cfg.cell, clip_norm=cfg.clip_norm,
                                   schedule=cfg.schedule)
        params = fit.state.params if cfg.num_models is None else jax.tree.map(
            lambda a: a[0], fit.state.params)
        samples = write_samples(cfg, run, model, params, corpus.vocab, prompt)
        summary = describe(cfg, corpus, fit.history, count_params(params))
        plot_bits(run, fit.history, summary["unigram_bits_per_char"], cfg.cell)
        return dict(summary, samples=samples)

    return run_experiment(NAME, cfg, body)


def write_samples(cfg: Config, run, model, params, vocab: CharVocab, prompt) -> dict:
    """Sample at each temperature (one compiled sampler) and write ``samples.txt``."""
    sample = jax.jit(sample_language_model, static_argnums=(0, 4))
    texts = {}
    for i, t in enumerate(cfg.temperatures):
        ids = sample(model, {"params": params}, jax.random.fold_in(jax.random.key(cfg.seed), i),
                     prompt[None, :], cfg.sample_length, t)
        texts[str(t)] = cfg.sample_prompt + vocab.decode(ids[0])
    run.file("samples.txt").write_text("".join(
        f"==== temperature {t} ====\n{text}\n\n" for t, text in texts.items()))
    return texts


def describe(cfg: Config, corpus: Corpus, history: list[dict], num_params: int) -> dict:
    """The figures of the run: corpus, bits/char per epoch, final held-out bits/char."""
    per_epoch = [round(r["val_bits_per_char"], 4) for r in history]
    return dict(
        corpus=cfg.text or "python-stdlib", corpus_files=corpus.sources,
        vocab_size=corpus.vocab.size, train_chars=len(corpus.train),
        held_out_chars=len(corpus.held_out),
        held_out_chars_scored=covered_targets(len(corpus.held_out), cfg.seq_len),
        unigram_bits_per_char=unigram_bits(corpus.train, corpus.vocab.size),
        held_out_bits_per_char=per_epoch[-1] if per_epoch else None,
        held_out_bits_per_char_per_epoch=per_epoch,
        train_bits_per_char_per_epoch=[round(r["train_bits_per_char"], 4) for r in history],
        epoch_seconds=[r["seconds"] for r in history], num_params=num_params,
        steps=history[-1]["step"] if history else 0)


def plot_bits(run, history: list[dict], unigram: float, cell: str) -> None:
    """``bits_per_char.png``: training and held-out bits/char per epoch."""
    epochs = [r["epoch"] for r in history]
    plot_series({f"{cell} language model": {
        "train": (epochs, [r["train_bits_per_char"] for r in history]),
        "held-out": (epochs, [r["val_bits_per_char"] for r in history])}},
        run.file("bits_per_char.png"), "epoch", "bits per character",
        hlines={"unigram entropy": unigram}, title="Character-level language model")


if __name__ == "__main__":
    run_cli(main, Config, PRESETS, prog="python -m experiments.charlm", description=__doc__)
