"""``[[audit.sinks]]``: where the audit stream goes. Parsed from the configuration file's
tables by ``gateway.config``; values are checked here, so a bad sink stops start-up."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FACILITIES = {
    "kern": 0,
    "user": 1,
    "daemon": 3,
    "auth": 4,
    "syslog": 5,
    "authpriv": 10,
    "local0": 16,
    "local1": 17,
    "local2": 18,
    "local3": 19,
    "local4": 20,
    "local5": 21,
    "local6": 22,
    "local7": 23,
}
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
_APP = re.compile(r"^[!-~]{1,48}$")  # RFC 5424 APP-NAME: printable US-ASCII, no space


@dataclass(frozen=True)
class SyslogSink:
    name: str
    host: str
    port: int
    tls: bool = False
    tls_ca: Path | None = None  # CA bundle for the receiver's certificate; None: system store
    facility: int = FACILITIES["authpriv"]
    app_name: str = "lockgate"
    max_message: int = 8192  # rsyslog's default limit; longer events lose their details


@dataclass(frozen=True)
class JsonlSink:
    name: str
    path: Path
    max_bytes: int = 100 * 1024 * 1024  # rotate when the file reaches this size
    keep: int = 5  # rotated files kept: path.1 (newest) .. path.<keep>


SinkSettings = SyslogSink | JsonlSink

_KEYS = {
    "syslog": {"name", "kind", "address", "tls", "tls_ca", "facility", "app_name", "max_message"},
    "jsonl": {"name", "kind", "path", "max_bytes", "keep"},
}


def parse_sink(item: dict[str, Any], resolve: Any) -> SinkSettings:
    """One ``[[audit.sinks]]`` table; ``resolve`` turns a configured path into an absolute one.
    Raises ValueError naming the bad key."""
    kind = item.get("kind")
    if kind not in _KEYS:
        raise ValueError("kind must be syslog or jsonl")
    unknown = sorted(set(item) - _KEYS[kind])
    if unknown:
        raise ValueError(f"unknown key {unknown[0]} for kind {kind}")
    name = item.get("name", kind)
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError("name must be lower-case letters, digits, '.', '_' or '-'")
    if kind == "jsonl":
        path = item.get("path")
        max_bytes = item.get("max_bytes", JsonlSink.max_bytes)
        keep = item.get("keep", JsonlSink.keep)
        if not isinstance(path, str) or not path:
            raise ValueError("path is required")
        if not isinstance(max_bytes, int) or isinstance(max_bytes, bool) or max_bytes < 1024:
            raise ValueError("max_bytes must be a whole number of at least 1024")
        if not isinstance(keep, int) or isinstance(keep, bool) or not 1 <= keep <= 1000:
            raise ValueError("keep must be between 1 and 1000")
        return JsonlSink(name=name, path=resolve(path), max_bytes=max_bytes, keep=keep)
    address = item.get("address")
    if not isinstance(address, str):
        raise ValueError("address is required (HOST:PORT)")
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) <= 65535:
        raise ValueError(f"address: expected HOST:PORT, got {address!r}")
    tls = item.get("tls", False)
    if not isinstance(tls, bool):
        raise ValueError("tls must be true or false")
    ca = item.get("tls_ca", "")
    if not isinstance(ca, str):
        raise ValueError("tls_ca must be a path")
    facility = item.get("facility", "authpriv")
    if facility not in FACILITIES:
        raise ValueError(f"facility must be one of {', '.join(FACILITIES)}")
    limit = item.get("max_message", SyslogSink.max_message)
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1024:
        raise ValueError("max_message must be a whole number of at least 1024")
    app = item.get("app_name", "lockgate")
    if not isinstance(app, str) or not _APP.match(app):
        raise ValueError("app_name must be 1-48 printable ASCII characters without spaces")
    return SyslogSink(
        name=name,
        host=host.strip("[]"),
        port=int(port),
        tls=tls,
        tls_ca=resolve(ca) if ca else None,
        facility=FACILITIES[facility],
        app_name=app,
        max_message=limit,
    )
