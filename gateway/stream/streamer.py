"""The audit streamer: one loop per sink that reads committed audit events after the sink's
durable cursor, hands them to the sink, and moves the cursor once the sink confirms them.

A failing receiver is retried with backoff (up to ``MAX_BACKOFF``) and nothing is skipped:
after any error the loop starts again from the durable cursor, so events the receiver may
not have taken are sent again. A restarted gateway resumes from the cursor too."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence

from gateway.db import SessionMaker
from gateway.stream.cursor import LEASE, CursorStore
from gateway.stream.jsonl import JsonlFileSink
from gateway.stream.record import head_seq, load_records
from gateway.stream.settings import JsonlSink, SinkSettings
from gateway.stream.sink import Sink, SinkError
from gateway.stream.syslog import SyslogTcpSink

log = logging.getLogger("lockgate.stream")
POLL = 0.2  # seconds between looks at the audit log when idle
BATCH = 500
MAX_BACKOFF = 30.0
CLAIM_RETRY = 1.0  # seconds between tries at a sink another node streams


def build_sink(settings: SinkSettings) -> Sink:
    if isinstance(settings, JsonlSink):
        return JsonlFileSink(settings)
    return SyslogTcpSink(settings)


def cursor_name(sink: Sink) -> str:
    return f"audit:{sink.name}"


class AuditStreamer:
    def __init__(
        self,
        maker: SessionMaker,
        cursors: CursorStore,
        sinks: Sequence[Sink],
        *,
        poll: float = POLL,
        on_error: Callable[[str, str], None] | None = None,
    ) -> None:
        self.maker = maker
        self.cursors = cursors
        self.sinks = list(sinks)
        self.poll = poll
        self.on_error = on_error
        self._tasks: list[asyncio.Task[None]] = []
        self._backoff: dict[str, float] = {}

    def start(self) -> None:
        self._tasks = [asyncio.ensure_future(self._run(sink)) for sink in self.sinks]

    async def drain(self) -> None:
        """Return once every sink has confirmed the log's last event (at shutdown, under a
        timeout, so the node's own last events leave before it does)."""
        while True:
            head = await head_seq(self.maker)
            positions = [await self.cursors.position(cursor_name(s)) for s in self.sinks]
            if all(p is not None and p >= head for p in positions):
                return
            await asyncio.sleep(self.poll)

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for sink in self.sinks:
            await sink.close()
            with contextlib.suppress(Exception):
                await self.cursors.release(cursor_name(sink))

    async def _run(self, sink: Sink) -> None:
        self._backoff[sink.name] = 0.5
        while True:
            try:
                await self._stream(sink)
            except asyncio.CancelledError:
                raise
            except SinkError as exc:
                self._report(sink, str(exc))
            except Exception as exc:  # the database or a bug: log it, keep the stream alive
                log.exception("audit sink %s", sink.name)
                self._report(sink, type(exc).__name__)
            await sink.close()
            backoff = self._backoff[sink.name]
            await asyncio.sleep(backoff)
            self._backoff[sink.name] = min(backoff * 2, MAX_BACKOFF)

    def _report(self, sink: Sink, problem: str) -> None:
        log.warning("audit sink %s: %s; will resend from its cursor", sink.name, problem)
        if self.on_error is not None:
            self.on_error(sink.name, problem)

    async def _stream(self, sink: Sink) -> None:
        name = cursor_name(sink)
        position = await self.cursors.claim(name)
        while position is None:  # another node streams this sink; take over when it stops
            await asyncio.sleep(CLAIM_RETRY)
            position = await self.cursors.claim(name)
        durable = position
        await sink.open()
        self._backoff[sink.name] = 0.5
        renewed = time.monotonic()
        while True:
            records = await load_records(self.maker, position, BATCH)
            if records:
                await sink.send(records)
                position = records[-1].seq
            done = await sink.confirmed()
            if done > durable:
                if not await self.cursors.advance(name, done):
                    raise SinkError("another node took over this sink")
                durable = done
                renewed = time.monotonic()
            if time.monotonic() - renewed > LEASE.total_seconds() / 3:
                if await self.cursors.claim(name) is None:
                    raise SinkError("another node took over this sink")
                renewed = time.monotonic()
            if len(records) < BATCH:
                await asyncio.sleep(self.poll)
