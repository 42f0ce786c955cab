"""Who may import whom, read from the source's AST (every import: module level, inside
functions and under ``if TYPE_CHECKING:``), plus a fresh interpreter for the libraries.

- ``policy``, ``vault`` and ``recorder`` are libraries: none imports a sibling or ``gateway``,
  and neither do their tests (nor the shared test helpers those load).
- In ``gateway``, the protocol edges (``ssh``, ``web``, ``http``) sit on the core and import
  neither each other nor the command line; the core never imports an edge or the CLI; edges
  reach the database only through ``gateway.db``'s ``SessionMaker`` and ``completed`` and hold
  no SQL and no HMAC.
- No import cycle between gateway modules at module level.
- No module over 500 lines.
"""

from __future__ import annotations

import subprocess
import sys
from itertools import permutations
from pathlib import Path

import pytest

from tests.imports import ROOT, Import, ancestors, cycles, imports_of, module_name, package_imports

PACKAGES = ("policy", "vault", "recorder", "gateway")
LIBRARIES = ("policy", "vault", "recorder")
EDGES = tuple(e for e in ("ssh", "web", "http") if (ROOT / "gateway" / e).is_dir())
# Neither an edge nor the core: the composition root wires edges to the core, the CLI runs it.
# The demo's web console is a stand-in for a web target's app (it verifies assertions).
TOP = (
    "gateway.app",
    "gateway.demo",
    "gateway.demo_web",
    "gateway.demo_web_setup",
    "gateway.__main__",
    "gateway.cli",
)
# What edges may take from gateway.db: a session factory and cancellation-safe completion.
EDGE_DB_NAMES = frozenset({"SessionMaker", "completed"})
FORBIDDEN_IN_EDGES = {
    "sql": ("sqlalchemy", "asyncpg", "aiosqlite", "sqlite3"),
    "hmac": ("hmac",),
}
MAX_LINES = 500


def _listing(found: list[Import]) -> str:
    runtime = [i.where() for i in found if not i.type_checking]
    typing_only = [i.where() for i in found if i.type_checking]
    text = "\n  ".join(runtime) or "none"
    return f"\n  {text}\nTYPE_CHECKING only (still forbidden):\n  " + (
        "\n  ".join(typing_only) or "none"
    )


def _in(module: str, *packages: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


# --- libraries --------------------------------------------------------------------------


@pytest.mark.parametrize("library", LIBRARIES)
def test_library_source_imports_no_sibling_and_no_gateway(library: str) -> None:
    others = [p for p in PACKAGES if p != library]
    found = [i for i in package_imports(library) if i.within(*others)]
    assert not found, f"{library} imports{_listing(found)}"


@pytest.mark.parametrize("library", LIBRARIES)
def test_library_loads_no_sibling_in_a_fresh_interpreter(library: str) -> None:
    """What the AST cannot see: importlib calls and third-party modules importing back."""
    code = (
        "import importlib, pkgutil, sys\n"
        f"pkg = importlib.import_module({library!r})\n"
        "for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.'):\n"
        "    importlib.import_module(m.name)\n"
        f"others = sorted({{n.split('.')[0] for n in sys.modules}} & {set(PACKAGES)!r})\n"
        "print(','.join(others))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    loaded = set(result.stdout.strip().split(","))
    assert loaded == {library}, f"{library} pulled in {sorted(loaded - {library})}"


def _test_modules_reached(folder: str) -> list[Path]:
    """The library's test files, the root conftest pytest loads for them, and every
    ``tests.*`` helper module they import at run time, transitively."""
    tests = ROOT / "tests"
    todo = [*sorted((tests / folder).rglob("*.py")), tests / "conftest.py"]
    seen: list[Path] = []
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.append(path)
        for imp in imports_of([path]):
            if imp.type_checking or not imp.within("tests"):
                continue
            helper = ROOT.joinpath(*imp.target.split("."))
            for candidate in (helper.with_suffix(".py"), helper / "__init__.py"):
                if candidate.is_file():
                    todo.append(candidate)
    return sorted(seen)


@pytest.mark.parametrize("library", LIBRARIES)
def test_library_tests_import_neither_gateway_nor_a_sibling(library: str) -> None:
    others = [p for p in PACKAGES if p != library]
    own = ROOT / "tests" / library
    found = [
        i
        for i in imports_of(_test_modules_reached(library))
        # the library's own test files: no such import at all; the shared helpers they load:
        # none that runs on loading (a helper function for other tests may import more)
        if i.within(*others) and (i.path.is_relative_to(own) or i.module_level)
    ]
    assert not found, f"the tests of {library} import{_listing(found)}"


# --- gateway layers ---------------------------------------------------------------------


def _edge(module: str) -> str | None:
    for edge in EDGES:
        if _in(module, f"gateway.{edge}"):
            return edge
    return None


def _core(module: str) -> bool:
    return _in(module, "gateway") and _edge(module) is None and not _in(module, *TOP)


def test_core_never_imports_a_protocol_edge_or_the_cli() -> None:
    edges = [f"gateway.{e}" for e in ("ssh", "web", "http")] + ["gateway.cli"]
    found = [i for i in package_imports("gateway") if _core(i.importer) and i.within(*edges)]
    assert not found, f"the core imports an edge:{_listing(found)}"


def test_core_covers_sessions_access_credentials_cluster_db_and_audit() -> None:
    """The core is everything but the edges and the top (a guard against the rule above
    silently covering less)."""
    modules = {i.importer for i in package_imports("gateway")}
    core = {m for m in modules if _core(m)}
    for name in ("gateway.sessions.registry", "gateway.access", "gateway.credentials"):
        assert name in core
    for name in ("gateway.cluster.bus", "gateway.db.engine", "gateway.audit"):
        assert name in core
    assert not core & {m for m in modules if _edge(m) or _in(m, *TOP)}


EDGE_PAIRS = [
    pytest.param(a, b, id=f"{a}->{b}")
    for a, b in [*permutations(EDGES, 2), *((e, "cli") for e in EDGES)]
]


@pytest.mark.parametrize(("edge", "other"), EDGE_PAIRS)
def test_protocol_edges_do_not_import_each_other_or_the_cli(edge: str, other: str) -> None:
    found = [
        i
        for i in package_imports("gateway")
        if _edge(i.importer) == edge and i.within(f"gateway.{other}")
    ]
    assert not found, f"gateway.{edge} imports gateway.{other}:{_listing(found)}"


def test_protocol_edges_use_the_database_only_through_sessionmaker_and_completed() -> None:
    found = [
        i
        for i in package_imports("gateway")
        if _edge(i.importer)
        and i.within("gateway.db")
        and not (i.target == "gateway.db" and i.names and set(i.names) <= EDGE_DB_NAMES)
    ]
    assert not found, f"an edge reaches into gateway.db:{_listing(found)}"


@pytest.mark.parametrize("edge", EDGES)
@pytest.mark.parametrize("kind", sorted(FORBIDDEN_IN_EDGES))
def test_no_sql_and_no_hmac_in_protocol_code(edge: str, kind: str) -> None:
    modules = FORBIDDEN_IN_EDGES[kind]
    found = [
        i for i in package_imports("gateway") if _edge(i.importer) == edge and i.within(*modules)
    ]
    assert not found, f"{kind} in gateway.{edge}:{_listing(found)}"


def test_no_import_cycle_between_gateway_modules_at_module_level() -> None:
    """Imports inside functions and under TYPE_CHECKING do not run at import time and are
    left out; importing ``a.b.c`` runs ``a.b`` first, so that counts as an edge too."""
    found = package_imports("gateway")
    modules = {module_name(p) for p in (ROOT / "gateway").rglob("*.py")}
    edges: list[tuple[str, str]] = []
    for i in found:
        if not i.module_level:
            continue
        own = {*ancestors(i.importer), i.importer}
        for target in (*ancestors(i.target), i.target):
            if target in modules and target not in own:
                edges.append((i.importer, target))
    assert cycles(edges) == []


def test_cycle_finder_finds_loops_and_self_imports() -> None:
    graph = [("a", "b"), ("b", "c"), ("c", "a"), ("d", "d"), ("e", "a"), ("f", "g")]
    assert cycles(graph) == [["a", "b", "c"], ["d"]]


def test_import_reader_classifies_where_imports_happen(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "sub.py").write_text("")
    (pkg / "mod.py").write_text(
        "import os\n"
        "from typing import TYPE_CHECKING\n"
        "from . import sub\n"
        "from .sub import thing\n"
        "if TYPE_CHECKING:\n"
        "    import json\n"
        "else:\n"
        "    import csv\n"
        "def f():\n"
        "    import hmac\n"
        "class C:\n"
        "    import re\n"
    )
    found = sorted(
        (i.target, i.in_function, i.type_checking, i.names)
        for i in imports_of(sorted(pkg.rglob("*.py")), root=tmp_path)
    )
    assert found == [
        ("csv", False, False, ()),
        ("hmac", True, False, ()),
        ("json", False, True, ()),
        ("os", False, False, ()),
        ("pkg.sub", False, False, ()),
        ("pkg.sub", False, False, ("thing",)),
        ("re", False, False, ()),
        ("typing", False, False, ("TYPE_CHECKING",)),
    ]


# --- size -------------------------------------------------------------------------------


def _over_limit() -> dict[str, int]:
    sizes = {
        str(p.relative_to(ROOT)): len(p.read_text().splitlines())
        for folder in PACKAGES
        for p in (ROOT / folder).rglob("*.py")
    }
    return {path: n for path, n in sorted(sizes.items()) if n > MAX_LINES}


def test_no_module_exceeds_500_lines() -> None:
    over = _over_limit()
    assert not over, f"modules over {MAX_LINES} lines: {over}"
