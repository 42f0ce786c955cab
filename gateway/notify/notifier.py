"""The node's notification parts together: the dispatcher (audit events to the outbox) and
the sender (the outbox to the channels)."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.notify.dispatch import Dispatcher
from gateway.notify.outbox import Outbox
from gateway.notify.sender import Sender
from gateway.services import Services
from gateway.stream.cursor import CursorStore


@dataclass
class Notifier:
    dispatcher: Dispatcher
    sender: Sender

    @classmethod
    def build(cls, services: Services, cursors: CursorStore, *, public_url: str) -> Notifier:
        config = services.config
        return cls(
            Dispatcher(
                services.maker,
                cursors,
                config.notifications,
                services.policy.rules,
                services.policy.now,
                public_url,
            ),
            Sender(
                Outbox(services.maker), config.notifications, services.vault, services.policy.now
            ),
        )

    def start(self) -> None:
        self.dispatcher.start()
        self.sender.start()

    async def aclose(self) -> None:
        await self.dispatcher.aclose()
        await self.sender.aclose()
