"""Rules of the house that a reader can check by walking the sources (issue 27)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "soundscape"
MAX_LINES = 80
REASON = "# long:"


def _has_reason(lines: list[str], node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """Whether the comment block right above the def (or its first decorator) says ``# long:``."""
    first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
    i = first - 2  # the line above, 0-based
    while i >= 0 and lines[i].lstrip().startswith("#"):
        if lines[i].lstrip().startswith(REASON):
            return True
        i -= 1
    return False


def long_functions(root: Path = SRC, limit: int = MAX_LINES) -> list[str]:
    """Functions (methods and nested ones too) longer than ``limit`` lines, decorators not
    counted, that have no ``# long:`` reason written above them."""
    found = []
    for path in sorted(root.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        lines = text.splitlines()
        nodes = ast.walk(ast.parse(text, filename=str(path)))
        for node in sorted(nodes, key=lambda n: getattr(n, "lineno", 0)):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            if length > limit and not _has_reason(lines, node):
                where = path.relative_to(root.parent)
                found.append(f"{where}:{node.lineno} {node.name}: {length} lines")
    return found


def test_no_function_over_80_lines_without_a_reason():
    """Split a long function into named steps, or write why it reads best long in a comment
    starting with ``# long:`` right above its def (or its decorators)."""
    found = long_functions()
    assert not found, "functions over 80 lines with no `# long:` reason:\n" + "\n".join(found)


def _lines(n: int, indent: str) -> str:
    return "".join(f"{indent}x = {i}\n" for i in range(n))


def test_the_rule_sees_methods_nested_functions_and_reasons(tmp_path):
    """The walk counts methods and nested functions, leaves decorators out of the count, and
    accepts a ``# long:`` comment block above the decorators."""
    source = (
        "class A:\n"
        "    def method(self):\n" + _lines(80, " " * 8) + "\n"
        "def outer():\n"
        "    def inner():\n" + _lines(80, " " * 8) + "    return inner\n\n"
        "# long: one table of cases reads best in one place\n"
        "# (a second line of reason)\n"
        "@staticmethod\n"
        "def excused():\n" + _lines(80, " " * 4) + "\n"
        "@staticmethod\n"
        "@staticmethod\n"
        "def short():\n" + _lines(79, " " * 4)
    )
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "m.py").write_text(source)
    found = long_functions(tmp_path / "pkg")
    assert found == [
        "pkg/m.py:2 method: 81 lines",
        "pkg/m.py:84 outer: 83 lines",
        "pkg/m.py:85 inner: 81 lines",
    ]
