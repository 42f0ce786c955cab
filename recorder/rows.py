"""An index as database rows: the worker's output parsed, and made into rows, a batch at a
time on the event loop.

Not in a thread: a thread running Python holds the GIL against the event loop, and each of
the loop's system calls then waits up to a switch interval (5 ms) to get it back. With the
parse and the rows in threads, single callbacks of a busy web session took 100 ms and more
during a live index pass.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa

from recorder.indexer import IndexResult, add_entry, index_head
from recorder.tables import events, keyframes, text_lines

# Entries parsed, rows made and rows sent to the database at a time (an HTTP session's index
# has a row or two per request: hundreds of thousands); between batches the loop serves
# sessions.
SAVE_BATCH = 500


async def parsed(text: str) -> IndexResult:
    """``recorder.indexer.to_json``'s output read back, ``SAVE_BATCH`` entries at a time."""
    lines = text.rstrip("\n").split("\n")
    result = index_head(lines[0])
    for at in range(1, len(lines), SAVE_BATCH):
        for line in lines[at : at + SAVE_BATCH]:
            add_entry(result, line)
        await asyncio.sleep(0)
    return result


def index_rows(
    session_id: str, result: IndexResult, generation: int = 0
) -> Iterator[tuple[sa.Table, list[dict[str, Any]]]]:
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
