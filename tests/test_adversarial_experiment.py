"""The adversarial experiment in-process: adversarial training must buy robustness."""

import json

import pytest

import experiments.adversarial as adversarial
from dlfun.errors import ConfigError
from run_helpers import smoke


def test_smoke_adversarial_training_is_more_robust_than_standard(tmp_path):
    cfg, summary = smoke(adversarial, tmp_path)
    eps = summary["eps"]
    assert eps == [0.0, 0.1, 0.2] and cfg.train_eps == 0.1
    curves = summary["accuracy_vs_eps"]
    assert set(curves) == {"mlp", "mlp_adv"} and set(curves["mlp"]) == {"fgsm", "pgd"}
    std, adv = curves["mlp"], curves["mlp_adv"]
    assert std["pgd"][0] > 0.6  # it learned (chance 0.1)
    for attack in ("fgsm", "pgd"):  # accuracy falls with the budget
        assert std[attack][0] > std[attack][1] + 0.1 > std[attack][2] + 0.1
    assert std["pgd"][1] <= std["fgsm"][1] + 0.02  # PGD is the stronger attack
    trade = summary["adversarial_training"]["mlp"]
    assert trade["pgd_accuracy_adversarial"] > trade["pgd_accuracy_standard"] + 0.05
    saved = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert saved["accuracy_vs_eps"] == curves
    for f in summary["pictures"]:
        assert (tmp_path / "run" / f).stat().st_size > 5000, f


@pytest.mark.parametrize("flags, message", [
    (dict(num_seeds=2), "--num-seeds 2"),
    (dict(models=("mlp", "vgg")), "--models"),
    (dict(eps=()), "--eps"),
])
def test_bad_flags_are_one_line(flags, message):
    with pytest.raises(ConfigError, match=message):
        adversarial.Config(**flags)
