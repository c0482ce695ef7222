"""List the experiments with one line each."""

import importlib
import pkgutil
import sys
from pathlib import Path


def first_line(module_name: str) -> str:
    """The first line of an experiment module's docstring (without importing JAX)."""
    import ast

    path = Path(__file__).parent / f"{module_name}.py"
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def main() -> None:
    here = Path(__file__).parent
    names = sorted(m.name for m in pkgutil.iter_modules([str(here)])
                   if not m.name.startswith("_") and not m.ispkg)
    print("dlfun experiments (run: python -m experiments.<name> [--preset smoke] [--help]):\n")
    for name in names:
        print(f"  {name:<16s} {first_line(name)}")


if __name__ == "__main__":
    sys.exit(main())
