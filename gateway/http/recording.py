"""What a web session writes to its recording, one record per exchange.

Each finished request and each WebSocket (opened, then closed with its frame counts) is one
``recorder.http.HttpExchange``: time, method, path and query with the values of the target's
sensitive parameters masked (``recorder.http.mask_query``; the recorder masks the well-known
names again), status, bytes each way, duration, upstream connection reuse and the outcome.
No header and no body is recorded, except request bodies of non-GET requests up to
``MAX_BODY`` when the target asks for them (``record_bodies``).

Until the recorder's HTTP records are on this branch, a recording without
``http_exchange`` gets the older ``http_request`` record (method, path without its query,
status, size): the query is then left out rather than recorded unmasked.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from types import ModuleType
from typing import Any

from gateway.http.relay import Exchange

MAX_BODY = 64 * 1024
OUTCOMES = ("ok", "blocked", "refused", "killed", "upstream_error", "client_gone")


def _recorder_http() -> ModuleType | None:
    try:
        return importlib.import_module("recorder.http")
    except ImportError:
        return None


_HTTP = _recorder_http()


def request_target(exchange: Exchange, sensitive: Sequence[str]) -> str:
    """Path and query as recorded: sensitive values masked (the query dropped without the
    recorder's masking)."""
    if not exchange.query:
        return exchange.path
    if _HTTP is None:
        return exchange.path
    masked: str = _HTTP.mask_query(f"{exchange.path}?{exchange.query}", sensitive)
    return masked


def record_exchange(
    recording: Any,
    exchange: Exchange,
    outcome: str,
    sensitive: Sequence[str],
    body: bytes | None = None,
) -> None:
    """One finished request or closed WebSocket."""
    if _HTTP is None or not hasattr(recording, "http_exchange"):
        recording.http_request(exchange.method, exchange.path, exchange.status, exchange.bytes_down)
        return
    recording.http_exchange(
        _HTTP.HttpExchange(
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


def record_websocket_open(recording: Any, exchange: Exchange, sensitive: Sequence[str]) -> None:
    if _HTTP is None or not hasattr(recording, "websocket_opened"):
        recording.marker("websocket", f"opened {exchange.path}")
        return
    recording.websocket_opened(request_target(exchange, sensitive))
