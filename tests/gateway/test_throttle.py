from __future__ import annotations

from datetime import UTC, datetime, timedelta

from gateway.throttle import Throttle


def test_lockout_and_backoff() -> None:
    now = [datetime(2026, 1, 1, tzinfo=UTC)]
    t = Throttle(3, lambda: now[0])
    for _ in range(2):
        t.failed("user:alice", "addr:1.2.3.4")
    assert not t.blocked("user:alice")
    t.failed("user:alice", "addr:1.2.3.4")
    assert t.blocked("user:alice") and t.blocked("addr:1.2.3.4")
    assert not t.blocked("user:bob", "addr:5.6.7.8")
    now[0] += timedelta(seconds=31)
    assert not t.blocked("user:alice")
    t.failed("user:alice")  # the fourth failure doubles the lockout
    now[0] += timedelta(seconds=31)
    assert t.blocked("user:alice")
    now[0] += timedelta(seconds=30)
    assert not t.blocked("user:alice")
    t.succeeded("user:alice")
    t.failed("user:alice")
    assert not t.blocked("user:alice")
