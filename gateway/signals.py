"""Signals from a SIEM or detector: ``POST /api/v1/signals``, signed with HMAC-SHA256.

The sender signs ``<timestamp>.<body>`` with the shared secret (stored in the vault by
``lockgate signals secret``) and sends ``X-Lockgate-Timestamp: <unix seconds>`` and
``X-Lockgate-Signature: sha256=<hex>``. A signature outside the time window, a wrong
signature and a replay of an accepted signature (remembered in the database, so on every
node) are refused. A signal selects live sessions by session id, user or target and asks
for ``alert``, ``kill`` or ``kill_and_lock``; ``gateway.sessions.enforce`` carries it out.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime, timedelta

from sqlalchemy.exc import IntegrityError

from gateway.db import SessionMaker
from gateway.db.tables import signals_seen
from gateway.errors import SignalRejected, SignalReplayed, SignalsNotConfigured
from policy.service import SYSTEM_ACTOR
from vault.errors import NotFound as NoCredential
from vault.secret import Secret
from vault.service import VaultService

SIGNAL_TARGET = "lockgate:signals"
SIGNAL_ACCOUNT = "siem"
WINDOW = timedelta(minutes=5)
TIMESTAMP_HEADER = "X-Lockgate-Timestamp"
SIGNATURE_HEADER = "X-Lockgate-Signature"


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    """The signature header value a sender computes."""
    mac = hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


async def signal_secret(vault: VaultService) -> Secret:
    try:
        out = await vault.checkout(SIGNAL_TARGET, SIGNAL_ACCOUNT, "signal", actor=SYSTEM_ACTOR)
    except NoCredential:
        raise SignalsNotConfigured(
            "no signal secret is configured; run: lockgate signals secret"
        ) from None
    return out.secret


def check_signature(
    secret: Secret, timestamp: str, signature: str, body: bytes, now: datetime
) -> str:
    """The digest of an authentic, timely signature (the replay key), else SignalRejected.
    The comparison is constant-time."""
    try:
        sent_at = datetime.fromtimestamp(int(timestamp), tz=now.tzinfo)
    except (ValueError, OverflowError, OSError):
        raise SignalRejected(f"missing or bad {TIMESTAMP_HEADER}") from None
    if abs(now - sent_at) > WINDOW:
        raise SignalRejected("the signal's timestamp is outside the allowed window")
    expected = sign(secret.reveal(), timestamp, body)
    if not hmac.compare_digest(expected.encode(), signature.strip().encode()):
        raise SignalRejected("the signal's signature does not verify")
    return hashlib.sha256(expected.encode()).hexdigest()


async def remember(maker: SessionMaker, digest: str, now: datetime) -> None:
    """Record an accepted signature; a second use anywhere in the cluster is refused."""
    try:
        async with maker() as db, db.begin():
            await db.execute(signals_seen.delete().where(signals_seen.c.at < now - 2 * WINDOW))
            await db.execute(signals_seen.insert().values(signature=digest, at=now))
    except IntegrityError:
        raise SignalReplayed("this signal was already received (replay refused)") from None
