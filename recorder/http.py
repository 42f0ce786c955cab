"""HTTP exchanges of web-target sessions: what is recorded, how queries are masked, and the
timeline read back from a recording.

Each finished request, each opened and each closed WebSocket is one ``Kind.HTTP`` record: the
exchange's fields as compact JSON and, only when the target asks for request bodies, ``"\\n"``
and the body bytes (JSON never holds a raw newline, so the split is unambiguous). A body is
never indexed, searched or exported.

Security decision: query values of sensitive parameters become ``***`` before anything is
recorded. The proxy masks with the target's own list (``mask_query``); the recorder masks the
well-known names again (``DEFAULT_SENSITIVE`` and names containing ``DEFAULT_STEMS``), so a
forgotten list cannot put an access token or an OAuth code on disk. Over-masking a harmless
``?key=`` costs an auditor a detail; under-masking would leak a credential.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import unquote_plus

from recorder.errors import InvalidQuery, NotFound, TamperedRecording
from recorder.events import Kind, decode_records, iter_chunks_at

EntryKind = Literal["request", "websocket", "websocket_open"]
OUTCOMES = ("ok", "blocked", "refused", "killed", "upstream_error", "client_gone")
MASK = "***"
MAX_BODY = 1 << 20  # a larger body is cut: a record must fit in a chunk
MAX_LIMIT = 1000
MAX_DISPLAY = 1000
# fmt: off
DEFAULT_SENSITIVE = frozenset((
    "access_key", "auth", "authorization", "client_secret", "code", "id_token", "jwt", "key",
    "pwd", "refresh_token", "session", "sessionid", "sid", "sig", "x-amz-credential",
))
# fmt: on
DEFAULT_STEMS = ("token", "secret", "password", "passwd", "signature", "apikey", "api_key")
_NAME_PARTS = re.compile(r"[\[\].]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_CURSOR = re.compile(r"(\d{1,15}):(\d{1,9})")
_METHOD = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,32}")
_FOREIGN_CURSOR = "the cursor does not belong to this recording"
_STATUS_CODE = re.compile(r"\d{1,3}")
_STATUS_CLASS = re.compile(r"([0-9])[xX]{2}")


@dataclass(slots=True)  # made per request; not frozen, which costs 4x to make
class HttpExchange:
    method: str
    target: str  # path plus "?query" as the proxy received it, masked with mask_query
    status: int  # 0 when no response was sent (cut, upstream error)
    bytes_up: int  # request body bytes client -> upstream
    bytes_down: int  # response body bytes upstream -> client
    duration: float  # seconds from request start to last byte
    reused: bool  # the upstream connection was reused from the pool
    outcome: str = "ok"  # ok | blocked | refused | killed | upstream_error | client_gone
    websocket: bool = False
    frames_up: int = 0
    frames_down: int = 0
    close_code: int | None = None
    body: bytes | None = None  # a recorded request body (only when the target asks), capped

    @property
    def path(self) -> str:
        return path_of(self.target)


@dataclass(frozen=True)
class TimelineEntry:
    t: float  # seconds into the session when it was recorded: the last byte, or the open
    start: float  # seconds into the session when the request started (t - duration)
    kind: EntryKind
    exchange: HttpExchange
    cursor: str  # pass as ``cursor=`` to continue after this entry

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready; the body only as its size (serving it is the caller's decision)."""
        ex = self.exchange
        out: dict[str, Any] = {
            "t": self.t,
            "start": self.start,
            "kind": self.kind,
            "method": ex.method,
            "target": ex.target,
            "path": ex.path,
            "status": ex.status,
            "bytes_up": ex.bytes_up,
            "bytes_down": ex.bytes_down,
            "duration": ex.duration,
            "reused": ex.reused,
            "outcome": ex.outcome,
        }
        if ex.websocket:
            out.update(frames_up=ex.frames_up, frames_down=ex.frames_down)
            out["close_code"] = ex.close_code
        if ex.body is not None:
            out["body_size"] = len(ex.body)
        return out


# --- masking -------------------------------------------------------------------------
def path_of(target: str) -> str:
    """The path of a request target: without its query and fragment."""
    return target.split("#", 1)[0].split("?", 1)[0]


def mask_query(target: str, sensitive: Iterable[str]) -> str:
    """``target`` with the value of every parameter named in ``sensitive`` replaced by
    ``***``; names compare case-insensitively after percent-decoding, also as a part of a
    bracketed or dotted name (``user[password]``). Order and everything else are kept; never
    raises. Both ``&`` and ``;`` separate parameters, and a masked value runs to the next
    ``&``: a server that splits only on ``&`` must not see a secret's tail left in clear."""
    if "?" not in target and "#" not in target:
        return target
    names = frozenset(n for n in (raw.strip().lower() for raw in sensitive) if n)
    return _mask(target, names, ()) if names else target


def _mask(target: str, names: frozenset[str], stems: tuple[str, ...]) -> str:
    head, hash_, fragment = target.partition("#")
    path, question, query = head.partition("?")
    out = path + question + _mask_params(query, names, stems) if question else head
    if not hash_:
        return out
    # A fragment may hold a route with its own query (``#/login?token=...``).
    route, question, query = fragment.rpartition("?")
    return out + hash_ + route + question + _mask_params(query, names, stems)


def _mask_params(query: str, names: frozenset[str], stems: tuple[str, ...]) -> str:
    segments = query.split("&")
    for i, segment in enumerate(segments):
        pos = 0
        for piece in segment.split(";"):
            eq = piece.find("=")
            if eq > 0 and _is_sensitive(piece[:eq], names, stems):
                segments[i] = segment[: pos + eq + 1] + MASK
                break
            pos += len(piece) + 1
    return "&".join(segments)


def _is_sensitive(raw: str, names: frozenset[str], stems: tuple[str, ...]) -> bool:
    name = unquote_plus(raw, errors="replace").strip().lower()
    if name in names or any(stem in name for stem in stems):
        return True
    return any(part in names for part in _NAME_PARTS.split(name) if part)


# --- the record ------------------------------------------------------------------------
_COMPACT = json.JSONEncoder(separators=(",", ":"))  # json.dumps would make one per record


def encode_exchange(ex: HttpExchange) -> bytes:
    """The record data of a finished request or closed WebSocket (defaults masked again)."""
    fields: dict[str, Any] = {
        "event": "websocket" if ex.websocket else "request",
        "method": ex.method,
        "target": _mask(ex.target, DEFAULT_SENSITIVE, DEFAULT_STEMS),
        "status": ex.status,
        "bytes_up": ex.bytes_up,
        "bytes_down": ex.bytes_down,
        "duration": round(ex.duration, 6),
        "reused": ex.reused,
        "outcome": ex.outcome,
    }
    if ex.websocket:
        fields.update(frames_up=ex.frames_up, frames_down=ex.frames_down)
        fields["close_code"] = ex.close_code
    body = ex.body
    if body is not None:
        if len(body) > MAX_BODY:
            body, fields["body_cut"] = body[:MAX_BODY], True
        fields["body"] = len(body)
    data = _COMPACT.encode(fields).encode()
    return data if body is None else b"".join((data, b"\n", body))


def encode_websocket_open(target: str) -> bytes:
    fields = {
        "event": "websocket_open",
        "method": "GET",
        "target": _mask(target, DEFAULT_SENSITIVE, DEFAULT_STEMS),
        "status": 101,
    }
    return json.dumps(fields, separators=(",", ":")).encode()


def header_of(data: bytes) -> dict[str, Any] | None:
    """The JSON fields of an HTTP record (never the body), or None if it is malformed."""
    try:
        fields = json.loads(data.partition(b"\n")[0])
    except (ValueError, RecursionError):
        return None
    return fields if isinstance(fields, dict) else None


def decode_exchange(data: bytes) -> tuple[EntryKind, HttpExchange] | None:
    """An HTTP record read back; None for a malformed one (readers skip it, never crash)."""
    fields = header_of(data)
    return None if fields is None else exchange_from(fields, data)


def exchange_from(fields: dict[str, Any], data: bytes) -> tuple[EntryKind, HttpExchange] | None:
    """The exchange of a record whose ``header_of`` is ``fields`` (None if malformed)."""
    kind = fields.get("event")
    body = data.partition(b"\n")[2] if "body" in fields else None
    try:
        close = fields.get("close_code")
        ex = HttpExchange(
            _typed(fields, "method", str, ""),
            _typed(fields, "target", str, ""),
            _typed(fields, "status", int, 0),
            _typed(fields, "bytes_up", int, 0),
            _typed(fields, "bytes_down", int, 0),
            float(_typed(fields, "duration", (int, float), 0.0)),
            _typed(fields, "reused", bool, False),
            _typed(fields, "outcome", str, "ok"),
            kind != "request",
            _typed(fields, "frames_up", int, 0),
            _typed(fields, "frames_down", int, 0),
            close if isinstance(close, int) and not isinstance(close, bool) else None,
            body,
        )
    except TypeError:
        return None
    return (kind, ex) if kind in ("request", "websocket", "websocket_open") else None


def _typed(fields: dict[str, Any], key: str, kind: Any, default: Any) -> Any:
    value = fields.get(key, default)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise TypeError(key)
    return value


# --- showing it ------------------------------------------------------------------------
def _printable(text: str) -> str:
    """No control character or escape sequence from a request target reaches a terminal."""
    return _CONTROL.sub("?", text).encode("utf-8", "replace").decode("utf-8")


def _size(n: int) -> str:
    return (
        f"{n} B" if n < 1024 else f"{n / 1024:.1f} KiB" if n < 1 << 20 else f"{n / 2**20:.1f} MiB"
    )


def _time(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.1f} s"


def search_line(ex: HttpExchange) -> str:
    """What search finds: ``"METHOD target"`` (masked query included)."""
    return _printable(f"{ex.method} {ex.target}")


def describe(kind: EntryKind, ex: HttpExchange) -> str:
    """One line for a terminal or an asciicast: what happened, never the body."""
    what = search_line(ex)
    note = "" if ex.outcome == "ok" else f" [{_printable(ex.outcome)}]"
    if kind == "websocket_open":
        text = f"WS {what} opened"
    elif kind == "websocket":
        text = (
            f"WS {what} closed {ex.close_code if ex.close_code is not None else '-'}{note}"
            f" (frames up {ex.frames_up}, down {ex.frames_down}, {_time(ex.duration)})"
        )
    else:
        text = (
            f"{what} -> {ex.status or 'no response'}{note} ({_time(ex.duration)},"
            f" up {_size(ex.bytes_up)}, down {_size(ex.bytes_down)}"
            f"{', reused' if ex.reused else ''})"
        )
    return text[:MAX_DISPLAY]


def display_line(data: bytes) -> bytes:
    """An HTTP record as terminal output (``b""`` for a malformed one)."""
    decoded = decode_exchange(data)
    return b"" if decoded is None else (describe(*decoded) + "\r\n").encode()


# --- the timeline ----------------------------------------------------------------------
def timeline(
    path: str | os.PathLike[str],
    *,
    method: str | None = None,
    status: int | str | None = None,
    path_glob: str | None = None,
    outcome: str | None = None,
    limit: int = 100,
    cursor: str | None = None,
) -> list[TimelineEntry]:
    """The exchanges of a recording in the order they were recorded, for the replay viewer.

    Filters: ``method`` (case-insensitive), ``status`` (``404``, ``"404"`` or a class such
    as ``"4xx"``; ``0`` is "no response"), ``path_glob`` (``fnmatch``, case-sensitive, over
    the path without query; ``*`` crosses ``/``), ``outcome``. At most ``limit`` entries
    (1-1000); the next page starts at the last entry's ``cursor``. Reads the file (blocking:
    call it in a thread), up to the last complete chunk of a recording still being written;
    raises InvalidQuery, NotFound, or TamperedRecording for a damaged file."""
    keep = _filter(method, status, path_glob, outcome)
    if not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise InvalidQuery(f"limit must be 1-{MAX_LIMIT}")
    start, skip = _parse_cursor(cursor)
    entries: list[TimelineEntry] = []
    try:
        for offset, payload in iter_chunks_at(os.fspath(path), start):
            if skip and offset != start:
                raise InvalidQuery(_FOREIGN_CURSOR)
            for index, record in enumerate(decode_records(payload)):
                if index < skip or record.kind is not Kind.HTTP:
                    continue
                decoded = decode_exchange(record.data)
                if decoded is None or not keep(*decoded):
                    continue
                kind, ex = decoded
                start_t = max(0.0, record.t - ex.duration)
                entries.append(TimelineEntry(record.t, start_t, kind, ex, f"{offset}:{index + 1}"))
                if len(entries) == limit:
                    return entries
            skip = 0  # past the cursor's chunk, the others are read whole
        if skip:  # no chunk starts where the cursor points
            raise InvalidQuery(_FOREIGN_CURSOR)
    except FileNotFoundError:
        raise NotFound("the recording file is missing") from None
    except ValueError as exc:
        raise TamperedRecording(f"the recording is damaged: {exc}") from None
    return entries


def _parse_cursor(cursor: str | None) -> tuple[int, int]:
    if cursor is None:
        return 0, 0
    m = _CURSOR.fullmatch(cursor) if isinstance(cursor, str) else None
    if m is None or int(m.group(2)) < 1:
        raise InvalidQuery("the cursor is not one this timeline returned")
    return int(m.group(1)), int(m.group(2))


def _filter(
    method: str | None, status: int | str | None, path_glob: str | None, outcome: str | None
) -> Callable[[EntryKind, HttpExchange], bool]:
    if method is not None and not (isinstance(method, str) and _METHOD.fullmatch(method)):
        raise InvalidQuery("method must be an HTTP method name")
    wanted = method.upper() if method is not None else None
    if outcome is not None and outcome not in OUTCOMES:
        raise InvalidQuery(f"outcome must be one of {', '.join(OUTCOMES)}")
    if path_glob is not None and (not isinstance(path_glob, str) or not path_glob):
        raise InvalidQuery("path_glob must be a non-empty pattern")
    low, high = _status_range(status)

    def keep(kind: EntryKind, ex: HttpExchange) -> bool:
        return (
            (wanted is None or ex.method.upper() == wanted)
            and low <= ex.status <= high
            and (outcome is None or ex.outcome == outcome)
            and (path_glob is None or fnmatch.fnmatchcase(ex.path, path_glob))
        )

    return keep


def _status_range(status: int | str | None) -> tuple[int, int]:
    if status is None:
        return 0, 999
    if isinstance(status, int) and not isinstance(status, bool) and 0 <= status <= 999:
        return status, status
    text = status if isinstance(status, str) else ""
    if _STATUS_CODE.fullmatch(text):
        return int(text), int(text)
    m = _STATUS_CLASS.fullmatch(text)
    if m is None:
        raise InvalidQuery("status must be a code such as 404 or a class such as 4xx")
    first = int(m.group(1)) * 100
    return first, first + 99
