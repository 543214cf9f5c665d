"""No module of metacompare defines one top-level name twice.

A second ``def`` of the same name silently replaces the first for every caller, including callers
written above it; the failure shows only when one of them runs (it once broke ``run`` and ``compare``
through cli.py). The definitions are read from the source with :mod:`ast`; ``if``/``try`` branches
that define a name one way or another (a fallback import) are not counted twice.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "metacompare"


def redefined(source: str) -> list[str]:
    """Top-level functions and classes defined more than once, in order of their second definition."""
    seen: set[str] = set()
    twice = []
    for node in ast.parse(source).body:  # the module's own statements, not branches or bodies
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            if node.name in seen:
                twice.append(f"{node.name} (line {node.lineno})")
            seen.add(node.name)
    return twice


def test_the_check_finds_a_second_definition():
    assert redefined("def a():\n    pass\n\nclass B:\n    pass\n\ndef a(x):\n    pass\n") == ["a (line 7)"]
    assert redefined("try:\n    def a(): pass\nexcept ImportError:\n    def a(): pass\n") == []
    assert redefined("def a():\n    def b(): pass\n    def b(): pass\n") == []


def test_no_module_defines_a_name_twice():
    found = {str(path.relative_to(PACKAGE.parent)): twice for path in sorted(PACKAGE.rglob("*.py"))
             if (twice := redefined(path.read_text(encoding="utf-8")))}
    assert found == {}
