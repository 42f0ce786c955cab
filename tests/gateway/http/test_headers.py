"""What crosses the proxy in headers: stripped, set by the gateway, rewritten."""

from __future__ import annotations

from dataclasses import replace

from multidict import CIMultiDict

from gateway.http.headers import (
    ClientView,
    ResponseRewriter,
    app_cookies,
    request_headers,
    websocket_protocols,
)
from gateway.http.target import parse_base_url
from vault.secret import Secret

GRAFANA = parse_base_url("grafana", "http://10.0.0.7:3000/grafana/")
HOST_VIEW = ClientView(
    client_ip="192.0.2.10",
    proto="https",
    host="grafana.gw.example.com",
    public_origin="https://grafana.gw.example.com",
)
PATH_VIEW = ClientView(
    client_ip="192.0.2.10",
    proto="http",
    host="gw:8080",
    public_origin="http://gw:8080",
    prefix="/t/grafana",
)


def incoming(*pairs: tuple[str, str]) -> CIMultiDict[str]:
    return CIMultiDict(pairs)


def test_what_the_person_sent_as_credentials_and_gateway_headers_is_stripped() -> None:
    out = request_headers(
        incoming(
            ("Authorization", "Basic bWFsbG9yeTp4"),
            ("Proxy-Authorization", "Basic x"),
            ("X-Lockgate-Assertion", "forged.jwt.token"),
            ("x-lockgate-user", "admin"),
            ("Accept", "text/html"),
        ),
        GRAFANA,
        HOST_VIEW,
    )
    assert "Authorization" not in out and "Proxy-Authorization" not in out
    assert "X-Lockgate-Assertion" not in out and "X-Lockgate-User" not in out
    assert out["Accept"] == "text/html"


def test_forwarding_headers_are_the_gateways_own_view() -> None:
    out = request_headers(
        incoming(
            ("X-Forwarded-For", "10.0.0.1"),
            ("X-Forwarded-Host", "admin.internal"),
            ("X-Forwarded-Proto", "http"),
            ("Forwarded", "for=10.0.0.1"),
            ("X-Real-IP", "10.0.0.1"),
        ),
        GRAFANA,
        HOST_VIEW,
    )
    assert out.getall("X-Forwarded-For") == ["192.0.2.10"]
    assert out.getall("X-Forwarded-Proto") == ["https"]
    assert out.getall("X-Forwarded-Host") == ["grafana.gw.example.com"]
    assert "Forwarded" not in out and "X-Real-IP" not in out


def test_hop_by_hop_headers_and_the_names_connection_lists_are_stripped() -> None:
    out = request_headers(
        incoming(
            ("Connection", "keep-alive, X-Secret-Hop"),
            ("X-Secret-Hop", "1"),
            ("Keep-Alive", "timeout=5"),
            ("TE", "trailers"),
            ("Trailer", "X-T"),
            ("Transfer-Encoding", "chunked"),
            ("Upgrade", "h2c"),
            ("Proxy-Connection", "keep-alive"),
            ("Proxy-Foo", "x"),
            ("Expect", "100-continue"),
            ("Content-Length", "5"),
        ),
        GRAFANA,
        HOST_VIEW,
    )
    for name in (
        "Connection",
        "X-Secret-Hop",
        "Keep-Alive",
        "TE",
        "Trailer",
        "Transfer-Encoding",
        "Upgrade",
        "Proxy-Connection",
        "Proxy-Foo",
        "Expect",
    ):
        assert name not in out, name
    assert out["Content-Length"] == "5"


def test_only_the_gateways_cookies_are_stripped() -> None:
    out = request_headers(
        incoming(
            ("Cookie", "grafana_session=abc; lockgate_session=gw; __Host-lockgate=t"),
            ("Cookie", "lockgate_t_grafana=x; theme=dark"),
        ),
        GRAFANA,
        HOST_VIEW,
    )
    assert out.getall("Cookie") == ["grafana_session=abc; theme=dark"]
    assert app_cookies(["lockgate_session=1"]) is None


def test_host_is_the_upstreams_unless_the_target_preserves_it() -> None:
    assert request_headers(incoming(), GRAFANA, HOST_VIEW)["Host"] == "10.0.0.7:3000"
    keep = replace(GRAFANA, preserve_host=True)
    assert request_headers(incoming(), keep, HOST_VIEW)["Host"] == "grafana.gw.example.com"


def test_the_credential_and_the_assertion_are_added_and_replace_what_was_sent() -> None:
    out = request_headers(
        incoming(("X-Api-Key", "person-typed"), ("x-api-key", "again")),
        GRAFANA,
        HOST_VIEW,
        credential_header="X-Api-Key",
        credential=Secret("vaulted"),
        assertion="a.b.c",
    )
    assert out.getall("X-Api-Key") == ["vaulted"]
    assert out.getall("X-Lockgate-Assertion") == ["a.b.c"]


def test_origin_and_referer_of_the_public_origin_map_to_the_upstream() -> None:
    out = request_headers(
        incoming(
            ("Origin", "https://grafana.gw.example.com"),
            ("Referer", "https://grafana.gw.example.com/d/x?a=1"),
        ),
        GRAFANA,
        HOST_VIEW,
    )
    assert out["Origin"] == "http://10.0.0.7:3000"
    assert out["Referer"] == "http://10.0.0.7:3000/grafana/d/x?a=1"
    foreign = request_headers(incoming(("Origin", "https://evil.example")), GRAFANA, HOST_VIEW)
    assert foreign["Origin"] == "https://evil.example"
    path = request_headers(incoming(("Referer", "http://gw:8080/t/grafana/x")), GRAFANA, PATH_VIEW)
    assert path["Referer"] == "http://10.0.0.7:3000/grafana/x"
    assert path["X-Forwarded-Prefix"] == "/t/grafana"


def test_websocket_handshake_headers_are_left_to_the_upstream_connection() -> None:
    out = request_headers(
        incoming(
            ("Sec-WebSocket-Key", "k"),
            ("Sec-WebSocket-Version", "13"),
            ("Sec-WebSocket-Protocol", "graphql-ws, json"),
            ("Sec-WebSocket-Extensions", "permessage-deflate"),
        ),
        GRAFANA,
        HOST_VIEW,
        websocket=True,
    )
    assert not any(k.lower().startswith("sec-websocket") for k in out)
    offered = incoming(("Sec-WebSocket-Protocol", "graphql-ws, json"))
    assert websocket_protocols(offered) == ("graphql-ws", "json")


def test_location_at_the_upstream_maps_to_the_public_origin() -> None:
    host = ResponseRewriter(GRAFANA, HOST_VIEW)
    assert host.location("http://10.0.0.7:3000/grafana/login?x=1") == (
        "https://grafana.gw.example.com/login?x=1"
    )
    assert host.location("/grafana/login") == "/login"
    assert host.location("login") == "login"
    assert host.location("https://idp.example.com/auth") == "https://idp.example.com/auth"
    assert host.location("HTTP://10.0.0.7:3000/grafana") == "https://grafana.gw.example.com/"
    path = ResponseRewriter(GRAFANA, PATH_VIEW)
    assert path.location("http://10.0.0.7:3000/grafana/login") == "http://gw:8080/t/grafana/login"
    assert path.location("/grafana/login#f") == "/t/grafana/login#f"
    assert path.location("/t/grafana/already") == "/t/grafana/already"


def test_set_cookie_loses_domain_and_gets_its_path_mapped() -> None:
    host = ResponseRewriter(GRAFANA, HOST_VIEW)
    assert host.set_cookie("sid=1; Domain=10.0.0.7; Path=/grafana; HttpOnly; Secure") == (
        "sid=1; Path=/; HttpOnly; Secure"
    )
    path = ResponseRewriter(GRAFANA, PATH_VIEW)
    assert path.set_cookie("sid=1; Path=/grafana/api; Secure") == "sid=1; Path=/t/grafana/api"
    assert path.set_cookie("sid=1") == "sid=1; Path=/t/grafana/"


def test_the_app_cannot_set_a_cookie_named_like_the_gateways() -> None:
    rewriter = ResponseRewriter(GRAFANA, HOST_VIEW)
    for name in ("lockgate_session", "__Host-lockgate", "LOCKGATE_T_x", "__Secure-lockgate"):
        assert rewriter.set_cookie(f"{name}=evil; Path=/") is None
    out = rewriter.headers(
        incoming(("Set-Cookie", "lockgate_session=evil"), ("Set-Cookie", "ok=1"))
    )
    assert out.getall("Set-Cookie") == ["ok=1"]


def test_response_hop_by_hop_and_origin_wide_headers_are_dropped() -> None:
    upstream = incoming(
        ("Connection", "close, X-Hop"),
        ("X-Hop", "1"),
        ("Transfer-Encoding", "chunked"),
        ("Content-Length", "10"),
        ("Keep-Alive", "timeout=3"),
        ("Alt-Svc", 'h3=":443"'),
        ("Strict-Transport-Security", "max-age=1"),
        ("Clear-Site-Data", '"*"'),
        ("Service-Worker-Allowed", "/"),
        ("Content-Type", "text/html"),
    )
    host = ResponseRewriter(GRAFANA, HOST_VIEW).headers(upstream)
    assert set(host) == {
        "Strict-Transport-Security",
        "Clear-Site-Data",
        "Service-Worker-Allowed",
        "Content-Type",
    }
    path = ResponseRewriter(GRAFANA, PATH_VIEW).headers(upstream)
    assert set(path) == {"Content-Type"}
