"""Building and running one gateway node: ``lockgate serve`` and ``lockgate demo``.

Start-up fails closed: no database, no vault key, no writable audit log, no host key or no
writable recordings directory means the node does not serve. On SIGTERM/SIGINT every live
session gets the termination line and its recording is sealed before the process exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import asyncssh
from aiohttp import web

from gateway.audit import OWED_KIND
from gateway.cluster.bus import ClusterBus, ClusterEvent, EventKind
from gateway.config import Config
from gateway.db.clock import ClockWatch
from gateway.errors import AuditError, StartupError
from gateway.http.assertion import JWKS_PATH, AssertionSigner, jwks_handler
from gateway.http.fastpath import FastFront, FastSite
from gateway.http.proxy import GatewaySite, WebProxy
from gateway.http.relay import Relay
from gateway.http.session import WebCore
from gateway.http.upstream import UpstreamPool
from gateway.metrics import Metrics, kill_reason
from gateway.notify.notifier import Notifier
from gateway.oidc.federation import Federation
from gateway.owed import OwedWrites
from gateway.proxies import TrustedProxies
from gateway.scaleout import Listeners, join_cluster
from gateway.services import Services, check_database, open_services
from gateway.sessions.enforce import Enforcer
from gateway.sessions.killswitch import KillSwitch, RealTimer, Timer
from gateway.sessions.records import RESTARTED
from gateway.sessions.registry import SessionRegistry
from gateway.signins.browser import BrowserSessions
from gateway.ssh.listener import SshGateway
from gateway.ssh.proxied import ProxiedAcceptor
from gateway.startup import check_recordings, load_host_keys, raise_fd_limit
from gateway.stream.cursor import CursorStore
from gateway.stream.streamer import AuditStreamer, build_sink
from gateway.throttle import Throttle
from gateway.web.app import FOREIGN, build_app
from gateway.web.auth import PRINCIPAL, SignIn, scheme
from gateway.web.deps import Deps
from gateway.web.server import (
    AUTHENTICATED,
    ConnectionGuard,
    GuardedSite,
    HttpLimits,
    aiohttp_handlers,
)
from policy import passwords
from policy.service import SYSTEM_ACTOR
from recorder.anomaly import AnomalyEngine
from recorder.follow import LiveIndexer
from recorder.recorder import Recorder
from recorder.salvage import seal_interrupted
from recorder.slots import HostSlots
from recorder.store import INDEX_WORKERS, RecordingStore
from recorder.writer import Seal

log = logging.getLogger(__name__)
BACKSTOP_RECHECK = 30.0  # seconds; cluster events normally arrive far sooner
STREAM_DRAIN = 3.0  # seconds a stopping node waits for its audit sinks to catch up
# Seconds a stopping node lets HTTP requests still in flight finish (its sessions are already
# ended); aiohttp's own default is 60.
HTTP_STOP_GRACE = 5.0
ASSERTION_KEY = "assertion_signing_key.pem"  # in server.data_dir, 0600; shared by a cluster


def public_host(config: Config) -> str:
    host = config.server.ssh_listen.host
    return socket.gethostname() if host in ("0.0.0.0", "::", "") else host  # noqa: S104


@dataclass
class Node:
    config: Config
    services: Services
    registry: SessionRegistry
    gateway: SshGateway
    killswitch: KillSwitch
    bus: ClusterBus
    metrics: Metrics
    clock: ClockWatch
    owed: OwedWrites | None = None
    acceptor: asyncssh.SSHAcceptor | ProxiedAcceptor | None = None
    runner: web.AppRunner | None = None
    front: FastFront | None = None
    deps: Deps | None = None
    proxy: WebProxy | None = None
    streamer: AuditStreamer | None = None
    notifier: Notifier | None = None
    extra: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def ssh_port(self) -> int:
        assert self.acceptor is not None
        return int(self.acceptor.get_port())

    @property
    def http_port(self) -> int:
        assert self.runner is not None
        site = next(iter(self.runner.sites))
        return int(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]

    async def on_event(self, event: ClusterEvent) -> None:
        if event.kind == EventKind.TERMINATE:
            started = time.monotonic()
            reason = str(event.payload.get("reason", "terminated"))
            by = event.payload.get("by")
            text = f"terminated by {by}: {reason}" if by else reason
            if await self.registry.terminate(str(event.payload.get("session")), text):
                self.metrics.kills_total.labels(kill_reason(text)).inc()
                self.metrics.kill_latency.observe(time.monotonic() - started)
            if by:  # an admin's terminate also takes away what was provisioned for it
                await self._unprovision(str(event.payload.get("session")), text)
        elif event.kind == EventKind.RECHECK:
            self.services.provisioner.wake()
            await self.killswitch.recheck_all()

    async def _unprovision(self, session_id: str, reason: str) -> None:
        try:
            record = await self.services.sessions.get(SYSTEM_ACTOR, session_id)
            await self.services.provisioner.take_away(record.target, record.grant_id, reason)
        except Exception:
            log.exception("taking away what was provisioned for session %s failed", session_id)

    async def _backstop(self) -> None:
        while True:
            await asyncio.sleep(BACKSTOP_RECHECK)
            with contextlib.suppress(Exception):
                await self.killswitch.end_expired(await self.clock.check())
            with contextlib.suppress(Exception):
                await self.killswitch.recheck_all()
                await self.services.policy.expire_requests()

    async def stop(self, reason: str = "gateway shutdown") -> None:
        if self.acceptor is not None:
            self.acceptor.close()
        await self.registry.terminate_all(reason)
        for task in self._tasks:
            task.cancel()
        # before the database closes: a task cut off inside a query would wait forever
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.killswitch.aclose()
        await self.services.provisioner.aclose()
        await self.bus.stop()
        if self.front is not None:
            self.front.close()
        if self.runner is not None:
            await self.runner.cleanup()
        for closer in self.extra:
            await closer()
        if self.owed is not None and self.owed.count:
            with contextlib.suppress(Exception):  # what is still owed waits in the journal
                await self.owed.replay()
        with contextlib.suppress(Exception):
            await self.services.nodes.stopped()
        await self.services.audit.record_or_owe(
            actor="lockgate", action="node.stop", subject=self.config.server.node_name
        )
        if self.notifier is not None:
            await self.notifier.aclose()
        if self.streamer is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(STREAM_DRAIN):
                    await self.streamer.drain()
            await self.streamer.aclose()
        await self.services.aclose()


async def start_node(
    config: Config,
    *,
    timer: Timer | None = None,
    extra_rules: tuple[Any, ...] = (),
    listeners: Listeners | None = None,
    leftovers: str = RESTARTED,
) -> Node:
    """Build every part and open the listeners; raises StartupError when it cannot serve.
    ``timer`` is the clock of policy decisions and expiry (tests pass a fake one);
    ``listeners`` the shared sockets of a worker; ``leftovers`` the end reason of sessions
    this node's previous run left live (a worker restarted after a crash: ``worker lost``)."""
    if extra_rules:
        config = replace(config, rules=(*config.rules, *extra_rules))
    raise_fd_limit()
    host_keys = load_host_keys(config)
    check_recordings(config.recordings_path)
    timer = timer or RealTimer()
    services = await open_services(config, clock=timer.now)
    await asyncio.to_thread(passwords.warm)  # before any sign-in can be timed
    try:
        try:
            await services.audit.record(
                actor="lockgate", action="node.start", subject=config.server.node_name
            )
        except AuditError as exc:
            raise StartupError(str(exc)) from None
        metrics = Metrics()
        registry = SessionRegistry()
        registry.on_change.append(lambda s, added: metrics.sessions_active.set(len(registry)))
        recordings = RecordingStore(
            config.recordings_path,
            services.maker,
            host_slots=HostSlots(config.server.data_dir / "index-slots", INDEX_WORKERS),
        )
        owed = OwedWrites(
            config.server.data_dir / f"owed-{config.server.node_name}.jsonl",
            on_count=metrics.db_outage_queued.set,
        )
        services.sessions.owed = owed
        services.audit.owe = owed.owe_if_room

        async def defer_seal(seal: Seal, reason: str) -> None:
            await owed.owe("recording.seal", {**_seal_payload(seal), "reason": reason})

        recorder = Recorder(
            config.recordings_path,
            services.maker,
            on_sealed=recordings.index_later,
            defer_seal=defer_seal,
        )

        async def store_seal(payload: Mapping[str, Any]) -> None:
            seal = Seal(
                str(payload["session_id"]),
                Path(str(payload["path"])),
                str(payload["sha256"]),
                str(payload["chain_head"]),
                int(payload["size"]),
                float(payload["duration"]),
            )
            await recorder.store_seal(seal, str(payload["reason"]))
            recordings.index_later(seal.session_id)

        owed.register("session.end", services.sessions.write_end)
        owed.register("session.ops", services.sessions.write_operations)
        owed.register("recording.seal", store_seal)
        owed.register(OWED_KIND, services.audit.write_owed)
        # What the last run still owes goes first: sweeping before it would end those
        # sessions as "gateway restarted", and the replay then find them ended (the true end,
        # its moment and its reason, lost).
        await owed.replay()
        stale = await services.sessions.sweep_stale(
            owed.owed_ids("session.end", "session"), leftovers
        )
        enforcer = Enforcer(registry, services.sessions, services.policy, services.audit)
        gateway = SshGateway(
            services,
            enforcer,
            registry,
            recorder,
            AnomalyEngine(config.anomaly_rules),
            Throttle(config.max_failed_logins, services.policy.now, services.maker),
            host_keys,
            metrics,
            gateway_host=public_host(config),
        )
        killswitch = KillSwitch(registry, timer, services.access.recheck)
        bus = ClusterBus(
            services.maker,
            config.server.node_name,
            clock=timer.now,
            on_listen_reconnect=metrics.cluster_listen_reconnects.inc,
        )
        clock = ClockWatch(services.engine, timer.now)
        node = Node(config, services, registry, gateway, killswitch, bus, metrics, clock)
        node.owed = owed
        with contextlib.suppress(Exception):  # a first reading for /readyz; retried on a timer
            await clock.check()
        node.extra.append(recordings.aclose)
        services.nodes.host_key = host_keys[0].get_fingerprint()
        liveness = await join_cluster(services, registry, recordings)
        await seal_interrupted(
            config.recordings_path, services.maker, stale, leftovers,
            on_sealed=recordings.index_later,
        )  # fmt: skip
        await recordings.index_pending()
        bus.subscribe(node.on_event)
        await bus.start()
        listen = config.server.ssh_listen
        try:
            sock = listeners.ssh if listeners is not None else None
            node.acceptor = await gateway.listen(listen.host, listen.port, sock=sock)
        except OSError as exc:
            raise StartupError(f"cannot listen for SSH on {listen} ({exc.strerror})") from None

        async def database_ok() -> bool:
            await check_database(services.engine)
            return True

        async def vault_ok() -> bool:
            return services.keyring.current is not None

        async def listeners_ok() -> bool:
            return node.acceptor is not None and node.acceptor.sockets != []

        async def refresh_gauges() -> None:
            now = services.policy.now()
            grants = await services.policy.list_grants(SYSTEM_ACTOR, active_only=True)
            pending = await services.policy.list_requests(SYSTEM_ACTOR, pending_only=True)
            metrics.grants_active.set(len(grants))
            metrics.requests_pending.set(len(pending))
            metrics.index_lag.set(await recordings.index_lag(now))

        browser = BrowserSessions(services.maker, services.policy.now)
        bus.subscribe(browser.on_event)
        federation = Federation.build(services, timer) if config.oidc else None
        gateway.devices = federation.devices if federation is not None else None
        deps = Deps(
            services=services,
            sessions=services.sessions,
            enforcer=enforcer,
            recordings=recordings,
            registry=registry,
            metrics=metrics,
            browser=browser,
            signin=SignIn(services, gateway.throttle, browser, metrics),
            federation=federation,
            ssh_address=(gateway.gateway_host, gateway.gateway_port),
        )
        node.deps = deps
        core = WebCore(
            services,
            registry,
            enforcer,
            recorder,
            AnomalyEngine(config.anomaly_rules),
            metrics,
            timer,
            Relay(UpstreamPool()),
        )
        node.proxy = WebProxy(core, _gateway_site(), config.server.web_domain)
        bus.subscribe(node.proxy.signins.on_event)
        node.extra.append(node.proxy.aclose)
        assertion_key = config.server.data_dir / ASSERTION_KEY
        keys = AssertionSigner.load_or_create(assertion_key, _issuer(config, 0))
        liveness.assertion_kid = keys.kid
        app = build_app(
            deps,
            {
                "database": database_ok,
                "vault": vault_ok,
                "listeners": listeners_ok,
                "workers": liveness.ready,
            },
            [refresh_gauges],
            front=[node.proxy.middleware],
            warnings={"clock": node.clock.warning, "keys": lambda: liveness.keys_warning or None},
        )
        app.router.add_get("/open/{target}", node.proxy.open)
        app.router.add_get(JWKS_PATH, jwks_handler(keys))
        node.runner = web.AppRunner(app, access_log=None, shutdown_timeout=HTTP_STOP_GRACE)
        await node.runner.setup()
        http = config.server.http_listen
        try:
            trusted = TrustedProxies(config.server.trusted_proxies)
            guard = ConnectionGuard(_http_limits(config), exempt=trusted.trusts)
            http_sock = listeners.http if listeners is not None else None
            site: web.BaseSite
            if config.server.http_fastpath:
                assert node.runner.server is not None
                node.front = FastFront(
                    node.proxy,
                    aiohttp_handlers(node.runner.server, guard, access_log=None),
                    trusted,
                    guard,
                    header_timeout=config.limits.http_header_timeout,
                    idle_timeout=config.limits.http_idle_timeout,
                )
                site = FastSite(node.runner, http.host, http.port, node.front, http_sock)
            else:
                site = GuardedSite(
                    node.runner, http.host, http.port, guard, http_sock, access_log=None
                )
            await site.start()
        except OSError as exc:
            await node.stop()
            raise StartupError(f"cannot listen for HTTP on {http} ({exc.strerror})") from None
        # The issuer names the listener's port, known only now (it may have been 0).
        core.signer = AssertionSigner.load_or_create(assertion_key, _issuer(config, node.http_port))
        _wire_provisioner(services, registry, metrics)
        node._tasks.append(asyncio.ensure_future(services.provisioner.run(timer.sleep_until)))
        if config.audit_sinks:
            node.streamer = AuditStreamer(
                services.maker,
                CursorStore(services.maker, config.server.node_name, timer.now),
                [build_sink(s) for s in config.audit_sinks],
                on_error=lambda sink, _problem: metrics.stream_errors.labels(sink).inc(),
            )
            node.streamer.start()
        if config.notifications:
            node.notifier = Notifier.build(
                services,
                CursorStore(services.maker, config.server.node_name, timer.now),
                public_url=config.server.public_url or _issuer(config, node.http_port),
            )
            node.notifier.start()
        gateway.device_url = _issuer(config, node.http_port) + "/ssh/"
        node._tasks.append(asyncio.ensure_future(node._backstop()))
        if federation is not None:
            node._tasks.append(asyncio.ensure_future(federation.checker.run()))
            node.extra.append(federation.checker.aclose)
        node._tasks.append(asyncio.ensure_future(owed.run()))
        node._tasks.append(asyncio.ensure_future(liveness.run()))
        node._tasks.append(asyncio.ensure_future(LiveIndexer(recorder, recordings).run()))
        return node
    except BaseException:
        await services.aclose()
        raise


def _wire_provisioner(services: Services, registry: SessionRegistry, metrics: Metrics) -> None:
    """Removal ends this node's sessions on the account first (other nodes end theirs when
    the grant's end reaches them); a failed attempt counts in the metrics."""

    async def end_sessions(target: str, account: str, reason: str) -> None:
        for session in list(registry.sessions.values()):
            upstream = getattr(session, "upstream_account", session.account)
            if session.target == target and upstream == account:
                await registry.terminate(session.id, reason)

    def retried(item: Any, error: str) -> None:
        metrics.provision_retries.labels(item.target).inc()

    services.provisioner.end_sessions = end_sessions
    services.provisioner.on_retry = retried


def _http_limits(config: Config) -> HttpLimits:
    limits = config.limits
    return HttpLimits(
        header_timeout=limits.http_header_timeout,
        idle_timeout=limits.http_idle_timeout,
        max_unauthenticated=limits.http_max_unauthenticated,
    )


def _seal_payload(seal: Seal) -> dict[str, Any]:
    return {
        "session_id": seal.session_id,
        "path": str(seal.path),
        "sha256": seal.sha256,
        "chain_head": seal.chain_head,
        "size": seal.size,
        "duration": seal.duration,
    }


def _issuer(config: Config, port: int) -> str:
    """The identity assertions' ``iss``: the gateway's public origin, whose
    ``/.well-known/jwks.json`` has the keys: ``https://<web_domain>`` when targets have their
    own origins (the production set-up, on TLS), else the HTTP listener as ``describe``
    prints it."""
    if config.server.web_domain:
        return f"https://{config.server.web_domain}"
    host = config.server.http_listen.host
    host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host  # noqa: S104
    return f"http://{host}:{port or config.server.http_listen.port}"


def _gateway_site() -> GatewaySite:
    """What the web-target proxy takes from the gateway's own web app."""

    def signed_in(request: web.Request) -> str | None:
        who = request.get(PRINCIPAL)
        return who.name if who is not None else None

    return GatewaySite(
        scheme=scheme, signed_in=signed_in, foreign=FOREIGN, authenticated=AUTHENTICATED
    )
