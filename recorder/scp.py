"""Legacy scp (``scp -O``, the rcp protocol over an exec channel): recognising the server
command, and passive parsing of which files moved, which way, how many bytes.

The client runs ``scp -t PATH`` (sink: files go to the target) or ``scp -f PATH`` (source:
files come from it) on the server. The source side sends, per file, a control line
``C<mode> <size> <name>\\n``, the file's bytes and a ``\\0``; ``D<mode> 0 <name>\\n`` and
``E\\n`` enter and leave directories, ``T...\\n`` carries times; ``\\x01``/``\\x02`` lines
are errors. Operations are reported in the shape ``recorder.sftp`` uses (``upload`` /
``download`` with path, bytes and result), so they are recorded and audited alike.
Malformed input stops the parsing (reported once as ``unparsed``), never the session.
"""

from __future__ import annotations

import posixpath
import re
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

Direction = Literal["upload", "download"]
# The flags an scp server is started with; anything else is not a plain scp server.
_SAFE_FLAGS = frozenset("tfrpdvq")
_SHELL_META = re.compile(r"[;&|`$<>(){}\n\r*?\[\]!#~]")
_CONTROL = re.compile(rb"([CD])([0-7]{3,4}) (\d{1,19}) ([^/\n]+)")
MAX_LINE = 4096


@dataclass(frozen=True)
class ScpCommand:
    direction: Direction
    path: str
    directory: bool = False  # -r or -d: an upload's PATH is a directory


def legacy_scp(command: str) -> ScpCommand | None:
    """The scp server invocation ``command`` is (``scp [-rpdvq] -t|-f [--] PATH``), or None
    for anything else: another program, unknown flags, several paths or shell syntax. Only
    such a plain invocation counts as a file transfer; the rest stays an exec command."""
    if _SHELL_META.search(command):
        return None
    try:
        argv = shlex.split(command)
    except ValueError:
        return None
    if len(argv) < 3 or argv[0] not in ("scp", "/usr/bin/scp", "/bin/scp"):
        return None
    flags: set[str] = set()
    rest = argv[1:]
    while rest and rest[0].startswith("-") and rest[0] != "--":
        letters = rest.pop(0)[1:]
        if not letters or not set(letters) <= _SAFE_FLAGS:
            return None
        flags |= set(letters)
    if rest and rest[0] == "--":
        rest.pop(0)
    if len(rest) != 1 or ("t" in flags) == ("f" in flags):
        return None
    direction: Direction = "upload" if "t" in flags else "download"
    return ScpCommand(direction, rest[0], bool(flags & {"r", "d"}))


class ScpTracker:
    """Follows the source side's stream (the client's for an upload, the target's for a
    download) and reports each file once it is complete, or at ``finish``."""

    def __init__(self, command: ScpCommand, emit: Callable[[Mapping[str, Any]], None]) -> None:
        self.command = command
        self.emit = emit
        self.dirs: list[str] = []
        self.line = bytearray()
        self.current: dict[str, Any] | None = None
        self.remaining = 0
        self.broken = False

    def source(self, data: bytes) -> None:
        """Bytes from the side that sends files."""
        if self.broken:
            return
        try:
            self._feed(memoryview(data))
        except ValueError:
            self.broken = True
            self.emit({"op": "unparsed"})

    def sink(self, data: bytes) -> None:
        """Bytes from the receiving side: acknowledgements; an error fails the last file."""
        if self.broken or not data or data[0] not in (1, 2):
            return
        if self.current is not None:
            self._report("failed")

    def finish(self) -> None:
        if self.current is not None:
            self._report("interrupted")

    def _feed(self, data: memoryview) -> None:
        pos = 0
        while pos < len(data):
            if self.current is not None and self.remaining:
                take = min(self.remaining, len(data) - pos)
                self.remaining -= take
                self.current["bytes"] += take
                pos += take
                continue
            if self.current is not None:  # the \0 after a file's bytes
                if data[pos] != 0:
                    raise ValueError("no end marker after a file")
                pos += 1
                self._report("ok")
                continue
            end = bytes(data[pos:]).find(b"\n")
            if end < 0:
                self.line += data[pos:]
                if len(self.line) > MAX_LINE:
                    raise ValueError("control line too long")
                return
            self.line += data[pos : pos + end]
            pos += end + 1
            line, self.line = bytes(self.line), bytearray()
            self._control(line)

    def _control(self, line: bytes) -> None:
        if not line:
            raise ValueError("empty control line")
        kind = line[:1]
        if kind in (b"\x01", b"\x02"):
            self.emit({"op": self.command.direction, "path": self._path(None), "result": "failed"})
        elif kind == b"T":
            return
        elif kind == b"E":
            if self.dirs:
                self.dirs.pop()
        else:
            match = _CONTROL.fullmatch(line)
            if match is None:
                raise ValueError("unknown control line")
            name = match.group(4).decode("utf-8", "replace")
            if name in (".", ".."):
                raise ValueError("bad file name")
            if match.group(1) == b"D":
                self.dirs.append(name)
                return
            self.current = {"path": self._path(name), "bytes": 0}
            self.remaining = int(match.group(3))

    def _path(self, name: str | None) -> str:
        """Where the file is on the target, as far as the stream tells."""
        cmd = self.command
        parts = [*self.dirs, *([name] if name is not None else [])]
        if not self.dirs and (cmd.direction == "download" or not cmd.directory):
            return cmd.path  # one file: the path named on the command line
        if cmd.direction == "download":  # -r: the top directory is the path's last part
            parent = posixpath.dirname(cmd.path.rstrip("/"))
            return posixpath.join(parent, *parts) if parent else posixpath.join(*parts)
        return posixpath.join(cmd.path, *parts)

    def _report(self, result: str) -> None:
        assert self.current is not None
        self.emit({"op": self.command.direction, "via": "scp", **self.current, "result": result})
        self.current = None
        self.remaining = 0
