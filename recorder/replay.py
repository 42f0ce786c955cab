"""Replay: the screen at any moment, and terminal playback with idle skipping."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

from recorder.events import Kind, Record, iter_records_from
from recorder.indexer import Feeder
from recorder.screen import Snapshot, TerminalModel


def frame_at(path: str, keyframe: tuple[float, int, dict[str, Any]], t: float) -> dict[str, Any]:
    """The screen at ``t``: the keyframe's screen plus the records after it up to ``t``."""
    _, offset, screen = keyframe
    snap = Snapshot.from_dict(screen)
    model = TerminalModel(snap.width, snap.height)
    model.restore(snap)
    feeder = Feeder(model)
    reached = keyframe[0]
    for record in iter_records_from(path, offset):
        if record.t > t:
            break
        feeder.apply(record)
        reached = record.t
    feeder.flush()
    return {"t": reached, **model.snapshot().as_dict()}


def playback(
    records: Iterator[Record],
    write: Callable[[bytes], None],
    *,
    speed: float = 1.0,
    idle_limit: float = 2.0,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Write the output with its timing, ``speed`` times faster, pauses capped at
    ``idle_limit`` seconds; kill and warning markers are shown in place."""
    last = 0.0
    for record in records:
        if record.kind not in (Kind.OUTPUT, Kind.MARKER):
            continue
        gap = min(max(record.t - last, 0.0), idle_limit) / speed
        if gap > 0:
            sleep(gap)
        last = record.t
        if record.kind is Kind.OUTPUT:
            write(record.data)
        else:
            marker = json.loads(record.data)
            write(f"\r\n[lockgate {marker['kind']}] {marker['text']}\r\n".encode())
