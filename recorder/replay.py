"""Replay: the screen at any moment, and terminal playback with idle skipping."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

from recorder.events import Kind, Record, iter_records_from
from recorder.http import display_line
from recorder.indexer import Feeder
from recorder.screen import Snapshot, TerminalModel

Keyframe = tuple[float, int, dict[str, Any]]  # time, file offset, screen


def _restore(keyframe: Keyframe) -> tuple[TerminalModel, Feeder]:
    snap = Snapshot.from_dict(keyframe[2])
    model = TerminalModel(snap.width, snap.height)
    model.restore(snap)
    return model, Feeder(model)


def frame_at(path: str, keyframe: Keyframe, t: float) -> dict[str, Any]:
    """The screen at ``t``: the keyframe's screen plus the records after it up to ``t``."""
    offset = keyframe[1]
    model, feeder = _restore(keyframe)
    reached = keyframe[0]
    for record in iter_records_from(path, offset):
        if record.t > t:
            break
        feeder.apply(record)
        reached = record.t
    feeder.flush()
    return {"t": reached, **model.snapshot().as_dict()}


def frames_between(
    path: str,
    keyframe: Keyframe,
    start: float,
    end: float,
    *,
    step: float = 0.1,
    limit: int = 300,
) -> list[dict[str, Any]]:
    """The screens shown between ``start`` and ``end``: the one at ``start``, then one each
    time the screen changed, at most one per ``step`` seconds and ``limit`` in all. Times
    with nothing on screen changing are absent, which is what idle skipping needs."""
    offset = keyframe[1]
    model, feeder = _restore(keyframe)
    frames: list[dict[str, Any]] = []
    last: Snapshot | None = None
    last_emit = start
    applied: float | None = None  # time of the last record applied at or after start

    def emit(t: float) -> None:
        nonlocal last, last_emit
        feeder.flush()
        current = model.snapshot()
        if current != last:
            frames.append({"t": t, **current.as_dict()})
            last = current
        last_emit = t

    for record in iter_records_from(path, offset):
        if record.t > end or len(frames) >= limit:
            break
        if record.t >= start:
            if last is None:
                emit(start)
            elif applied is not None and applied > last_emit and record.t - last_emit >= step:
                emit(applied)
            applied = record.t
        feeder.apply(record)
    if len(frames) < limit:
        emit(applied if applied is not None else start)
    return frames


def playback(
    records: Iterator[Record],
    write: Callable[[bytes], None],
    *,
    speed: float = 1.0,
    idle_limit: float = 2.0,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Write the output with its timing, ``speed`` times faster, pauses capped at
    ``idle_limit`` seconds; kill and warning markers are shown in place, and a web
    session's exchanges one line each."""
    last = 0.0
    for record in records:
        if record.kind not in (Kind.OUTPUT, Kind.MARKER, Kind.HTTP):
            continue
        gap = min(max(record.t - last, 0.0), idle_limit) / speed
        if gap > 0:
            sleep(gap)
        last = record.t
        if record.kind is Kind.OUTPUT:
            write(record.data)
        elif record.kind is Kind.HTTP:
            write(display_line(record.data))
        else:
            marker = json.loads(record.data)
            write(f"\r\n[lockgate {marker['kind']}] {marker['text']}\r\n".encode())
