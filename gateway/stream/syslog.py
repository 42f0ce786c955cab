"""The syslog sink: RFC 5424 messages over TCP (optionally TLS, RFC 5425), framed by octet
counting (RFC 6587), which rsyslog, syslog-ng and the common SIEM collectors read.

Plain syslog over TCP has no acknowledgement. An event counts as delivered once it has been
written and the connection then stayed open for ``settle`` seconds with no sign that the
receiver closed it; a receiver that stops makes its side close, the sink notices on its next
call, and the streamer resends everything not yet confirmed. That is at least once: a
receiver can see an event twice across an outage (its ``seq`` tells duplicates apart), never
zero times.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import time
from collections import deque
from collections.abc import Sequence

from gateway.stream.record import StreamRecord
from gateway.stream.settings import SyslogSink
from gateway.stream.sink import SinkError

SD_ID = "lockgate@32473"  # 32473: the enterprise number RFC 5612 sets aside for examples
SEVERITY_NOTICE, SEVERITY_WARNING = 5, 4
CONNECT_TIMEOUT = 10.0


def _sd_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def _header_token(value: str, limit: int) -> str:
    cleaned = "".join(c for c in value if "!" <= c <= "~")[:limit]
    return cleaned or "-"


def format_message(record: StreamRecord, settings: SyslogSink) -> bytes:
    """One RFC 5424 message: the structured fields and chain hashes as structured data under
    ``lockgate@32473``, and the whole event as JSON in MSG. An event longer than
    ``max_message`` goes without its details (``truncated="details"``: the receiver would
    otherwise cut it anywhere); its fields and hashes are always there."""
    message = _message(record, settings, record.as_json())
    if len(message) <= settings.max_message:
        return message
    short = {**record.as_json(), "details": {}, "truncated": "details"}
    return _message(record, settings, short, truncated=True)


def _message(
    record: StreamRecord, settings: SyslogSink, event: dict[str, object], truncated: bool = False
) -> bytes:
    severity = SEVERITY_WARNING if record.outcome == "failure" else SEVERITY_NOTICE
    stamp = record.at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    params = {
        "seq": str(record.seq),
        "actor": record.actor,
        "action": record.action,
        "subject": record.subject,
        "target": record.target,
        "session": record.session,
        "grant": record.grant,
        "src": record.source,
        "outcome": record.outcome,
        "hash": record.hash,
        "prev": record.prev_hash,
        "truncated": "details" if truncated else "",
    }
    sd = " ".join(f'{k}="{_sd_value(v)}"' for k, v in params.items() if v)
    body = json.dumps(event, separators=(",", ":"), ensure_ascii=False)
    header = (
        f"<{settings.facility * 8 + severity}>1 {stamp} {_header_token(record.node, 255)} "
        f"{settings.app_name} - {_header_token(record.action, 32)} [{SD_ID} {sd}] "
    )
    return header.encode() + b"\xef\xbb\xbf" + body.encode()


def frame(message: bytes) -> bytes:
    return str(len(message)).encode() + b" " + message


class SyslogTcpSink:
    def __init__(self, settings: SyslogSink, *, settle: float = 1.0) -> None:
        self.settings = settings
        self.name = settings.name
        self.settle = settle
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._unconfirmed: deque[tuple[float, int]] = deque()
        self._confirmed = 0

    def _tls(self) -> ssl.SSLContext | None:
        if not self.settings.tls:
            return None
        ca = str(self.settings.tls_ca) if self.settings.tls_ca else None
        return ssl.create_default_context(cafile=ca)

    async def open(self) -> None:
        where = f"{self.settings.host}:{self.settings.port}"
        try:
            context = self._tls()
            self._reader, self._writer = await asyncio.wait_for(
                asyncio.open_connection(
                    self.settings.host,
                    self.settings.port,
                    ssl=context,
                    server_hostname=self.settings.host if context else None,
                ),
                CONNECT_TIMEOUT,
            )
        except (OSError, ssl.SSLError, TimeoutError) as exc:
            reason = getattr(exc, "strerror", None) or type(exc).__name__
            raise SinkError(f"cannot reach syslog receiver {where} ({reason})") from None
        self._unconfirmed.clear()
        self._confirmed = 0

    def _check_open(self) -> asyncio.StreamWriter:
        if self._writer is None or self._reader is None:
            raise SinkError("not connected")
        # A receiver never sends on a syslog connection: data or end-of-stream from it
        # means it closed (or reset) its side.
        if self._reader.at_eof() or self._writer.is_closing():
            raise SinkError("the syslog receiver closed the connection")
        return self._writer

    async def send(self, records: Sequence[StreamRecord]) -> None:
        writer = self._check_open()
        writer.write(b"".join(frame(format_message(r, self.settings)) for r in records))
        try:
            await writer.drain()
        except (OSError, ssl.SSLError) as exc:
            raise SinkError(
                f"the syslog receiver dropped the connection ({type(exc).__name__})"
            ) from None
        if records:
            self._unconfirmed.append((time.monotonic(), records[-1].seq))

    async def confirmed(self) -> int:
        await asyncio.sleep(0)  # let the transport deliver a pending close first
        self._check_open()
        now = time.monotonic()
        while self._unconfirmed and now - self._unconfirmed[0][0] >= self.settle:
            self._confirmed = self._unconfirmed.popleft()[1]
        return self._confirmed

    @property
    def pending(self) -> bool:
        return bool(self._unconfirmed)

    async def close(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 2.0)
