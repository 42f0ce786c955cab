"""The audit sinks' contracts without rsyslog: RFC 5424 structured-data escaping, syslog
over TLS with a checked certificate, confirmation only while the receiver stays, the
configuration's sink tables."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.config import load_config
from gateway.errors import ConfigError
from gateway.stream.record import StreamRecord
from gateway.stream.settings import JsonlSink, SyslogSink
from gateway.stream.sink import SinkError
from gateway.stream.syslog import SyslogTcpSink, format_message
from tests.eventually import eventually
from tests.gateway.http.certs import ca_signed


def record(seq: int, **fields: str) -> StreamRecord:
    values = {
        "actor": "alice",
        "action": "request.create",
        "subject": "rq-1",
        "target": "db01",
        "session": "",
        "grant": "",
        "source": "",
        "outcome": "success",
    }
    values.update(fields)
    return StreamRecord(
        seq=seq,
        at=datetime(2026, 12, 2, 10, 0, 0, 123456, tzinfo=UTC),
        node="gw1",
        details={"reason": 'disk "full"] \\ ok'},
        hash="a" * 64,
        prev_hash="b" * 64,
        **values,
    )


def test_a_message_is_rfc5424_with_escaped_structured_data() -> None:
    settings = SyslogSink(name="s", host="h", port=1)
    message = format_message(record(7, subject='x"]\\y', outcome="failure"), settings)
    head, _, body = message.partition(b"\xef\xbb\xbf")
    assert head.startswith(b"<84>1 2026-12-02T10:00:00.123456Z gw1 lockgate - request.create [")
    assert b'subject="x\\"\\]\\\\y"' in head
    assert b'seq="7"' in head and b'hash="' + b"a" * 64 + b'"' in head
    assert b"session=" not in head  # empty fields are left out
    assert json.loads(body)["details"]["reason"] == 'disk "full"] \\ ok'


def test_an_event_too_long_for_the_receiver_keeps_its_fields_and_hashes() -> None:
    settings = SyslogSink(name="s", host="h", port=1, max_message=1024)
    long = record(9)
    long = StreamRecord(**{**long.__dict__, "details": {"blob": "x" * 5000}})
    message = format_message(long, settings)
    head, _, body = message.partition(b"\xef\xbb\xbf")
    assert len(message) <= 1024
    assert b'truncated="details"' in head and b'hash="' + b"a" * 64 + b'"' in head
    assert json.loads(body)["details"] == {} and json.loads(body)["seq"] == 9
    assert b"truncated" not in format_message(record(9), settings)


class Receiver:
    """A TCP (or TLS) receiver that reads octet-counted frames and can hang up."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.writers: list[asyncio.StreamWriter] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        try:
            while True:
                length = await reader.readuntil(b" ")
                self.frames.append(await reader.readexactly(int(length)))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass

    def hang_up(self) -> None:
        for writer in self.writers:
            writer.close()


@pytest.fixture
async def tls_receiver(tmp_path: Path) -> AsyncIterator[tuple[Receiver, int, Path]]:
    cert = ca_signed()
    receiver = Receiver()
    server = await asyncio.start_server(
        receiver.handle, "127.0.0.1", 0, ssl=cert.server_context(tmp_path)
    )
    ca = tmp_path / "ca.pem"
    ca.write_bytes(cert.ca_pem)
    yield receiver, server.sockets[0].getsockname()[1], ca
    server.close()


async def test_syslog_over_tls_checks_the_receiver_and_confirms_only_while_it_stays(
    tls_receiver: tuple[Receiver, int, Path],
) -> None:
    receiver, port, ca = tls_receiver
    untrusted = SyslogTcpSink(SyslogSink(name="s", host="localhost", port=port, tls=True))
    with pytest.raises(SinkError, match="cannot reach"):
        await untrusted.open()

    sink = SyslogTcpSink(
        SyslogSink(name="s", host="localhost", port=port, tls=True, tls_ca=ca), settle=3600
    )
    await sink.open()
    await sink.send([record(1), record(2)])
    await eventually(lambda: len(receiver.frames) == 2, what="two frames over TLS")
    assert receiver.frames[1].startswith(b"<85>1 ")
    assert await sink.confirmed() == 0  # not yet: the receiver could still vanish
    receiver.hang_up()

    async def refused() -> bool:
        try:
            await sink.confirmed()
        except SinkError:
            return True
        return False

    await eventually(refused, what="the sink noticing the receiver left")
    await sink.close()

    quick = SyslogTcpSink(
        SyslogSink(name="s", host="localhost", port=port, tls=True, tls_ca=ca), settle=0
    )
    await quick.open()
    await quick.send([record(3)])
    assert await quick.confirmed() == 3
    await quick.close()


def test_sinks_are_read_from_the_configuration(tmp_path: Path) -> None:
    path = tmp_path / "lockgate.toml"
    path.write_text(
        '[[audit.sinks]]\nkind = "syslog"\naddress = "siem:6514"\ntls = true\n'
        '[[audit.sinks]]\nkind = "jsonl"\npath = "out/audit.jsonl"\nkeep = 2\n'
    )
    sinks = load_config(path, environ={}).audit_sinks
    assert sinks == (
        SyslogSink(name="syslog", host="siem", port=6514, tls=True),
        JsonlSink(name="jsonl", path=tmp_path / "out" / "audit.jsonl", keep=2),
    )


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('kind = "kafka"', "kind must be syslog or jsonl"),
        ('kind = "syslog"\naddress = "siem"', "expected HOST:PORT"),
        ('kind = "syslog"\naddress = "siem:1"\nport = 2', "unknown key port"),
        ('kind = "jsonl"', "path is required"),
        ('kind = "syslog"\naddress = "s:1"\nfacility = "mail2"', "facility must be"),
    ],
)
def test_a_bad_sink_is_refused_with_its_key(tmp_path: Path, table: str, message: str) -> None:
    path = tmp_path / "lockgate.toml"
    path.write_text(f"[[audit.sinks]]\n{table}\n")
    with pytest.raises(ConfigError, match=message):
        load_config(path, environ={})
