"""Pure parts of the access model: durations, rule parsing, the session decision and the
request state machine (with property-based tests)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from policy import requests as machine
from policy.durations import format_duration, parse_duration
from policy.errors import AccessDenied, Conflict, InvalidInput, InvalidTransition, Refused
from policy.models import AccessRequest, Grant, Lock, RequestState, Rule, Target, User
from policy.rules import (
    SessionFacts,
    check_request,
    evaluate_session,
    match_rule,
    parse_hours,
    parse_rule,
)

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)  # a Monday


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("15m", 900), ("1h", 3600), ("2h30m", 9000), ("1d", 86400), ("1d2h3m4s", 93784)],
)
def test_parse_duration(text: str, seconds: int) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize(
    "text", ["", "0s", "-5m", "5", "m", "1h1h", "30m1h", "1w", "366d", "1.5h", "1 h", "9999999999s"]
)
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_duration(text)
    assert "\n" not in str(info.value)


@given(st.integers(min_value=1, max_value=365 * 86400))
def test_duration_round_trip(seconds: int) -> None:
    value = timedelta(seconds=seconds)
    assert parse_duration(format_duration(value)) == value


def test_parse_rule_defaults_and_errors() -> None:
    rule = parse_rule({"name": "r", "roles": ["dev"]})
    assert rule.approvals == 1 and rule.channels == {"shell", "exec", "sftp"}
    assert rule.max_duration == timedelta(hours=4)
    short = parse_rule({"name": "r", "roles": ["dev"], "max_duration": "30m"})
    assert short.default_duration == timedelta(minutes=30)
    for bad, word in [
        ({"name": "r", "roles": ["dev"], "bogus": 1}, "bogus"),
        ({"name": "r", "roles": []}, "roles"),
        ({"name": "r", "roles": ["d"], "channels": ["x11"]}, "channels"),
        ({"name": "r", "roles": ["d"], "ticket_pattern": "("}, "ticket_pattern"),
        (
            {"name": "r", "roles": ["d"], "max_duration": "1h", "default_duration": "2h"},
            "default_duration",
        ),
        ({"name": "r", "roles": ["d"], "hours": "Mon-Fri 8-20"}, "hours"),
        ({"name": "r", "roles": ["d"], "approvals": True}, "approvals"),
        ({"name": "bad name", "roles": ["d"]}, "name"),
    ]:
        with pytest.raises(InvalidInput, match=word):
            parse_rule(bad)


def test_hours() -> None:
    hours = parse_hours("Mon-Fri 08:00-20:00 Europe/Paris")
    assert hours is not None
    assert hours.contains(NOW)  # 11:00 in Paris on a Monday
    assert not hours.contains(NOW.replace(hour=20))  # 21:00 in Paris
    assert not hours.contains(NOW + timedelta(days=5))  # Saturday
    night = parse_hours("Sat,Sun 22:00-06:00")
    assert night is not None and night.contains(datetime(2026, 11, 28, 23, 0, tzinfo=UTC))
    assert parse_hours("") is None


def _user(name: str = "alice", roles: tuple[str, ...] = ("dev",), disabled: bool = False) -> User:
    return User("us-1", name, frozenset(roles), (), False, False, disabled, NOW)


def _target(name: str = "db01", labels: dict[str, str] | None = None) -> Target:
    return Target(
        "tg-1",
        name,
        "ssh",
        "10.0.0.1",
        22,
        None,
        None,
        True,
        labels or {"env": "prod"},
        ("root", "postgres"),
        "root",
        NOW,
    )


RULE = Rule(
    name="dev-prod",
    roles=frozenset({"dev"}),
    labels={"env": "prod"},
    approvals=2,
    approver_roles=frozenset({"approver"}),
)


def _grant(**kw: object) -> Grant:
    base = Grant(
        "gr-1",
        "alice",
        "db01",
        "root",
        NOW - timedelta(minutes=5),
        NOW + timedelta(hours=1),
        "rq-1",
        "dev-prod",
        NOW,
        None,
        None,
        None,
        False,
        1,
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def _facts(**kw: object) -> SessionFacts:
    base = SessionFacts(
        "alice", _user(), "db01", _target(), "root", [], [_grant()], [RULE], "shell"
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def test_match_rule() -> None:
    assert match_rule([RULE], frozenset({"dev"}), _target(), "root") is RULE
    assert match_rule([RULE], frozenset({"ops"}), _target(), "root") is None
    assert match_rule([RULE], frozenset({"dev"}), _target(labels={"env": "dev"}), "root") is None


@pytest.mark.parametrize(
    ("facts", "reason"),
    [
        (_facts(), "allowed"),
        (_facts(user=None), "no_grant"),
        (_facts(user=_user(disabled=True)), "user_disabled"),
        (
            _facts(locks=[Lock("l", "user", "alice", "x", "a", NOW, None, None, None)]),
            "user_locked",
        ),
        (
            _facts(locks=[Lock("l", "target", "db01", "x", "a", NOW, None, None, None)]),
            "target_locked",
        ),
        (_facts(locks=[Lock("l", "user", "alice", "x", "a", NOW, NOW, None, None)]), "allowed"),
        (_facts(target=None), "no_grant"),
        (_facts(grants=[]), "no_grant"),
        (_facts(grants=[_grant(expires_at=NOW)]), "no_grant"),
        (_facts(grants=[_grant(not_before=NOW + timedelta(seconds=1))]), "no_grant"),
        (_facts(grants=[_grant(revoked_at=NOW)]), "no_grant"),
        (_facts(account="postgres"), "no_grant"),
        (_facts(account=None), "allowed"),
        (_facts(channel="port_forward"), "channel_not_allowed"),
        (_facts(rules=[replace(RULE, hours="Sat 00:00-24:00")]), "outside_hours"),
        (_facts(rules=[]), "rule_gone"),
    ],
)
def test_evaluate_session(facts: SessionFacts, reason: str) -> None:
    decision, _ = evaluate_session(facts, NOW)
    assert decision.reason == reason
    assert decision.allowed is (reason == "allowed")
    assert "\n" not in decision.message


def test_no_grant_message_says_what_to_do() -> None:
    decision, _ = evaluate_session(_facts(grants=[]), NOW)
    assert decision.message.startswith("no active grant for alice -> root@db01; request one: ")
    assert "request db01 --account root --for 30m" in decision.message


def _request(**kw: object) -> AccessRequest:
    base = AccessRequest(
        "rq-1",
        "alice",
        "db01",
        "root",
        timedelta(hours=1),
        "why",
        "",
        "dev-prod",
        RequestState.PENDING,
        NOW,
        NOW + timedelta(days=1),
        (),
        None,
        None,
        False,
        1,
    )
    return replace(base, **kw)  # type: ignore[arg-type]


APPROVER = frozenset({"approver"})


def test_state_machine_paths() -> None:
    r = _request()
    with pytest.raises(AccessDenied, match="self-approval"):
        machine.approve(r, RULE, "alice", APPROVER, "", NOW)
    with pytest.raises(AccessDenied):
        machine.approve(r, RULE, "mallory", frozenset({"dev"}), "", NOW)
    r = machine.approve(r, RULE, "bob", APPROVER, "ok", NOW)
    assert r.state is RequestState.PENDING
    with pytest.raises(Conflict):
        machine.approve(r, RULE, "bob", APPROVER, "", NOW)
    r2 = machine.approve(r, RULE, "carol", frozenset({"admin"}), "", NOW)
    assert r2.state is RequestState.APPROVED
    with pytest.raises(InvalidTransition):
        machine.deny(r2, RULE, "dave", APPROVER, "no", NOW)
    denied = machine.deny(r, RULE, "dave", APPROVER, "no", NOW)
    assert denied.state is RequestState.DENIED
    with pytest.raises(InvalidInput):
        machine.deny(r, RULE, "dave", APPROVER, "  ", NOW)
    with pytest.raises(InvalidTransition, match="expired"):
        machine.approve(_request(), RULE, "bob", APPROVER, "", NOW + timedelta(days=2))
    assert machine.expire(_request(), NOW + timedelta(days=2)).state is RequestState.EXPIRED
    assert machine.cancel(_request(), "alice", False, NOW).state is RequestState.CANCELLED
    with pytest.raises(AccessDenied):
        machine.cancel(_request(), "bob", False, NOW)


PEOPLE = ["alice", "bob", "carol", "dave", "erin"]
ROLES = {
    "alice": frozenset({"dev"}),
    "bob": APPROVER,
    "carol": APPROVER,
    "dave": frozenset({"dev"}),
    "erin": frozenset({"admin"}),
}


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["approve", "deny", "cancel", "expire"]), st.sampled_from(PEOPLE)
        ),
        max_size=12,
    ),
    st.integers(min_value=1, max_value=3),
)
def test_state_machine_properties(steps: list[tuple[str, str]], needed: int) -> None:
    """Never approved without enough distinct non-self approvers; terminal states are final."""
    rule = replace(RULE, approvals=needed)
    r = _request()
    for op, who in steps:
        before = r
        try:
            if op == "approve":
                r = machine.approve(r, rule, who, ROLES[who], "", NOW)
            elif op == "deny":
                r = machine.deny(r, rule, who, ROLES[who], "because", NOW)
            elif op == "cancel":
                r = machine.cancel(r, who, "admin" in ROLES[who], NOW)
            else:
                r = machine.expire(r, NOW + timedelta(days=2))
        except (AccessDenied, Conflict, InvalidTransition, InvalidInput):
            assert r == before
        if before.state is not RequestState.PENDING:
            assert r == before, "a terminal state changed"
        approvers = {a.approver for a in r.approvals if a.decision == "approve"}
        assert "alice" not in approvers
        assert all("approver" in ROLES[a] or "admin" in ROLES[a] for a in approvers)
        if r.state is RequestState.APPROVED:
            assert len(approvers) >= needed
        if r.state is RequestState.PENDING:
            assert len(approvers) < needed


def _rule(**kw: object) -> Rule:
    return Rule(name="r", roles=frozenset({"dev"}), **kw)  # type: ignore[arg-type]


def test_check_request_applies_the_rules_default_and_maximum_duration() -> None:
    now = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
    terms = check_request(_rule(), "db01", None, "INC-1  disk\nfull", "", now)
    assert terms.duration == timedelta(hours=1)
    assert terms.reason == "INC-1 disk full"
    with pytest.raises(Refused, match="at most 4h"):
        check_request(_rule(), "db01", timedelta(hours=5), "x", "", now)
    with pytest.raises(InvalidInput, match="positive"):
        check_request(_rule(), "db01", timedelta(minutes=-5), "x", "", now)


def test_check_request_needs_a_reason_and_a_matching_ticket_when_the_rule_says_so() -> None:
    now = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
    with pytest.raises(Refused, match="reason is required"):
        check_request(_rule(), "db01", None, "   ", "", now)
    assert check_request(_rule(require_reason=False), "db01", None, "", "", now).reason == ""
    ticketed = _rule(ticket_pattern=r"^INC-[0-9]+$")
    with pytest.raises(Refused, match="ticket"):
        check_request(ticketed, "db01", None, "x", "CHG-1", now)
    assert check_request(ticketed, "db01", None, "x", "INC-42", now).ticket == "INC-42"


def test_check_request_refuses_outside_hours_unless_break_glass() -> None:
    sunday = datetime(2026, 12, 6, 10, 0, tzinfo=UTC)
    hours = "Mon-Fri 08:00-20:00 UTC"
    with pytest.raises(AccessDenied, match="only Mon-Fri"):
        check_request(_rule(hours=hours), "db01", None, "x", "", sunday)
    assert check_request(_rule(hours=hours, break_glass=True), "db01", None, "x", "", sunday)
