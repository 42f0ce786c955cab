"""Reconstructing the command line a person types, from their keystrokes.

Understands the editing keys of a readline prompt (backspace, Ctrl-U, Ctrl-W, Ctrl-C) and
marks the line as uncertain when keys it cannot follow were used (arrows, history recall,
tab completion): then only the typed characters are known. A guard, not a sandbox: see
``recorder.anomaly``.
"""

from __future__ import annotations

from base64 import b64decode, b64encode
from dataclasses import dataclass
from typing import Any

MAX_LINE = 8192


@dataclass(frozen=True)
class TypedLine:
    text: str
    certain: bool  # False when history, completion or cursor movement were used


class LineTracker:
    def __init__(self) -> None:
        self._line = bytearray()
        self._certain = True
        self._escape = 0  # bytes of an escape sequence still to skip

    def feed(self, data: bytes) -> list[TypedLine]:
        """Consume keystrokes; return the lines completed by Enter in ``data``."""
        done: list[TypedLine] = []
        for byte in data:
            if self._escape:
                self._escape = 0 if 0x40 <= byte <= 0x7E and byte != 0x5B else self._escape
                continue
            if byte == 0x1B:  # ESC: arrow keys, history search... we lose track
                self._escape = 1
                self._certain = False
            elif byte in (0x0D, 0x0A):
                done.append(self.take())
            elif byte in (0x7F, 0x08):
                if self._line:
                    self._line.pop()
                    while self._line and (self._line[-1] & 0xC0) == 0x80:  # UTF-8 tail
                        self._line.pop()
            elif byte == 0x15:  # Ctrl-U
                self._line.clear()
            elif byte == 0x17:  # Ctrl-W
                text = self._line.rstrip(b" ")
                cut = text.rfind(b" ") + 1
                del self._line[cut:]
            elif byte in (0x03, 0x04):  # Ctrl-C cancels, Ctrl-D on an empty line exits
                self._line.clear()
                self._certain = True
            elif byte in (0x09, 0x12, 0x10, 0x0E):  # Tab, Ctrl-R, Ctrl-P, Ctrl-N
                self._certain = False
            elif byte >= 0x20 and len(self._line) < MAX_LINE:
                self._line.append(byte)
        return done

    def take(self) -> TypedLine:
        line = TypedLine(self._line.decode("utf-8", "replace"), self._certain)
        self._line.clear()
        self._certain = True
        return line

    def state(self) -> list[Any]:
        """What ``restore`` takes, in JSON types (a line typed across two index passes)."""
        return [b64encode(bytes(self._line)).decode(), self._certain, self._escape]

    def restore(self, state: list[Any]) -> None:
        line, certain, escape = state
        self._line[:] = b64decode(line)[:MAX_LINE]
        self._certain, self._escape = bool(certain), int(escape)

    @property
    def current(self) -> str:
        return self._line.decode("utf-8", "replace")
