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

from dlfun.runs.cli import run_cli
from dlfun.data.text import EncodedCorpus, encode_prompt, load_encoded_corpus
from dlfun.errors import ConfigError
from dlfun.nn import CharLM
from dlfun.nn.recurrent import CELLS
from dlfun.optim import SCHEDULES
from dlfun.runs.config import TrainConfig
from dlfun.runs.experiment import run_experiment
from dlfun.runs.language_model import (describe_language_model, first_member,
                                       plot_bits_per_char, sample_texts, write_samples)
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


def load_encoded(cfg: Config) -> EncodedCorpus:
    """Read, cut to ``max_chars``, encode and split the corpus (DataError for bad input)."""
    return load_encoded_corpus(cfg.text, cfg.max_chars, cfg.held_out_fraction,
                               min_length=2 * cfg.seq_len + 1)


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
        params = first_member(fit.state.params, cfg.num_models)
        samples = sample_texts(model, params, corpus.vocab, cfg.sample_prompt, prompt,
                               length=cfg.sample_length, temperatures=cfg.temperatures,
                               seed=cfg.seed)
        write_samples(run.file("samples.txt"), samples)
        summary = describe_language_model(corpus, fit.history, seq_len=cfg.seq_len,
                                          corpus_name=cfg.text or "python-stdlib",
                                          num_params=count_params(params))
        plot_bits_per_char(run.file("bits_per_char.png"),
                           {f"{cfg.cell} language model": fit.history},
                           summary["unigram_bits_per_char"])
        return dict(summary, samples=samples)

    return run_experiment(NAME, cfg, body)


if __name__ == "__main__":
    run_cli(main, Config, PRESETS, prog="python -m experiments.charlm", description=__doc__)
