"""Every module of the package imports on its own in a fresh interpreter, and the library's
modules import each other without a cycle (issue 10, item 29).

A cycle hidden by an import inside a function (anomalies -> search -> plots -> anomalies)
works until someone moves that import to the top; the static check below finds such cycles
whether the imports sit at the top or inside functions.
"""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import soundscape

PACKAGE = Path(soundscape.__file__).parent
MODULES = sorted(m.name for m in pkgutil.walk_packages([str(PACKAGE)], prefix="soundscape.")) + [
    "soundscape"
]


def _is_module(name: str) -> bool:
    parts = name.split(".")[1:]
    path = PACKAGE.joinpath(*parts)
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def _imports(module: str) -> set[str]:
    """soundscape modules that ``module`` imports anywhere (top level or inside functions)."""
    parts = module.split(".")[1:]
    path = PACKAGE.joinpath(*parts)
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("soundscape")}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if not node.module.startswith("soundscape"):
                continue
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if _is_module(sub) else node.module)
    return {m for m in found if m != module}


#: Run in a fresh interpreter: import each module with no soundscape module loaded before it
#: (third-party packages stay loaded, which keeps this fast), and report the ones that fail.
_IMPORT_EACH = """
import importlib, sys, traceback
failed = []
for module in sys.argv[1:]:
    for name in [m for m in sys.modules if m == "soundscape" or m.startswith("soundscape.")]:
        del sys.modules[name]
    try:
        importlib.import_module(module)
    except Exception:
        failed.append(module + ": " + traceback.format_exc().strip().splitlines()[-1])
print("\\n".join(failed))
sys.exit(1 if failed else 0)
"""


@pytest.mark.slow
def test_every_module_imports_first_in_a_fresh_interpreter():
    """Each module imported first (no soundscape module loaded before it), so that no earlier
    import hides a cycle."""
    run = subprocess.run(
        [sys.executable, "-c", _IMPORT_EACH, *MODULES], capture_output=True, text=True
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_library_modules_import_without_cycles():
    # the CLI sits on top (it imports the library, never the reverse); its package __init__
    # registers the commands, so its modules are left out
    library = [m for m in MODULES if not m.startswith("soundscape.cli") and m != "soundscape"]
    graph = {m: {d for d in _imports(m) if d in library} for m in library}
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the stack, 2: done

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                cycles.append(stack[stack.index(dep) :] + [dep])
            elif dep not in state:
                visit(dep, stack + [dep])
        state[node] = 2

    for module in library:
        if module not in state:
            visit(module, [module])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize(
    "module, dependency",
    [("soundscape.anomalies", "soundscape.search"), ("soundscape.plots", "soundscape.search")],
)
def test_results_and_exports_live_below_search(module, dependency):
    assert dependency not in _imports(module)


def test_library_has_no_soundscape_imports_inside_functions():
    """Imports inside functions are for heavy optional packages (torch, msclap, matplotlib),
    never for soundscape's own modules: those would only hide a cycle."""
    hidden = []
    for module in MODULES:
        if module.startswith("soundscape.cli") or module == "soundscape":
            continue  # the CLI defers the library for start-up time
        parts = module.split(".")[1:]
        path = PACKAGE.joinpath(*parts)
        path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
        tree = ast.parse(path.read_text(), str(path))
        top = {id(n) for n in tree.body}
        for node in ast.walk(tree):
            if id(node) in top or not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            source = node.module if isinstance(node, ast.ImportFrom) else None
            if any(n.startswith("soundscape") for n in names + [source or ""]):
                hidden.append(f"{module} line {node.lineno}")
    assert not hidden, "soundscape imports inside functions: " + ", ".join(hidden)
