"""The packages of `ext_authz` import each other in one direction only.

Every module's `import` statements that run are read (with `ast`, nothing is imported;
imports under `if TYPE_CHECKING:` serve annotations only and are left out) and
folded into a graph whose nodes are the subpackages (`keys`, `policy`, `tokens`, ...)
and the top-level modules (`errors`, `algorithms`, `authorizer`, ...). A cycle in
that graph through a package is a package that cannot be understood, tested or
changed without the others.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

import ext_authz

ROOT = Path(ext_authz.__file__).resolve().parent
Graph = dict[str, dict[str, list[str]]]  # node -> imported node -> the modules that do it


def _node(module: str) -> str | None:
    """`ext_authz.keys.jwks` -> `keys`; `ext_authz.errors` -> `errors`."""
    parts = module.split(".")
    if parts[0] != "ext_authz" or len(parts) < 2:
        return None
    return parts[1]


def _runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node, except the bodies of `if TYPE_CHECKING:` (imports for annotations
    only, which never run)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for other in node.orelse:
                yield other
                yield from _runtime_nodes(other)
            continue
        yield node
        yield from _runtime_nodes(node)


def _imports(path: Path, module: str) -> Iterator[str]:
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                yield f"{base}.{node.module}" if node.module else base
            elif node.module is not None:
                yield node.module
                # `from ext_authz import errors` names a module
                yield from (f"{node.module}.{alias.name}" for alias in node.names)


def import_graph() -> Graph:
    graph: Graph = {}
    for path in sorted(ROOT.rglob("*.py")):
        module = ".".join(("ext_authz", *path.relative_to(ROOT).with_suffix("").parts))
        module = module.removesuffix(".__init__")
        source = _node(module)
        if source is None:
            continue
        edges = graph.setdefault(source, {})
        for imported in _imports(path, module):
            target = _node(imported)
            if target is None or target == source:
                continue
            if not (ROOT / target).is_dir() and not (ROOT / f"{target}.py").is_file():
                continue  # `from ext_authz import errors` also yields `ext_authz.errors.X`
            edges.setdefault(target, []).append(module)
    return graph


def cycles(graph: Graph) -> list[list[str]]:
    """Every strongly connected component of more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, {}):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def package_cycles(graph: Graph) -> list[list[str]]:
    """The cycles that hold a package (`keys`, `policy`, ...): two top-level modules
    that need each other are a smaller matter, left out here."""
    return [c for c in cycles(graph) if any((ROOT / node).is_dir() for node in c)]


def _explain(graph: Graph, component: list[str]) -> str:
    lines = []
    for source in component:
        for target, modules in sorted(graph.get(source, {}).items()):
            if target in component:
                lines.append(f"{source} -> {target}: {', '.join(sorted(set(modules)))}")
    return "\n".join(lines)


def test_the_walker_sees_the_imports_it_must() -> None:
    graph = import_graph()
    assert {"keys", "policy", "tokens", "envoy", "authorizer", "errors"} <= set(graph)
    assert "tokens" in graph["authorizer"] and "policy" in graph["authorizer"]
    assert cycles({"a": {"b": ["x"]}, "b": {"c": ["y"]}, "c": {"a": ["z"]}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b": ["x"]}, "b": {}}) == []


@pytest.mark.parametrize("leaf", ["algorithms", "base64url", "strict_json", "clock", "errors"])
def test_what_keys_and_tokens_read_imports_nothing_of_the_project(leaf: str) -> None:
    assert import_graph().get(leaf, {}) == {}


def test_tokens_reads_only_what_lies_below_it() -> None:
    """Token checks take the claim rules they need, never the policy."""
    graph = import_graph()
    below = {"algorithms", "base64url", "clock", "errors", "keys", "strict_json"}
    assert set(graph["tokens"]) <= below, _explain(graph, ["tokens", *graph["tokens"]])


def test_keys_reads_only_what_lies_below_it() -> None:
    """The key manager takes the key sources it defines (`keys.source.KeySource`), built
    by the policy loader: the policy imports `keys/`, never the reverse."""
    graph = import_graph()
    below = {"algorithms", "base64url", "clock", "errors", "strict_json"}
    assert set(graph["keys"]) <= below, _explain(graph, ["keys", *graph["keys"]])


def test_no_cycle_between_packages() -> None:
    graph = import_graph()
    found = package_cycles(graph)
    assert not found, "\n\n".join(_explain(graph, c) for c in found)


def test_a_cycle_through_a_package_is_found() -> None:
    graph = import_graph()
    graph["keys"].setdefault("policy", []).append("ext_authz.keys.example")
    assert any({"keys", "policy"} <= set(cycle) for cycle in package_cycles(graph))


def test_deployment_tools_stay_outside_the_server() -> None:
    """The config renderers (`deploy/`: Envoy, nginx, Caddy) are tools run beside the server: they
    import nothing of the server, and only the demo (which starts the proxies) imports them."""
    graph = import_graph()
    assert graph["deploy"] == {}
    importers = {node: graph[node]["deploy"] for node in graph if "deploy" in graph[node]}
    assert set(importers) == {"demo"}
