"""The transfer experiment in-process: the linear probe learns task B on frozen features that
stay bitwise the pretrained ones."""

import numpy as np
import pytest

import experiments.transfer as transfer
from dlfun.errors import ConfigError
from run_helpers import smoke


@pytest.mark.slow
def test_smoke_probe_learns_on_frozen_features(tmp_path):
    _, summary = smoke(transfer, tmp_path)
    assert summary["task_a_test_accuracy"] > 0.8  # digits 0-4, chance 0.2
    acc = summary["test_accuracy"]
    assert acc["scratch"]["10"] > 0.4 and acc["linear_probe"]["10"] > 0.3  # chance 0.2
    assert summary["frozen_parameters_unchanged"] == {"linear_probe": True}


def test_frozen_unchanged_sees_a_changed_bit():
    pre = {"conv1": {"kernel": np.ones(3, np.float32)}, "fc3": {"kernel": np.ones(2)}}
    same = {"conv1": {"kernel": np.ones(3, np.float32)}, "fc3": {"kernel": np.zeros(2)}}
    assert transfer.frozen_unchanged(pre, same, "linear_probe")
    nudged = {"conv1": {"kernel": np.nextafter(np.ones(3, np.float32), 2)}, "fc3": same["fc3"]}
    assert not transfer.frozen_unchanged(pre, nudged, "linear_probe")


def test_bad_flags_are_one_line():
    with pytest.raises(ConfigError, match="--methods"):
        transfer.Config(methods=("scratch", "distill"))
