"""SSH sign-in through the identity provider, device-code style (after RFC 8628).

A person whose user is linked to a provider connects with plain ``ssh``; keyboard-interactive
shows a short link, ``<gateway>/ssh/<code>``, and the SSH login waits. In the browser they
sign in with the provider (a fresh sign-in: at most ``FRESH`` old) and approve the login,
which names the SSH client's address. Only the same user can approve it; each code serves
once and expires with ``TTL``. The codes live in the memory of the node that holds the SSH
connection, like browser sign-ins.
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from policy.models import Clock

TTL = timedelta(minutes=5)
FRESH = timedelta(minutes=10)  # how recent the browser's IdP sign-in must be to approve
_ALPHABET = "BCDFGHJKLMNPQRSTVWXZ"  # no vowels: no words; no look-alike digits


def new_code() -> str:
    raw = "".join(secrets.choice(_ALPHABET) for _ in range(8))
    return f"{raw[:4]}-{raw[4:]}"


@dataclass
class DeviceLogin:
    code: str
    user: str
    address: str
    created: datetime
    done: asyncio.Event = field(default_factory=asyncio.Event)
    approved: bool = False
    # amr values and acr of the approving browser's IdP sign-in (for a rule's idp_mfa)
    methods: frozenset[str] = frozenset()


class DeviceLogins:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._by_code: dict[str, DeviceLogin] = {}

    def start(self, user: str, address: str) -> DeviceLogin:
        now = self.clock()
        for code in [c for c, d in self._by_code.items() if now - d.created > TTL]:
            self._by_code.pop(code).done.set()
        code = new_code()
        while code in self._by_code:
            code = new_code()
        login = DeviceLogin(code, user, address, now)
        self._by_code[code] = login
        return login

    def pending(self, code: str) -> DeviceLogin | None:
        login = self._by_code.get(code.strip().upper())
        if login is None or login.done.is_set() or self.clock() - login.created > TTL:
            return None
        return login

    def decide(
        self, code: str, user: str, approve: bool, methods: frozenset[str] = frozenset()
    ) -> bool:
        """Approve or deny ``code`` as ``user``; False when it is not that user's pending
        login. ``methods``: how the user signed in at the provider (amr, acr)."""
        login = self.pending(code)
        if login is None or not secrets.compare_digest(login.user.encode(), user.encode()):
            return False
        login.approved = approve
        login.methods = methods
        self._by_code.pop(login.code, None)
        login.done.set()
        return True

    async def wait(self, login: DeviceLogin, seconds: float) -> bool:
        """Whether the login was approved within ``seconds`` (real time: it bounds how long
        an unauthenticated connection is held)."""
        try:
            async with asyncio.timeout(seconds):
                await login.done.wait()
        except TimeoutError:
            self._by_code.pop(login.code, None)
            return False
        return login.approved

    def cancel(self, login: DeviceLogin) -> None:
        self._by_code.pop(login.code, None)
        login.done.set()
