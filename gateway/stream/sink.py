"""The interface every audit sink implements, and its error."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from gateway.stream.record import StreamRecord


class SinkError(Exception):
    """The receiver cannot take events now; the streamer reconnects and resends from its
    durable cursor. The message never holds event contents."""


class Sink(Protocol):
    name: str

    async def open(self) -> None:
        """Connect or open; raises SinkError."""

    async def send(self, records: Sequence[StreamRecord]) -> None:
        """Hand ``records`` (in sequence order) to the receiver; raises SinkError."""

    async def confirmed(self) -> int:
        """The highest sequence number known delivered (0: none yet this connection); raises
        SinkError if the receiver went away. Only confirmed events move the cursor."""

    async def close(self) -> None:
        """Release the connection or file; never raises."""
