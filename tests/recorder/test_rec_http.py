"""A web session's recording: exchanges and WebSockets in the hash-chained file, read back as
a timeline, searched, exported and replayed; bodies only when given; secrets never stored."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa

from recorder.asciicast import export
from recorder.errors import InvalidQuery, NotFound, TamperedRecording
from recorder.events import GENESIS, MAGIC, Kind, encode_chunk, encode_record, iter_records_from
from recorder.http import (
    MAX_BODY,
    HttpExchange,
    decode_exchange,
    describe,
    encode_exchange,
    header_of,
    mask_query,
    timeline,
)
from recorder.indexer import index_bytes
from recorder.integrity import verify_bytes, verify_file
from recorder.recorder import Recorder
from recorder.replay import frame_at, playback
from recorder.store import RecordingStore
from recorder.tables import events, keyframes, recordings, text_lines
from tests.libdb import SessionMaker
from tests.recorder.conftest import Clock

TOKEN = "tok9f8e7d6c5b4a3"  # the value of a query parameter the target calls sensitive
FORGOTTEN = "at5e4d3c2b1a0z9"  # an access_token the proxy forgot to mask
BODY = b'{"name":"prometheus","url":"http://prom:9090"}'
META = {"user": "alice", "target": "grafana", "grant": "g-1", "kind": "http"}


def _ex(method: str, target: str, status: int, **kw: object) -> HttpExchange:
    fields: dict[str, object] = {
        "bytes_up": 0,
        "bytes_down": 100,
        "duration": 0.05,
        "reused": True,
    }
    fields.update(kw)
    return HttpExchange(method, target, status, **fields)  # type: ignore[arg-type]


async def _web_session(recorder: Recorder, clock: Clock, session_id: str = "hs-1") -> str:
    rec = await recorder.start(session_id, meta=META, pty=False)
    clock.t += 1
    rec.http_exchange(_ex("GET", "/", 200, bytes_down=5120, reused=False))
    clock.t += 2
    masked = mask_query(f"/api/search?query=cpu&API_Token={TOKEN}&x=1", ["api_token"])
    rec.http_exchange(_ex("GET", masked, 200, duration=0.5))
    rec.flush()  # the rest in later chunks: the cursor must cross chunk boundaries
    clock.t += 1
    rec.http_exchange(_ex("POST", "/api/datasources", 201, bytes_up=len(BODY), body=BODY))
    clock.t += 1
    rec.http_exchange(_ex("DELETE", "/admin/users/7", 403, outcome="blocked", duration=0.0))
    clock.t += 4
    rec.http_exchange(_ex("GET", "/api/slow", 0, outcome="upstream_error", duration=3.0))
    rec.websocket_opened("/api/live/ws")
    rec.flush()
    clock.t += 10
    rec.http_exchange(
        _ex(
            "GET",
            "/api/live/ws",
            101,
            duration=10.0,
            websocket=True,
            frames_up=3,
            frames_down=40,
            close_code=1000,
        )
    )
    clock.t += 1
    rec.http_exchange(_ex("GET", f"/login/oauth?access_token={FORGOTTEN}&state=s1", 302))
    clock.t += 1
    rec.http_exchange(_ex("get", "/api/users?page=2", 404))
    await rec.close("grant expired")
    return str(rec.path)


async def test_an_http_recording_verifies_and_a_flipped_byte_fails(
    recorder: Recorder, clock: Clock, store: RecordingStore
) -> None:
    path = await _web_session(recorder, clock)
    assert await store.verify("hs-1") == [("hs-1", None)]
    check = verify_file(Path(path))
    assert check.ok and check.sealed and check.chunks >= 3
    data = Path(path).read_bytes()
    for at in (len(MAGIC) + 20, data.find(b"/admin/users/7"), len(data) - 40):
        flipped = bytearray(data)
        flipped[at] ^= 0x01
        assert not verify_bytes(bytes(flipped)).ok, at
    flipped = bytearray(data)
    flipped[data.find(b"/admin/users/7")] ^= 0x01
    Path(path).write_bytes(bytes(flipped))
    assert (await store.verify("hs-1"))[0][1] is not None


async def test_timeline_lists_every_exchange_with_its_times(
    recorder: Recorder, clock: Clock
) -> None:
    path = await _web_session(recorder, clock)
    entries = timeline(path)
    assert [(e.kind, e.exchange.method, e.exchange.path, e.exchange.status) for e in entries] == [
        ("request", "GET", "/", 200),
        ("request", "GET", "/api/search", 200),
        ("request", "POST", "/api/datasources", 201),
        ("request", "DELETE", "/admin/users/7", 403),
        ("request", "GET", "/api/slow", 0),
        ("websocket_open", "GET", "/api/live/ws", 101),
        ("websocket", "GET", "/api/live/ws", 101),
        ("request", "GET", "/login/oauth", 302),
        ("request", "get", "/api/users", 404),
    ]
    assert [e.t for e in entries] == [1.0, 3.0, 4.0, 5.0, 9.0, 9.0, 19.0, 20.0, 21.0]
    slow, ws = entries[4], entries[6]
    assert slow.start == 6.0 and slow.exchange.outcome == "upstream_error"
    assert ws.start == 9.0 and ws.exchange.websocket
    assert (ws.exchange.frames_up, ws.exchange.frames_down, ws.exchange.close_code) == (3, 40, 1000)
    assert entries[1].exchange.target == "/api/search?query=cpu&API_Token=***&x=1"
    assert entries[1].as_dict()["path"] == "/api/search"
    assert json.dumps([e.as_dict() for e in entries])  # JSON-ready, bodies only as sizes


async def test_timeline_filters_by_method_status_class_path_and_outcome(
    recorder: Recorder, clock: Clock
) -> None:
    path = await _web_session(recorder, clock)

    def paths(**kw: object) -> list[str]:
        return [e.exchange.path for e in timeline(path, **kw)]  # type: ignore[arg-type]

    assert paths(method="post") == ["/api/datasources"]
    assert paths(method="GET", status="4xx") == ["/api/users"]  # method compares any case
    assert paths(status="4XX") == ["/admin/users/7", "/api/users"]
    assert paths(status=201) == paths(status="201") == ["/api/datasources"]
    assert paths(status=0) == ["/api/slow"]
    assert paths(path_glob="/api/live/*") == ["/api/live/ws", "/api/live/ws"]
    assert paths(path_glob="/admin/*", status="4xx") == ["/admin/users/7"]
    assert paths(path_glob="/API/*") == []  # paths are case-sensitive
    assert paths(outcome="blocked") == ["/admin/users/7"]
    for bad in (
        {"status": "4x"},
        {"status": "forty"},
        {"status": 1000},
        {"method": "GET /x"},
        {"outcome": "maybe"},
        {"path_glob": ""},
        {"limit": 0},
        {"limit": 1001},
    ):
        with pytest.raises(InvalidQuery):
            timeline(path, **bad)


async def test_timeline_pages_with_cursors_across_chunks(recorder: Recorder, clock: Clock) -> None:
    path = await _web_session(recorder, clock)
    everything = timeline(path)
    for size in (1, 2, 4):
        pages, cursor = [], None
        while page := timeline(path, limit=size, cursor=cursor):
            pages.extend(page)
            cursor = page[-1].cursor
        assert pages == everything, size
    filtered = timeline(path, method="GET", limit=2)
    rest = timeline(path, method="GET", cursor=filtered[-1].cursor)
    assert [e.exchange.path for e in filtered + rest] == [
        e.exchange.path for e in everything if e.exchange.method.upper() == "GET"
    ]


async def test_a_cursor_not_from_this_timeline_is_refused(
    recorder: Recorder, clock: Clock, tmp_path: Path
) -> None:
    """A cursor pointing inside a chunk, such as into a recorded body crafted to look like a
    chunk, is refused rather than read as recorded exchanges."""
    forged = encode_record(0.0, Kind.HTTP, encode_exchange(_ex("GET", "/forged", 200)))
    fake_chunk = encode_chunk(GENESIS, 0, forged + forged)[0]
    rec = await recorder.start("hs-forge", meta=META, pty=False)
    rec.http_exchange(_ex("POST", "/upload", 200, body=fake_chunk))
    await rec.close("done")
    data = rec.path.read_bytes()
    inside = data.find(fake_chunk)
    assert inside > 0
    for cursor in (f"{inside}:1", "0:1", "15:0", "x", "1:2:3", "-1:1", "9" * 20 + ":1"):
        with pytest.raises(InvalidQuery):
            timeline(rec.path, cursor=cursor)
    assert [e.exchange.path for e in timeline(rec.path)] == ["/upload"]
    with pytest.raises(NotFound):
        timeline(tmp_path / "missing.lgrec")


async def test_bodies_are_recorded_only_when_given_and_capped(
    recorder: Recorder, clock: Clock
) -> None:
    path = await _web_session(recorder, clock)
    bodies = {e.exchange.path: e.exchange.body for e in timeline(path)}
    assert bodies.pop("/api/datasources") == BODY
    assert set(bodies.values()) == {None}
    heads = [header_of(r.data) for r in iter_records_from(path, 0) if r.kind is Kind.HTTP]
    assert [h["target"] for h in heads if h and "body" in h] == ["/api/datasources"]
    assert Path(path).read_bytes().count(BODY) == 1
    big = encode_exchange(_ex("POST", "/big", 200, body=b"x" * (MAX_BODY + 10)))
    decoded = decode_exchange(big)
    assert decoded is not None and decoded[1].body == b"x" * MAX_BODY
    head = header_of(big)
    assert head is not None and head["body"] == MAX_BODY and head["body_cut"] is True


async def test_export_is_one_line_per_exchange_and_replay_shows_them(
    recorder: Recorder, clock: Clock, store: RecordingStore
) -> None:
    path = await _web_session(recorder, clock)
    lines = list(export(iter_records_from(path, 0)))
    header = json.loads(lines[0])
    assert header["title"] == "alice -> grafana (http)"
    items = [json.loads(line) for line in lines[1:]]
    shown = [text for _, kind, text in items if kind == "o"]
    assert len(shown) == 9 and all(text.endswith("\r\n") for text in shown)
    assert shown[2].startswith("POST /api/datasources -> 201")
    assert shown[5] == "WS GET /api/live/ws opened\r\n"
    assert "closed 1000" in shown[6] and "[blocked]" in shown[3]
    assert BODY.decode() not in "".join(lines)
    written: list[bytes] = []
    playback(iter_records_from(path, 0), written.append, sleep=lambda _: None)
    assert b"".join(written).count(b"\r\n") == 9
    await store.index("hs-1")
    frame = frame_at(path, await store.keyframe_before("hs-1", 4.5), 4.5)
    screen = [line for line in frame["lines"] if line.strip()]
    assert screen[0].startswith("GET / -> 200")
    assert screen[-1].startswith("POST /api/datasources -> 201")
    assert not any("DELETE" in line for line in screen)  # not yet at 4.5 s


async def test_search_finds_method_and_path_across_and_within_recordings(
    recorder: Recorder, clock: Clock, store: RecordingStore
) -> None:
    await _web_session(recorder, clock, "hs-1")
    rec = await recorder.start("hs-2", meta=META, pty=False)
    rec.http_exchange(_ex("GET", "/dashboards", 200))
    await rec.close("done")
    await store.index("hs-1")
    await store.index("hs-2")
    hits = await store.search("POST /api/datasources")
    assert [(h.session_id, h.kind, h.line, h.t) for h in hits] == [
        ("hs-1", "http", "POST /api/datasources", 4.0)
    ]
    assert [h.line for h in await store.search("/admin/users")] == ["DELETE /admin/users/7"]
    within = await store.search("/api/live/ws", session_id="hs-1")
    assert [h.t for h in within] == [9.0, 19.0]  # the open and the close: jump to each
    assert [h.session_id for h in await store.search("/dashboards")] == ["hs-2"]
    assert any(e["kind"] == "http" for e in await store.timeline("hs-1"))


async def test_sensitive_query_values_never_reach_the_file_or_the_index(
    recorder: Recorder, clock: Clock, store: RecordingStore, maker: SessionMaker, tmp_path: Path
) -> None:
    path = await _web_session(recorder, clock)
    await store.index("hs-1")
    data = Path(path).read_bytes()
    async with maker() as db:
        rows = [
            repr((await db.execute(sa.select(table))).all())
            for table in (recordings, text_lines, events, keyframes)
        ]
    stored = [data, *(r.encode() for r in rows)]
    stored += [p.read_bytes() for p in tmp_path.glob("test.db*")]  # SQLite: the whole file
    for secret in (TOKEN, FORGOTTEN):
        assert all(secret.encode() not in blob for blob in stored), secret
    assert b"access_token=***&state=s1" in data  # masked by the recorder itself


def test_malformed_http_records_are_skipped_never_raised(tmp_path: Path) -> None:
    meta = json.dumps({"kind": "http", "started": "2026-01-01T00:00:00+00:00"}).encode()
    good = encode_exchange(_ex("GET", "/ok\x1b[2J\x07", 200))
    payload = b"".join(
        encode_record(t, Kind.HTTP if t else Kind.META, data)
        for t, data in ((0.0, meta), (1.0, b"not json"), (2.0, b"[1]"), (3.0, b'{"event":"x"}'))
    ) + encode_record(4.0, Kind.HTTP, good)
    path = tmp_path / "odd.lgrec"
    path.write_bytes(MAGIC + encode_chunk(GENESIS, 0, payload)[0])
    assert [e.t for e in timeline(path)] == [4.0]
    result = index_bytes(path.read_bytes())
    assert [line for _, kind, line in result.lines if kind == "http"] == ["GET /ok?[2J?"]
    cast = list(export(iter_records_from(str(path), 0)))
    assert len(cast) == 2 and "\x1b" not in cast[1]
    decoded = decode_exchange(good)
    assert decoded is not None and "\x1b" not in describe(*decoded)
    path.write_bytes(MAGIC + b"LGC2" + bytes(12))
    with pytest.raises(TamperedRecording):
        timeline(path)
