"""The access-request state machine, as pure functions on values.

``pending -> approved | denied | cancelled | expired``. Approvals count once per distinct
approver who holds an approver role of the rule (admins always qualify); the requester's own
approval never counts and is refused; one denial ends the request. Every function returns a
new request and never mutates; terminal states are final.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from policy.errors import AccessDenied, Conflict, InvalidInput, InvalidTransition
from policy.models import AccessRequest, Approval, RequestState, Rule
from policy.rules import may_approve

MAX_COMMENT = 1000


def _pending(request: AccessRequest, now: datetime) -> None:
    if request.state is not RequestState.PENDING:
        raise InvalidTransition(f"request {request.id} is {request.state.value}")
    if now >= request.expires_at:
        raise InvalidTransition(f"request {request.id} has expired")


def _comment(text: str) -> str:
    text = " ".join(text.split())
    if len(text) > MAX_COMMENT:
        raise InvalidInput(f"comment longer than {MAX_COMMENT} characters")
    return text


def _may_decide(
    request: AccessRequest,
    rule: Rule,
    approver: str,
    approver_roles: frozenset[str],
    now: datetime,
    self_message: str,
) -> None:
    _pending(request, now)
    if approver == request.user:
        raise AccessDenied(self_message)
    if not may_approve(rule, approver_roles):
        raise AccessDenied(f"{approver} is not an approver for rule {rule.name}")


def approvers(request: AccessRequest) -> set[str]:
    return {a.approver for a in request.approvals if a.decision == "approve"}


def approve(
    request: AccessRequest,
    rule: Rule,
    approver: str,
    approver_roles: frozenset[str],
    comment: str,
    now: datetime,
) -> AccessRequest:
    """Record one approval; the request becomes APPROVED when the rule's count is reached."""
    _may_decide(
        request,
        rule,
        approver,
        approver_roles,
        now,
        "self-approval is not allowed: you cannot approve your own request",
    )
    if approver in approvers(request):
        raise Conflict(f"{approver} has already approved request {request.id}")
    approvals = (*request.approvals, Approval(approver, "approve", _comment(comment), now))
    done = len({a.approver for a in approvals if a.decision == "approve"}) >= rule.approvals
    return replace(
        request,
        approvals=approvals,
        state=RequestState.APPROVED if done else RequestState.PENDING,
    )


def deny(
    request: AccessRequest,
    rule: Rule,
    approver: str,
    approver_roles: frozenset[str],
    comment: str,
    now: datetime,
) -> AccessRequest:
    """One denial ends the request, whatever approvals it had."""
    _may_decide(
        request,
        rule,
        approver,
        approver_roles,
        now,
        "you cannot decide on your own request; cancel it instead",
    )
    text = _comment(comment)
    if not text:
        raise InvalidInput("a denial needs a comment")
    return replace(
        request,
        approvals=(*request.approvals, Approval(approver, "deny", text, now)),
        state=RequestState.DENIED,
    )


def cancel(
    request: AccessRequest, actor: str, actor_is_admin: bool, now: datetime
) -> AccessRequest:
    if actor != request.user and not actor_is_admin:
        raise AccessDenied("only the requester or an admin can cancel a request")
    if request.state is not RequestState.PENDING:
        raise InvalidTransition(f"request {request.id} is {request.state.value}")
    return replace(request, state=RequestState.CANCELLED)


def expire(request: AccessRequest, now: datetime) -> AccessRequest:
    """A pending request past its expiry becomes EXPIRED; anything else is returned as is."""
    if request.state is RequestState.PENDING and now >= request.expires_at:
        return replace(request, state=RequestState.EXPIRED)
    return request
