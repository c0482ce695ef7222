"""The uncertainty experiment in-process: noise must be told from digits, and the ensemble
must be less sure of it than its members."""

import json

import numpy as np
import pytest

import experiments.uncertainty as uncertainty
from dlfun.errors import ConfigError
from run_helpers import smoke
from test_data_readers import idx_bytes  # the format's byte-level writer


def test_smoke_tells_noise_from_digits_and_the_ensemble_is_less_sure_of_it(tmp_path,
                                                                           monkeypatch):
    monkeypatch.setenv("DLFUN_DATA", str(tmp_path / "no_data"))  # (--data-dir there: refused)
    cfg, summary = smoke(uncertainty, tmp_path)
    assert summary["ood_sets"] == ["noise", "rotated", "inverted"]  # no Fashion-MNIST files
    for method in ("single", "mc_dropout", "ensemble"):
        assert summary["test_accuracy"][method] > 0.8  # chance 0.1
        assert 0.0 <= summary["ece"][method] < 0.5
        assert summary["ood_auroc"][method]["noise"] > 0.75  # 0.5 is chance
    conf = summary["mean_max_probability"]
    for method in ("mc_dropout", "ensemble"):  # averaging probabilities lowers confidence
        assert conf[method]["noise"] < conf["single"]["noise"]
    assert conf["single"]["test"] > conf["single"]["noise"] + 0.2
    each = summary["per_member"]["ood_auroc"]["single"]["noise"]["each"]
    assert len(each) == cfg.num_seeds and len(set(each)) == cfg.num_seeds  # members differ
    gain = summary["ensemble_auroc_gain"]["noise"]
    assert gain == pytest.approx(summary["ood_auroc"]["ensemble"]["noise"] -
                                 np.mean(each))
    saved = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert saved["ood_auroc"] == summary["ood_auroc"]
    for f in summary["pictures"]:
        assert (tmp_path / "run" / f).stat().st_size > 5000, f


@pytest.mark.parametrize("flags, message", [
    (dict(num_seeds=1), "--num-seeds 1"),
    (dict(num_seeds=3, dropout=0.0), "--dropout 0"),
])
def test_bad_flags_are_one_line(flags, message):
    with pytest.raises(ConfigError, match=message):
        uncertainty.Config(**flags)


def test_fashion_mnist_files_join_as_an_ood_set_shrunk_to_the_digits_size(tmp_path):
    folder = tmp_path / "fashion_mnist"
    folder.mkdir()
    pixels = np.zeros((5, 28, 28), np.uint8)
    pixels[:, 4:24, 4:24] = 255  # a white square: its 8x8 version is bright in the middle
    (folder / "t10k-images-idx3-ubyte").write_bytes(idx_bytes(pixels))
    (folder / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.arange(5, dtype=np.uint8)))
    cfg = uncertainty.Config(data_dir=str(tmp_path))
    test = np.zeros((3, 8, 8, 1), np.float32)
    sets = uncertainty.out_of_distribution(cfg, test)
    assert list(sets) == ["noise", "rotated", "inverted", "fashion_mnist"]
    for x in sets.values():
        assert x.shape == test.shape and x.dtype == np.float32
    fashion = sets["fashion_mnist"][0, :, :, 0]
    assert fashion[3:5, 3:5].min() > 0.99 and fashion[0, 0] < 0.01
    np.testing.assert_array_equal(sets["inverted"], 1.0)
