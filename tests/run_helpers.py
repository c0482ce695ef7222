"""Shared helpers of the experiment tests: run a preset in-process, read its metrics log."""

import dataclasses
import json

from dlfun.runs.cli import preset_config


def smoke(module, tmp_path, name="run", **overrides):
    """Run ``module``'s smoke preset into ``tmp_path/name``; ``(config, summary)``."""
    base = preset_config(module.Config, module.PRESETS, "smoke", overrides)
    cfg = dataclasses.replace(base, run_dir=str(tmp_path / name), **overrides)
    return cfg, module.main(cfg)


def records(tmp_path, name="run"):
    """The JSON records of ``tmp_path/name/metrics.jsonl``."""
    lines = (tmp_path / name / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def checkpoint_index(slot, epoch: int) -> int:
    """The orbax index (global step) of the checkpoint saved after ``epoch`` epochs in the
    checkpoint folder ``slot`` (checkpoints are indexed by step, their metadata names the
    epoch)."""
    from dlfun.train.checkpoint import Checkpointer

    ck = Checkpointer(slot)
    found = [i for i in ck.steps() if ck.load_raw(i)[1].get("epoch") == epoch
             and ck.load_raw(i)[1].get("batch", 0) == 0]
    assert found, f"no checkpoint of epoch {epoch} in {slot}"
    return found[0]


def saved_epochs(slot) -> list[int]:
    """The epochs of the checkpoints in ``slot``, oldest first."""
    from dlfun.train.checkpoint import Checkpointer

    ck = Checkpointer(slot)
    return [ck.load_raw(i)[1]["epoch"] for i in ck.steps()]
