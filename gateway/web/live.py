"""The live view: an auditor watches a running session's screen over a WebSocket.

The screen starts from the recording so far (when it is small enough to replay quickly),
then follows the session's output as the recorder sees it. pyte runs in a worker thread, at
most four times a second, on at most the last 16 KB of a burst, so a busy session being
watched does not slow the event loop down (the screen after a burst is its last screenful).
Only auditors and admins may watch; a browser's WebSocket must come from a Lockgate page.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from aiohttp import WSMsgType, web

from gateway.web.auth import same_origin
from gateway.web.problems import Problem
from gateway.web.routes import AUDITOR, TABLE, Call
from policy.errors import InvalidTransition
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


@TABLE.add(
    "GET",
    "/sessions/{id}/live",
    "Watch a live session (WebSocket of JSON screen frames); 400 without the WebSocket "
    "upgrade, 409 once it has ended or when another node holds it",
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
    handle = call.deps.registry.get(record.id)
    recording = getattr(handle, "recording", None)
    if not isinstance(recording, SessionRecording):
        raise Problem(
            409, "conflict", f"session {record.id} is held by node {record.node}; watch it there"
        )
    ws = web.WebSocketResponse(heartbeat=30)
    await ws.prepare(request)
    await call.deps.services.audit.record(
        actor=call.actor, action="session.watch", subject=record.id, details={}
    )
    screen = LiveScreen(recording.width, recording.height)
    stop_watching = recording.watch(screen.feed)
    try:
        # Everything before this instant goes to disk; everything after reaches the watcher.
        recording.flush()
        until = recording.elapsed()
        await recording.synced()
        await _replay_so_far(screen, recording, until)
        await _stream(ws, screen, recording, call, record.id)
    finally:
        stop_watching()
        with contextlib.suppress(Exception):
            await ws.close()
    return ws


async def _replay_so_far(screen: LiveScreen, recording: SessionRecording, t: float) -> None:
    path = recording.path
    if path.stat().st_size > REPLAY_LIMIT:
        return
    blank = Snapshot(screen.size[0], screen.size[1], (), (0, 0)).as_dict()
    frame = await asyncio.to_thread(frame_at, str(path), (0.0, 0, blank), t)
    screen.model.restore(Snapshot.from_dict(frame))
    screen.size = (screen.model.screen.columns, screen.model.screen.lines)


async def _stream(
    ws: web.WebSocketResponse, screen: LiveScreen, recording: SessionRecording, call: Call, sid: str
) -> None:
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
            ended = call.deps.registry.get(sid) is None
            data = screen.take()
            if data or last is None or ended:
                size = (recording.width, recording.height)
                frame = await asyncio.to_thread(screen.render, data, size)
                if frame != last:
                    await ws.send_json({"t": round(recording.elapsed(), 3), **frame})
                    last = frame
            if ended:
                await ws.send_json({"ended": True})
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(closed.wait(), TICK)
    except ConnectionResetError:
        return
    finally:
        reader.cancel()
