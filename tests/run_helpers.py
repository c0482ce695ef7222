"""Shared helpers of the experiment tests: run a preset in-process, read its metrics log."""

import dataclasses
import json


def smoke(module, tmp_path, name="run", **overrides):
    """Run ``module``'s smoke preset into ``tmp_path/name``; ``(config, summary)``."""
    cfg = dataclasses.replace(module.PRESETS["smoke"], run_dir=str(tmp_path / name), **overrides)
    return cfg, module.main(cfg)


def records(tmp_path, name="run"):
    """The JSON records of ``tmp_path/name/metrics.jsonl``."""
    lines = (tmp_path / name / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]
