"""Export as asciicast v2 (asciinema's format): a JSON header line, then one JSON array per
event: ``[t, "o", text]``, ``[t, "i", text]``, ``[t, "r", "WxH"]``, ``[t, "m", label]``.

Hidden keystrokes are exported only as a marker saying how many there were.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Iterator
from datetime import datetime

from recorder.events import MASKED, RESIZE, Kind, Record


def export(records: Iterator[Record]) -> Iterator[str]:
    out = codecs.getincrementaldecoder("utf-8")("replace")
    inp = codecs.getincrementaldecoder("utf-8")("replace")
    for record in records:
        t = round(record.t, 6)
        kind = record.kind
        if kind is Kind.META:
            meta = json.loads(record.data)
            started = datetime.fromisoformat(meta["started"])
            header = {
                "version": 2,
                "width": meta.get("width", 80),
                "height": meta.get("height", 24),
                "timestamp": int(started.timestamp()),
                "env": {"TERM": meta.get("term", "xterm")},
                "title": f"{meta.get('user')} -> {meta.get('account')}@{meta.get('target')}",
            }
            yield json.dumps(header)
        elif kind is Kind.OUTPUT:
            text = out.decode(record.data)
            if text:
                yield json.dumps([t, "o", text])
        elif kind is Kind.INPUT:
            text = inp.decode(record.data)
            if text:
                yield json.dumps([t, "i", text])
        elif kind is Kind.MASKED:
            yield json.dumps([t, "m", f"{MASKED.unpack(record.data)[0]} hidden keystrokes"])
        elif kind is Kind.RESIZE:
            width, height = RESIZE.unpack(record.data)
            yield json.dumps([t, "r", f"{width}x{height}"])
        elif kind in (Kind.MARKER, Kind.EXEC, Kind.SEAL):
            label = (
                json.loads(record.data).get("text", "")
                if kind is Kind.MARKER
                else "$ " + record.data.decode("utf-8", "replace")
                if kind is Kind.EXEC
                else "end: " + json.loads(record.data).get("reason", "")
            )
            yield json.dumps([t, "m", label])
