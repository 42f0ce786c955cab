from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from recorder.commandline import LineTracker, TypedLine


def test_editing_keys() -> None:
    t = LineTracker()
    assert t.feed(b"ls -la\r") == [TypedLine("ls -la", True)]
    assert t.feed(b"rm -rf /tmpx\x7f\r") == [TypedLine("rm -rf /tmp", True)]
    assert t.feed(b"junk\x15echo hi\r") == [TypedLine("echo hi", True)]
    assert t.feed(b"echo one two\x17three\r") == [TypedLine("echo one three", True)]
    assert t.feed(b"sleep 100\x03") == []
    assert t.feed(b"\r") == [TypedLine("", True)]
    assert t.feed(b"sys\ttemctl stop x\r") == [TypedLine("systemctl stop x", False)]
    assert t.feed(b"\x1b[Aagain\r") == [TypedLine("again", False)]
    assert t.feed(b"a\rb\r") == [TypedLine("a", True), TypedLine("b", True)]
    assert t.feed("écho\x7f\x7f\x7f\x7fecho ü\r".encode()) == [TypedLine("echo ü", True)]


@given(st.binary(max_size=500))
def test_never_crashes(data: bytes) -> None:
    t = LineTracker()
    for line in t.feed(data):
        assert "\r" not in line.text and "\n" not in line.text
