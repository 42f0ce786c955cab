"""Signals from a SIEM or detector: ``POST /api/v1/signals``, signed with HMAC-SHA256.

The sender signs ``<timestamp>.<body>`` with the shared secret (stored in the vault by
``lockgate signals secret``) and sends ``X-Lockgate-Timestamp: <unix seconds>`` and
``X-Lockgate-Signature: sha256=<hex>``. A signature outside the time window, a wrong
signature and a replay of an accepted signature (remembered in the database, so on every
node) are refused. A signal selects live sessions by session id, user or target and asks
for ``alert``, ``kill`` or ``kill_and_lock``: it can only take access away.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.exc import IntegrityError

from gateway.control import SessionControl
from gateway.db import SessionMaker
from gateway.tables import signals_seen
from gateway.web.problems import Problem
from policy.errors import Conflict, InvalidTransition
from policy.service import SYSTEM_ACTOR, PolicyService
from vault.errors import NotFound as NoCredential
from vault.secret import Secret
from vault.service import VaultService

SIGNAL_TARGET = "lockgate:signals"
SIGNAL_ACCOUNT = "siem"
WINDOW = timedelta(minutes=5)
TIMESTAMP_HEADER = "X-Lockgate-Timestamp"
SIGNATURE_HEADER = "X-Lockgate-Signature"
ACTIONS = ("alert", "kill", "kill_and_lock")


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    """The signature header value a sender computes."""
    mac = hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


async def signal_secret(vault: VaultService) -> Secret:
    try:
        out = await vault.checkout(SIGNAL_TARGET, SIGNAL_ACCOUNT, "signal", actor=SYSTEM_ACTOR)
    except NoCredential:
        raise Problem(
            503, "unavailable", "no signal secret is configured; run: lockgate signals secret"
        ) from None
    return out.secret


def check_signature(
    secret: Secret, timestamp: str, signature: str, body: bytes, now: datetime
) -> str:
    """The digest of an authentic, timely signature (the replay key), else a 401 problem."""
    try:
        sent_at = datetime.fromtimestamp(int(timestamp), tz=now.tzinfo)
    except (ValueError, OverflowError, OSError):
        raise Problem(401, "unauthorized", f"missing or bad {TIMESTAMP_HEADER}") from None
    if abs(now - sent_at) > WINDOW:
        raise Problem(401, "unauthorized", "the signal's timestamp is outside the allowed window")
    expected = sign(secret.reveal(), timestamp, body)
    if not hmac.compare_digest(expected.encode(), signature.strip().encode()):
        raise Problem(401, "unauthorized", "the signal's signature does not verify")
    return hashlib.sha256(expected.encode()).hexdigest()


async def remember(maker: SessionMaker, digest: str, now: datetime) -> None:
    """Record an accepted signature; a second use anywhere in the cluster is refused."""
    try:
        async with maker() as db, db.begin():
            await db.execute(signals_seen.delete().where(signals_seen.c.at < now - 2 * WINDOW))
            await db.execute(signals_seen.insert().values(signature=digest, at=now))
    except IntegrityError:
        raise Problem(
            409, "conflict", "this signal was already received (replay refused)"
        ) from None


@dataclass(frozen=True)
class SignalResult:
    action: str
    sessions: list[str]
    locked: list[str]


async def apply_signal(
    control: SessionControl,
    policy: PolicyService,
    action: str,
    reason: str,
    *,
    session: str | None,
    user: str | None,
    target: str | None,
    source: str,
) -> SignalResult:
    if action not in ACTIONS:
        raise Problem(422, "invalid-input", f"action must be one of {', '.join(ACTIONS)}")
    if not (session or user or target):
        raise Problem(422, "invalid-input", "select sessions by session, user or target")
    reason = " ".join(reason.split())[:200] or "no reason given"
    live = await control.list(SYSTEM_ACTOR, active_only=True)
    chosen = [
        s
        for s in live
        if (session is None or s.id == session)
        and (user is None or s.user == user)
        and (target is None or s.target == target)
    ]
    text = f"signal from {source}: {reason}"
    await control.audit.record(
        actor=f"signal:{source}",
        action=f"signal.{action}",
        subject=session or user or target or "",
        details={"reason": reason, "sessions": [s.id for s in chosen]},
    )
    locked: list[str] = []
    if action == "kill_and_lock":
        names = {s.user for s in chosen} | ({user} if user else set())
        for name in sorted(names):
            with contextlib.suppress(Conflict):  # already locked
                await policy.lock(SYSTEM_ACTOR, "user", name, text)
            locked.append(f"user:{name}")
        if target:
            with contextlib.suppress(Conflict):
                await policy.lock(SYSTEM_ACTOR, "target", target, text)
            locked.append(f"target:{target}")
    if action != "alert":
        for record in chosen:
            with contextlib.suppress(InvalidTransition):  # it ended meanwhile
                await control.terminate(SYSTEM_ACTOR, record.id, text)
    return SignalResult(action, [s.id for s in chosen], locked)
