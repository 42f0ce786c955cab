"""The forward_to allowlist: every spelling of an address is the address; names only
verbatim; loopback and link-local only when listed as such; nothing when empty."""

from __future__ import annotations

import pytest

from policy.errors import InvalidInput
from policy.forwarding import decide_forward, numeric_address, parse_entry
from policy.rules import parse_rule

ALLOW = tuple(
    parse_entry(e)
    for e in ("10.0.0.0/8:5432", "db.internal:443", "127.0.0.1:8443", "[2001:db8::/32]:22")
)


@pytest.mark.parametrize(
    "spelling",
    [
        "127.0.0.1",
        "127.1",
        "127.0.1",
        "0x7f000001",
        "2130706433",
        "0177.0.0.1",
        "0x7f.0.0.1",
        "::ffff:127.0.0.1",
        "[::ffff:7f00:1]",
        "::127.0.0.1",
    ],
)
def test_every_numeric_spelling_of_loopback_is_loopback(spelling: str) -> None:
    assert str(numeric_address(spelling)) == "127.0.0.1"


@pytest.mark.parametrize("name", ["localhost", "db.internal", "my-host", "1.2.3.4.example"])
def test_names_are_not_addresses(name: str) -> None:
    assert numeric_address(name) is None


@pytest.mark.parametrize(
    ("host", "port", "destination"),
    [
        ("10.1.2.3", 5432, "10.1.2.3"),
        ("012.1.2.3", 5432, "10.1.2.3"),
        ("167838211", 5432, "10.1.2.3"),
        ("DB.Internal.", 443, "db.internal"),
        ("127.1", 8443, "127.0.0.1"),
        ("[2001:db8::5]", 22, "2001:db8::5"),
    ],
)
def test_listed_destinations_pass_normalised(host: str, port: int, destination: str) -> None:
    decision = decide_forward(ALLOW, host, port)
    assert decision.allowed and decision.destination == destination


@pytest.mark.parametrize(
    ("host", "port"),
    [
        ("10.1.2.3", 22),  # wrong port
        ("127.0.0.1", 22),  # the target's own sshd: loopback, not listed with that port
        ("2130706433", 22),
        ("0x7f.1", 8080),
        ("localhost", 8443),  # a name is never its address
        ("db.internal.evil.example", 443),
        ("169.254.169.254", 80),  # the metadata service
        ("[fe80::1%eth0]", 22),
        ("0.0.0.0", 5432),
        ("11.0.0.1", 5432),
    ],
)
def test_everything_else_is_refused(host: str, port: int) -> None:
    decision = decide_forward(ALLOW, host, port)
    assert not decision.allowed and "forward_to" in decision.message


def test_loopback_and_link_local_pass_only_through_an_entry_of_their_own() -> None:
    everything = (parse_entry("0.0.0.0/0:*"), parse_entry("[::/0]:*"))
    assert decide_forward(everything, "8.8.8.8", 53).allowed
    for host in ("127.0.0.1", "127.1", "::1", "169.254.169.254", "::ffff:169.254.169.254"):
        assert not decide_forward(everything, host, 80).allowed, host
    metadata = (parse_entry("169.254.169.254:80"),)
    assert decide_forward(metadata, "0xa9fea9fe", 80).allowed


def test_an_empty_list_allows_nothing() -> None:
    assert not decide_forward((), "10.0.0.1", 5432).allowed


@pytest.mark.parametrize(
    "entry",
    ["10.0.0.0/8", "10.0.0.1/8:22", "host:0", "host:70000", "a b:22", ":22", "2130706433:22"],
)
def test_bad_entries_are_refused_in_the_rule(entry: str) -> None:
    with pytest.raises(InvalidInput, match="forward_to"):
        parse_rule({"name": "r", "roles": ["dev"], "forward_to": [entry]})
    assert parse_rule({"name": "r", "roles": ["dev"], "forward_to": ["db:5432"]}).forward_to == (
        "db:5432",
    )
