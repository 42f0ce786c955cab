"""An index as database rows: the worker's output read back from its file and made into
rows, a batch at a time on the event loop.

Not in a thread: a thread running Python holds the GIL against the event loop, and each of
the loop's system calls then waits up to a switch interval (5 ms) to get it back. With the
parse and the rows in threads, single callbacks of a busy web session took 100 ms and more
during a live index pass.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any, BinaryIO

import sqlalchemy as sa

from recorder.indexer import IndexResult, add_entry, index_head
from recorder.tables import events, keyframes, text_lines

# Entries parsed, rows made and rows sent to the database at a time (an HTTP session's index
# has a row or two per request: hundreds of thousands); between batches the loop serves
# sessions.
SAVE_BATCH = 500
Rows = list[dict[str, Any]]


class IndexFile:
    """An index the worker process wrote to a file (``recorder.indexer.to_json``): its facts
    (``head``: an index without entries) and its rows, read back ``SAVE_BATCH`` entries at
    a time. An HTTP session's index holds hundreds of thousands of entries: read whole, it
    once grew the gateway by hundreds of megabytes that stayed after the save."""

    def __init__(self, file: BinaryIO) -> None:
        self.file = file
        end = file.seek(0, os.SEEK_END)
        tail, at = b"", end
        while at and tail.count(b"\n") < 2:  # the facts line is the last one
            step = min(at, 64 * 1024)
            at = file.seek(at - step)
            tail = file.read(step) + tail
        last = tail[:-1].rsplit(b"\n", 1)[-1]
        if not tail.endswith(b"\n") or not last.startswith(b"{"):
            raise ValueError("the indexer's output is empty or cut short")
        self.head = index_head(last.decode())

    def rows(self, session_id: str, generation: int = 0) -> Iterator[tuple[sa.Table, Rows]]:
        """The index's rows as ``index_rows`` makes them, in batches of ``SAVE_BATCH`` rows
        of one table (the worker writes its kinds of entries interleaved), with at most
        that many entries of each kind held at a time."""
        self.file.seek(0)
        pending = IndexResult()
        for line in self.file:
            if line.startswith(b"{"):  # the facts: the entries are over
                break
            add_entry(pending, line.decode())
            for kind in ("keyframes", "lines", "events"):
                if len(full := getattr(pending, kind)) >= SAVE_BATCH:
                    yield from index_rows(session_id, IndexResult(**{kind: full}), generation)
                    setattr(pending, kind, [])
        yield from index_rows(session_id, pending, generation)

    @property
    def size(self) -> int:
        return self.head.size

    def close(self) -> None:
        self.file.close()


def rows_of(
    index: IndexResult | IndexFile, session_id: str, generation: int = 0
) -> Iterator[tuple[sa.Table, Rows]]:
    """The rows of an index in memory or in the worker's file."""
    if isinstance(index, IndexFile):
        return index.rows(session_id, generation)
    return index_rows(session_id, index, generation)


def index_rows(
    session_id: str, result: IndexResult, generation: int = 0
) -> Iterator[tuple[sa.Table, Rows]]:
    """The rows of an index, ``SAVE_BATCH`` of one table at a time, each batch made when it
    is asked for (JSON for every keyframe and event); a live index is generation 0."""
    for at in range(0, len(result.keyframes), SAVE_BATCH):
        yield (
            keyframes,
            [
                {
                    "session_id": session_id,
                    "generation": generation,
                    "t": t,
                    "offset": off,
                    "screen": json.dumps(s),
                }
                for t, off, s in result.keyframes[at : at + SAVE_BATCH]
            ],
        )
    for at in range(0, len(result.lines), SAVE_BATCH):
        yield (
            text_lines,
            [
                {"session_id": session_id, "generation": generation, "t": t, "kind": k, "line": x}
                for t, k, x in result.lines[at : at + SAVE_BATCH]
            ],
        )
    for at in range(0, len(result.events), SAVE_BATCH):
        yield (
            events,
            [
                {
                    "session_id": session_id,
                    "generation": generation,
                    "t": t,
                    "kind": k,
                    "data": json.dumps(d),
                }
                for t, k, d in result.events[at : at + SAVE_BATCH]
            ],
        )
