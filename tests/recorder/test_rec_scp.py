"""Legacy scp: which commands are a plain scp server, and the files its stream moves."""

from __future__ import annotations

from typing import Any

import pytest

from recorder.scp import ScpCommand, ScpTracker, legacy_scp


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("scp -t /tmp/x", ScpCommand("upload", "/tmp/x")),
        ("scp -v -d -t -- /tmp/", ScpCommand("upload", "/tmp/", True)),
        ("scp -r -f '/srv/my dir'", ScpCommand("download", "/srv/my dir", True)),
        ("/usr/bin/scp -pf /etc/hosts", ScpCommand("download", "/etc/hosts")),
    ],
)
def test_a_plain_scp_server_command_is_a_transfer(command: str, expected: ScpCommand) -> None:
    assert legacy_scp(command) == expected


@pytest.mark.parametrize(
    "command",
    [
        "scp -t /tmp/x; id",
        "scp -t /tmp/x && id",
        "scp -t $(id)",
        "scp -t /tmp/a /tmp/b",
        "scp -t -f /tmp/x",
        "scp /tmp/x",
        "scp -S /bin/sh -t /tmp/x",
        "scp -o ProxyCommand=id -t x",
        "scpx -t /tmp/x",
        "sh -c 'scp -t /tmp/x'",
        "scp -t 'unterminated",
        "scp -t /tmp/*",
    ],
)
def test_anything_else_stays_an_exec(command: str) -> None:
    assert legacy_scp(command) is None


def test_a_recursive_upload_reports_each_file_under_its_directory() -> None:
    ops: list[dict[str, Any]] = []
    tracker = ScpTracker(ScpCommand("upload", "/tmp/dst", True), lambda op: ops.append(dict(op)))
    stream = b"D0755 0 top\nC0644 5 a.txt\nhello\x00T1 0 1 0\nC0600 3 b\nxyz\x00E\n"
    for i in range(len(stream)):  # byte by byte: any split of the stream parses alike
        tracker.source(stream[i : i + 1])
    tracker.source(b"C0644 10 late\nabc")
    tracker.finish()
    assert [(o["op"], o["path"], o["bytes"], o["result"]) for o in ops] == [
        ("upload", "/tmp/dst/top/a.txt", 5, "ok"),
        ("upload", "/tmp/dst/top/b", 3, "ok"),
        ("upload", "/tmp/dst/late", 3, "interrupted"),
    ]


def test_a_refused_file_and_garbage_are_reported_once() -> None:
    ops: list[dict[str, Any]] = []
    tracker = ScpTracker(ScpCommand("download", "/etc/shadow"), lambda op: ops.append(dict(op)))
    tracker.source(b"\x01scp: /etc/shadow: Permission denied\n")
    tracker.source(b"Z garbage\n")
    tracker.source(b"C0644 1 x\n")
    assert ops == [
        {"op": "download", "path": "/etc/shadow", "result": "failed"},
        {"op": "unparsed"},
    ]
