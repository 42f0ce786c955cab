"""Web requests under a rule: methods and paths, with the path normalised so that no
encoding, dot segment or ``;params`` trick reaches a path the rule does not allow."""

from __future__ import annotations

from urllib.parse import unquote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from policy.errors import InvalidInput
from policy.httppath import normalize_http_path
from policy.models import Rule
from policy.rules import http_request_allowed, parse_rule


def _rule(**raw: object) -> Rule:
    return parse_rule({"name": "web", "roles": ["dev"], "channels": ["http"], **raw})


PUBLIC = _rule(http_methods=["get", "head"], http_paths=["/public/*"])


def test_rule_parses_http_methods_upper_cased_and_paths() -> None:
    assert PUBLIC.http_methods == ("GET", "HEAD")
    assert PUBLIC.http_paths == ("/public/*",)
    default = _rule()
    assert default.http_methods == ("*",) and default.http_paths == ("/*",)
    assert "http" in default.channels


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        ({"http_methods": ["GET POST"]}, "http_methods"),
        ({"http_methods": ["GE(T"]}, "http_methods"),
        ({"http_methods": "GET"}, "http_methods"),
        ({"http_paths": ["public/*"]}, "http_paths"),
        ({"http_paths": ["/a b"]}, "http_paths"),
        ({"http_path": ["/x"]}, "unknown key http_path"),
        ({"channels": ["https"]}, "channels"),
    ],
)
def test_bad_http_rule_keys_name_the_key(raw: dict[str, object], words: str) -> None:
    with pytest.raises(InvalidInput, match=words):
        _rule(**raw)


def test_a_read_only_rule_allows_only_its_methods() -> None:
    assert http_request_allowed(PUBLIC, "GET", "/public/index.html")
    assert http_request_allowed(PUBLIC, "head", "/public/a/b")
    assert not http_request_allowed(PUBLIC, "POST", "/public/index.html")
    assert not http_request_allowed(PUBLIC, "DELETE", "/public/index.html")
    assert not http_request_allowed(PUBLIC, "GET\r\nX", "/public/index.html")
    assert not http_request_allowed(PUBLIC, "", "/public/index.html")


def test_a_rule_without_the_http_channel_allows_no_web_request() -> None:
    ssh_only = parse_rule({"name": "ssh", "roles": ["dev"]})
    assert not http_request_allowed(ssh_only, "GET", "/")


@pytest.mark.parametrize(
    "path",
    [
        "/admin/../secret",
        "/public/../admin",
        "/public/%2e%2e/admin",
        "/public/%2E%2E/admin",
        "/public/.%2e/admin",
        "/%2e%2e/secret",
        "/public/..;/admin",
        "/public/..;x=1/admin",
        "/public/.;/../admin",
        "/public/..%3b/admin",
        "/public/;x/../../admin",
        "/public%2f..%2fadmin",
        "/public/%2fadmin",
        "/public/..%5cadmin",
        "/public/a\\..\\..\\admin",
        "/public/a%00",
        "/public/a\x00",
        "/public/%252e%252e/admin",
        "/public/%zz",
        "/public/%2",
        "public/a",
        "",
        "/public/a?x=1",
        "/public/a#frag",
        "/public/\u00e9",
        "/public/a b",
    ],
)
def test_paths_that_leave_the_glob_or_cannot_be_normalised_are_refused(path: str) -> None:
    assert not http_request_allowed(PUBLIC, "GET", path)


@pytest.mark.parametrize(
    ("path", "normalised"),
    [
        ("/", "/"),
        ("/public//a", "/public/a"),
        ("/public/./a/", "/public/a/"),
        ("/public/x/../a", "/public/a"),
        ("/%70ublic/%7Euser", "/public/~user"),
        ("/public/a%20b", "/public/a%20b"),
        ("/public/a%2a", "/public/a%2A"),
        ("/public/a;jsessionid=1", "/public/a;jsessionid=1"),
        ("/public/a/.", "/public/a/"),
        ("/public/..", "/"),
        ("/..", None),
        ("/a/../..", None),
    ],
)
def test_normalised_form(path: str, normalised: str | None) -> None:
    assert normalize_http_path(path) == normalised


def test_normalised_paths_inside_the_glob_are_allowed() -> None:
    assert http_request_allowed(PUBLIC, "GET", "/admin/../public/a")
    assert http_request_allowed(PUBLIC, "GET", "/public//a")
    assert http_request_allowed(PUBLIC, "GET", "/%70ublic/a")


_SEGMENT = st.sampled_from(
    [
        "public",
        "admin",
        "a",
        ".",
        "..",
        "",
        "%2e",
        "%2E%2e",
        ".%2e",
        "%70ublic",
        "..;",
        "x;y",
        ".;",
        ";x",
        "..%3B",
    ]
)


def _upstream_view(path: str, *, strip_params: bool) -> str:
    """What a lenient upstream serves: decode once, optionally drop ``;params`` from each
    segment (as some servlet containers do), skip empty and ``.``, clamp ``..`` at the root."""
    resolved: list[str] = []
    for segment in unquote(path).split("/"):
        if strip_params:
            segment = segment.split(";")[0]
        if segment in ("", "."):
            continue
        if segment == "..":
            if resolved:
                resolved.pop()
            continue
        resolved.append(segment)
    return "/" + "/".join(resolved)


@given(st.lists(_SEGMENT, max_size=8))
def test_property_no_path_outside_public_is_allowed_by_a_public_rule(
    segments: list[str],
) -> None:
    path = "/" + "/".join(segments)
    if not http_request_allowed(PUBLIC, "GET", path):
        return
    for strip_params in (False, True):
        served = _upstream_view(path, strip_params=strip_params)
        assert served == "/public" or served.startswith("/public/"), (path, served)


@given(st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40))
def test_property_normalised_form_is_a_fixed_point_and_stays_under_its_glob(text: str) -> None:
    normalised = normalize_http_path("/" + text)
    if normalised is None:
        return
    assert normalised.startswith("/")
    assert normalize_http_path(normalised) == normalised
    assert "//" not in normalised
    assert all(s not in (".", "..") for s in normalised.split("/"))
    assert http_request_allowed(PUBLIC, "GET", "/" + text) == normalised.startswith("/public/")
