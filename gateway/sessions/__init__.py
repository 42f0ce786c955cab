"""The protocol-agnostic session core: every live session, SSH or HTTP, is registered here,
recorded in one table, watched by one kill switch and acted on by one enforcer."""

from gateway.sessions.registry import SessionHandle, SessionRegistry

__all__ = ["SessionHandle", "SessionRegistry"]
