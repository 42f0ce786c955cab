"""Masking query values: sensitive names in any case or spelling, everything else kept."""

from __future__ import annotations

from urllib.parse import quote

from hypothesis import given
from hypothesis import strategies as st

from recorder.http import HttpExchange, decode_exchange, encode_exchange, mask_query

SENSITIVE = ["token", "password", "api_key"]
MARK = "Zq9"  # starts every sensitive value; appears nowhere else in the generated targets


def test_values_of_named_parameters_are_masked_in_place() -> None:
    assert mask_query("/a?x=1&token=abc&y=2", SENSITIVE) == "/a?x=1&token=***&y=2"
    assert mask_query("/a?TOKEN=abc&Password=p", SENSITIVE) == "/a?TOKEN=***&Password=***"
    assert mask_query("/a?%74oken=abc", SENSITIVE) == "/a?%74oken=***"  # percent-encoded name
    assert mask_query("/a?api+key=1&api_key=2", SENSITIVE) == "/a?api+key=1&api_key=***"
    assert mask_query("/a?user[password]=p&u.token=t", SENSITIVE) == (
        "/a?user[password]=***&u.token=***"
    )
    assert mask_query("/a?token=a&token=b", SENSITIVE) == "/a?token=***&token=***"
    assert mask_query("/a?token=a=b=c", SENSITIVE) == "/a?token=***"
    assert mask_query("/a?tokens=1&mytoken=2", SENSITIVE) == "/a?tokens=1&mytoken=2"


def test_a_masked_value_runs_to_the_next_ampersand_and_semicolons_also_separate() -> None:
    # A server splitting on "&" only reads token="abc;def": none of it may stay.
    assert mask_query("/a?token=abc;def&x=1", SENSITIVE) == "/a?token=***&x=1"
    assert mask_query("/a?x=1;token=abc&y=2", SENSITIVE) == "/a?x=1;token=***&y=2"


def test_paths_fragments_and_malformed_queries() -> None:
    assert mask_query("/token=abc/x", SENSITIVE) == "/token=abc/x"  # no query: untouched
    assert mask_query("/a?token", SENSITIVE) == "/a?token"
    assert mask_query("/a?=token&&token=&x", SENSITIVE) == "/a?=token&&token=***&x"
    assert mask_query("/a?%zz=1&%ff%fe=2&token=s", SENSITIVE) == "/a?%zz=1&%ff%fe=2&token=***"
    assert mask_query("/a?q=1#token=abc", SENSITIVE) == "/a?q=1#token=***"
    assert mask_query("/a#x?token=abc", SENSITIVE) == "/a#x?token=***"
    assert mask_query("/a?token=abc", []) == "/a?token=abc"
    assert mask_query("/a?Token=abc", [" TOKEN "]) == "/a?Token=***"


def test_the_recorder_masks_well_known_secret_names_whatever_the_proxy_did() -> None:
    ex = HttpExchange("GET", "/cb?code=c0de&state=ok&x_auth_token=t&key=k", 200, 0, 0, 0.0, False)
    decoded = decode_exchange(encode_exchange(ex))
    assert decoded is not None
    assert decoded[1].target == "/cb?code=***&state=ok&x_auth_token=***&key=***"


_plain = st.text(alphabet="abcdefghijklmnop-_.~", min_size=1, max_size=8)
_names = st.sampled_from(SENSITIVE).flatmap(
    lambda n: st.sampled_from([n, n.upper(), n.title(), "".join(f"%{ord(c):02X}" for c in n)])
)
_param = st.one_of(
    st.tuples(_names, st.text(max_size=12).map(lambda v: MARK + v), st.just(True)),
    st.tuples(_plain, _plain, st.just(False)),
)


@given(
    st.lists(_plain, max_size=4),
    st.lists(_param, min_size=1, max_size=8),
    st.sampled_from(["&", ";"]),
)
def test_masked_output_never_contains_a_sensitive_value(
    segments: list[str], params: list[tuple[str, str, bool]], sep: str
) -> None:
    path = "/" + "/".join(segments)
    query = sep.join(f"{name}={quote(value, safe='')}" for name, value, _ in params)
    masked = mask_query(f"{path}?{query}", SENSITIVE)
    assert MARK not in masked
    assert masked.startswith(path + "?")
    if sep == "&":  # after ";", a masked value runs on to the next "&" by design
        parts = masked[len(path) + 1 :].split("&")
        for (name, value, secret), part in zip(params, parts, strict=True):
            assert part == (f"{name}=***" if secret else f"{name}={quote(value, safe='')}")


@given(st.text(max_size=200), st.lists(st.text(max_size=10), max_size=4))
def test_any_target_is_masked_without_raising_and_masking_is_idempotent(
    target: str, names: list[str]
) -> None:
    once = mask_query(target, names)
    assert mask_query(once, names) == once
    if "?" not in target and "#" not in target:
        assert once == target
