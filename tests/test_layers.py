"""The package's layers: the sans-IO core imports nothing outside it, and no module imports in a circle.

Every import counts — at module level, under ``TYPE_CHECKING`` and inside functions — and importing
``a.b.c`` counts as importing the packages ``a.b`` too (Python runs their ``__init__``), the root
package aside.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterator
from pathlib import Path

import consumer_auth

PACKAGE = Path(consumer_auth.__file__).resolve().parent
ROOT = "consumer_auth"
CORE = "consumer_auth.sansio"
CORE_MAY_IMPORT = {"consumer_auth.errors"}  # the exception tree: a leaf every layer shares
LONG = 400  # lines; a longer module says why in its first lines


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}


def _resolve(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
    for _ in range(node.level - 1):
        package = package.rpartition(".")[0]
    return f"{package}.{node.module}" if node.module else package


def _targets(module: str) -> Iterator[str]:
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, node)
            names = [base]
            names += [f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in MODULES]
        for name in names:
            if name != ROOT and not name.startswith(ROOT + "."):
                continue
            while name != ROOT:  # the packages on the way are imported too
                if name in MODULES:
                    yield name
                name = name.rpartition(".")[0]
            if names[0] == ROOT and name == ROOT and module != ROOT:
                yield ROOT  # ``from consumer_auth import X``: the whole public surface


def _ancestors(module: str) -> set[str]:
    parts = module.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts) + 1)}


@functools.cache
def _graph() -> dict[str, frozenset[str]]:
    return {module: frozenset(set(_targets(module)) - _ancestors(module)) for module in MODULES}


def graph() -> dict[str, set[str]]:
    """Module → the package modules it imports (its own packages aside: they contain it)."""
    return {module: set(targets) for module, targets in _graph().items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan), each as a sorted list."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def is_core(module: str) -> bool:
    return module == CORE or module.startswith(CORE + ".")


def test_the_core_imports_nothing_outside_it() -> None:
    wrong = [
        (module, target)
        for module, targets in sorted(graph().items())
        if is_core(module)
        for target in sorted(targets)
        if not is_core(target) and target not in CORE_MAY_IMPORT
    ]
    assert wrong == []


KNOWN_CIRCLES: list[list[str]] = []


def test_no_module_imports_in_a_circle() -> None:
    found = cycles(graph())
    assert not [group for group in found if any(is_core(module) for module in group)]  # never the core
    assert found == KNOWN_CIRCLES


def test_the_walk_finds_a_circle_when_there_is_one() -> None:
    edges = graph()
    edges[CORE + ".routing"].add(ROOT + ".wsgi")  # as if routing imported the WSGI adapter
    found = cycles(edges)
    assert any(CORE + ".routing" in group and ROOT + ".wsgi" in group for group in found), found


def test_the_core_sees_its_own_type_checking_and_function_imports() -> None:
    edges = graph()
    assert CORE + ".consumers" in edges[CORE + ".plugin"]  # under TYPE_CHECKING only
    assert ROOT + ".store" in edges[ROOT + ".gateway"]  # inside a method only


def test_long_modules_say_why() -> None:
    unexplained = []
    for module, path in sorted(MODULES.items()):
        lines = path.read_text(encoding="utf-8").splitlines()
        head = "\n".join(lines[:15]).lower()
        if len(lines) > LONG and "long because" not in head:
            unexplained.append((module, len(lines)))
    assert unexplained == []


METRICS = ROOT + ".metrics"  # the one adapter that talks to prometheus_client


def _external_imports(module: str) -> set[str]:
    """The top-level names of the packages outside consumer_auth that a module imports (anywhere in it)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(MODULES[module].read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name.partition(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            found.add(node.module.partition(".")[0])
    return found


def test_only_the_metrics_adapter_imports_prometheus_client() -> None:
    importers = sorted(module for module in MODULES if "prometheus_client" in _external_imports(module))
    assert importers == [METRICS]


def test_the_core_never_imports_the_metrics() -> None:
    assert [
        module for module, targets in sorted(graph().items()) if is_core(module) and METRICS in targets
    ] == []
