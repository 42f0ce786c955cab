"""Every import of a source tree, read from the AST (nothing is imported or executed).

Each import is recorded with where it happens: at module level (runs when the module is
imported), inside a function (runs when called), or under ``if TYPE_CHECKING:`` (never runs;
only type checkers follow it).
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Import:
    importer: str  # the importing module, e.g. "gateway.ssh.session"
    path: Path
    line: int
    target: str  # the imported module (a submodule when `from pkg import submodule`)
    names: tuple[str, ...]  # for `from target import a, b`; empty for `import target`
    in_function: bool
    type_checking: bool

    @property
    def module_level(self) -> bool:
        """Runs whenever the importing module is imported."""
        return not self.in_function and not self.type_checking

    def where(self) -> str:
        kind = " (TYPE_CHECKING)" if self.type_checking else ""
        kind += " (in a function)" if self.in_function else ""
        return f"{self.path.relative_to(ROOT)}:{self.line}: {self.target}{kind}"

    def within(self, *prefixes: str) -> bool:
        """The imported module is one of ``prefixes`` or inside one of them."""
        return any(self.target == p or self.target.startswith(p + ".") for p in prefixes)


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def source_files(*folders: str, root: Path = ROOT) -> list[Path]:
    return sorted(p for folder in folders for p in (root / folder).rglob("*.py"))


def _is_type_checking(test: ast.expr) -> bool:
    if isinstance(test, ast.Name):
        return test.id == "TYPE_CHECKING"
    return isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"


class _Collector(ast.NodeVisitor):
    def __init__(self, path: Path, module: str, known: frozenset[str]) -> None:
        self.path = path
        self.module = module
        self.package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        self.known = known
        self.in_function = False
        self.type_checking = False
        self.found: list[Import] = []

    def _add(self, node: ast.stmt, target: str, names: tuple[str, ...] = ()) -> None:
        self.found.append(
            Import(
                self.module,
                self.path,
                node.lineno,
                target,
                names,
                self.in_function,
                self.type_checking,
            )
        )

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(node, alias.name)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = node.module or ""
        if node.level:
            anchor = self.package.split(".")
            anchor = anchor[: len(anchor) - (node.level - 1)]
            base = ".".join([*anchor, base] if base else anchor)
        plain: list[str] = []
        for alias in node.names:
            sub = f"{base}.{alias.name}"
            if sub in self.known:
                self._add(node, sub)
            else:
                plain.append(alias.name)
        if plain:
            self._add(node, base, tuple(plain))

    def _visit_function(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        outer, self.in_function = self.in_function, True
        self.generic_visit(node)
        self.in_function = outer

    visit_FunctionDef = _visit_function
    visit_AsyncFunctionDef = _visit_function

    def visit_If(self, node: ast.If) -> None:
        if not _is_type_checking(node.test):
            self.generic_visit(node)
            return
        outer, self.type_checking = self.type_checking, True
        for stmt in node.body:
            self.visit(stmt)
        self.type_checking = outer
        for stmt in node.orelse:
            self.visit(stmt)


def imports_of(paths: Iterable[Path], root: Path = ROOT) -> list[Import]:
    paths = list(paths)
    known = frozenset(module_name(p, root) for p in paths)
    found: list[Import] = []
    for path in paths:
        collector = _Collector(path, module_name(path, root), known)
        collector.visit(ast.parse(path.read_text(), filename=str(path)))
        found += collector.found
    return found


@cache
def package_imports(*folders: str) -> tuple[Import, ...]:
    return tuple(imports_of(source_files(*folders)))


def cycles(edges: Iterable[tuple[str, str]]) -> list[list[str]]:
    """The strongly connected components with more than one module, or a self-import
    (Tarjan's algorithm), each sorted; the list sorted."""
    graph: dict[str, set[str]] = {}
    for a, b in edges:
        graph.setdefault(a, set()).add(b)
        graph.setdefault(b, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def strongconnect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component: list[str] = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in graph[v]:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    return sorted(found)


def ancestors(module: str) -> Iterator[str]:
    """``a.b.c`` -> ``a``, ``a.b``: the packages Python initialises before ``a.b.c``."""
    parts = module.split(".")
    for i in range(1, len(parts)):
        yield ".".join(parts[:i])
