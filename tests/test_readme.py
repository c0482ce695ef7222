"""The README's code example runs, and CI runs the README's test command."""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text()


def code_block(after_heading: str, lang: str) -> str:
    section = README.split(after_heading, 1)[1]
    return re.search(rf"```{lang}\n(.*?)```", section, re.S).group(1)


def test_layers_example_runs(capsys):
    namespace = {"__name__": "readme_example"}
    exec(compile(code_block("## Use the layers in your own code", "python"), "README", "exec"),
         namespace)
    loss, acc = (float(v) for v in capsys.readouterr().out.split())
    assert 0.0 <= loss < 0.5 and acc == 1.0  # 5 Adam steps on a constant label


def test_nnx_example_trains(capsys):
    namespace = {"__name__": "readme_nnx_example"}
    exec(compile(code_block("## Use from Flax NNX", "python"), "README", "exec"), namespace)
    lines = capsys.readouterr().out.strip().splitlines()
    losses = [float(line.split()[1]) for line in lines[:5]]
    assert losses[-1] < losses[0]  # five Adam steps on one batch lower its loss
    assert "embed" in lines[-1]  # the logical axis names reached the NNX variables


def test_ci_runs_the_readme_test_command():
    commands = code_block("## Two commands", "bash").strip().splitlines()
    readme_test = code_block("Set up and run the tests", "bash").strip()
    assert readme_test in (REPO / ".ci" / "run").read_text()
    assert "experiments" in commands[0]
