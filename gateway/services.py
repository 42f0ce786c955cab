"""Wires the libraries and the gateway's session core into one set of services.

Used by the CLI on the gateway host, by ``lockgate serve`` and by the HTTP API, so all
three go through the same service layer. Opening fails closed: an unreachable database, a
missing or unreadable master key, or an audit log that cannot be written raises
``StartupError`` with one line that says which.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import QueuePool

from gateway.access import Access
from gateway.audit import AuditLog
from gateway.cluster.liveness import Liveness
from gateway.config import Config
from gateway.credentials import Credentials
from gateway.db import READ_ONLY, SessionMaker, create_engine, driver_says, sessionmaker
from gateway.db.tables import SCHEMA_REVISION, audit_head
from gateway.errors import StartupError
from gateway.hashing import HashPool
from gateway.oidc.identities import Identities
from gateway.provision.service import Provisioner
from gateway.refusals import RefusalLog
from gateway.sessions.records import SessionStore
from gateway.tickets import TicketChecker
from policy.models import Clock, utcnow
from policy.service import PolicyService
from vault.errors import VaultError
from vault.keys import Keyring, KeyringSource
from vault.service import VaultService

log = logging.getLogger(__name__)


@dataclass
class Services:
    config: Config
    engine: AsyncEngine
    maker: SessionMaker
    audit: AuditLog
    keyring: Keyring
    policy: PolicyService
    vault: VaultService
    sessions: SessionStore
    access: Access
    credentials: Credentials
    provisioner: Provisioner
    hashing: HashPool
    refusals: RefusalLog
    nodes: Liveness

    async def aclose(self) -> None:
        self.hashing.close()
        pool = self.engine.pool
        in_use = pool.checkedout() if isinstance(pool, QueuePool) else 0
        if in_use:
            # dispose() leaves them open: on SQLite one may still hold the write lock
            log.warning("%d database connection(s) still in use at stop", in_use)
        await self.engine.dispose()


def safe_url(url: str) -> str:
    """The database URL with any password masked, for messages."""
    return make_url(url).render_as_string(hide_password=True)


async def check_database(engine: AsyncEngine) -> None:
    """Raise StartupError unless the database answers, has the audit chain initialised and
    has this release's schema (or a newer release's)."""
    try:
        async with engine.connect() as conn:
            await conn.execution_options(**READ_ONLY)  # answering is enough: no write lock
            head = (await conn.execute(sa.select(audit_head.c.seq))).first()
            version = sa.text("SELECT version_num FROM alembic_version")
            revision = (await conn.execute(version)).scalar()
    except Exception as exc:
        if "no such table" in str(exc) or "does not exist" in str(exc):
            raise StartupError(
                "the database has no Lockgate schema; run: lockgate db upgrade"
            ) from None
        raise StartupError(
            f"database unreachable at {safe_url(str(engine.url))} ({driver_says(exc)})"
        ) from None
    if head is None:
        raise StartupError("the audit log is not initialised; run: lockgate db upgrade")
    if revision == SCHEMA_REVISION:
        return
    # Revisions are numbered. A newer schema is a newer release's, in a rolling upgrade: its
    # migrations only add, so this one runs on it. An older one lacks what this one writes.
    if revision is not None and revision.isdigit() and int(revision) > int(SCHEMA_REVISION):
        log.warning(
            "the database schema is at %s, newer than this release's %s", revision, SCHEMA_REVISION
        )
        return
    raise StartupError(
        f"the database schema is at {revision or 'no revision'}; this release needs "
        f"{SCHEMA_REVISION}: run: lockgate db upgrade"
    )


async def open_services(config: Config, *, clock: Clock = utcnow, check: bool = True) -> Services:
    """Build every service. With ``check`` (the default) verify the database and vault first."""
    source = KeyringSource(config.master_key)
    try:
        keyring = source.load()
    except VaultError as exc:
        raise StartupError(f"vault cannot be unsealed: {exc}") from None
    engine = create_engine(config.database_url)
    try:
        if check:
            await check_database(engine)
    except BaseException:
        await engine.dispose()
        raise
    maker = sessionmaker(engine)
    audit = AuditLog(maker, node=config.server.node_name, clock=clock)
    tickets = TicketChecker(config.tickets) if config.tickets.url else None
    hashing = HashPool(config.limits.login_workers, config.limits.login_queue)
    policy = PolicyService(
        maker,
        config.rules,
        audit,
        clock=clock,
        tickets=tickets,
        password_check=hashing.verify,
    )
    vault = VaultService(maker, keyring, audit, clock=clock, source=source)
    sessions = SessionStore(maker, policy, audit, config.server.node_name)
    server = config.server
    return Services(
        config=config,
        engine=engine,
        maker=maker,
        audit=audit,
        keyring=keyring,
        policy=policy,
        vault=vault,
        sessions=sessions,
        access=Access(policy, vault, Identities(maker), password_roles=config.password_login_roles),
        credentials=Credentials(vault),
        provisioner=Provisioner(
            maker, audit, policy, vault, node=config.server.node_name, clock=clock
        ),
        hashing=hashing,
        refusals=RefusalLog(audit, clock),
        nodes=Liveness(
            maker,
            sessions,
            audit,
            server.node_name,
            clock,
            parent=server.supervisor,
            workers=server.workers if server.supervisor else 1,
            interval=server.heartbeat_interval,
            lost_after=server.node_lost_after,
        ),
    )
