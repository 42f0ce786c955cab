"""Which target a request is for, the path it asks of it, and how a target's URL is read."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from gateway.http.routing import BadPath, Route, Router, check_path, decoded_path, split_host
from gateway.http.target import TargetUnusable, parse_base_url, web_target
from policy.models import Target

HOST = Router("gw.example.com")
PATH = Router("")


def test_a_subdomain_of_the_web_domain_is_that_targets_origin() -> None:
    assert HOST.route("grafana.gw.example.com", "/d/x?orgId=1") == Route(
        "grafana", "host", "/d/x", "orgId=1", ""
    )


def test_the_host_is_matched_case_insensitively_and_without_its_port() -> None:
    route = HOST.route("Grafana.GW.example.COM:8443", "/")
    assert route is not None and route.target == "grafana"
    assert HOST.route("grafana.gw.example.com.", "/") is not None


@pytest.mark.parametrize(
    "host",
    [
        "gw.example.com",  # the gateway's own site
        "127.0.0.1:8080",
        "a.b.gw.example.com",  # two labels: not a target name
        "-x.gw.example.com",
        "grafana.gw.example.com.evil.com",
        "grafanagw.example.com",
        "db_01.gw.example.com",  # not a DNS label
    ],
)
def test_other_hosts_are_the_gateways_own_pages(host: str) -> None:
    assert HOST.route(host, "/") is None


def test_path_prefix_mode_is_off_when_targets_have_their_own_origins() -> None:
    assert HOST.route("gw.example.com", "/t/grafana/") is None


def test_path_prefix_mode_serves_any_valid_target_name_under_t() -> None:
    assert PATH.route("gw:8080", "/t/db_01.prod/api/x?y=1") == Route(
        "db_01.prod", "path", "/api/x", "y=1", "/t/db_01.prod"
    )
    assert PATH.route("gw", "/t/grafana/").path == "/"  # type: ignore[union-attr]


def test_path_prefix_without_the_slash_after_the_name_has_an_empty_path() -> None:
    assert PATH.route("gw", "/t/grafana") == Route("grafana", "path", "", "", "/t/grafana")
    assert PATH.route("gw", "/t/grafana?x=1") == Route("grafana", "path", "", "x=1", "/t/grafana")


@pytest.mark.parametrize("raw", ["/", "/login", "/t/", "/t/-bad/", "/tx/grafana/", "/api/v1/x"])
def test_gateway_paths_are_not_routed_in_path_mode(raw: str) -> None:
    assert PATH.route("gw", raw) is None


@pytest.mark.parametrize(
    "raw",
    [
        "/a/../admin",
        "/a/%2e%2e/admin",
        "/a/%2E%2e/admin",
        "/a/.%2e/admin",
        "/a/..;/admin",  # Tomcat and Jetty read this as ..
        "/a/./b",
        "/a\\..\\admin",
        "/a/%5c../admin",
        "/a/%00",
        "http://evil/x",
        "*",
    ],
)
def test_ambiguous_paths_are_refused(raw: str) -> None:
    with pytest.raises(BadPath):
        check_path(raw)


def test_paths_stay_encoded_and_rules_see_them_decoded() -> None:
    path, query = check_path("/api/queues/%2F/q%20one?x=%41")
    assert (path, query) == ("/api/queues/%2F/q%20one", "x=%41")
    assert decoded_path(path) == "/api/queues///q one"
    assert check_path("/a/..b/...")[0] == "/a/..b/..."  # not dot segments


def test_split_host_handles_ipv6_and_ports() -> None:
    assert split_host("[::1]:8080") == "[::1]"
    assert split_host("Example.COM:80") == "example.com"
    assert split_host("example.com") == "example.com"


def test_target_origin_keeps_the_gateways_port() -> None:
    assert HOST.target_origin("grafana", "https", "gw.example.com:8443") == (
        "https://grafana.gw.example.com:8443"
    )
    assert HOST.target_base("grafana", "https", "gw.example.com") == (
        "https://grafana.gw.example.com/"
    )
    assert PATH.target_base("db_01", "http", "127.0.0.1:8080") == "http://127.0.0.1:8080/t/db_01/"


def test_which_names_are_reachable_in_each_mode() -> None:
    assert HOST.reachable("kibana-prod") and not HOST.reachable("Grafana")
    assert not HOST.reachable("db_01") and PATH.reachable("db_01")


def test_a_base_path_maps_the_targets_root_onto_it() -> None:
    t = parse_base_url("grafana", "http://10.0.0.7:3000/grafana/")
    assert t.base_path == "/grafana"
    assert t.upstream_path("/x") == "/grafana/x"
    assert str(t.url("/d/a%2Fb", "q=1")) == "http://10.0.0.7:3000/grafana/d/a%2Fb?q=1"
    assert t.public_path("/grafana/login") == "/login"
    assert t.public_path("/grafana") == "/"
    assert t.public_path("/grafanax") is None
    assert t.host_header == "10.0.0.7:3000"


def test_default_ports_are_left_out_of_the_host_header() -> None:
    assert parse_base_url("a", "https://app.internal/").host_header == "app.internal"
    assert parse_base_url("a", "http://[fd00::7]:8080").host_header == "[fd00::7]:8080"
    assert parse_base_url("a", "http://[fd00::7]:8080").origin == "http://[fd00::7]:8080"


@pytest.mark.parametrize(
    "url",
    [
        "ftp://x/",
        "http://user:pw@x/",
        "http://x/?a=1",
        "http://x/#f",
        "http:///nohost",
        "not a url",
    ],
)
def test_unusable_target_urls_are_refused(url: str) -> None:
    with pytest.raises(TargetUnusable):
        parse_base_url("a", url)


def test_fingerprints_are_normalized_and_checked() -> None:
    fp = "AB:" * 31 + "AB"
    assert parse_base_url("a", "https://x/", tls_fingerprint=fp).tls_fingerprint == "ab" * 32
    with pytest.raises(TargetUnusable):
        parse_base_url("a", "https://x/", tls_fingerprint="abcd")


def policy_target(**fields: object) -> Target:
    base: dict[str, object] = {
        "id": "tg-1",
        "name": "grafana",
        "kind": "http",
        "host": None,
        "port": 22,
        "host_key": None,
        "url": "https://g.internal/grafana/",
        "tls_verify": True,
        "labels": {},
        "accounts": ("svc",),
        "default_account": "svc",
        "created_at": datetime.now(UTC),
    }
    return Target(**{**base, **fields})  # type: ignore[arg-type]


def test_a_policy_targets_web_settings_are_read_once() -> None:
    plain = web_target(policy_target())
    assert (plain.tls_verify, plain.tls_ca, plain.tls_fingerprint) == (True, None, None)
    assert (plain.base_path, plain.preserve_host, plain.record_bodies) == ("/grafana", False, 0)
    pinned = web_target(
        policy_target(
            tls_fingerprint="ab" * 32,
            preserve_host=True,
            sensitive_params=("ticket",),
            record_bodies=4096,
        )
    )
    assert pinned.tls_fingerprint == "ab" * 32 and pinned.preserve_host
    assert (pinned.sensitive_params, pinned.record_bodies) == (("ticket",), 4096)
    with pytest.raises(TargetUnusable):
        web_target(policy_target(kind="ssh", url=None))


def test_links_back_to_the_gateway_go_to_the_bare_web_domain() -> None:
    assert HOST.gateway_origin("https", "grafana.gw.example.com:8443") == (
        "https://gw.example.com:8443"
    )
    assert PATH.gateway_origin("http", "127.0.0.1:8080") == "http://127.0.0.1:8080"
