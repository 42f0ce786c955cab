"""The fast path's HTTP reading (``gateway.http.wire``) against a plain statement of its
subset, line by line, on generated heads that mix clean and hostile pieces."""

from __future__ import annotations

import contextlib
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.http.framing import MAX_HEADERS
from gateway.http.wire import MAX_LINE, BadResponse, request_head, response_head

NAME = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
VALUE = re.compile(rb"[\x20-\x7e\t]*")


def spec_fields(lines: list[bytes]) -> list[tuple[str, str]] | None:
    """Each line a token, a colon and visible ASCII, space or tab, under MAX_LINE."""
    fields = []
    for line in lines:
        name, colon, value = line.partition(b":")
        if len(line) > MAX_LINE or not colon or not NAME.fullmatch(name):
            return None
        if not VALUE.fullmatch(value):
            return None
        fields.append((name.decode(), value.strip(b" \t").decode()))
    return fields


def spec_request(head: bytes) -> tuple[str, str, list[tuple[str, str]]] | None:
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or parts[2] != b"HTTP/1.1" or not NAME.fullmatch(parts[0]):
        return None
    if not re.fullmatch(rb"/[\x21-\x7e]*", parts[1]) or len(lines[0]) > MAX_LINE:
        return None
    fields = spec_fields(lines[1:])
    if fields is None or len(fields) > MAX_HEADERS:
        return None
    names = [n.lower() for n, _ in fields]
    if {"transfer-encoding", "upgrade", "expect"} & set(names) or names.count("host") != 1:
        return None
    lengths = [v for n, v in fields if n.lower() == "content-length"]
    if len(lengths) > 1 or any(not re.fullmatch(r"[0-9]{1,18}", n) for n in lengths):
        return None
    return parts[0].decode(), parts[1].decode(), fields


CLEAN = [
    b"Host: app.example",
    b"Accept: */*",
    b"Cookie: a=1; lockgate_target=xyz",
    b"Connection: keep-alive",
    b"Content-Length: 5",
    b"X-Empty:",
    b"User-Agent:  Mozilla/5.0 (X11)\t",
]
HOSTILE = [
    b" folded continuation",  # obs-fold
    b"\tfolded",
    b"Host: second.example",
    b"Content-Length: 5",
    b"Content-Length: 5, 5",
    b"Content-Length: +5",
    b"Transfer-Encoding: chunked",
    b"Upgrade: websocket",
    b"Expect: 100-continue",
    b"Bad Name: x",
    b"NoColon",
    b": empty name",
    b"X-Nul: a\x00b",
    b"X-High: caf\xc3\xa9",
    b"X-Cr: a\rb",
    b"X-Lf: a\nb",
    b"X-Long: " + b"a" * MAX_LINE,
    b"",
]
FIRST = [
    b"GET /t/app/ HTTP/1.1",
    b"HEAD /x?y=1 HTTP/1.1",
    b"POST /form HTTP/1.1",
    b"GET /a b HTTP/1.1",
    b"GET http://other/ HTTP/1.1",
    b"GET / HTTP/1.0",
    b"GET  / HTTP/1.1",
    b"G\xc3T / HTTP/1.1",
    b"GET /\x7f HTTP/1.1",
]


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(FIRST), st.lists(st.sampled_from(CLEAN + HOSTILE), max_size=8))
def test_a_request_is_read_exactly_as_its_subset_says(first: bytes, lines: list[bytes]) -> None:
    head = b"\r\n".join([first, *lines])
    read, spec = request_head(head), spec_request(head)
    if spec is None:
        assert read is None
        return
    assert read is not None
    assert (read.method, read.target, list(read.headers.items())) == spec
    lengths = [int(v) for n, v in spec[2] if n.lower() == "content-length"]
    assert read.length == (lengths[0] if lengths else None)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(FIRST),
    st.sampled_from(FIRST),
    st.lists(st.sampled_from(CLEAN + HOSTILE), max_size=6),
    st.lists(st.sampled_from(CLEAN + HOSTILE), max_size=6),
    st.booleans(),
)
def test_a_head_read_after_another_reads_as_it_reads_alone(
    first: bytes, second: bytes, lines: list[bytes], others: list[bytes], same: bool
) -> None:
    previous = request_head(b"\r\n".join([first, *lines]))
    head = b"\r\n".join([second, *(lines if same else others)])
    read, alone = request_head(head, previous), request_head(head)
    if alone is None:
        assert read is None
        return
    assert read is not None
    assert (read.method, read.target, read.host, read.close, read.length, read.block) == (
        alone.method, alone.target, alone.host, alone.close, alone.length, alone.block,
    )  # fmt: skip
    assert list(read.headers.items()) == list(alone.headers.items())


def test_more_fields_or_longer_lines_than_the_caps_go_to_the_full_path() -> None:
    fields = [b"Host: a"] + [b"X-%d: v" % i for i in range(MAX_HEADERS)]
    assert request_head(b"\r\n".join([b"GET / HTTP/1.1", *fields[:MAX_HEADERS]])) is not None
    assert request_head(b"\r\n".join([b"GET / HTTP/1.1", *fields])) is None
    for extra, accepted in ((0, True), (1, False)):
        field = b"X-Long: " + b"a" * (MAX_LINE - 8 + extra)
        assert (request_head(b"GET / HTTP/1.1\r\nHost: a\r\n" + field) is not None) is accepted
        line = b"GET /" + b"a" * (MAX_LINE - 14 + extra) + b" HTTP/1.1"
        assert (request_head(line + b"\r\nHost: a") is not None) is accepted
        with pytest.raises(BadResponse) if not accepted else contextlib.nullcontext():
            response_head(b"HTTP/1.1 200 OK\r\n" + field)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from([b"HTTP/1.1 200 OK", b"HTTP/1.0 304 Not Modified", b"HTTP/1.1 204"]),
    st.lists(
        st.sampled_from(
            [
                b"Content-Type: text/plain",
                b"Content-Length: 10",
                b"Content-Length: 11",
                b"Transfer-Encoding: chunked",
                b"Transfer-Encoding: gzip",
                b"Connection: close",
                b"Connection: keep-alive",
                b"Set-Cookie: a=1",
                b" folded",
                b"X-Nul: \x00",
                b"X-High: \xff",
            ]
        ),
        max_size=6,
    ),
)
def test_a_response_is_refused_unless_it_frames_one_way(first: bytes, lines: list[bytes]) -> None:
    head = b"\r\n".join([first, *lines])
    fields = spec_fields(lines)
    lengths = {v for n, v in fields or () if n == "Content-Length"}
    codings = [v for n, v in fields or () if n == "Transfer-Encoding"]
    clear = (
        fields is not None
        and len(lengths) <= 1
        and (not codings or (not lengths and codings == ["chunked"]))
    )
    if not clear:
        with pytest.raises(BadResponse):
            response_head(head)
        return
    read = response_head(head)
    assert fields is not None and list(read.headers.items()) == fields
    assert read.length == (int(lengths.pop()) if lengths else None)
    assert read.chunked == bool(codings)
    connection = {v.lower() for n, v in fields if n == "Connection"}  # every field: close wins
    http10 = first.startswith(b"HTTP/1.0")
    assert read.keep_alive == (
        "close" not in connection and (not http10 or "keep-alive" in connection)
    )


def test_a_read_head_keeps_the_clients_cookies_out_of_its_repr() -> None:
    head = request_head(b"GET / HTTP/1.1\r\nHost: a\r\nCookie: lockgate_t_a=sign-in-token-7f3c")
    assert head is not None and head.headers["Cookie"] == "lockgate_t_a=sign-in-token-7f3c"
    assert "sign-in-token-7f3c" not in repr(head)
