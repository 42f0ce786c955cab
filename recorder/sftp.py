"""Passive SFTP (v3) parsing: which files moved, which way, how many bytes.

Fed the raw subsystem bytes of both directions; never alters them. Malformed input stops
the parsing for that session (reported once as an ``unparsed`` operation), never the session.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from typing import Any

OPEN, CLOSE, READ, WRITE = 3, 4, 5, 6
SETSTAT, FSETSTAT, OPENDIR = 9, 10, 11
REMOVE, MKDIR, RMDIR, RENAME, SYMLINK = 13, 14, 15, 18, 20
STATUS, HANDLE, DATA = 101, 102, 103
_NAMED = {
    REMOVE: "remove",
    MKDIR: "mkdir",
    RMDIR: "rmdir",
    SETSTAT: "setstat",
    RENAME: "rename",
    SYMLINK: "symlink",
}
MAX_PACKET = 1 << 20
FXF_WRITE, FXF_CREAT, FXF_TRUNC = 0x02, 0x08, 0x10


def _string(data: bytes, pos: int) -> tuple[bytes, int]:
    (n,) = struct.unpack_from(">I", data, pos)
    if pos + 4 + n > len(data):
        raise ValueError("string overruns packet")
    return data[pos + 4 : pos + 4 + n], pos + 4 + n


class _Stream:
    def __init__(self, on_packet: Callable[[int, bytes], None]) -> None:
        self.buf = bytearray()
        self.on_packet = on_packet

    def feed(self, data: bytes) -> None:
        self.buf += data
        while len(self.buf) >= 5:
            (length,) = struct.unpack_from(">I", self.buf, 0)
            if length < 1 or length > MAX_PACKET:
                raise ValueError("bad packet length")
            if len(self.buf) < 4 + length:
                return
            packet = bytes(self.buf[4 : 4 + length])
            del self.buf[: 4 + length]
            self.on_packet(packet[0], packet[1:])


class SftpTracker:
    def __init__(self, emit: Callable[[Mapping[str, Any]], None]) -> None:
        self.emit = emit
        self.requests: dict[int, tuple[int, dict[str, Any]]] = {}
        self.handles: dict[bytes, dict[str, Any]] = {}
        self.broken = False
        self._c = _Stream(self._client_packet)
        self._s = _Stream(self._server_packet)

    def client(self, data: bytes) -> None:
        self._safe(self._c, data)

    def server(self, data: bytes) -> None:
        self._safe(self._s, data)

    def _safe(self, stream: _Stream, data: bytes) -> None:
        if self.broken:
            return
        try:
            stream.feed(data)
        except (ValueError, struct.error, IndexError):
            self.broken = True
            self.emit({"op": "unparsed"})

    def _client_packet(self, kind: int, body: bytes) -> None:
        if kind == 1:  # INIT carries no request id
            return
        (rid,) = struct.unpack_from(">I", body, 0)
        pos = 4
        if kind in (OPEN, OPENDIR):
            path, pos = _string(body, pos)
            flags = struct.unpack_from(">I", body, pos)[0] if kind == OPEN else 0
            self.requests[rid] = (kind, {"path": path.decode("utf-8", "replace"), "flags": flags})
        elif kind in (READ, WRITE):
            handle, pos = _string(body, pos)
            if kind == WRITE:
                pos += 8
                data, _ = _string(body, pos)
                if handle in self.handles:
                    self.handles[handle]["written"] += len(data)
            else:
                self.requests[rid] = (READ, {"handle": handle})
        elif kind == CLOSE:
            handle, _ = _string(body, pos)
            info = self.handles.pop(handle, None)
            if info is not None and not info.get("dir"):
                self._report_file(info)
        elif kind in _NAMED or kind == FSETSTAT:
            if kind == FSETSTAT:
                handle, _ = _string(body, pos)
                info = self.handles.get(handle, {})
                self.requests[rid] = (kind, {"op": "setstat", "path": info.get("path", "?")})
                return
            path, pos = _string(body, pos)
            op: dict[str, Any] = {"op": _NAMED[kind], "path": path.decode("utf-8", "replace")}
            if kind in (RENAME, SYMLINK):
                other, _ = _string(body, pos)
                op["to"] = other.decode("utf-8", "replace")
            self.requests[rid] = (kind, op)

    def _server_packet(self, kind: int, body: bytes) -> None:
        if kind == 2:  # VERSION
            return
        (rid,) = struct.unpack_from(">I", body, 0)
        pending = self.requests.pop(rid, None)
        if pending is None:
            return
        req_kind, info = pending
        if kind == HANDLE and req_kind in (OPEN, OPENDIR):
            handle, _ = _string(body, 4)
            self.handles[handle] = {**info, "read": 0, "written": 0, "dir": req_kind == OPENDIR}
        elif kind == DATA and req_kind == READ:
            data, _ = _string(body, 4)
            handle_info = self.handles.get(info["handle"])
            if handle_info is not None:
                handle_info["read"] += len(data)
        elif kind == STATUS and req_kind != READ:
            (code,) = struct.unpack_from(">I", body, 4)
            if req_kind == OPEN:
                self.emit({"op": "open", "path": info["path"], "result": "failed", "status": code})
            elif req_kind not in (OPENDIR,):
                self.emit({**info, "result": "ok" if code == 0 else "failed", "status": code})

    def _report_file(self, info: Mapping[str, Any]) -> None:
        writing = bool(info["flags"] & (FXF_WRITE | FXF_CREAT | FXF_TRUNC))
        self.emit(
            {
                "op": "upload" if writing else "download",
                "path": info["path"],
                "bytes": info["written"] if writing else info["read"],
                "result": info.get("result", "ok"),
            }
        )

    def finish(self) -> None:
        """Report files still open when the session ends."""
        for info in self.handles.values():
            if not info.get("dir"):
                self._report_file({**info, "result": "interrupted"})
        self.handles.clear()
