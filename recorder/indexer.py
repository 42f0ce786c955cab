"""Turning a recording into keyframes, searchable text and a timeline.

A web session's HTTP exchanges become ``"METHOD target"`` lines (kind ``http``) and ``http``
events; its screen is the log of its requests, one line each.

Runs in a worker process (``index_file`` is a plain function of a path), never on the
gateway's event loop: pyte parses about 0.25 MB/s, while a shell moves 30-40 MB/s. Text for
search comes from the raw output through compiled regular expressions; pyte only sees what a
keyframe needs. In a burst of output without keystrokes, only the last 16 KB reach pyte: the
screen after a burst is determined by its last screenful.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recorder.commandline import LineTracker
from recorder.events import (
    CHUNK_HEAD,
    HASH_LEN,
    MAGIC,
    MASKED,
    Kind,
    Record,
    decode_records,
    read_chunks,
    size_of,
    terminal_of,
)
from recorder.http import display_line, exchange_from, header_of, search_line
from recorder.screen import TerminalModel

KEYFRAME_SECONDS = 10.0
KEYFRAME_BYTES = 64 * 1024  # of pyte input: bounds the replay work behind any keyframe
BURST_KEEP = 16 * 1024
BURST_LIMIT = 32 * 1024
MAX_LINE = 500
MAX_LINES = 200_000
_ANSI = re.compile(rb"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-Z\\-_])")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


@dataclass
class IndexResult:
    width: int = 80
    height: int = 24
    duration: float = 0.0
    keyframes: list[tuple[float, int, dict[str, Any]]] = field(default_factory=list)
    lines: list[tuple[float, str, str]] = field(default_factory=list)  # t, kind, text
    events: list[tuple[float, str, dict[str, Any]]] = field(default_factory=list)
    pyte_errors: int = 0
    size: int = 0  # bytes of the file covered: all of it, or the complete chunks of a live one


def clean_line(raw: bytes) -> str:
    """What a line of raw output shows: escapes removed, text after a bare CR wins."""
    line = _ANSI.sub(b"", raw).decode("utf-8", "replace").rstrip("\r").rsplit("\r", 1)[-1]
    return _CONTROL.sub("", line).strip()[:MAX_LINE]


class LineAssembler:
    """Complete output lines across records (an echo arrives a byte at a time)."""

    def __init__(self) -> None:
        self.partial = b""

    def feed(self, data: bytes) -> Iterator[str]:
        *complete, self.partial = (self.partial + data).split(b"\n")
        if len(self.partial) > 4 * MAX_LINE:
            complete.append(self.partial)
            self.partial = b""
        for raw in complete:
            if line := clean_line(raw):
                yield line

    def finish(self) -> Iterator[str]:
        if line := clean_line(self.partial):
            yield line
        self.partial = b""


class Feeder:
    """Feeds a TerminalModel, trimming long bursts to their tail (shared with replay)."""

    def __init__(self, model: TerminalModel) -> None:
        self.model = model
        self.pending = bytearray()
        self.fed = 0

    def output(self, data: bytes) -> None:
        self.pending += data
        if len(self.pending) > BURST_LIMIT:
            tail = self.pending[-BURST_KEEP:]
            cut = tail.find(b"\n")
            self.pending = bytearray(tail[cut + 1 :] if cut >= 0 else tail)

    def flush(self) -> None:
        if self.pending:
            self.fed += len(self.pending)
            self.model.feed(bytes(self.pending))
            self.pending.clear()

    def apply(self, record: Record) -> None:
        if record.kind is Kind.OUTPUT:
            self.output(record.data)
        elif (size := size_of(record)) is not None:
            self.flush()
            self.model.resize(*size)
        elif record.kind is Kind.INPUT:
            self.flush()
        elif record.kind is Kind.HTTP:  # a web session's screen: its request log
            self.output(display_line(record.data))


def _index_http(result: IndexResult, record: Record) -> None:
    """An exchange is a timeline event (its fields, never its body) and a searchable
    ``"METHOD target"`` line at the time it was recorded."""
    fields = header_of(record.data)
    decoded = None if fields is None else exchange_from(fields, record.data)
    if fields is None or decoded is None:
        return
    result.events.append((record.t, "http", fields))
    if len(result.lines) < MAX_LINES:
        result.lines.append((record.t, "http", search_line(decoded[1])[:MAX_LINE]))


def geometry_of(data: bytes) -> tuple[str, int, int]:
    """The recording's first geometry: the pty request's TERM and size when the session
    asked for one before any output, else what the header says."""
    meta: dict[str, Any] = {}
    for chunk in read_chunks(data, complete_only=True):
        for record in decode_records(chunk.payload):
            if record.kind is Kind.META:
                meta = dict(json.loads(record.data))
            elif record.kind is Kind.TERMINAL:
                return terminal_of(record.data)
            elif record.kind in (Kind.OUTPUT, Kind.INPUT, Kind.RESIZE, Kind.HTTP):
                break
        else:
            continue
        break
    return str(meta.get("term", "xterm")), int(meta.get("width", 80)), int(meta.get("height", 24))


def index_bytes(data: bytes, live: bool = False) -> IndexResult:
    """Index a recording; ``live``: one still being written, up to its last complete chunk."""
    _, width, height = geometry_of(data)
    result = IndexResult(width, height)
    model = TerminalModel(result.width, result.height)
    feeder = Feeder(model)
    tracker = LineTracker()
    assembler = LineAssembler()
    last_t, keyframe_t, keyframe_fed, previous_line = 0.0, 0.0, 0, ""
    result.size = len(MAGIC)
    for chunk in read_chunks(data, complete_only=live):
        result.size = chunk.offset + CHUNK_HEAD.size + len(chunk.payload) + HASH_LEN
        if (
            last_t - keyframe_t >= KEYFRAME_SECONDS
            or feeder.fed + len(feeder.pending) - keyframe_fed >= KEYFRAME_BYTES
        ) or not result.keyframes:
            feeder.flush()
            result.keyframes.append((last_t, chunk.offset, model.snapshot().as_dict()))
            keyframe_t, keyframe_fed = last_t, feeder.fed
        for record in decode_records(chunk.payload):
            last_t = record.t
            feeder.apply(record)
            kind = record.kind
            if kind is Kind.OUTPUT and len(result.lines) < MAX_LINES:
                for line in assembler.feed(record.data):
                    if line != previous_line:
                        result.lines.append((record.t, "screen", line))
                        previous_line = line
            elif kind is Kind.INPUT:
                for typed in tracker.feed(record.data):
                    if typed.text.strip():
                        result.lines.append((record.t, "command", typed.text[:MAX_LINE]))
                        result.events.append(
                            (record.t, "command", {"text": typed.text, "certain": typed.certain})
                        )
            elif kind is Kind.MASKED:
                tracker.feed(b"")  # hidden keystrokes: their text is unknown, never guessed
                result.events.append((record.t, "hidden", {"count": MASKED.unpack(record.data)[0]}))
            elif kind is Kind.EXEC:
                text = record.data.decode("utf-8", "replace")
                result.lines.append((record.t, "command", text[:MAX_LINE]))
                result.events.append((record.t, "command", {"text": text, "certain": True}))
            elif kind in (Kind.MARKER, Kind.SFTP, Kind.FORWARD, Kind.EXIT):
                result.events.append((record.t, kind.name.lower(), json.loads(record.data)))
            elif kind is Kind.HTTP:
                _index_http(result, record)
            elif (size := size_of(record)) is not None:
                result.events.append((record.t, "resize", {"width": size[0], "height": size[1]}))
    feeder.flush()
    result.lines.extend((last_t, "screen", line) for line in assembler.finish())
    result.duration = last_t
    result.pyte_errors = model.errors
    return result


def index_file(path: str, live: bool = False) -> IndexResult:
    """Entry point for the worker process."""
    data = Path(path).read_bytes()
    if not data.startswith(MAGIC):
        raise ValueError("not a Lockgate recording")
    return index_bytes(data, live)


def to_json(result: IndexResult) -> str:
    """JSON Lines: the facts, then one line per keyframe (``k``), text line (``l``) and
    event (``e``). The reader parses them one by one: a single ``json.loads`` of megabytes
    holds the GIL, and with it the event loop, for as long as it runs."""
    head = {
        "width": result.width,
        "height": result.height,
        "duration": result.duration,
        "pyte_errors": result.pyte_errors,
        "size": result.size,
    }
    out = [json.dumps(head)]
    out += (json.dumps(["k", *item]) for item in result.keyframes)
    out += (json.dumps(["l", *item]) for item in result.lines)
    out += (json.dumps(["e", *item]) for item in result.events)
    return "\n".join(out) + "\n"


def from_json(text: str) -> IndexResult:
    lines = text.rstrip("\n").split("\n")
    head = json.loads(lines[0])
    result = IndexResult(
        head["width"], head["height"], head["duration"], [], [], [],
        head["pyte_errors"], head["size"],
    )  # fmt: skip
    for raw in lines[1:]:
        kind, t, a, b = json.loads(raw)
        if kind == "k":
            result.keyframes.append((t, int(a), b))
        elif kind == "l":
            result.lines.append((t, a, b))
        else:
            result.events.append((t, a, b))
    return result


if __name__ == "__main__":  # the worker process: python -m recorder.indexer PATH [--live]
    import sys

    sys.stdout.write(to_json(index_file(sys.argv[1], live="--live" in sys.argv[2:])))
