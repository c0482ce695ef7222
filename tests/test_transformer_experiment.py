"""experiments.transformer: its smoke runs learn (charlm below the uniform code length, recall
above chance), write the run contract and resume; the recall data and the attention maps."""

import dataclasses
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import experiments.transformer as tr
from dlfun.data import associative_recall
from dlfun.errors import ConfigError
from dlfun.nn import TransformerLM, attention_maps
from run_helpers import records, smoke


def transformer_params(V, E, L, M):
    """The TransformerLM count its docstring states (LayerNorm, untied head, rotary)."""
    return V * E + L * (4 * E * E + 2 * E * M + 9 * E + M) + 2 * E + E * V + V


def test_charlm_smoke_beats_the_uniform_code_and_writes_the_contract(tmp_path):
    cfg, summary = smoke(tr, tmp_path)
    h = cfg.hyper
    # uniform over the vocabulary costs log2(V) bits/char; the model must be far below it
    assert summary["test_bits_per_char"] < math.log2(summary["vocab_size"]) - 1.5
    assert summary["test_bits_per_char"] == summary["held_out_bits_per_char_per_epoch"][-1]
    assert summary["num_params"] == transformer_params(summary["vocab_size"], h.d_model,
                                                       h.layers, cfg.mlp_ratio * h.d_model)
    assert 0 < summary["train_wall_s"] and summary["steps"] > 0
    run = tmp_path / "run"
    saved = json.loads((run / "summary.json").read_text())
    assert saved["status"] == "ok" and saved["test_bits_per_char"] == summary["test_bits_per_char"]
    for png in ("attention.png", "bits_per_char.png", "bits_vs_time.png"):
        assert (run / png).stat().st_size > 1000, png
    for t in cfg.temperatures:  # one sampler, every temperature
        assert summary["samples"][str(t)].startswith(cfg.sample_prompt)
        assert len(summary["samples"][str(t)]) == len(cfg.sample_prompt) + cfg.sample_length
    assert [r["epoch"] for r in records(tmp_path)] == list(range(1, h.epochs + 1))


def test_recall_smoke_transformer_beats_chance_and_resumes(tmp_path):
    cfg, summary = smoke(tr, tmp_path, task="recall")
    (T,) = [str(t) for t in cfg.lengths]
    acc = summary["recall_accuracy"]
    assert acc.keys() == {"transformer"} and acc["transformer"].keys() == {T}
    assert summary["chance_accuracy"] == 1 / cfg.num_values
    assert acc["transformer"][T] > 0.8  # chance 1/8: the recall circuit formed
    assert (tmp_path / "run" / "recall_accuracy.png").stat().st_size > 1000
    # resuming the finished run restores the model at its last epoch: nothing retrains
    before = records(tmp_path)
    again = tr.main(dataclasses.replace(cfg, resume=True))
    assert again["resumed"] and again["recall_accuracy"] == acc
    assert records(tmp_path) == before


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_recurrent_models_get_the_transformers_parameter_budget(cell):
    cfg = dataclasses.replace(tr.PRESETS["default"], task="recall", compare=(cell,))
    models = tr.recall_models(cfg, 64)
    counts = {name: tr.params_of(m, 64) for name, m in models.items()}  # shapes only
    assert abs(counts[cell] - counts["transformer"]) < 0.02 * counts["transformer"]
    wider = dataclasses.replace(models[cell], features=models[cell].features + 2)
    assert abs(tr.params_of(wider, 64) - counts["transformer"]) > abs(
        counts[cell] - counts["transformer"])


def test_associative_recall_targets_are_the_values_stored_with_the_asked_keys():
    x, y = (np.asarray(a) for a in associative_recall(jax.random.key(3), 64, 16, 6, 5))
    assert x.shape == y.shape == (64, 16)
    keys, values, asked = x[:, 0:8:2], x[:, 1:8:2], x[:, 8:]
    assert all(len(set(row)) == 4 for row in keys) and (keys < 6).all()  # distinct keys
    assert ((values >= 6) & (values < 11)).all()
    assert (y[:, :8] == -1).all() and (y[:, 8:] >= 6).all()  # every query is scored
    for b in range(64):
        assert set(asked[b]) <= set(keys[b])  # no answer in the input: only keys asked
        for q, target in zip(asked[b], y[b, 8:]):
            (at,) = np.flatnonzero(keys[b] == q)
            assert target == values[b, at]
    # asked with replacement (elimination cannot help): some sequence asks a key twice
    assert any(len(set(row)) < len(row) for row in asked)
    with pytest.raises(ConfigError, match="divisible by 4"):
        associative_recall(jax.random.key(0), 2, 14)
    with pytest.raises(ConfigError, match="num_keys must be >= 4"):
        associative_recall(jax.random.key(0), 2, 16, 3)


def test_attention_maps_are_causal_distributions():
    model = TransformerLM(11, 8, 2, 2, 16, 6, partitioned=False)
    tokens = jnp.array([[1, 2, 3, 4, 5, 6]])
    maps = np.asarray(jax.jit(lambda k: attention_maps(model, model.init(k, tokens), tokens))(
        jax.random.key(0)))
    assert maps.shape == (2, 1, 2, 6, 6)  # (blocks, batch, heads, query, key)
    np.testing.assert_allclose(maps.sum(-1), 1.0, rtol=1e-6)
    assert (np.triu(maps, 1) == 0).all() and (maps[:, :, :, 0, 0] == 1).all()
