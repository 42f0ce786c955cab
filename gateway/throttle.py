"""Failed-login throttling per user and per source address, with growing backoff.

After ``max_failures`` failures a key (user or address) is locked out for a period that
doubles with every further failure (capped). While locked out every attempt fails the same
way, whether or not the user exists and whatever the credential.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

BASE = timedelta(seconds=30)
CAP = timedelta(minutes=15)
FORGET = timedelta(hours=1)


@dataclass
class _State:
    failures: int = 0
    until: datetime | None = None
    last: datetime | None = None


class Throttle:
    def __init__(self, max_failures: int, clock: Callable[[], datetime]) -> None:
        self.max_failures = max_failures
        self.clock = clock
        self._state: dict[str, _State] = {}

    def blocked(self, *keys: str) -> bool:
        now = self.clock()
        return any(
            (s := self._state.get(k)) is not None and s.until is not None and now < s.until
            for k in keys
        )

    def failed(self, *keys: str) -> None:
        now = self.clock()
        for key in keys:
            state = self._state.setdefault(key, _State())
            if state.last is not None and now - state.last > FORGET:
                state.failures = 0
            state.failures += 1
            state.last = now
            over = state.failures - self.max_failures
            if over >= 0:
                state.until = now + min(BASE * (2 ** min(over, 10)), CAP)
        if len(self._state) > 100_000:  # bound memory under a spray of names
            oldest = sorted(self._state, key=lambda k: self._state[k].last or now)[:50_000]
            for key in oldest:
                del self._state[key]

    def succeeded(self, *keys: str) -> None:
        for key in keys:
            self._state.pop(key, None)
