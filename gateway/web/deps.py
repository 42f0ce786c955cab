"""The parts of a node that HTTP handlers use, stored once on the aiohttp application."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from gateway.metrics import Metrics
from gateway.oidc.federation import Federation
from gateway.services import Services
from gateway.sessions.enforce import Enforcer
from gateway.sessions.records import SessionStore
from gateway.sessions.registry import SessionRegistry
from gateway.signins.browser import BrowserSessions
from gateway.web.auth import SignIn
from recorder.store import RecordingStore


@dataclass
class Deps:
    services: Services
    sessions: SessionStore
    enforcer: Enforcer
    recordings: RecordingStore
    registry: SessionRegistry
    metrics: Metrics
    browser: BrowserSessions
    signin: SignIn
    federation: Federation | None = None
    ssh_address: tuple[str, int] = ("", 0)  # host and port people connect to, for ssh lines

    def ssh_line(self, user: str, account: str, target: str) -> str:
        """The exact command that connects ``user`` to ``account@target``."""
        host, port = self.ssh_address
        return f"ssh -p {port} {user}+{account}@{target}@{host or 'GATEWAY'}"

    @property
    def node(self) -> str:
        return self.services.config.server.node_name


DEPS = web.AppKey("deps", Deps)
