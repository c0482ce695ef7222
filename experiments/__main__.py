"""List the experiments with one line each; ``python -m experiments NAME [flags]`` runs one."""

import pkgutil
import sys
from pathlib import Path


def first_line(module_name: str) -> str:
    """The first line of an experiment module's docstring (without importing JAX)."""
    import ast

    path = Path(__file__).parent / f"{module_name}.py"
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def experiment_names() -> list[str]:
    here = Path(__file__).parent
    return sorted(m.name for m in pkgutil.iter_modules([str(here)])
                  if not m.name.startswith("_") and not m.ispkg)


def main(argv: list[str]) -> int:
    names = experiment_names()
    if argv and not argv[0].startswith("-"):
        if argv[0] not in names:
            print(f"error: no experiment {argv[0]!r}; the experiments are {', '.join(names)}",
                  file=sys.stderr)
            return 2
        sys.argv = [f"python -m experiments.{argv[0]}", *argv[1:]]
        import runpy
        runpy.run_module(f"experiments.{argv[0]}", run_name="__main__", alter_sys=True)
        return 0
    print("dlfun experiments (run: python -m experiments.<name> [--preset smoke] [--help]):\n")
    for name in names:
        print(f"  {name:<16s} {first_line(name)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
