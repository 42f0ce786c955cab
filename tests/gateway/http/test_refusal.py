"""The refusal page: says what is missing, links where to go, carries nothing of the gateway."""

from __future__ import annotations

from gateway.http import refusal

GW = "https://gw.example.com"


def body(r: refusal.Refusal) -> str:
    response = refusal.page(r)
    assert response.text is not None
    return response.text


def test_no_grant_names_the_target_and_links_the_request_form() -> None:
    r = refusal.no_grant("grafana", GW)
    text = body(r)
    assert r.status == 403
    assert "no active grant for grafana" in text
    assert 'href="https://gw.example.com/access?target=grafana"' in text


def test_the_page_has_no_script_no_style_and_sets_no_cookie() -> None:
    response = refusal.page(refusal.terminated("grafana", "revoked by ada: done", GW))
    text = response.text or ""
    for forbidden in ("<script", "<style", "<link", "style=", "onload", "lockgate_session"):
        assert forbidden not in text.lower()
    assert "Set-Cookie" not in response.headers
    assert response.headers["Content-Security-Policy"].startswith("default-src 'none'")
    assert response.headers["Cache-Control"] == "no-store"
    assert "session terminated: revoked by ada: done" in text
    assert 'href="https://gw.example.com/open/grafana"' in text


def test_what_the_page_shows_is_escaped() -> None:
    text = body(refusal.not_allowed("grafana", "POST", '/x"><script>alert(1)</script>', GW))
    assert "<script>" not in text
    assert "&lt;script&gt;" in text and "&#34;&gt;" in text


def test_each_refusal_says_what_happened() -> None:
    assert "does not allow DELETE /api/x" in body(refusal.not_allowed("g", "DELETE", "/api/x", GW))
    assert "user alice is locked" in body(refusal.locked("g", "user alice is locked"))
    assert "blocked by rule no-admin" in body(refusal.blocked("g", "no-admin"))
    assert refusal.sign_in("g", GW, "/d/x").links[0][1] == f"{GW}/open/g?next=%2Fd%2Fx"
    assert refusal.no_target("nope", GW).status == 404
    assert refusal.upstream("g", 504, "the target did not answer in time").status == 504
