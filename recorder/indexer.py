"""Turning a recording into keyframes, searchable text and a timeline.

A web session's HTTP exchanges become ``"METHOD target"`` lines (kind ``http``) and ``http``
events; its screen is the log of its requests, one line each.

Runs in a worker process (``index_file`` for a sealed recording, ``index_more`` for the
next pass over a live one: plain functions of a path), never on the gateway's event loop:
pyte parses about 0.25 MB/s, while a shell moves 30-40 MB/s. Text for search comes from the
raw output through compiled regular expressions; pyte only sees what a keyframe needs. In a
burst of output without keystrokes, only the last 16 KB reach pyte: the screen after a burst
is determined by its last screenful.
"""

from __future__ import annotations

import json
import mmap
import os
import re
from base64 import b64decode, b64encode
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO

from recorder.commandline import LineTracker
from recorder.events import (
    CHUNK_HEAD,
    HASH_LEN,
    MAGIC,
    MASKED,
    MAX_CHUNK,
    ChainPoint,
    Chunk,
    Kind,
    Record,
    decode_records,
    read_chunks,
    size_of,
    terminal_of,
)
from recorder.http import display_line, exchange_from, header_of, search_line
from recorder.screen import Snapshot, TerminalModel

KEYFRAME_SECONDS = 10.0
KEYFRAME_BYTES = 64 * 1024  # of pyte input: bounds the replay work behind any keyframe
BURST_KEEP = 16 * 1024
BURST_LIMIT = 32 * 1024
MAX_LINE = 500
MAX_LINES = 200_000
SPILL = 2000  # entries a worker holds before writing them out
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
    resume: dict[str, Any] | None = None  # a live pass's: where the next pass goes on


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


def _index_http(result: IndexResult, record: Record, line: bool = True) -> None:
    """An exchange is a timeline event (its fields, never its body) and a searchable
    ``"METHOD target"`` line at the time it was recorded."""
    fields = header_of(record.data)
    decoded = None if fields is None else exchange_from(fields, record.data)
    if fields is None or decoded is None:
        return
    result.events.append((record.t, "http", fields))
    if line:
        result.lines.append((record.t, "http", search_line(decoded[1])[:MAX_LINE]))


def geometry_of(data: bytes | mmap.mmap) -> tuple[str, int, int]:
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


class Indexer:
    """The index of a recording, built chunk by chunk. ``pause`` gives what ``resume`` needs
    to go on in a later process (a live recording indexed pass by pass), in JSON types.

    A resumed index starts from the text of the screen where it stopped, not pyte's whole
    state (modes, attributes, scroll margins): a live index may differ from the sealed
    one in such details; the sealed recording is indexed anew from its start."""

    def __init__(self, width: int, height: int, out: TextIO | None = None) -> None:
        self.result = IndexResult(width, height, size=len(MAGIC))
        self.out = out  # where entries go as they are found (the worker's output), if anywhere
        self.model = TerminalModel(width, height)
        self.feeder = Feeder(self.model)
        self.tracker = LineTracker()
        self.assembler = LineAssembler()
        self.last_t, self.keyframe_t, self.keyframe_fed = 0.0, 0.0, 0
        self.previous_line = ""
        self.lines_before = 0  # text lines of the passes before this one, and written out
        self.at: ChainPoint | None = None  # where the next chunk starts (None: the first)

    def chunk(self, chunk: Chunk) -> None:
        result, feeder, model = self.result, self.feeder, self.model
        result.size = chunk.offset + CHUNK_HEAD.size + len(chunk.payload) + HASH_LEN
        self.at = ChainPoint(result.size, chunk.digest, chunk.seq + 1)
        if (
            self.last_t - self.keyframe_t >= KEYFRAME_SECONDS
            or feeder.fed + len(feeder.pending) - self.keyframe_fed >= KEYFRAME_BYTES
        ) or (chunk.seq == 0 and not result.keyframes):
            feeder.flush()
            result.keyframes.append((self.last_t, chunk.offset, model.snapshot().as_dict()))
            self.keyframe_t, self.keyframe_fed = self.last_t, feeder.fed
        for record in decode_records(chunk.payload):
            self.record(record)
        if self.out is not None and len(result.lines) + len(result.events) >= SPILL:
            self._spill()

    def _spill(self) -> None:
        """Write the entries found so far to ``out`` and forget them: a busy web session
        has hundreds of thousands, which would otherwise all be held until the end."""
        result = self.result
        if self.out is not None:
            self.out.writelines(entry_lines(result))
            self.lines_before += len(result.lines)
            result.keyframes, result.lines, result.events = [], [], []

    def record(self, record: Record) -> None:
        result = self.result
        self.last_t = record.t
        self.feeder.apply(record)
        kind = record.kind
        room = self.lines_before + len(result.lines) < MAX_LINES
        if kind is Kind.OUTPUT and room:
            for line in self.assembler.feed(record.data):
                if line != self.previous_line:
                    result.lines.append((record.t, "screen", line))
                    self.previous_line = line
        elif kind is Kind.INPUT:
            for typed in self.tracker.feed(record.data):
                if typed.text.strip():
                    result.lines.append((record.t, "command", typed.text[:MAX_LINE]))
                    result.events.append(
                        (record.t, "command", {"text": typed.text, "certain": typed.certain})
                    )
        elif kind is Kind.MASKED:
            self.tracker.feed(b"")  # hidden keystrokes: their text is unknown, never guessed
            result.events.append((record.t, "hidden", {"count": MASKED.unpack(record.data)[0]}))
        elif kind is Kind.EXEC:
            text = record.data.decode("utf-8", "replace")
            result.lines.append((record.t, "command", text[:MAX_LINE]))
            result.events.append((record.t, "command", {"text": text, "certain": True}))
        elif kind in (Kind.MARKER, Kind.SFTP, Kind.FORWARD, Kind.EXIT):
            result.events.append((record.t, kind.name.lower(), json.loads(record.data)))
        elif kind is Kind.HTTP:
            _index_http(result, record, line=room)
        elif (size := size_of(record)) is not None:
            result.events.append((record.t, "resize", {"width": size[0], "height": size[1]}))

    def finish(self) -> IndexResult:
        """The whole index: the last line even without its line break."""
        self.feeder.flush()
        result = self.result
        result.lines.extend((self.last_t, "screen", line) for line in self.assembler.finish())
        result.duration = self.last_t
        result.pyte_errors = self.model.errors
        self._spill()
        return result

    def pause(self) -> IndexResult:
        """What this pass found, with ``resume`` set for the next one; a line still being
        written is kept for it."""
        self.feeder.flush()
        result = self.result
        result.duration = self.last_t
        result.pyte_errors = self.model.errors
        at = self.at
        result.resume = {
            "chain": None if at is None else [at.pos, at.prev.hex(), at.seq],
            "width": result.width,
            "height": result.height,
            "screen": self.model.snapshot().as_dict(),
            "times": [self.last_t, self.keyframe_t],
            "fed": [self.feeder.fed, self.keyframe_fed],
            "previous_line": self.previous_line,
            "lines": self.lines_before + len(result.lines),
            "partial": b64encode(self.assembler.partial).decode(),
            "typed": self.tracker.state(),
            "pyte_errors": self.model.errors,
        }
        self._spill()
        return result

    @classmethod
    def resume(cls, state: dict[str, Any]) -> Indexer:
        index = cls(int(state["width"]), int(state["height"]))
        index.model.restore(Snapshot.from_dict(state["screen"]))
        index.model.errors = int(state["pyte_errors"])
        index.last_t, index.keyframe_t = (float(t) for t in state["times"])
        index.feeder.fed, index.keyframe_fed = (int(n) for n in state["fed"])
        index.previous_line = str(state["previous_line"])
        index.lines_before = int(state["lines"])
        index.assembler.partial = b64decode(state["partial"])
        index.tracker.restore(state["typed"])
        if state["chain"] is not None:
            pos, prev, seq = state["chain"]
            index.at = ChainPoint(int(pos), bytes.fromhex(prev), int(seq))
            index.result.size = index.at.pos
        return index


def index_bytes(
    data: bytes | mmap.mmap, live: bool = False, out: TextIO | None = None
) -> IndexResult:
    """Index a recording; ``live``: one still being written, up to its last complete chunk.
    With ``out``, the entries are written there as they are found (``to_json``'s lines, but
    the facts line), and the result holds none."""
    _, width, height = geometry_of(data)
    index = Indexer(width, height, out)
    for chunk in read_chunks(data, complete_only=live):
        index.chunk(chunk)
    return index.finish()


def index_file(path: str, out: TextIO | None = None) -> IndexResult:
    """A sealed recording's whole index (the worker process's entry point). The file is
    mapped, not read: a recording may be larger than the memory the worker should use."""
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size < len(MAGIC):
            raise ValueError("not a Lockgate recording")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            if data[: len(MAGIC)] != MAGIC:
                raise ValueError("not a Lockgate recording")
            return index_bytes(data, out=out)


def index_more(
    path: str, resume: dict[str, Any] | None, max_bytes: int, out: TextIO | None = None
) -> IndexResult:
    """The index of a live recording's complete chunks after where ``resume`` (from the
    last pass's result; None: from the start) stopped, reading at most about ``max_bytes``
    of them: only the new rows, and ``resume`` for the next pass. ``out`` as for
    ``index_bytes``."""
    index = None if resume is None else Indexer.resume(resume)
    with open(path, "rb") as f:
        f.seek(0 if index is None or index.at is None else index.at.pos)
        data = f.read(max(max_bytes, MAX_CHUNK + CHUNK_HEAD.size + HASH_LEN))  # a whole chunk
    if index is None:
        if not data.startswith(MAGIC):
            raise ValueError("not a Lockgate recording")
        index = Indexer(*geometry_of(data)[1:])
    index.out = out
    for chunk in read_chunks(data, complete_only=True, at=index.at):
        index.chunk(chunk)
    return index.pause()


def entry_lines(result: IndexResult) -> Iterator[str]:
    """One JSON line per keyframe (``k``), text line (``l``) and event (``e``)."""
    yield from (json.dumps(["k", *item]) + "\n" for item in result.keyframes)
    yield from (json.dumps(["l", *item]) + "\n" for item in result.lines)
    yield from (json.dumps(["e", *item]) + "\n" for item in result.events)


def head_line(result: IndexResult) -> str:
    """The facts of an index as one JSON line (an object: entries are arrays)."""
    head = {
        "width": result.width,
        "height": result.height,
        "duration": result.duration,
        "pyte_errors": result.pyte_errors,
        "size": result.size,
        "resume": result.resume,
    }
    return json.dumps(head) + "\n"


def to_json(result: IndexResult) -> str:
    """JSON Lines: the entries (``entry_lines``), then the facts (``head_line``), last
    because the worker knows them only at the end. The reader reads the entries a batch at
    a time: a single ``json.loads`` of megabytes holds the GIL, and with it the event loop,
    for as long as it runs."""
    return "".join(entry_lines(result)) + head_line(result)


def index_head(line: str) -> IndexResult:
    """The facts line of ``to_json``'s output, as an index without entries."""
    head = json.loads(line)
    return IndexResult(
        head["width"], head["height"], head["duration"], [], [], [],
        head["pyte_errors"], head["size"], head.get("resume"),
    )  # fmt: skip


def add_entry(result: IndexResult, line: str) -> None:
    """One entry line of ``to_json``'s output, added to ``result``."""
    kind, t, a, b = json.loads(line)
    if kind == "k":
        result.keyframes.append((t, int(a), b))
    elif kind == "l":
        result.lines.append((t, a, b))
    else:
        result.events.append((t, a, b))


if __name__ == "__main__":
    # The worker process: ``python -m recorder.indexer PATH`` indexes a sealed recording;
    # ``... PATH --more MAX_BYTES`` goes on with a live one from the resume state on stdin.
    import sys

    os.nice(10)  # the gateway's own processes come first on a busy host
    if sys.argv[2:3] == ["--more"]:
        state = json.loads(sys.stdin.read() or "null")
        facts = index_more(sys.argv[1], state, int(sys.argv[3]), sys.stdout)
    else:
        facts = index_file(sys.argv[1], sys.stdout)
    sys.stdout.write(head_line(facts))
