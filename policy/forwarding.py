"""Port-forward destinations: a rule's ``forward_to`` allowlist, matched on the address the
target would actually connect to.

An entry is ``CIDR:PORT``, ``ADDRESS:PORT`` or ``HOSTNAME:PORT`` (``[v6]:PORT`` for IPv6;
``*`` for any port). A requested destination is judged like this:

- A numeric host, in any spelling the target's resolver would accept (``127.1``,
  ``0x7f000001``, ``2130706433``, ``0177.0.0.1``, ``::ffff:127.0.0.1``, ``[fe80::1%eth0]``),
  is reduced to one address first and matched against the CIDR and address entries.
- A host name matches only an entry with that very name (case and a trailing dot aside); it is
  never resolved here, since the target would resolve it on its own.
- Loopback, link-local (the cloud metadata service at 169.254.169.254), unspecified and
  multicast addresses pass only through an entry that lies within such a range itself
  (``127.0.0.1:5432``), never through a broad one such as ``0.0.0.0/0``.
- An empty list allows nothing.

The destination handed to the target is the normalised address (or the listed name), so the
target connects where the decision was made, not to another reading of the same string.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass

from policy.errors import InvalidInput

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_HOSTNAME = re.compile(
    r"(?=.{1,253}$)([a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?)(\.[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?)*"
)
_SPECIAL = tuple(
    ipaddress.ip_network(n)
    for n in (
        "127.0.0.0/8",
        "169.254.0.0/16",
        "0.0.0.0/8",
        "224.0.0.0/4",
        "::1/128",
        "::/128",
        "fe80::/10",
        "ff00::/8",
    )
)


@dataclass(frozen=True)
class ForwardEntry:
    network: Network | None  # numeric entries
    name: str | None  # host-name entries, lower case
    port: int | None  # None = any port

    def __str__(self) -> str:
        port = "*" if self.port is None else str(self.port)
        if self.name is not None:
            return f"{self.name}:{port}"
        assert self.network is not None
        host = str(self.network) if self.network.num_addresses > 1 else str(self.network[0])
        return f"[{host}]:{port}" if self.network.version == 6 else f"{host}:{port}"


@dataclass(frozen=True)
class ForwardDecision:
    allowed: bool
    destination: str  # what to ask the target to connect to
    message: str


def parse_entry(text: str) -> ForwardEntry:
    """One ``forward_to`` entry; raises InvalidInput naming what is wrong."""
    host, sep, port_text = text.strip().rpartition(":")
    if not sep or not host:
        raise InvalidInput(f"forward_to: {text!r} must be HOST:PORT, CIDR:PORT or [V6]:PORT")
    if port_text == "*":
        port = None
    elif port_text.isdigit() and 1 <= int(port_text) <= 65535:
        port = int(port_text)
    else:
        raise InvalidInput(f"forward_to: {text!r} has no valid port (1-65535 or *)")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        return ForwardEntry(ipaddress.ip_network(host, strict=True), None, port)
    except ValueError:
        pass
    name = host.lower().rstrip(".")
    if ":" in name or "/" in name or not _HOSTNAME.fullmatch(name) or name.isdigit():
        raise InvalidInput(f"forward_to: {text!r} is not a CIDR, an address or a host name")
    return ForwardEntry(None, name, port)


def numeric_address(host: str) -> Address | None:
    """The one address a numeric ``host`` denotes to a resolver (glibc ``inet_aton`` forms
    for IPv4; IPv6 with its zone dropped; an IPv4-mapped or -compatible IPv6 address as its
    IPv4 address), or None when ``host`` is a name."""
    text = host.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    text = text.split("%", 1)[0]
    if ":" in text:
        try:
            v6 = ipaddress.IPv6Address(text)
        except ValueError:
            return None
        if v6.ipv4_mapped is not None:
            return v6.ipv4_mapped
        if int(v6) >> 32 == 0 and int(v6) > 1:  # ::a.b.c.d, IPv4-compatible (deprecated)
            return ipaddress.IPv4Address(int(v6))
        return v6
    if not text or not all(c in "0123456789abcdefxABCDEFX." for c in text):
        return None
    try:
        return ipaddress.IPv4Address(socket.inet_aton(text))
    except OSError:
        return None


def _special(address: Address) -> Network | None:
    return next((n for n in _SPECIAL if address.version == n.version and address in n), None)


def decide_forward(entries: tuple[ForwardEntry, ...], host: str, port: int) -> ForwardDecision:
    """Whether ``host:port`` is on the allowlist (the rules in the module doc)."""
    shown = f"{host}:{port}"
    address = numeric_address(host)
    if address is None:
        name = host.strip().lower().rstrip(".")
        for entry in entries:
            if entry.name == name and entry.port in (None, port):
                return ForwardDecision(True, name, "")
        return ForwardDecision(
            False, name, f"forwarding to {shown} is not on the rule's forward_to list"
        )
    special = _special(address)
    for entry in entries:
        net = entry.network
        if net is None or net.version != address.version or address not in net:
            continue
        if entry.port not in (None, port):
            continue
        if special is not None and not net.subnet_of(special):  # type: ignore[arg-type]
            continue
        return ForwardDecision(True, str(address), "")
    if special is not None:
        kind = "loopback" if address.is_loopback else "link-local or special"
        return ForwardDecision(
            False,
            str(address),
            f"forwarding to {shown} ({kind} {address}) is allowed only when listed in forward_to",
        )
    return ForwardDecision(
        False,
        str(address),
        f"forwarding to {shown} ({address}) is not on the rule's forward_to list",
    )
