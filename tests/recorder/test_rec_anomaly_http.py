"""HTTP anomaly rules: validated like the others, matched over "METHOD path" however the path
is spelled, never over the query."""

from __future__ import annotations

import pytest

from recorder.anomaly import ACTIONS, AnomalyEngine, AnomalyHit, parse_anomaly_rule
from recorder.errors import InvalidRule


def _engine(*rules: dict[str, str], actions: tuple[str, ...] = ()) -> AnomalyEngine:
    if actions:
        rules = tuple({**r, "action": a} for r, a in zip(rules, actions, strict=True))
    return AnomalyEngine([parse_anomaly_rule(r) for r in rules])


ENGINE = _engine(
    {"name": "user-admin", "match": "http", "pattern": r"^(POST|DELETE) /admin/users"},
    {"name": "datasource", "match": "http", "pattern": r"^POST /api/datasources$"},
    {"name": "wipe", "match": "command", "pattern": "admin"},
    actions=("block", "kill", "kill_and_lock"),
)


def test_http_rules_parse_with_every_action_and_unknown_matches_are_refused() -> None:
    for action in ACTIONS:
        rule = parse_anomaly_rule(
            {"name": "r", "match": "http", "pattern": "^GET ", "action": action}
        )
        assert (rule.match, rule.action) == ("http", action)
    refused = [
        ({"name": "r", "match": "https", "pattern": "x"}, "match must be"),
        ({"name": "r", "match": "http", "pattern": "("}, "does not compile"),
        ({"name": "r", "match": "http", "pattern": ""}, "non-empty"),
        ({"name": "r", "match": "http", "pattern": "x", "action": "deny"}, "action must be"),
        ({"name": "r", "match": "output", "pattern": "x", "action": "block"}, "'block' needs"),
        ({"name": "r", "match": "http", "pattern": "x", "methods": "GET"}, "unknown key"),
    ]
    for raw, message in refused:
        with pytest.raises(InvalidRule, match=message):
            parse_anomaly_rule(raw)


def test_a_matching_request_hits_with_its_method_and_path_only() -> None:
    hits = ENGINE.check_http("delete", "/admin/users/7?token=s3cr3t#frag")
    assert hits == [AnomalyHit("user-admin", "block", "DELETE /admin/users/7")]
    assert ENGINE.check_http("POST", "/api/datasources") == [
        AnomalyHit("datasource", "kill", "POST /api/datasources")
    ]
    assert ENGINE.check_http("GET", "/admin/users") == []
    assert ENGINE.check_http("POST", "/api/datasources/1") == []
    assert ENGINE.check_command("admin")[0].rule == "wipe"  # command rules stay apart


def test_a_differently_spelled_path_is_matched_as_a_server_reads_it() -> None:
    for path in (
        "/%61dmin/users",
        "//admin//users",
        "/static/../admin/users",
        "/./admin/./users",
        "/admin;jsessionid=1/users",
        "\\admin\\users",
        "/admin/%75sers/1",
    ):
        hits = ENGINE.check_http("POST", path)
        assert [h.rule for h in hits] == ["user-admin"], path
        assert hits[0].text == f"POST {path}"  # reported as sent


def test_no_http_rules_no_work() -> None:
    engine = _engine({"name": "c", "match": "command", "pattern": ".", "action": "alert"})
    assert engine.http == ()
    assert engine.check_http("GET", "/anything") == []
