"""Export as asciicast v2 (asciinema's format): a JSON header line, then one JSON array per
event: ``[t, "o", text]``, ``[t, "i", text]``, ``[t, "r", "WxH"]``, ``[t, "m", label]``.

Hidden keystrokes are exported only as a marker saying how many there were. A web session
exports as its request log: one output line per HTTP exchange (``recorder.http.describe``),
never a body, so it plays in any asciicast player.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from recorder.events import MASKED, Kind, Record, size_of, terminal_of
from recorder.http import display_line


def _header(meta: dict[str, Any]) -> dict[str, Any]:
    started = datetime.fromisoformat(meta["started"])
    return {
        "version": 2,
        "width": meta.get("width", 80),
        "height": meta.get("height", 24),
        "timestamp": int(started.timestamp()),
        "env": {"TERM": meta.get("term", "xterm")},
        "title": (
            f"{meta.get('user')} -> {meta.get('target')} (http)"
            if meta.get("kind") == "http"
            else f"{meta.get('user')} -> {meta.get('account')}@{meta.get('target')}"
        ),
    }


def export(records: Iterator[Record]) -> Iterator[str]:
    """The header carries the first geometry: the pty request's size and TERM when it came
    before anything was shown (it always does for a shell), else the recording's header."""
    out = codecs.getincrementaldecoder("utf-8")("replace")
    inp = codecs.getincrementaldecoder("utf-8")("replace")
    header: dict[str, Any] | None = None
    for record in records:
        t = round(record.t, 6)
        kind = record.kind
        if kind is Kind.META:
            header = _header(json.loads(record.data))
            continue
        if header is not None:
            if kind is Kind.TERMINAL:
                term, header["width"], header["height"] = terminal_of(record.data)
                header["env"] = {"TERM": term}
                continue
            yield json.dumps(header)
            header = None
        if kind is Kind.OUTPUT:
            text = out.decode(record.data)
            if text:
                yield json.dumps([t, "o", text])
        elif kind is Kind.INPUT:
            text = inp.decode(record.data)
            if text:
                yield json.dumps([t, "i", text])
        elif kind is Kind.MASKED:
            yield json.dumps([t, "m", f"{MASKED.unpack(record.data)[0]} hidden keystrokes"])
        elif kind is Kind.HTTP:
            line = display_line(record.data)
            if line:
                yield json.dumps([t, "o", line.decode()])
        elif (size := size_of(record)) is not None:
            yield json.dumps([t, "r", f"{size[0]}x{size[1]}"])
        elif kind in (Kind.MARKER, Kind.EXEC, Kind.SEAL):
            label = (
                json.loads(record.data).get("text", "")
                if kind is Kind.MARKER
                else "$ " + record.data.decode("utf-8", "replace")
                if kind is Kind.EXEC
                else "end: " + json.loads(record.data).get("reason", "")
            )
            yield json.dumps([t, "m", label])
    if header is not None:
        yield json.dumps(header)
