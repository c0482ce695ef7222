"""The package's layering (shared/ARCHITECTURE.md): each layer imports only from the layers
below it, library layers import no config, CLI or run-directory module, and a run is
restored in exactly one place."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "dlfun"

# Lower layers first; a module may import its own layer and any layer before it.
LAYERS = [
    {"errors", "process_env", "platform", "validate"},
    {"nn", "losses", "optim", "data", "plots"},
    {"viz", "train", "attacks"},
    {"parallel", "rl", "gan"},
    {"runs"},
    {"launch"},
]


def layer_of(package: str) -> int:
    return next(i for i, names in enumerate(LAYERS) if package in names)


def dlfun_imports(path: Path) -> set[str]:
    """The top-level dlfun packages a module imports (``nn`` for ``dlfun.nn.dense``)."""
    tree = ast.parse(path.read_text())
    here = path.relative_to(ROOT.parent).with_suffix("").parts  # ("dlfun", "train", "fit")
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(here[:len(here) - node.level])
                names = [".".join(base + ([node.module] if node.module else []))]
                if not node.module:
                    names = [".".join(base + [a.name]) for a in node.names]
            else:
                names = [node.module or ""]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "dlfun" and len(parts) > 1:
                found.add(parts[1])
    return found


def modules():
    return sorted(p for p in ROOT.rglob("*.py"))


def package_of(path: Path) -> str:
    rel = path.relative_to(ROOT)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_imports_a_layer_above_its_own(path):
    own = package_of(path)
    if own == "__init__":
        return
    above = {name for name in dlfun_imports(path) if layer_of(name) > layer_of(own)}
    assert not above, f"{path.relative_to(ROOT)} imports {sorted(above)}, a layer above {own}"


def test_library_layers_import_no_run_module():
    for path in modules():
        if package_of(path) in ("train", "parallel", "rl", "gan", "nn", "data"):
            assert "runs" not in dlfun_imports(path), path


def test_one_restore_or_start_in_the_tree():
    """Every training loop resumes through ``RunHooks.restore``; only the run layer (and the
    do-nothing interface) define it, and no loop reads checkpoints to resume by itself."""
    defining = [p for p in modules() if "def restore(self, name" in p.read_text()]
    assert sorted(str(p.relative_to(ROOT)) for p in defining) == ["runs/run.py",
                                                                  "train/hooks.py"]
    for path in modules():
        text = path.read_text()
        if package_of(path) in ("train", "parallel", "rl", "gan") and "restore_latest(" in text:
            # loading a saved policy for evaluation is not resuming a run
            assert path.name in ("checkpoint.py", "policy.py"), path
