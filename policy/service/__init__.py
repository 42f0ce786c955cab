"""The access-model service: what the CLI, the HTTP API and the SSH edge call.

Every mutating method takes ``actor`` (a user name, or ``SYSTEM_ACTOR`` for the built-in
administrator), checks that the actor may act, writes an audit event in the same
transaction, and returns the new value. Read methods that take ``viewer`` only return what
the viewer may see (a requester sees their own; approvers also what they may decide;
auditors and admins everything); missing and forbidden objects raise the same NotFound.
Concurrent changes to one request or grant produce exactly one transition: updates are
compare-and-swap on a version column and the loser re-reads and re-decides.
"""

from __future__ import annotations

from policy.service.authorization import AuthorizationMixin
from policy.service.base import (
    REQUEST_TTL,
    SYSTEM_ACTOR,
    Requestable,
    SessionAuthorization,
    normalize_key,
)
from policy.service.idp import IdpMixin, RoleChange, Withdrawn
from policy.service.locks import LocksMixin
from policy.service.requests import RequestsMixin
from policy.service.targets import TargetsMixin
from policy.service.tokens import TokensMixin
from policy.service.users import UsersMixin


class PolicyService(
    UsersMixin,
    TargetsMixin,
    RequestsMixin,
    LocksMixin,
    AuthorizationMixin,
    TokensMixin,
    IdpMixin,
):
    """The access-model service: one object, one part per concern over ``ServiceBase``."""


__all__ = [
    "REQUEST_TTL",
    "SYSTEM_ACTOR",
    "PolicyService",
    "Requestable",
    "RoleChange",
    "SessionAuthorization",
    "Withdrawn",
    "normalize_key",
]
