"""Output rules see what a person reads, however the stream is cut."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from recorder.anomaly import AnomalyEngine, OutputWatcher, parse_anomaly_rule

RULE = {"name": "leak", "match": "output", "pattern": "BEGIN RSA", "action": "kill"}
ENGINE = AnomalyEngine([parse_anomaly_rule(RULE)])
STREAM = (
    "ls\r\n\x1b[01;34mdocs\x1b[0m  key.pem\r\n"
    "\x1b]0;user@host: ~\x07$ cat key.pem\r\n"
    "-----\x1b[1mBEGIN\x1b[0m RSA PRIVATE KEY-----\r\n"
    "h\u00e9llo\r\n"
).encode()


def _hits(watcher: OutputWatcher, pieces: list[bytes]) -> list[str]:
    return [hit.text for piece in pieces for hit in watcher.feed(piece)]


def test_a_line_split_anywhere_still_matches_once() -> None:
    for cut in range(1, len(STREAM)):
        hits = _hits(OutputWatcher(ENGINE), [STREAM[:cut], STREAM[cut:]])
        assert hits == ["-----BEGIN RSA PRIVATE KEY-----"], cut


def test_byte_by_byte() -> None:
    pieces = [STREAM[i : i + 1] for i in range(len(STREAM))]
    assert _hits(OutputWatcher(ENGINE), pieces) == ["-----BEGIN RSA PRIVATE KEY-----"]


def test_no_match_without_the_text_and_a_long_line_is_bounded() -> None:
    watcher = OutputWatcher(ENGINE)
    assert _hits(watcher, [b"BEGIN \x1b[31mDSA\r\n", b"x" * 100_000]) == []
    assert len(watcher._tail) <= 4096


@given(st.binary(max_size=2000), st.integers(min_value=0, max_value=2**32))
def test_arbitrary_bytes_never_raise(data: bytes, seed: int) -> None:
    rnd = random.Random(seed)
    watcher = OutputWatcher(ENGINE)
    pos = 0
    while pos < len(data):
        step = rnd.randint(1, 64)
        watcher.feed(data[pos : pos + step])
        pos += step
