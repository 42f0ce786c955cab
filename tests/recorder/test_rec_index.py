"""Indexing, seeking, search and export of recordings; hostile terminal output."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recorder.asciicast import export
from recorder.events import (
    GENESIS,
    MAGIC,
    RESIZE,
    Kind,
    encode_chunk,
    encode_record,
    iter_records_from,
)
from recorder.follow import LiveIndexer
from recorder.http import HttpExchange
from recorder.indexer import SPILL, IndexResult, index_bytes, index_file, index_more, to_json
from recorder.recorder import Recorder
from recorder.replay import frame_at, playback
from recorder.rows import SAVE_BATCH, IndexFile, index_rows
from recorder.screen import TerminalModel
from recorder.store import RecordingStore
from recorder.tables import events, recordings, text_lines
from tests.eventually import eventually
from tests.recorder.conftest import Clock

COLOURED_LS = b"\x1b[0m\x1b[01;34mbin\x1b[0m  \x1b[01;32mrun.sh\x1b[0m  notes.txt\r\n"


async def _record(recorder: Recorder, clock: Clock, session_id: str = "se-a") -> str:
    rec = await recorder.start(
        session_id, meta={"user": "alice", "target": "db01", "account": "root"}, width=80, height=24
    )
    prompt = b"root@db01:~# "
    rec.output(prompt)
    for minute, command in enumerate([b"ls --color", b"systemctl stop nginx", b"top"]):
        clock.t += 30  # idle time between commands
        for ch in command:
            rec.input(bytes([ch]))
            rec.output(bytes([ch]))
        rec.input(b"\r")
        rec.output(b"\r\n")
        if command == b"ls --color":
            rec.output(COLOURED_LS)
        elif command == b"top":  # a full-screen program on the alternate screen
            rec.output(b"\x1b[?1049h\x1b[H\x1b[2JTasks: 97 total\r\n\x1b[7m  PID USER\x1b[0m")
            clock.t += 5
            rec.output(b"\x1b[?1049l")
        else:
            rec.output(b"Stopping nginx...\r\n")
        rec.output(prompt)
        rec.flush()
        assert minute >= 0
    clock.t += 1
    big = b"".join(b"line %06d of a long log file\r\n" % i for i in range(20000))
    rec.output(big)  # a burst: the indexer must not feed all of it to pyte
    rec.output(prompt)
    rec.marker("kill", "grant expired")
    await rec.close("grant expired")
    return str(rec.path)


async def test_index_commands_text_and_keyframes(recorder: Recorder, clock: Clock) -> None:
    path = await _record(recorder, clock)
    result = index_file(path)
    commands = [d["text"] for _, k, d in result.events if k == "command"]
    assert commands == ["ls --color", "systemctl stop nginx", "top"]
    lines = [text for _, kind, text in result.lines if kind == "screen"]
    assert "bin  run.sh  notes.txt" in lines
    assert "line 019999 of a long log file" in lines
    assert [d for _, k, d in result.events if k == "marker"] == [
        {"kind": "kill", "text": "grant expired"}
    ]
    assert len(result.keyframes) >= 3
    assert result.pyte_errors == 0


async def test_seek_matches_full_replay(
    recorder: Recorder, clock: Clock, store: RecordingStore
) -> None:
    path = await _record(recorder, clock)
    await store.index("se-a")
    result = index_file(path)
    for t in (0.0, 31.0, 45.0, 61.0, 95.0, result.duration):
        frame = frame_at(path, await store.keyframe_before("se-a", t), t)
        full = frame_at(path, result.keyframes[0], t)  # replay from the very start
        assert frame["lines"] == full["lines"], t
    end = frame_at(path, await store.keyframe_before("se-a", 1e9), 1e9)
    assert end["lines"][-2] == "line 019999 of a long log file"
    assert end["lines"][-1] == "root@db01:~#"


async def test_search_across_and_within(
    recorder: Recorder, clock: Clock, store: RecordingStore
) -> None:
    await _record(recorder, clock, "se-a")
    await _record(recorder, clock, "se-b")
    await store.index("se-a")
    await store.index("se-b")
    hits = await store.search("systemctl stop")
    assert {(h.session_id, h.kind) for h in hits} == {
        ("se-a", "command"),
        ("se-b", "command"),
        ("se-a", "screen"),
        ("se-b", "screen"),
    }
    commands = [h for h in hits if h.kind == "command"]
    assert all(h.line == "systemctl stop nginx" and h.t > 30 for h in commands)
    within = await store.search("000123 of a long", session_id="se-b")
    assert [h.line for h in within] == ["line 000123 of a long log file"]
    assert await store.search("no such words anywhere") == []
    assert await store.search("'; DROP TABLE rec_text; --") == []
    assert await store.search('"unbalanced') == []


async def test_index_workers_are_bounded(recorder: Recorder, clock: Clock) -> None:
    """Sessions ending together queue for the index workers instead of each starting a
    pyte process at once; every recording is indexed in the end."""
    ids = [f"se-{i}" for i in range(3)]
    for sid in ids:
        await _record(recorder, clock, sid)
    store = RecordingStore(recorder.root, recorder.maker, workers=1)
    for sid in ids:
        store.index_later(sid)
    most = 0

    def drained() -> bool:
        nonlocal most
        most = max(most, len(store._children))
        return not store._jobs

    await eventually(drained, interval=0.01, what="every queued index job done")
    assert most == 1
    for sid in ids:
        assert await store.search("systemctl stop nginx", session_id=sid)


async def test_live_recording_is_followed(
    recorder: Recorder, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An open recording is indexed up to its last complete chunk and found by search while
    the session goes on; a pass without growth does nothing; once sealed, the full index
    replaces the live one and a late live result cannot overwrite it."""
    monkeypatch.setattr("recorder.writer.FLUSH_SECONDS", 3600.0)  # a slow pass: no flush
    store = RecordingStore(recorder.root, recorder.maker)
    follower = LiveIndexer(recorder, store, interval=3600)
    rec = await recorder.start("se-live", meta={"user": "alice"}, width=80, height=24)
    for ch in b"systemctl stop nginx\r":
        rec.input(bytes([ch]))
        rec.output(bytes([ch]) if ch != 0x0D else b"\r\nStopping nginx...\r\n")
    rec.flush()
    clock.t += 5
    rec.output(b"not flushed yet\r\n")
    assert await follower.follow_once() == ["se-live"]
    hits = await store.search("systemctl stop nginx", session_id="se-live")
    assert {h.kind for h in hits} == {"command", "screen"}
    assert await store.search("not flushed yet") == []
    assert not (await store.get("se-live")).indexed  # live: partial, not "indexed"
    assert await follower.follow_once() == []  # nothing new on disk
    partial = await store.index_live("se-live", None, 1 << 20)
    assert partial is not None

    await rec.close("done")
    assert await follower.follow_once() == []  # closed: no longer followed
    await store.index("se-live")
    assert (await store.get("se-live")).indexed
    assert await store.search("not flushed yet", session_id="se-live")
    assert not await store.saves.live("se-live", partial, fresh=False)
    assert await store.search("not flushed yet", session_id="se-live")


async def test_live_passes_take_the_most_grown_first(recorder: Recorder) -> None:
    """Each index is a process start: a pass takes at most ``per_pass`` recordings, the ones
    that grew most, and the others get their turn in a later pass."""
    store = RecordingStore(recorder.root, recorder.maker)
    follower = LiveIndexer(recorder, store, interval=3600, per_pass=1)
    small = await recorder.start("se-small", meta={}, width=80, height=24)
    big = await recorder.start("se-big", meta={}, width=80, height=24)
    small.output(b"a little\r\n")
    big.output(b"a lot of output\r\n" * 1000)
    small.flush()
    big.flush()
    assert await follower.follow_once() == ["se-big"]
    assert await follower.follow_once() == ["se-small"]
    assert await follower.follow_once() == []
    for rec in (small, big):
        await rec.close("done")


async def _rows(recorder: Recorder, session_id: str) -> tuple[list[tuple[object, ...]], ...]:
    async with recorder.maker() as db:
        lines = await db.execute(
            sa.select(text_lines.c.t, text_lines.c.kind, text_lines.c.line)
            .where(text_lines.c.session_id == session_id)
        )  # fmt: skip
        found = await db.execute(
            sa.select(events.c.t, events.c.kind, events.c.data)
            .where(events.c.session_id == session_id)
        )  # fmt: skip
        return (
            sorted(tuple(r) for r in lines.all()),
            sorted((t, k, json.loads(d)) for t, k, d in found.all()),
        )


async def test_live_passes_go_on_where_the_last_stopped(recorder: Recorder, clock: Clock) -> None:
    """Each pass indexes only what was written since the last one and adds its rows: a line
    typed, and a line of output, across two passes are found whole and once, and after the
    last pass the rows are exactly a whole index's."""
    store = RecordingStore(recorder.root, recorder.maker)
    follower = LiveIndexer(recorder, store, interval=3600)
    rec = await recorder.start("se-more", meta={"user": "alice"}, width=80, height=24)
    steps: list[tuple[bytes, bytes]] = [  # typed (and echoed), then printed
        (b"echo hel", b""),
        (b"lo\r", b"\r\nhello wor"),
        (b"", b"ld\r\n$ "),
        (b"\x1b[A", b"echo hello"),
        (b"\r", b"\r\nhello world\r\n$ "),
    ]
    for typed, shown in steps:
        clock.t += 3
        for ch in typed:
            rec.input(bytes([ch]))
            if ch >= 0x20:
                rec.output(bytes([ch]))
        rec.output(shown)
        rec.resize(100, 30)
        rec.http_exchange(HttpExchange("GET", f"/step/{clock.t:g}", 200, 0, 10, 0.1, False))
        rec.flush()
        assert await follower.follow_once() == ["se-more"]
    rec.output(b"exit\r\n")
    rec.flush()
    await rec.synced()
    assert await follower.follow_once() == ["se-more"]
    data = rec.path.read_bytes()
    whole = index_bytes(data, live=True)
    lines, found = await _rows(recorder, "se-more")
    assert lines == sorted(whole.lines)
    assert found == sorted(whole.events)
    assert [x for _, k, x in lines if k == "command"] == ["echo hello"]
    assert [x for _, k, x in lines].count("hello world") == 2
    async with recorder.maker() as db:
        indexed_to = await db.scalar(
            sa.select(recordings.c.indexed_to).where(recordings.c.session_id == "se-more")
        )
    assert indexed_to == len(data)
    await rec.close("done")


async def test_a_live_pass_from_the_start_replaces_earlier_rows(recorder: Recorder) -> None:
    """A pass without a resume state (after a failed one) deletes what earlier passes
    saved: no row twice."""
    store = RecordingStore(recorder.root, recorder.maker)
    rec = await recorder.start("se-again", meta={}, width=80, height=24)
    rec.output(b"first line\r\n")
    rec.flush()
    await rec.synced()
    for _ in range(2):
        assert await store.index_live("se-again", None, 1 << 20) is not None
    lines, _ = await _rows(recorder, "se-again")
    assert [x for _, _, x in lines] == ["first line"]
    await rec.close("done")


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.lists(
            st.tuples(
                st.sampled_from([Kind.OUTPUT, Kind.INPUT, Kind.EXEC, Kind.RESIZE]),
                st.sampled_from([b"ls", b" -l\r", b"\r\n", b"\x1b[A", b"\x7f", b"x\ny", b"\x03"]),
            ),
            min_size=1,
            max_size=6,
        ),
        min_size=1,
        max_size=8,
    ),
    st.lists(st.booleans(), min_size=8, max_size=8),
)
def test_passes_add_up_to_the_whole_index(
    tmp_path_factory: pytest.TempPathFactory,
    chunks: list[list[tuple[Kind, bytes]]],
    cut: list[bool],
) -> None:
    """However a recording is split into passes, their rows together are a whole live
    index's rows."""
    path = tmp_path_factory.mktemp("more") / "rec"
    prev, data, t = GENESIS, MAGIC, 0.0
    passes = IndexResult()
    resume = None
    path.write_bytes(data)
    for seq, records in enumerate(chunks):
        payload = b"" if seq else encode_record(0, Kind.META, b'{"width": 80, "height": 24}')
        for kind, raw in records:
            t += 1
            body = RESIZE.pack(100, 30) if kind is Kind.RESIZE else raw
            payload += encode_record(t, kind, body)
        chunk, prev = encode_chunk(prev, seq, payload)
        data += chunk
        path.write_bytes(data + b"LGC1\x00")  # and the start of a chunk still being written
        if cut[seq] or seq == len(chunks) - 1:
            more = index_more(str(path), resume, 1 << 20)
            passes.lines += more.lines
            passes.events += more.events
            resume = more.resume
            assert more.size == len(data)
    whole = index_bytes(data, live=True)
    assert passes.events == whole.events
    partial = whole.lines[len(passes.lines) :]  # a whole index ends with the unfinished line
    assert passes.lines == whole.lines[: len(passes.lines)] and len(partial) <= 1


def test_live_index_stops_at_a_truncated_chunk() -> None:
    payload = encode_record(0, Kind.META, b'{"width": 80, "height": 24}')
    first, prev = encode_chunk(GENESIS, 0, payload + encode_record(1, Kind.OUTPUT, b"one\n"))
    second, _ = encode_chunk(prev, 1, encode_record(2, Kind.OUTPUT, b"two\n"))
    data = MAGIC + first + second[:-7]
    result = index_bytes(data, live=True)
    assert result.size == len(MAGIC) + len(first)
    assert [line for _, _, line in result.lines] == ["one"]
    with pytest.raises(ValueError, match="truncated"):
        index_bytes(data)


async def test_asciicast_export(recorder: Recorder, clock: Clock) -> None:
    path = await _record(recorder, clock)
    lines = list(export(iter_records_from(path, 0)))
    header = json.loads(lines[0])
    assert header["version"] == 2 and header["width"] == 80 and header["height"] == 24
    assert isinstance(header["timestamp"], int)
    events = [json.loads(line) for line in lines[1:]]
    assert all(isinstance(e, list) and len(e) == 3 and e[1] in "oirm" for e in events)
    times = [e[0] for e in events]
    assert times == sorted(times)
    assert any(e[1] == "i" for e in events) and any(e[1] == "m" for e in events)


async def test_asciinema_plays_the_export(recorder: Recorder, clock: Clock, tmp_path: Path) -> None:
    """asciinema's own player (the ``asciinema`` package's CLI) reads the file and shows
    exactly the recorded output."""
    path = await _record(recorder, clock)
    cast = tmp_path / "session.cast"
    cast.write_text("\n".join(export(iter_records_from(path, 0))) + "\n")
    recorded = b"".join(r.data for r in iter_records_from(path, 0) if r.kind is Kind.OUTPUT)
    shown = subprocess.run(
        [sys.executable, "-m", "asciinema", "cat", str(cast)],
        capture_output=True,
        stdin=subprocess.DEVNULL,
        timeout=120,
    )
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == recorded
    played = subprocess.run(
        [sys.executable, "-m", "asciinema", "play", "-s", "1000", "-i", "0.01", str(cast)],
        capture_output=True,
        stdin=subprocess.DEVNULL,
        timeout=120,
    )
    assert played.returncode == 0, played.stderr
    assert b"line 019999 of a long log file" in played.stdout


def test_playback_skips_idle_time() -> None:
    from recorder.events import Kind, Record

    records = iter(
        [
            Record(0.0, Kind.OUTPUT, b"a"),
            Record(600.0, Kind.OUTPUT, b"b"),
            Record(601.0, Kind.MARKER, b'{"kind": "kill", "text": "expired"}'),
        ]
    )
    written: list[bytes] = []
    slept: list[float] = []
    playback(records, written.append, speed=2.0, idle_limit=2.0, sleep=slept.append)
    assert written[:2] == [b"a", b"b"] and b"expired" in written[2]
    assert slept == [1.0, 0.5]


HOSTILE = st.lists(
    st.one_of(
        st.binary(max_size=64),
        st.sampled_from(
            [
                b"\x1b[1;2;3G",
                b"\x1b[" + b"9" * 5000 + b"m",
                b"\x1b]0;<b>x</b>\x07",
                b"\x1b[?1049h",
                b"\x1b[99999;99999H",
                b"\x1b[38;2;255;0;0m",
                b"\x1bP",
                b"\x1b[?25l",
                b"\xff\xfe",
                b"\x1b[r",
                b"\x1b[5;1r",
                b"\x1b#8",
            ]
        ),
        st.builds(
            lambda a, b: b"\x1b[" + a.encode() + b,
            st.text("0123456789;:?", max_size=40),
            st.sampled_from([b"m", b"H", b"J", b"K", b"r", b"G", b"@", b"P", b"X", b"d"]),
        ),
    ),
    max_size=30,
)


def test_wide_character_half_overwritten() -> None:
    """Found by the test below: text over the left half of a wide (CJK) character leaves
    pyte an empty right half, which its own rendering cannot show; a terminal shows a
    blank there."""
    model = TerminalModel(12, 2)
    model.feed("abc\u3000def\r\x1b[3Cx".encode())  # "x" over the left half of U+3000
    assert model.snapshot().lines[0] == "abcx def"
    model.feed("\r\n\u65e5\u672c".encode())
    assert model.snapshot().lines[1] == "\u65e5\u672c"


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(HOSTILE, st.integers(-5, 100000), st.integers(-5, 100000))
def test_hostile_output_never_crashes(chunks: list[bytes], width: int, height: int) -> None:
    model = TerminalModel(width, height)
    for chunk in chunks:
        model.feed(chunk)
    snap = model.snapshot()
    assert 2 <= snap.width <= 500 and 1 <= snap.height <= 200


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(HOSTILE)
def test_hostile_recording_indexes(chunks: list[bytes]) -> None:

    payload = encode_record(0, Kind.META, b'{"width": 80, "height": 24}')
    payload += b"".join(encode_record(i, Kind.OUTPUT, c) for i, c in enumerate(chunks))
    chunk, _ = encode_chunk(GENESIS, 0, payload)
    result = index_bytes(MAGIC + chunk)
    assert result.keyframes


async def test_the_worker_writes_a_big_index_as_it_goes_and_it_reads_back_the_same(
    recorder: Recorder, clock: Clock
) -> None:
    """A web session of more requests than the worker holds at once (``SPILL``): what the
    worker process writes, read back, is the index made in memory, row for row."""
    rec = await recorder.start("hs-big", meta={"user": "alice"}, width=80, height=24)
    for i in range(SPILL * 2):
        clock.t += 0.01
        rec.http_exchange(HttpExchange("GET", f"/api/items/{i}", 200, 0, 10, 0.001, True))
        if i % 500 == 0:
            rec.flush()
    await rec.close("done")
    path = str(rec.path)
    done = subprocess.run(
        [sys.executable, "-m", "recorder.indexer", path], capture_output=True, check=True
    )
    with tempfile.TemporaryFile() as f:
        f.write(done.stdout)
        read = IndexFile(f)
        whole = index_file(path)
        assert read.head == replace(whole, keyframes=[], lines=[], events=[])
        assert len(whole.events) == SPILL * 2

        def by_table(batches: Iterator[tuple[sa.Table, list[dict[str, Any]]]]) -> Any:
            found: dict[str, list[str]] = {}
            for table, rows in batches:
                found.setdefault(table.name, []).extend(json.dumps(r, sort_keys=True) for r in rows)
            return {name: sorted(rows) for name, rows in found.items()}

        assert by_table(read.rows("hs-big")) == by_table(index_rows("hs-big", whole))


async def test_the_index_crosses_the_process_boundary_line_by_line_and_intact() -> None:
    """The child writes JSON Lines; text that looks like line breaks stays inside its line."""
    result = IndexResult(
        100, 30, 12.5,
        keyframes=[(0.0, 15, {"lines": ["a\u2028b"], "cursor": [0, 0]})],
        lines=[(1.0, "output", "x\ny\x1c\x85z"), (2.0, "command", "ls -l")],
        events=[(3.0, "http", {"method": "GET", "target": "/a\r\nb"})],
        pyte_errors=1, size=4096, resume={"chain": [4096, "00" * 32, 3], "partial": "eA=="},
    )  # fmt: skip
    text = to_json(result)
    assert len(text.splitlines()) == 5  # one line per entry, then the facts
    for index in (result, IndexResult()):
        with tempfile.TemporaryFile() as f:
            f.write(to_json(index).encode())
            read = IndexFile(f)
            assert read.head == replace(index, keyframes=[], lines=[], events=[])
            assert list(read.rows("se-x", 3)) == list(index_rows("se-x", index, 3))
    with tempfile.TemporaryFile() as f:  # read a batch at a time, never whole
        f.write(to_json(_index(100, "big", SAVE_BATCH * 4)).encode())
        size = f.tell()
        batches = IndexFile(f).rows("se-x")
        table, rows = next(batches)
        assert table is text_lines and len(rows) == SAVE_BATCH and f.tell() < size / 2
        assert sum(len(rows) for _, rows in batches) == SAVE_BATCH * 3 + 1  # and the event
    with tempfile.TemporaryFile() as f, pytest.raises(ValueError, match="cut short"):
        f.write(text.rsplit("\n", 2)[0].encode() + b"\n")  # a worker killed before its facts
        IndexFile(f)


async def _sealed(recorder: Recorder, session_id: str) -> int:
    rec = await recorder.start(session_id, meta={"user": "alice"}, width=80, height=24)
    rec.output(b"hello\r\n")
    await rec.close("done")
    return int((await RecordingStore(recorder.root, recorder.maker).get(session_id)).size)


def _index(size: int, first: str, count: int = SAVE_BATCH * 2 + 1) -> IndexResult:
    """``count`` screen lines (the first one ``first``) and one marker naming ``first``."""
    lines = [(0.0, "screen", first)] + [(i / count, "screen", f"line {i}") for i in range(1, count)]
    return IndexResult(80, 24, 1.0, [], lines, [(0.5, "marker", {"n": first})], 0, size)


async def _line_count(recorder: Recorder, session_id: str) -> int:
    async with recorder.maker() as db:
        where = text_lines.c.session_id == session_id
        return int((await db.execute(sa.select(sa.func.count()).where(where))).scalar_one())


async def test_a_large_index_replaces_the_old_one_in_batches(recorder: Recorder) -> None:
    """More rows than one batch: saved twice, the second replaces the first row for row, and
    the recording is reported indexed only after the last batch."""
    store = RecordingStore(recorder.root, recorder.maker)
    size = await _sealed(recorder, "se-big")
    for line in ("first", "second"):
        assert await store.saves.sealed("se-big", _index(size, line), size)
    assert (await store.get("se-big")).indexed
    assert await _line_count(recorder, "se-big") == SAVE_BATCH * 2 + 1
    assert [h.line for h in await store.search("second", session_id="se-big")] == ["second"]
    assert await store.search("first", session_id="se-big") == []
    assert [e["n"] for e in await store.timeline("se-big")] == ["second"]
    await store.aclose()


async def test_other_writes_go_between_a_sealed_saves_batches_and_readers_see_one_index(
    recorder: Recorder,
) -> None:
    """While a new index is written, another writer commits between its batches (it sees
    part of the new rows), and readers see the old index whole until the switch."""
    store = RecordingStore(recorder.root, recorder.maker)
    size = await _sealed(recorder, "se-busy")
    await _sealed(recorder, "se-other")
    assert await store.saves.sealed("se-busy", _index(size, "old"), size)
    total = SAVE_BATCH * 4
    save = asyncio.ensure_future(store.saves.sealed("se-busy", _index(size, "new", total), size))
    seen_by_writer: list[int] = []
    seen_by_reader: list[int] = []
    while not save.done():
        async with recorder.maker() as db, db.begin():
            await db.execute(
                recordings.update()
                .where(recordings.c.session_id == "se-other")
                .values(end_reason=f"write {len(seen_by_writer)}")
            )
            new_rows = sa.select(sa.func.count()).where(
                text_lines.c.session_id == "se-busy", text_lines.c.generation == 2
            )
            seen_by_writer.append(int((await db.execute(new_rows)).scalar_one()))
        hits = await store.search("line", session_id="se-busy", limit=10 * total)
        seen_by_reader.append(len(hits))
    assert await save
    assert any(0 < n < total for n in seen_by_writer), seen_by_writer
    assert set(seen_by_reader) <= {SAVE_BATCH * 2, total - 1}, set(seen_by_reader)  # whole
    assert [e["n"] for e in await store.timeline("se-busy")] == ["new"]
    assert await _line_count(recorder, "se-busy") == total
    await store.aclose()


async def test_of_two_saves_at_once_the_later_one_wins_and_the_other_leaves_nothing(
    recorder: Recorder,
) -> None:
    store = RecordingStore(recorder.root, recorder.maker)
    size = await _sealed(recorder, "se-race")
    slow = asyncio.ensure_future(store.saves.sealed("se-race", _index(size, "slow", 3000), size))

    async def begun() -> bool:
        return await _line_count(recorder, "se-race") > 0

    await eventually(begun, what="the slow save's first batch")
    assert await store.saves.sealed("se-race", _index(size, "quick", 10), size)
    assert not await slow  # it began first: its rows are deleted, not shown
    assert await _line_count(recorder, "se-race") == 10
    assert [e["n"] for e in await store.timeline("se-race")] == ["quick"]
    await store.aclose()


async def test_a_winner_and_a_loser_clearing_the_same_rows_at_once_do_not_deadlock(
    recorder: Recorder,
) -> None:
    """The winner of two saves deletes every older generation while the loser deletes its
    own, which is one of them: on PostgreSQL two batched deletes of the same rows once
    deadlocked (CI), and one save failed. Many rounds, so the overlap is sure to happen."""
    store = RecordingStore(recorder.root, recorder.maker)
    size = await _sealed(recorder, "se-clear")
    lines = text_lines.c
    for _ in range(16):
        for generation in (1, 2):
            for table, rows in index_rows(
                "se-clear", _index(size, "x", SAVE_BATCH * 6), generation
            ):
                async with recorder.maker() as db, db.begin():
                    await db.execute(table.insert(), rows)
        await asyncio.gather(
            store.saves.clear(text_lines, "se-clear", lines.generation < 3),
            store.saves.clear(text_lines, "se-clear", lines.generation == 1),
            store.saves.clear(text_lines, "se-clear", lines.generation == 2),
        )
        assert await _line_count(recorder, "se-clear") == 0
    await store.aclose()


async def test_a_save_stopped_by_closing_leaves_the_old_index_and_is_redone(
    recorder: Recorder,
) -> None:
    store = RecordingStore(recorder.root, recorder.maker)
    size = await _sealed(recorder, "se-stop")
    old = _index(size, "old")
    assert await store.saves.sealed("se-stop", old, size)
    async with recorder.maker() as db, db.begin():  # as if the file had grown past the index
        await db.execute(
            recordings.update().where(recordings.c.session_id == "se-stop").values(indexed_to=0)
        )
    save = asyncio.ensure_future(store.saves.sealed("se-stop", _index(size, "new", 3000), size))

    async def begun() -> bool:
        return await _line_count(recorder, "se-stop") > len(old.lines)

    await eventually(begun, what="the new index's first batch")
    await store.aclose()
    assert not await save
    assert [e["n"] for e in await store.timeline("se-stop")] == ["old"]
    assert len(await store.search("line", session_id="se-stop", limit=9999)) == len(old.lines) - 1
    assert not (await store.get("se-stop")).indexed
    again = RecordingStore(recorder.root, recorder.maker)
    assert await again.index_pending() == 1

    async def redone() -> bool:
        return (await again.get("se-stop")).indexed

    await eventually(redone, what="the index redone")
    assert [h.line for h in await again.search("hello", session_id="se-stop")] == ["hello"]

    async def stale() -> bool:  # the stopped save's rows go after the old index's
        async with recorder.maker() as db:
            query = sa.select(sa.func.count()).where(
                text_lines.c.session_id == "se-stop", text_lines.c.generation != 3
            )
            return (await db.execute(query)).scalar_one() == 0

    await eventually(stale, what="no rows left but the new index's")
    await again.aclose()
