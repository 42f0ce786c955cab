"""The live view: an auditor watches a running session's screen over a WebSocket.

The screen starts from the recording so far (when it is small enough to replay quickly),
then follows the session's output as the recorder sees it. A session another node holds is
followed in its recording file instead, which the nodes share: its frames lag the output by
up to the recorder's one-second flush. pyte runs in a worker thread, at most four times a
second, on at most the last 16 KB of a burst, so a busy session being watched does not slow
the event loop down (the screen after a burst is its last screenful).
Only auditors and admins may watch; a browser's WebSocket must come from a Lockgate page.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

from gateway.sessions.registry import SessionRegistry
from gateway.web.auth import same_origin
from gateway.web.problems import Problem
from gateway.web.routes import AUDITOR, TABLE, Call
from policy.errors import InvalidTransition
from recorder.errors import NotFound
from recorder.events import records_after
from recorder.indexer import Feeder
from recorder.replay import frame_at
from recorder.screen import Snapshot, TerminalModel
from recorder.writer import SessionRecording

TICK = 0.25
TAIL = 16 * 1024
REPLAY_LIMIT = 32 * 1024 * 1024  # larger recordings start from a blank screen


class LiveScreen:
    """Output bytes in (on the loop), screen frames out (in a thread)."""

    def __init__(self, width: int, height: int) -> None:
        self.model = TerminalModel(width, height)
        self.pending = bytearray()
        self.size = (width, height)

    def feed(self, data: bytes) -> None:
        self.pending += data
        if len(self.pending) > 4 * TAIL:
            tail = self.pending[-TAIL:]
            cut = tail.find(b"\n")
            self.pending = bytearray(tail[cut + 1 :] if cut >= 0 else tail)

    def take(self) -> bytes:
        data = bytes(self.pending)
        self.pending.clear()
        return data

    def render(self, data: bytes, size: tuple[int, int]) -> dict[str, Any]:
        if size != self.size:
            self.model.resize(*size)
            self.size = size
        if data:
            self.model.feed(data)
        return self.model.snapshot().as_dict()


class _Local:
    """The session runs on this node: frames from the recorder's output as it goes by."""

    def __init__(self, recording: SessionRecording, registry: SessionRegistry, sid: str) -> None:
        self.recording, self.registry, self.sid = recording, registry, sid
        self.screen = LiveScreen(recording.width, recording.height)
        self.fresh = True

    async def start(self) -> Callable[[], None]:
        stop_watching = self.recording.watch(self.screen.feed)
        # Everything before this instant goes to disk; everything after reaches the watcher.
        self.recording.flush()
        until = self.recording.elapsed()
        await self.recording.synced()
        await _replay_so_far(self.screen, self.recording, until)
        return stop_watching

    async def ended(self) -> bool:
        return self.registry.get(self.sid) is None

    async def frame(self, final: bool) -> tuple[float, dict[str, Any]] | None:
        data = self.screen.take()
        if not (data or self.fresh or final):
            return None
        self.fresh = False
        size = (self.recording.width, self.recording.height)
        return self.recording.elapsed(), await asyncio.to_thread(self.screen.render, data, size)


class _Followed:
    """Another node holds the session: its recording, on the storage the nodes share, is
    followed chunk by chunk (a chunk reaches the disk within a second of its output)."""

    def __init__(self, path: Path, width: int, height: int, call: Call, sid: str) -> None:
        self.path, self.call, self.sid = str(path), call, sid
        self.model = TerminalModel(width, height)
        self.feeder = Feeder(self.model)
        self.offset = 0
        self.reached = 0.0
        self.checked = 0.0
        self.fresh = True

    async def start(self) -> Callable[[], None]:
        if os.stat(self.path).st_size > REPLAY_LIMIT:
            _, self.offset = await asyncio.to_thread(records_after, self.path, 0, decode=False)
        return lambda: None

    async def ended(self) -> bool:
        now = time.monotonic()
        if now - self.checked < 1.0:
            return False
        self.checked = now
        return not (await self.call.deps.sessions.get(self.call.actor, self.sid)).active

    def _step(self) -> dict[str, Any] | None:
        records, self.offset = records_after(self.path, self.offset)
        for record in records:
            self.feeder.apply(record)
            self.reached = record.t
        self.feeder.flush()
        if not (records or self.fresh):
            return None
        self.fresh = False
        return self.model.snapshot().as_dict()

    async def frame(self, final: bool) -> tuple[float, dict[str, Any]] | None:
        frame = await asyncio.to_thread(self._step)
        return None if frame is None else (self.reached, frame)


@TABLE.add(
    "GET",
    "/sessions/{id}/live",
    "Watch a live session (WebSocket of JSON screen frames), on whichever node holds it; "
    "400 without the WebSocket upgrade, 409 once it has ended",
    access=AUDITOR,
    tag="sessions",
    status=101,
    media=(),
    errors=(400, 409),
)
async def live_session(call: Call) -> Any:
    request = call.request
    assert call.who is not None
    if (call.who.via == "cookie" or "Origin" in request.headers) and not same_origin(request):
        raise Problem(403, "csrf", "the live view must be opened from a Lockgate page")
    record = await call.deps.sessions.get(call.actor, call.arg("id"))
    if not record.active:
        raise InvalidTransition(f"session {record.id} has ended; replay its recording instead")
    recording = getattr(call.deps.registry.get(record.id), "recording", None)
    source: _Local | _Followed
    if isinstance(recording, SessionRecording):
        source = _Local(recording, call.deps.registry, record.id)
    else:
        source = await _followed(call, record.id, record.node)
    ws = web.WebSocketResponse(heartbeat=30)
    await ws.prepare(request)
    await call.deps.services.audit.record(
        actor=call.actor, action="session.watch", subject=record.id, details={}
    )
    stop_watching = await source.start()
    try:
        await _stream(ws, source)
    finally:
        stop_watching()
        with contextlib.suppress(Exception):
            await ws.close()
    return ws


async def _followed(call: Call, sid: str, node: str) -> _Followed:
    try:
        info = await call.deps.recordings.get(sid)
    except NotFound:
        info = None
    if info is None or not info.path.is_file():
        raise Problem(
            409,
            "conflict",
            f"session {sid} is held by node {node}, whose recording this node cannot read; "
            "watch it there, or give the nodes one recordings directory",
        )
    return _Followed(info.path, info.width, info.height, call, sid)


async def _replay_so_far(screen: LiveScreen, recording: SessionRecording, t: float) -> None:
    path = recording.path
    if path.stat().st_size > REPLAY_LIMIT:
        return
    blank = Snapshot(screen.size[0], screen.size[1], (), (0, 0)).as_dict()
    frame = await asyncio.to_thread(frame_at, str(path), (0.0, 0, blank), t)
    screen.model.restore(Snapshot.from_dict(frame))
    screen.size = (screen.model.screen.columns, screen.model.screen.lines)


async def _stream(ws: web.WebSocketResponse, source: _Local | _Followed) -> None:
    closed = asyncio.Event()

    async def drain() -> None:
        async for msg in ws:
            if msg.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
                break
        closed.set()

    reader = asyncio.ensure_future(drain())
    last: dict[str, Any] | None = None
    try:
        while not closed.is_set():
            ended = await source.ended()
            step = await source.frame(final=ended)
            if step is not None and step[1] != last:
                await ws.send_json({"t": round(step[0], 3), **step[1]})
                last = step[1]
            if ended:
                await ws.send_json({"ended": True})
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(closed.wait(), TICK)
    except ConnectionResetError:
        return
    finally:
        reader.cancel()
