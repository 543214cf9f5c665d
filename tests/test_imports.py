"""No import cycles among metacompare's modules, counting imports inside functions too.

An import hidden in a function body still makes two modules depend on each other; it only moves the
failure from import time to call time. The graph is read from the source with :mod:`ast`, so the
test needs nothing importable and sees every import, wherever it is written.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "metacompare"


def module_name(path: Path, root: Path = PACKAGE) -> str:
    """``metacompare/report/load.py`` -> ``metacompare.report.load``; a package's ``__init__`` is the package."""
    parts = (root.name, *path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(root: Path = PACKAGE) -> dict[str, Path]:
    return {module_name(p, root): p for p in sorted(root.rglob("*.py"))}


def _absolute(node: ast.ImportFrom, name: str, is_package: bool) -> str:
    """The absolute module of ``from <dots><module> import ...`` written in module ``name``."""
    if not node.level:
        return node.module or ""
    base = name.split(".")
    base = base[:len(base) - node.level + (1 if is_package else 0)]
    return ".".join([*base, node.module] if node.module else base)


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The package modules ``name`` imports anywhere in its source (module level or in functions).

    ``from metacompare import x`` imports ``metacompare.x`` when that is a module, else ``metacompare``;
    ``import a.b.c`` imports the innermost known module of the dotted name.
    """
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node, name, path.name == "__init__.py")
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                       for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:  # import a.b.c where only a.b is ours
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    found = modules(root)
    return {name: imports_of(name, path, set(found)) for name, path in found.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as ``[a, b, ..., a]``, or None (depth-first search with white/grey/black marks).

    A package importing its own submodules (``metacompare.report`` -> ``metacompare.report.load``) is
    an edge like any other, and so is a submodule importing its package's ``__init__``."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_the_graph_reads_every_kind_of_import(tmp_path):
    """A hand-made package: relative, absolute, in-function and ``from pkg import module`` imports
    all become edges, and the cycle b -> c -> d -> b is found while a -> b alone is not one."""
    pkg = tmp_path / "metacompare"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from metacompare import b\nimport os\n")
    (pkg / "b.py").write_text("def f():\n    from .sub import c\n")
    (pkg / "sub" / "__init__.py").write_text("from metacompare.sub.c import VALUE\n")
    (pkg / "sub" / "c.py").write_text("import metacompare.d as d\nVALUE = 1\n")
    (pkg / "d.py").write_text("from metacompare import b as _b, missing_name\n")
    graph = import_graph(pkg)
    assert graph == {"metacompare": set(), "metacompare.a": {"metacompare.b"},
                     "metacompare.b": {"metacompare.sub.c"}, "metacompare.sub": {"metacompare.sub.c"},
                     "metacompare.sub.c": {"metacompare.d"}, "metacompare.d": {"metacompare.b", "metacompare"}}
    assert find_cycle(graph) == ["metacompare.b", "metacompare.sub.c", "metacompare.d", "metacompare.b"]
    del graph["metacompare.d"]
    assert find_cycle(graph) is None


def test_a_package_and_its_submodule_importing_each_other_is_a_cycle(tmp_path):
    pkg = tmp_path / "metacompare"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("from . import x\n")
    (pkg / "x.py").write_text("from metacompare import REGISTRY\n")  # a name of the package: an edge to it
    assert find_cycle(import_graph(pkg)) == ["metacompare", "metacompare.x", "metacompare"]


def test_metacompare_has_no_import_cycle():
    graph = import_graph()
    assert len(graph) > 30 and "metacompare.training.runner" in graph
    cycle = find_cycle(graph)
    if cycle:
        pytest.fail("import cycle: " + " -> ".join(cycle))


# The wings from the bottom up: a module may import from its own layer and the layers below it, never
# from one above (so the data sources never reach for training code, nor an algorithm for an engine).
LAYERS = [
    ("core", ["metacompare.errors", "metacompare.paths", "metacompare.files", "metacompare._l2l",
              "metacompare._moved", "metacompare.config.runconfig"]),
    ("data", ["metacompare.data"]),
    ("storage", ["metacompare.storage"]),  # a run's record names its data source
    ("models", ["metacompare.models"]),
    ("algorithms", ["metacompare.algorithms"]),
    ("engines", ["metacompare.engines"]),
    ("config", ["metacompare.config"]),  # loading and validation check configs against the plug-ins
    ("training", ["metacompare.training"]),
    ("report", ["metacompare.report"]),
    ("workflows", ["metacompare.workflows"]),
    ("interfaces", ["metacompare.api", "metacompare.cli", "metacompare.cli_options", "metacompare.__main__",
                    "metacompare"]),
]


def layer_of(module: str) -> int:
    """The index in :data:`LAYERS` of the longest prefix naming ``module`` (or a package above it)."""
    best, index = "", None
    for i, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > len(best):
                best, index = prefix, i
    if index is None:
        raise KeyError(f"{module} is in no layer: add it to LAYERS")
    return index


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{a} ({LAYERS[layer_of(a)][0]}) imports {b} ({LAYERS[layer_of(b)][0]})"
                  for a, targets in graph.items() for b in targets if layer_of(b) > layer_of(a))


def test_layer_rule_catches_an_import_from_above():
    graph = {"metacompare.data.sine": {"metacompare.errors"}, "metacompare.algorithms.maml": {"metacompare.engines.x"}}
    assert layer_violations(graph) == [
        "metacompare.algorithms.maml (algorithms) imports metacompare.engines.x (engines)"]
    assert layer_of("metacompare.config.runconfig") < layer_of("metacompare.data.sine") < layer_of("metacompare.config")


def test_no_module_imports_a_layer_above_its_own():
    assert layer_violations(import_graph()) == []


def test_every_module_is_small():
    """No module over 400 lines and no function over 60: a reader takes in each at once."""
    too_long = []
    for name, path in modules().items():
        source = path.read_text()
        if source.count("\n") > 400:
            too_long.append(f"{name}: {source.count(chr(10))} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > 60:
                    too_long.append(f"{name}.{node.name}: {length} lines")
    assert too_long == []
