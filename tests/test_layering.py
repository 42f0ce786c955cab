"""policy, vault and recorder are libraries: none imports a sibling or gateway."""

from __future__ import annotations

import subprocess
import sys

import pytest

PACKAGES = ("policy", "vault", "recorder", "gateway")
LIBRARIES = ("policy", "vault", "recorder")


@pytest.mark.parametrize("library", LIBRARIES)
def test_library_imports_no_sibling(library: str) -> None:
    code = (
        "import importlib, pkgutil, sys\n"
        f"pkg = importlib.import_module({library!r})\n"
        "for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.'):\n"
        "    importlib.import_module(m.name)\n"
        f"others = sorted({{n.split('.')[0] for n in sys.modules}} & {set(PACKAGES)!r})\n"
        "print(','.join(others))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    loaded = set(result.stdout.strip().split(","))
    assert loaded == {library}, f"{library} pulled in {sorted(loaded - {library})}"
