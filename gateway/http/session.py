"""One person's live web session to one target under one grant: the registry's handle.

A session of kind ``http`` opens at the first request after the hand-off (session record and
audit ``session.start``, recording with meta kind ``http``, the vaulted credential checked
out once), lives in the same registry as SSH sessions (listed, terminated, re-checked and
ended at the grant's end by the kill switch) and ends after ``idle`` without a request or an
open WebSocket.

Every request asks, in order: is the session still on; is the grant still running; has the
authorization been re-decided within ``RECHECK`` (locks, revocation, the rule; through
``gateway.access`` — between those, a change anywhere in the cluster reaches the session at
once through the kill switch); does the rule allow this method and path (the upstream then
gets the path in the normalised form the rule judged); does an ``http``
anomaly rule match (``block``: 403 with the reason; ``kill``/``kill_and_lock``: the core's
enforcer ends the session). Only then does the request go upstream, with the credential and
the identity assertion.

``close`` cuts everything at once: every in-flight request is cancelled (a response not yet
begun becomes the "session terminated" page, a streaming one has its connection cut), every
open WebSocket is closed with 1008 and the reason, and the browser's later requests get the
"session terminated: <reason>" page (after an idle timeout the next request quietly opens a
new session instead).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import web
from multidict import CIMultiDict, MultiMapping

from gateway.access import http_request_path
from gateway.credentials import HttpCredential
from gateway.db import completed
from gateway.errors import GatewayError
from gateway.http import refusal
from gateway.http.headers import ClientView, ResponseRewriter, request_headers
from gateway.http.recording import MAX_BODY, record_exchange, record_websocket_open
from gateway.http.relay import Exchange, Relay, RelayedSocket, UpstreamUnavailable, is_websocket
from gateway.http.routing import Route, decoded_path
from gateway.http.target import WebTarget
from gateway.metrics import Metrics, kill_reason
from gateway.services import Services
from gateway.sessions.enforce import Enforcer
from gateway.sessions.killswitch import Timer
from gateway.sessions.records import NewSession, new_session_id
from gateway.sessions.registry import SessionRegistry
from gateway.signins.targets import WebAccess
from policy.models import Rule, Target
from recorder.anomaly import AnomalyEngine
from recorder.recorder import Recorder
from recorder.writer import SessionRecording

if TYPE_CHECKING:
    from gateway.http.flight import Flight

log = logging.getLogger(__name__)

IDLE_TIMEOUT = timedelta(minutes=15)
IDLE_REASON = "idle timeout"
RECHECK = timedelta(seconds=10)
FAST_PATHS = 1024  # fast_check answers kept per session
CLOSE_WAIT = 2.0  # seconds for in-flight handlers to unwind after a kill


class Signer(Protocol):
    """``gateway.http.assertion.AssertionSigner`` as the session uses it."""

    def sign(
        self,
        *,
        audience: str,
        subject: str,
        roles: Sequence[str],
        grant_id: str,
        session_id: str,
        expires_at: datetime,
        now: datetime,
    ) -> str: ...

    def forget(self, session_id: str) -> None: ...


@dataclass
class WebCore:
    """The parts of the node a web session works with."""

    services: Services
    registry: SessionRegistry
    enforcer: Enforcer
    recorder: Recorder
    anomaly: AnomalyEngine
    metrics: Metrics
    timer: Timer
    relay: Relay
    signer: Signer | None = None
    idle: timedelta = IDLE_TIMEOUT
    on_end: list[Callable[[WebAccess, str], None]] = field(default_factory=list)


@dataclass
class _Flight:
    request: web.BaseRequest
    exchange: Exchange


class LiveHttpSession:
    """Implements ``gateway.sessions.SessionHandle`` for kind ``http``."""

    def __init__(
        self,
        core: WebCore,
        access: WebAccess,
        target: Target,
        web_target: WebTarget,
        rule: Rule | None,
        roles: Sequence[str],
        client_addr: str,
    ) -> None:
        self.core = core
        self.kind = "http"
        self.id = new_session_id()
        self.access = access
        self.user = access.user
        self.target = access.target
        self.account = access.account
        self.grant_id: str | None = access.grant_id
        self.expires_at: datetime | None = access.expires_at
        self.target_obj = target
        self.web = web_target
        self.rule = rule
        self.roles = tuple(roles)
        self.client_addr = client_addr
        self.bytes_up = 0
        self.bytes_down = 0
        self.recording: SessionRecording | None = None
        self.credential: HttpCredential | None = None
        self.ended: str | None = None
        self.sockets: set[RelayedSocket] = set()
        self._flights: dict[asyncio.Task[Any], _Flight] = {}
        self.fast: set[Flight] = set()  # requests on the fast path (gateway.http.fastpath)
        # fast_check's answers, as long as the rule and anomaly rules that gave them hold
        self._fast_judges: tuple[object, ...] = ()
        self._fast_paths: dict[tuple[str, str], str | None] = {}
        self._counted: dict[int, Any] = {}  # status -> this target's request counter
        self._timed = core.metrics.http_duration.labels(self.target)
        self._recheck: asyncio.Future[str | None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.started_at = self._checked_at = core.timer.now()
        self._last_active = self._checked_at
        self._idle: asyncio.Task[None] | None = None
        self._finished = False
        self._finishing: asyncio.Future[None] | None = None
        self.record = NewSession(
            self.id, "http", self.user, self.target, self.account, self.grant_id, client_addr
        )

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- opening -------------------------------------------------------------------------
    async def open(self) -> None:
        """Audit and record the start, check the credential out, join the registry. Raises
        (and leaves nothing running) when any of it fails."""
        core = self.core
        await completed(core.services.sessions.started(self.record))
        try:
            self.recording = await completed(
                core.recorder.start(
                    self.id,
                    meta={
                        "user": self.user,
                        "target": self.target,
                        "account": self.account,
                        "grant": self.grant_id or "",
                        "client": self.client_addr,
                        "kind": "http",
                    },
                    pty=False,
                )
            )
            self.credential = await completed(
                core.services.credentials.http(self.target_obj, self.account, self.id, self.user)
            )
        except BaseException as exc:
            reason = str(exc) if isinstance(exc, GatewayError) else type(exc).__name__
            self._ended_with(f"could not start: {reason}")
            await self._finish(f"could not start: {reason}")
            raise
        self.recording.add_failure_callback(
            lambda exc: self.spawn(core.registry.terminate(self.id, "recording failed"))
        )
        core.registry.add(self)
        self._idle = asyncio.ensure_future(self._watch_idle())

    # --- SessionHandle ---------------------------------------------------------------
    def notify(self, line: str) -> None:
        """Nothing is injected into the app's pages: the line goes to the recording."""
        self.mark("warning", line)

    def mark(self, kind: str, text: str) -> None:
        if self.recording is not None:
            with contextlib.suppress(Exception):
                self.recording.marker(kind, text)

    async def close(self, reason: str) -> None:
        if self.ended is not None:
            if self._finishing is not None:
                await asyncio.shield(self._finishing)  # the end under way
            return
        self._ended_with(reason)
        self.mark("kill", reason)
        kills = [s.kill(reason) for s in list(self.sockets)]
        for fast in list(self.fast):
            fast.cut(reason)
        flights = list(self._flights.items())
        for task, flight in flights:
            # open WebSockets are closed by their kill; everything else (a socket still
            # connecting upstream included) is cut off where it waits
            if not (flight.exchange.websocket and flight.exchange.responded):
                task.cancel()
        await asyncio.gather(*kills, return_exceptions=True)
        waiting = [task for task, _ in flights if not task.done()]
        if waiting:
            await asyncio.wait(waiting, timeout=CLOSE_WAIT)
        await self._finish(reason)

    def _ended_with(self, reason: str) -> None:
        self.ended = reason
        for callback in self.core.on_end:
            with contextlib.suppress(Exception):
                callback(self.access, reason)

    async def _finish(self, reason: str) -> None:
        """The one end; every caller waits for the same one (a stopping node too)."""
        if self._finishing is None:
            if self._idle is not None and self._idle is not asyncio.current_task():
                self._idle.cancel()
            self._finishing = asyncio.ensure_future(self._finish_once(reason))
        await asyncio.shield(self._finishing)

    async def _finish_once(self, reason: str) -> None:
        self._finished = True
        self.ended = self.ended or reason
        core = self.core
        if core.signer is not None:
            core.signer.forget(self.id)
        if self.recording is not None:
            with contextlib.suppress(Exception):
                await self.recording.close(reason)
        core.metrics.sessions_total.labels(kill_reason(reason)).inc()
        core.metrics.bytes_total.labels("up").inc(self.bytes_up)
        core.metrics.bytes_total.labels("down").inc(self.bytes_down)
        try:
            await completed(
                core.services.sessions.ended(
                    self.id, self.user, reason, self.bytes_up, self.bytes_down
                )
            )
        except Exception:
            log.exception("recording the end of session %s failed", self.id)
        core.registry.discard(self)  # once sealed and its end written or owed

    async def _watch_idle(self) -> None:
        timer = self.core.timer
        while self.ended is None:
            due = self._last_active + self.core.idle
            await timer.sleep_until(due)
            if self.ended is not None:
                return
            if (
                not self._flights
                and not self.fast
                and not self.sockets
                and timer.now() >= (self._last_active + self.core.idle)
            ):
                self.spawn(self.core.registry.terminate(self.id, IDLE_REASON))
                return
            if self._flights or self.fast or self.sockets:
                self._last_active = timer.now()

    # --- requests --------------------------------------------------------------------
    def _gateway(self, view: ClientView) -> str:
        return view.gateway_origin or view.public_origin

    @property
    def recheck_due(self) -> bool:
        return self.core.timer.now() - self._checked_at >= RECHECK

    async def still_allowed(self) -> str | None:
        """None, or why the session ends now."""
        now = self.core.timer.now()
        if self.expires_at is not None and now >= self.expires_at:
            return "grant expired"
        if now - self._checked_at < RECHECK:
            return None
        # One re-check for all the requests that find it due (a page loads many at once).
        if self._recheck is None or self._recheck.done():
            self._recheck = asyncio.ensure_future(self._recheck_access(now))
        return await asyncio.shield(self._recheck)

    async def _recheck_access(self, now: datetime) -> str | None:
        # An extension moves expires_at through the kill switch, which re-arms its timer.
        allowed, reason, _ = await completed(self.core.services.access.recheck(self))
        self._checked_at = now
        return None if allowed else reason

    async def handle(
        self, request: web.BaseRequest, route: Route, view: ClientView
    ) -> web.StreamResponse:
        """Check, relay, record one request (or WebSocket)."""
        gateway = self._gateway(view)
        if self.ended is not None:
            return refusal.page(refusal.terminated(self.target, self.ended, gateway))
        try:
            ending = await self.still_allowed()
        except Exception:
            # Fail closed: what cannot be checked does not go upstream.
            log.exception("session %s: re-checking access failed", self.id)
            return refusal.page(refusal.unavailable(self.target))
        if ending is not None:
            await self.core.registry.terminate(self.id, ending)
            return refusal.page(refusal.terminated(self.target, ending, gateway))
        exchange = Exchange(request.method, route.path, route.query)
        websocket = is_websocket(request)
        exchange.websocket = websocket
        served = http_request_path(self.rule, request.method, route.path)
        if served is None:
            self.record_done(exchange, "refused")
            shown = route.prefix + decoded_path(route.path)
            await self.core.services.refusals.refused(
                actor=self.user,
                action="request.refused",
                subject=self.id,
                reason=f"{request.method} {shown[:200]} is not allowed by the grant's rule "
                f"{self.rule.name if self.rule else ''}".strip(),
                client=self.client_addr,
                details={"target": self.target, "method": request.method[:16]},
            )
            return refusal.page(refusal.not_allowed(self.target, request.method, shown, gateway))
        exchange.path = served
        stop = await self._anomalies(request.method, route.path)
        if stop is not None:
            self.record_done(exchange, "blocked" if self.ended is None else "killed")
            if self.ended is not None:
                return refusal.page(refusal.terminated(self.target, self.ended, gateway))
            return refusal.page(refusal.blocked(self.target, stop))
        return await self._relay(request, exchange, view, websocket, gateway)

    async def _anomalies(self, method: str, path: str) -> str | None:
        """The rule that stops this request, if any (kill rules end the session too).
        ``path`` as sent: the engine also checks it as a server may read it."""
        stop: str | None = None
        for hit in self.core.anomaly.check_http(method, path):
            if hit.action == "alert":
                self.spawn(self.core.enforcer.anomaly(self, hit))
                continue
            stop = stop or hit.rule
            await self.core.enforcer.anomaly(self, hit)
        return stop

    def fast_check(self, method: str, route: Route) -> str | None:
        """The path to send upstream when the request may go there with nothing to answer
        first: the session is live and within its grant, its rule serves the request and no
        anomaly rule matches it. None sends the request the full way (``handle``), which
        refuses and applies anomaly rules. The caller still re-checks access when
        ``recheck_due`` says so."""
        if self.ended is not None:
            return None
        if self.expires_at is not None and self.core.timer.now() >= self.expires_at:
            return None
        judges = (self.rule, self.core.anomaly)
        if self._fast_judges != judges:
            self._fast_judges, self._fast_paths = judges, {}
        key = (method, route.path)
        if key in self._fast_paths:
            return self._fast_paths[key]
        served = http_request_path(self.rule, method, route.path)
        if served is not None and self.core.anomaly.check_http(method, route.path):
            served = None
        if len(self._fast_paths) >= FAST_PATHS:
            self._fast_paths.clear()
        self._fast_paths[key] = served
        return served

    def assertion(self) -> str | None:
        """The next request's identity assertion; raises ValueError once the grant ended."""
        signer = self.core.signer
        if signer is None or not self.grant_id or self.expires_at is None:
            return None
        return signer.sign(
            audience=self.target,
            subject=self.user,
            roles=self.roles,
            grant_id=self.grant_id,
            session_id=self.id,
            expires_at=self.expires_at,
            now=self.core.timer.now(),
        )

    def upstream_headers(
        self,
        incoming: MultiMapping[str],
        view: ClientView,
        websocket: bool = False,
        *,
        assertion: str | None = None,
    ) -> CIMultiDict[str]:
        cred = self.credential
        return request_headers(
            incoming,
            self.web,
            view,
            credential_header=cred.header if cred else None,
            credential=cred.value if cred else None,
            assertion=assertion or self.assertion(),
            websocket=websocket,
        )

    async def _relay(
        self,
        request: web.BaseRequest,
        exchange: Exchange,
        view: ClientView,
        websocket: bool,
        gateway: str,
    ) -> web.StreamResponse:
        task = asyncio.current_task()
        assert task is not None
        if self.web.record_bodies and request.method not in ("GET", "HEAD"):
            exchange.body_cap = min(self.web.record_bodies, MAX_BODY)
        self._flights[task] = _Flight(request, exchange)
        outcome = "ok"
        try:
            headers = self.upstream_headers(request.headers, view, websocket)
            if websocket:
                return await self.core.relay.websocket(
                    request,
                    self.web,
                    headers,
                    exchange,
                    expected_origin=view.public_origin,
                    sockets=self.sockets,
                    on_open=lambda: self._ws_opened(exchange),
                )
            rewriter = ResponseRewriter(self.web, view)
            return await self.core.relay.http(request, self.web, headers, rewriter, exchange)
        except UpstreamUnavailable as exc:
            outcome = "upstream_error"
            return refusal.page(refusal.upstream(self.target, exc.failure.status, exc.failure.what))
        except ConnectionError:
            outcome = "client_gone"
            raise
        except asyncio.CancelledError:
            outcome = "killed" if self.ended is not None else "client_gone"
            if self.ended is None or exchange.responded:
                raise
            task.uncancel()
            return refusal.page(refusal.terminated(self.target, self.ended, gateway))
        finally:
            del self._flights[task]
            if self.ended is not None and outcome == "ok":
                outcome = "killed"
            self.record_done(exchange, outcome)

    def _ws_opened(self, exchange: Exchange) -> None:
        if self.recording is not None:
            with contextlib.suppress(Exception):
                record_websocket_open(self.recording, exchange, self.web.sensitive_params)

    def record_done(self, exchange: Exchange, outcome: str) -> None:
        exchange.finish()
        self._last_active = self.core.timer.now()
        self.bytes_up += exchange.bytes_up
        self.bytes_down += exchange.bytes_down
        counted = self._counted.get(exchange.status)
        if counted is None:
            metrics = self.core.metrics
            counted = metrics.http_requests.labels(self.target, str(exchange.status))
            if len(self._counted) < 64:  # statuses are few; a label lookup is not free
                self._counted[exchange.status] = counted
        counted.inc()
        self._timed.observe(exchange.duration)
        if self.recording is None:
            return
        body = bytes(exchange.body) if exchange.body_cap else None
        try:
            record_exchange(self.recording, exchange, outcome, self.web.sensitive_params, body)
        except Exception:
            # Nothing goes unrecorded: a recording that cannot take the exchange ends it.
            log.exception("session %s: recording an exchange failed", self.id)
            self.spawn(self.core.registry.terminate(self.id, "recording failed"))
