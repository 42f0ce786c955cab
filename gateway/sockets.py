"""Listening sockets shared by the worker processes of one ``lockgate serve``.

With ``server.workers`` above 1 every worker opens its own listening socket on the same
address with ``SO_REUSEPORT``: the kernel spreads new connections over the workers by a hash
of their addresses, and a worker that dies takes only its own socket (and the connections
queued on it) with it. The supervisor holds one more socket bound to each address but not
listening: it keeps the port (a port 0 in the configuration is chosen once, for all) and
receives no connections.
"""

from __future__ import annotations

import socket

from gateway.config import Listen


def _family(host: str) -> tuple[socket.AddressFamily, tuple[str, int] | tuple[str, int, int, int]]:
    info = socket.getaddrinfo(host or None, 0, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _, _, _, address = info[0]
    return family, address  # type: ignore[return-value]


def bind(
    listen: Listen, *, shared: bool, backlog: int = 128, listening: bool = True
) -> socket.socket:
    """A TCP socket bound to ``listen`` (``shared``: with SO_REUSEPORT), listening unless
    told otherwise; raises OSError."""
    family, address = _family(listen.host)
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if shared:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind((address[0], listen.port, *address[2:]))
        if listening:
            sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def port_of(sock: socket.socket) -> int:
    return int(sock.getsockname()[1])
