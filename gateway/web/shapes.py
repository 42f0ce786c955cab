"""What the API answers: JSON schemas derived from the Python types the handlers return, as
``gateway.render.to_jsonable`` turns them into JSON (times as ISO 8601 text, durations as
``1h30m``, sets as sorted arrays, enums as their values).

A dataclass or TypedDict becomes a named schema in ``components/schemas``; every field is
required and no other field appears, so a response that grows a field the document does
not list fails the schemathesis run.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal, TypedDict, Union, get_args, get_origin

Schema = dict[str, Any]
REF = "#/components/schemas/"


class Registry:
    """Named schemas collected while the document is built."""

    def __init__(self) -> None:
        self.schemas: dict[str, Schema] = {}

    def of(self, tp: Any) -> Schema:
        """The schema of values of type ``tp`` (a ``$ref`` for named types)."""
        if isinstance(tp, dict):
            return tp
        if tp is Any or tp is object:
            return {}
        if tp is type(None):
            return {"type": "null"}
        if tp is bool:
            return {"type": "boolean"}
        if tp is int:
            return {"type": "integer"}
        if tp is float:
            return {"type": "number"}
        if tp is str or tp is Path:
            return {"type": "string"}
        if tp is datetime:
            return {"type": "string", "format": "date-time"}
        if tp is timedelta:
            return {"type": "string", "pattern": "^(?:[0-9]+[dhms])+$"}  # 1h30m, not ISO 8601
        if isinstance(tp, type) and issubclass(tp, enum.Enum):
            return {"type": "string", "enum": [m.value for m in tp]}
        origin = get_origin(tp)
        if origin is Literal:
            return {"enum": list(get_args(tp))}
        if origin in (Union, types.UnionType):
            options = [self.of(a) for a in get_args(tp)]
            return options[0] if len(options) == 1 else {"anyOf": options}
        if origin is typing.Annotated:
            return self.of(get_args(tp)[0])
        if origin is tuple and get_args(tp)[1:] != (Ellipsis,) and get_args(tp):
            return {
                "type": "array",
                "prefixItems": [self.of(a) for a in get_args(tp)],
                "minItems": len(get_args(tp)),
                "maxItems": len(get_args(tp)),
            }
        if origin in (list, tuple, frozenset, set, Sequence) or tp in (list, tuple):
            args = get_args(tp)
            return {"type": "array", "items": self.of(args[0]) if args else {}}
        if origin in (dict, Mapping) or tp in (dict, Mapping):
            args = get_args(tp)
            return {"type": "object", "additionalProperties": self.of(args[1]) if args else {}}
        if dataclasses.is_dataclass(tp) or _is_typed_dict(tp):
            return self._named(tp)
        raise TypeError(f"no JSON schema for {tp!r}")

    def _named(self, tp: Any) -> Schema:
        name = tp.__name__
        if name not in self.schemas:
            self.schemas[name] = {}  # a placeholder while recursing
            hints = typing.get_type_hints(tp)
            if dataclasses.is_dataclass(tp):
                fields = [f.name for f in dataclasses.fields(tp)]
                required = fields
            else:
                fields = list(hints)
                required = [f for f in fields if f in tp.__required_keys__]
            props = {f: self.of(hints[f]) for f in fields}
            schema: Schema = {
                "type": "object",
                "properties": props,
                "required": required,
                "additionalProperties": False,
            }
            doc = (tp.__doc__ or "").strip()
            if doc and not doc.startswith(f"{name}("):
                schema["description"] = doc.splitlines()[0]
            self.schemas[name] = schema
        return {"$ref": REF + name}


def _is_typed_dict(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, dict) and hasattr(tp, "__required_keys__")


def page_of(item: Any) -> Any:
    """The type of one page of ``item``s (``{"items": [...], "next": cursor or null}``)."""
    return _PAGES.setdefault(item, _page_type(item))


_PAGES: dict[Any, Any] = {}


def _page_type(item: Any) -> Any:
    name = getattr(item, "__name__", "Item") + "Page"
    make: Any = TypedDict
    return make(name, {"items": list[item], "next": str | None})


# --- the views handlers build as dicts ---------------------------------------------


class Whoami(TypedDict):
    """The caller and how they signed in (``token`` or ``cookie``)."""

    user: Any  # filled in by the document builder: User
    via: str


class RecordingSummary(TypedDict):
    """A recording's facts."""

    session: str
    user: str | None
    target: str | None
    account: str | None
    kind: str | None
    started_at: datetime
    ended_at: datetime | None
    duration: float
    width: int
    height: int
    term: str
    size: int
    sealed: bool
    end_reason: str | None


class GrantFacts(TypedDict, total=False):
    """The grant behind a recorded session (only ``id`` once the grant is gone)."""

    id: str
    rule: str
    expires_at: datetime
    reason: str
    ticket: str
    approvers: list[str]


class Recording(RecordingSummary):
    """A recording's facts, its grant and its timeline markers."""

    grant: GrantFacts | None
    markers: list[dict[str, Any]]
    indexed: bool


class SearchHit(TypedDict):
    session: str
    t: float
    kind: str
    line: str


class SealCheck(TypedDict):
    """One recording checked against its seal."""

    session: str
    ok: bool
    problem: str


class Screen(TypedDict):
    """A terminal screen: its size, lines and cursor (column, row)."""

    t: float
    width: int
    height: int
    lines: list[str]
    cursor: tuple[int, int]


class Frame(Screen):
    """The screen at a time."""

    session: str
    duration: float


class Frames(TypedDict):
    """The screens of a window of time."""

    session: str
    duration: float
    frames: list[Screen]


class NewTokenView(TypedDict):
    """A new API token: ``token`` is shown this once."""

    token: str
    id: str
    user: str
    created_at: datetime
    expires_at: datetime | None
    revoked: bool


class Notification(TypedDict):
    """A notification in the outbox."""

    id: int
    channel: str
    event: str
    key: str
    thread: str | None
    state: Literal["pending", "sent", "dead"]
    attempts: int
    next_at: datetime | None
    last_error: str | None
    created_at: datetime
    sent_at: datetime | None
    notice: Any


class _TimelineRequest(TypedDict):
    t: float
    start: float
    kind: str
    method: str
    target: str
    path: str
    status: int | None
    bytes_up: int
    bytes_down: int
    duration: float
    reused: bool
    outcome: str


class TimelineRequest(_TimelineRequest, total=False):
    """One request of a recorded web session (WebSocket counts and the body size when
    there are some)."""

    frames_up: int
    frames_down: int
    close_code: int | None
    body_size: int
