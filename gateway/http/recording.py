"""What a web session writes to its recording, one record per exchange.

Each finished request and each WebSocket (opened, then closed with its frame counts) is one
``recorder.http.HttpExchange``: time, method, path and query with the values of the target's
sensitive parameters masked (``recorder.http.mask_query``; the recorder masks the well-known
names again), status, bytes each way, duration, upstream connection reuse and the outcome.
No header and no body is recorded, except the first ``record_bodies`` bytes (at most
``MAX_BODY``) of non-GET request bodies when the target asks for them.
"""

from __future__ import annotations

from collections.abc import Sequence

from gateway.http.relay import Exchange
from recorder.http import MAX_BODY, HttpExchange, mask_query
from recorder.writer import SessionRecording

__all__ = ["MAX_BODY", "record_exchange", "record_websocket_open", "request_target"]


def request_target(exchange: Exchange, sensitive: Sequence[str]) -> str:
    """Path and query as recorded, the target's sensitive values masked."""
    if not exchange.query:
        return exchange.path
    return mask_query(f"{exchange.path}?{exchange.query}", sensitive)


def record_exchange(
    recording: SessionRecording,
    exchange: Exchange,
    outcome: str,
    sensitive: Sequence[str],
    body: bytes | None = None,
) -> None:
    """One finished request or closed WebSocket."""
    recording.http_exchange(
        HttpExchange(
            method=exchange.method,
            target=request_target(exchange, sensitive),
            status=exchange.status,
            bytes_up=exchange.bytes_up,
            bytes_down=exchange.bytes_down,
            duration=exchange.duration,
            reused=bool(exchange.reused),
            outcome=outcome,
            websocket=exchange.websocket,
            frames_up=exchange.frames_up,
            frames_down=exchange.frames_down,
            close_code=exchange.close_code,
            body=body,
        )
    )


def record_websocket_open(
    recording: SessionRecording, exchange: Exchange, sensitive: Sequence[str]
) -> None:
    recording.websocket_opened(request_target(exchange, sensitive))
