"""The notification sender: delivers due outbox rows through their channel, one attempt
each; a failure is retried with backoff (``outbox.backoff``) until the channel's
``max_attempts``, then kept as a dead letter (``lockgate notifications dead``, ``GET
/api/v1/notifications?state=dead``) until someone retries it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from datetime import datetime

import aiohttp

from gateway.notify.chat import deliver_chat
from gateway.notify.delivery import DeliveryError
from gateway.notify.mail import deliver_mail
from gateway.notify.outbox import KEEP_SENT, Outbox, Outgoing
from gateway.notify.settings import Channel
from gateway.notify.webhook import deliver_webhook
from policy.service import SYSTEM_ACTOR
from vault.errors import NotFound as NoCredential
from vault.secret import Secret
from vault.service import VaultService

log = logging.getLogger("lockgate.notify")
VAULT_TARGET = "lockgate:notify"  # vault: account = channel name (webhook key, SMTP password)
SECRET_TTL = 300.0  # seconds a checked-out secret is reused (each checkout is audited)
POLL = 0.2
PRUNE_EVERY = 3600.0  # seconds


class Sender:
    def __init__(
        self,
        outbox: Outbox,
        channels: Sequence[Channel],
        vault: VaultService,
        clock: Callable[[], datetime],
        *,
        poll: float = POLL,
    ) -> None:
        self.outbox = outbox
        self.channels = {c.name: c for c in channels}
        self.vault = vault
        self.clock = clock
        self.poll = poll
        self._secrets: dict[str, tuple[float, Secret | None]] = {}
        self._http: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._http is not None:
            await self._http.close()

    async def _run(self) -> None:
        self._http = aiohttp.ClientSession()
        pruned = 0.0
        while True:
            try:
                if time.monotonic() - pruned > PRUNE_EVERY:
                    await self.outbox.prune(self.clock() - KEEP_SENT)
                    pruned = time.monotonic()
                rows = await self.outbox.claim_due(self.clock())
                held: set[str] = set()  # channels whose older notification just failed
                for row in rows:
                    if row.channel in held:
                        await self.outbox.release(row)
                    elif await self.attempt(row) == "pending":
                        held.add(row.channel)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("notification sender")
            await asyncio.sleep(self.poll)

    async def attempt(self, row: Outgoing) -> str:
        """One delivery of ``row``; its new state (sent, pending or dead)."""
        channel = self.channels.get(row.channel)
        if channel is None:
            error = f"channel {row.channel} is no longer configured"
            return await self.outbox.failed(row, error, self.clock(), max_attempts=1)
        try:
            await self._deliver(channel, row)
        except DeliveryError as exc:
            state = await self.outbox.failed(row, str(exc), self.clock(), channel.max_attempts)
            log.warning("notification %s to %s: %s (%s)", row.key, channel.name, exc, state)
            return state
        await self.outbox.sent(row, self.clock())
        return "sent"

    async def _secret(self, channel: Channel) -> Secret | None:
        cached = self._secrets.get(channel.name)
        if cached is not None and time.monotonic() - cached[0] < SECRET_TTL:
            return cached[1]
        try:
            out = await self.vault.checkout(
                VAULT_TARGET, channel.name, f"notify:{channel.name}", actor=SYSTEM_ACTOR
            )
            secret = out.secret
        except NoCredential:
            return None  # not cached: the operator may set it any moment
        self._secrets[channel.name] = (time.monotonic(), secret)
        return secret

    async def _deliver(self, channel: Channel, row: Outgoing) -> None:
        assert self._http is not None
        notice = row.payload["notice"]
        if channel.kind == "webhook":
            stamp = str(int(self.clock().timestamp()))
            await deliver_webhook(self._http, channel, notice, await self._secret(channel), stamp)
        elif channel.kind == "slack":
            url = channel.url
            if not url:
                secret = await self._secret(channel)
                if secret is None:
                    raise DeliveryError(
                        f"no webhook URL for {channel.name}; run: lockgate notifications "
                        f"secret {channel.name} --value-stdin"
                    )
                url = secret.reveal_text()
            await deliver_chat(self._http, channel, notice, url)
        else:
            password = await self._secret(channel) if channel.username else None
            await deliver_mail(channel, notice, row.payload.get("recipients", []), password)
