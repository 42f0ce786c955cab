"""OpenID sign-ins in progress, shared by every node through ``gw_oidc_flows``: a flow
started on one node may come back to another from the provider's redirect.

A row is keyed by the SHA-256 of ``state`` and holds no secret: the nonce and the PKCE
verifier are derived from the browser's binding cookie (``derived``), whose value only the
browser holds (the row keeps its SHA-256). ``take`` removes the flow as it returns it, so
each ``state`` serves once, whichever node the callback reaches. Expired flows are removed
when new ones start, and at most ``MAX_FLOWS`` are kept (the oldest go first).
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from gateway.db import SessionMaker
from gateway.db.tables import oidc_flows as table
from gateway.signins.stored import digest
from policy.models import Clock

FLOW_TTL = timedelta(minutes=10)
MAX_FLOWS = 10_000


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def derived(binding: str) -> tuple[str, str, str]:
    """(nonce, PKCE code_verifier, S256 code_challenge) of the browser's binding value: each
    256 bits under its own label, the verifier in RFC 7636's alphabet and length."""
    nonce = _b64(hashlib.sha256(b"lockgate-oidc-nonce\x00" + binding.encode()).digest())
    verifier = _b64(hashlib.sha256(b"lockgate-oidc-pkce\x00" + binding.encode()).digest())
    return nonce, verifier, _b64(hashlib.sha256(verifier.encode()).digest())


@dataclass(frozen=True)
class Flow:
    provider: str
    redirect_uri: str
    next_url: str
    binding: str  # SHA-256 hex of the browser's binding cookie
    created: datetime


class Flows:
    def __init__(self, maker: SessionMaker, clock: Clock) -> None:
        self.maker = maker
        self.clock = clock

    async def put(self, state: str, flow: Flow) -> None:
        now = self.clock()
        async with self.maker() as db, db.begin():
            await db.execute(table.delete().where(table.c.created_at < now - FLOW_TTL))
            count = (await db.execute(sa.select(sa.func.count()).select_from(table))).scalar()
            if int(count or 0) >= MAX_FLOWS:
                oldest = (
                    sa.select(table.c.state_hash)
                    .order_by(table.c.created_at)
                    .limit(int(count or 0) - MAX_FLOWS + 1)
                )
                await db.execute(table.delete().where(table.c.state_hash.in_(oldest)))
            await db.execute(
                table.insert().values(
                    state_hash=digest(state),
                    provider=flow.provider,
                    redirect_uri=flow.redirect_uri,
                    next_url=flow.next_url,
                    binding_hash=flow.binding,
                    created_at=flow.created,
                )
            )

    async def take(self, state: str) -> Flow | None:
        """The flow ``state`` names, removed; None when unknown or already taken."""
        if not state:
            return None
        key = digest(state)
        async with self.maker() as db, db.begin():
            row = (await db.execute(sa.select(table).where(table.c.state_hash == key))).first()
            if row is None:
                return None
            gone = await db.execute(table.delete().where(table.c.state_hash == key))
            if gone.rowcount != 1:  # type: ignore[attr-defined]
                return None  # another node's callback took it first
        created = row.created_at
        created = created.replace(tzinfo=UTC) if created.tzinfo is None else created
        return Flow(row.provider, row.redirect_uri, row.next_url, row.binding_hash, created)
