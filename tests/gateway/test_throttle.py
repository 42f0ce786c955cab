from __future__ import annotations

from datetime import UTC, datetime, timedelta

from gateway.throttle import Throttle


def test_lockout_and_backoff() -> None:
    now = [datetime(2026, 1, 1, tzinfo=UTC)]
    t = Throttle(3, lambda: now[0])
    pair = "pair:alice|1.2.3.4"
    for _ in range(2):
        t.failed(pair)
    assert not t.blocked(pair)
    t.failed(pair)
    assert t.blocked(pair)
    assert not t.blocked("pair:bob|1.2.3.4", "pair:alice|5.6.7.8")
    now[0] += timedelta(seconds=31)
    assert not t.blocked(pair)
    t.failed(pair)  # the fourth failure doubles the lockout
    now[0] += timedelta(seconds=31)
    assert t.blocked(pair)
    now[0] += timedelta(seconds=30)
    assert not t.blocked(pair)
    t.succeeded(pair)
    t.failed(pair)
    assert not t.blocked(pair)
