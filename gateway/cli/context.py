"""What every command handler receives."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from gateway.render import emit

if TYPE_CHECKING:
    from gateway.services import Services


class Usage(Exception):
    """Bad usage detected after parsing (exit status 2)."""


@dataclass
class Context:
    args: argparse.Namespace
    out: TextIO
    err: TextIO
    config_path: Path | None
    services: Services | None
    actor: str

    @property
    def svc(self) -> Services:
        assert self.services is not None
        return self.services

    def emit(self, result: Any, columns: Sequence[str] | None = None) -> int:
        emit(result, self.out, as_json=bool(self.args.json), columns=columns)
        return 0

    def read_stdin_secret(self, what: str) -> str:
        """One line from stdin (a pipe or a terminal without echo); never from argv."""
        if sys.stdin.isatty():
            import getpass

            value = getpass.getpass(f"{what}: ")
        else:
            value = sys.stdin.readline().rstrip("\r\n")
        if not value:
            raise Usage(f"no {what} on standard input")
        return value
