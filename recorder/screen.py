"""A contained pyte terminal: hostile output never crashes it, absurd sizes are clamped.

pyte raises on some valid-looking sequences (``ESC[1;2;3G``) and its parser generator dies
with the exception; a CSI with thousands of digits makes it build huge integers. This model
strips over-long CSI parameter runs before feeding, and after any exception rebuilds the
stream on the same screen, so the screen survives and indexing goes on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import pyte
from wcwidth import wcwidth

MAX_COLS, MAX_ROWS = 500, 200
_LONG_CSI = re.compile(rb"\x1b\[[0-9;:?<=>]{24,}[@-~]?")


def clamp_size(width: int, height: int) -> tuple[int, int]:
    return max(2, min(width, MAX_COLS)), max(1, min(height, MAX_ROWS))


@dataclass(frozen=True)
class Snapshot:
    width: int
    height: int
    lines: tuple[str, ...]
    cursor: tuple[int, int]

    def as_dict(self) -> dict[str, Any]:
        return {
            "width": self.width,
            "height": self.height,
            "lines": list(self.lines),
            "cursor": list(self.cursor),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Snapshot:
        return cls(
            int(data["width"]),
            int(data["height"]),
            tuple(data["lines"]),
            (int(data["cursor"][0]), int(data["cursor"][1])),
        )


class TerminalModel:
    def __init__(self, width: int = 80, height: int = 24) -> None:
        cols, rows = clamp_size(width, height)
        self.screen = pyte.Screen(cols, rows)
        self.stream = pyte.ByteStream(self.screen)
        self.errors = 0

    def feed(self, data: bytes) -> None:
        data = _LONG_CSI.sub(b"", data)
        try:
            self.stream.feed(data)
        except Exception:
            self.errors += 1
            self.stream = pyte.ByteStream(self.screen)

    def resize(self, width: int, height: int) -> None:
        cols, rows = clamp_size(width, height)
        try:
            self.screen.resize(rows, cols)
        except Exception:
            self.errors += 1
            self.screen = pyte.Screen(cols, rows)
            self.stream = pyte.ByteStream(self.screen)

    def restore(self, snap: Snapshot) -> None:
        """Put a keyframe's text back on a fresh screen (attributes are not kept)."""
        self.screen = pyte.Screen(*clamp_size(snap.width, snap.height))
        self.stream = pyte.ByteStream(self.screen)
        for row, line in enumerate(snap.lines[: self.screen.lines]):
            self.feed(f"\x1b[{row + 1};1H{line}".encode())
        self.feed(f"\x1b[{snap.cursor[1] + 1};{snap.cursor[0] + 1}H".encode())

    def snapshot(self) -> Snapshot:
        screen = self.screen
        lines = tuple(_text(screen.buffer[y], screen.columns).rstrip() for y in range(screen.lines))
        return Snapshot(
            self.screen.columns,
            self.screen.lines,
            lines,
            (self.screen.cursor.x, self.screen.cursor.y),
        )


def _text(row: Any, columns: int) -> str:
    """One screen row as text. pyte's own ``display`` raises on the right half of a wide
    character whose left half was overwritten (an empty cell it does not expect); a
    terminal shows a blank there, and so does this."""
    out: list[str] = []
    stub = False
    for x in range(columns):
        data = row[x].data
        if stub and not data:  # the right half of the wide character just drawn
            stub = False
            continue
        stub = bool(data) and wcwidth(data[0]) == 2
        out.append(data or " ")
    return "".join(out)
