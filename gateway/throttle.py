"""Failed-login throttling with growing backoff, per (user, address) first.

A key is locked out once its failures reach its limit, for a period that doubles with every
further failure (capped). While locked out every password attempt fails the same way,
whether or not the user exists and whatever the credential. The keys of one login
(``login_keys``) and their limits:

- ``pair:<user>|<address>``: ``max_failures`` — a stranger guessing alice's password from one
  address locks only that address out of alice, never alice herself;
- ``user:<user>``: ``USER_FACTOR`` x ``max_failures`` over all addresses — a ceiling against a
  distributed guess, far above what one address can reach;
- ``addr:<address>``: ``ADDRESS_FACTOR`` x ``max_failures`` over all names — one address
  spraying many names.

Only password checks consult and feed the throttle: a key login costs no hashing and cannot
be guessed, so password failures never block it. A success clears only its own pair.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

BASE = timedelta(seconds=30)
CAP = timedelta(minutes=15)
FORGET = timedelta(hours=1)
USER_FACTOR = 20
ADDRESS_FACTOR = 4


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

    def login_keys(self, user: str, address: str) -> tuple[str, str, str]:
        return (f"pair:{user}|{address}", f"user:{user}", f"addr:{address}")

    def limit(self, key: str) -> int:
        kind = key.partition(":")[0]
        factor = {"user": USER_FACTOR, "addr": ADDRESS_FACTOR}.get(kind, 1)
        return self.max_failures * factor

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
            over = state.failures - self.limit(key)
            if over >= 0:
                state.until = now + min(BASE * (2 ** min(over, 10)), CAP)
        if len(self._state) > 100_000:  # bound memory under a spray of names
            oldest = sorted(self._state, key=lambda k: self._state[k].last or now)[:50_000]
            for key in oldest:
                del self._state[key]

    def succeeded(self, *keys: str) -> None:
        """A correct password: its pair starts afresh; the user's and the address's counts
        stay (one success must not reset a distributed guess)."""
        for key in keys:
            if key.startswith("pair:"):
                self._state.pop(key, None)
