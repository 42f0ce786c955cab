"""The parts of a node that HTTP handlers use, stored once on the aiohttp application."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from gateway.control import SessionControl
from gateway.metrics import Metrics
from gateway.services import Services
from gateway.sessions import SessionRegistry
from gateway.web.auth import BrowserSessions, SignIn
from recorder.store import RecordingStore


@dataclass
class Deps:
    services: Services
    control: SessionControl
    recordings: RecordingStore
    registry: SessionRegistry
    metrics: Metrics
    browser: BrowserSessions
    signin: SignIn

    @property
    def node(self) -> str:
        return self.services.config.server.node_name


DEPS = web.AppKey("deps", Deps)
