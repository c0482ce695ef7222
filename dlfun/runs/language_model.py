"""The report of a character language model's run: samples, bits/char figures and their plot.

Shared by every experiment that trains a model with ``with_carry`` (an LSTM/GRU
:class:`dlfun.nn.CharLM`, a :class:`dlfun.nn.TransformerLM`) with
:func:`dlfun.runs.training.train_language_model` on an :class:`dlfun.data.EncodedCorpus`.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import numpy as np

from ..data.text import CharVocab, EncodedCorpus, unigram_bits
from ..data.windows import covered_targets
from ..nn.sampling import sample_language_model
from ..plots import plot_series


def first_member(params: Any, num_models: int | None) -> Any:
    """The parameters of model 0 of a ``--num-seeds K`` run (stacked ``(K, ...)``), or
    ``params`` themselves for one model."""
    return params if num_models is None else jax.tree.map(lambda a: a[0], params)


def sample_texts(model: nn.Module, params: Any, vocab: CharVocab, prompt: str,
                 prompt_ids: np.ndarray, *, length: int, temperatures: Sequence[float],
                 seed: int) -> dict[str, str]:
    """``{str(temperature): prompt + continuation}``: ``length`` characters at each
    temperature, from one compiled sampler (the temperature is an array argument); draw ``i``
    uses key ``fold_in(key(seed), i)``."""
    sample = jax.jit(sample_language_model, static_argnums=(0, 4))
    texts = {}
    for i, t in enumerate(temperatures):
        ids = sample(model, {"params": params}, jax.random.fold_in(jax.random.key(seed), i),
                     prompt_ids[None, :], length, t)
        texts[str(t)] = prompt + vocab.decode(ids[0])
    return texts


def write_samples(path, texts: dict[str, str]) -> None:
    """``samples.txt``: each temperature's text under a ``==== temperature t ====`` line."""
    path.write_text("".join(f"==== temperature {t} ====\n{text}\n\n"
                            for t, text in texts.items()))


def describe_language_model(corpus: EncodedCorpus, history: list[dict], *, seq_len: int,
                            corpus_name: str, num_params: int) -> dict:
    """The figures of one model's run: the corpus, bits/char per epoch (held-out and
    training), the final held-out bits/char, parameters and steps."""
    per_epoch = [round(r["val_bits_per_char"], 4) for r in history]
    return dict(
        corpus=corpus_name, corpus_files=corpus.sources,
        vocab_size=corpus.vocab.size, train_chars=len(corpus.train),
        held_out_chars=len(corpus.held_out),
        held_out_chars_scored=covered_targets(len(corpus.held_out), seq_len),
        unigram_bits_per_char=unigram_bits(corpus.train, corpus.vocab.size),
        held_out_bits_per_char=per_epoch[-1] if per_epoch else None,
        held_out_bits_per_char_per_epoch=per_epoch,
        train_bits_per_char_per_epoch=[round(r["train_bits_per_char"], 4) for r in history],
        epoch_seconds=[r["seconds"] for r in history], num_params=num_params,
        steps=history[-1]["step"] if history else 0)


def plot_bits_per_char(path, histories: dict[str, list[dict]], unigram: float,
                       title: str = "Character-level language model") -> None:
    """Training and held-out bits/char per epoch, one panel per named model's records."""
    panels = {name: {
        "train": ([r["epoch"] for r in h], [r["train_bits_per_char"] for r in h]),
        "held-out": ([r["epoch"] for r in h], [r["val_bits_per_char"] for r in h])}
        for name, h in histories.items()}
    plot_series(panels, path, "epoch", "bits per character",
                hlines={"unigram entropy": unigram}, title=title)
