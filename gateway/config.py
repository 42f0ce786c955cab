"""Configuration: one TOML file plus ``LOCKGATE_<SECTION>_<KEY>`` environment overrides.

This is the only module that reads the configuration file and the environment. Unknown keys are
errors that name the file and the key; nothing is silently ignored. Relative paths are resolved
against the directory of the configuration file (or the working directory when there is none).

A ``LOCKGATE_*`` variable is an override only when the word after the prefix is a section of
the file (``LOCKGATE_SERVER_...``, ``LOCKGATE_DATABASE_...``); within such a section an unknown
key is an error, so a misspelt override is reported, not ignored. Every other ``LOCKGATE_*``
variable belongs to someone else (the command line's ``LOCKGATE_CONFIG``, ``LOCKGATE_DEBUG``,
``LOCKGATE_URL``, ``LOCKGATE_TOKEN``; the test suite's ``LOCKGATE_TEST_DATABASE_URL``) and is
left alone: such names must never begin with a section name.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.errors import ConfigError
from gateway.notify.settings import Channel, parse_channel
from gateway.oidc.settings import OidcProvider, parse_provider
from gateway.stream.settings import SinkSettings, parse_sink
from gateway.tickets import TicketSettings
from policy.durations import parse_duration
from policy.errors import PolicyError
from policy.models import Rule
from policy.rules import parse_rule
from recorder.anomaly import AnomalyRule, parse_anomaly_rule
from recorder.errors import RecorderError

ENV_PREFIX = "LOCKGATE_"
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no"}


@dataclass(frozen=True)
class Listen:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class ServerConfig:
    ssh_listen: Listen
    http_listen: Listen
    data_dir: Path
    node_name: str
    ssh_fastpath: bool = True  # gateway/ssh/fastpath.py; false: asyncssh's own data path
    http_fastpath: bool = True  # gateway/http/fastpath.py; false: aiohttp for every request
    web_domain: str = ""  # web targets at <target>.<web_domain>; "" = /t/<target>/ paths
    public_url: str = ""  # where people reach the web UI (links in notifications)
    require_strict_kex: bool = False  # refuse SSH clients without strict KEX (Terrapin)
    workers: int = 1  # processes sharing the listeners (gateway.cli.supervisor); 1 = this one
    heartbeat_interval: int = 5  # seconds between a node's heartbeats (gateway.cluster.liveness)
    node_lost_after: int = 30  # seconds of silence after which another node ends its sessions
    proxy_protocol: bool = False  # SSH connections start with a PROXY protocol header
    trusted_proxies: tuple[IPNetwork, ...] = ()  # who may send it, or X-Forwarded-* on HTTP
    # Set by the supervisor for its workers, never read from the file: the serve process's
    # own node name (each worker is <supervisor>-w<i>).
    supervisor: str = ""


@dataclass(frozen=True)
class Limits:
    """Resource limits of the listeners ([limits] in the file); 0 turns a cap off."""

    ssh_max_startups: int = 128  # unauthenticated SSH connections; a quarter per address
    ssh_login_grace_time: int = 60  # seconds to authenticate (OpenSSH LoginGraceTime)
    ssh_max_channels: int = 10  # open channels per SSH connection (OpenSSH MaxSessions)
    http_header_timeout: int = 10  # seconds for a request's line and headers
    http_idle_timeout: int = 60  # seconds a connection may sit between requests
    http_max_unauthenticated: int = 64  # unauthenticated HTTP connections per address
    login_workers: int = 2  # threads hashing passwords (argon2id) off the event loop
    login_queue: int = 32  # password checks waiting for a worker; more are refused


@dataclass(frozen=True)
class Config:
    server: ServerConfig
    database_url: str
    master_key: str  # key source spec: file:PATH | env:VAR | <provider>:...
    recordings_path: Path
    max_failed_logins: int
    rules: tuple[Rule, ...]
    anomaly_rules: tuple[AnomalyRule, ...]
    audit_sinks: tuple[SinkSettings, ...] = ()
    notifications: tuple[Channel, ...] = ()
    tickets: TicketSettings = field(default_factory=TicketSettings)
    source: str = field(default="<defaults>", compare=False)
    oidc: tuple[OidcProvider, ...] = ()
    # Who may sign in with a local password (web and SSH): empty = everyone, else only users
    # holding one of these roles (e.g. break-glass admins once people use the IdP).
    password_login_roles: frozenset[str] = frozenset()
    limits: Limits = field(default_factory=Limits)

    def oidc_provider(self, name: str) -> OidcProvider | None:
        return next((p for p in self.oidc if p.name == name), None)

    @property
    def host_key_path(self) -> Path:
        return self.server.data_dir / "ssh_host_ed25519_key"


# section -> key -> (type, default). Defaults of None are derived from server.data_dir.
_SCHEMA: dict[str, dict[str, tuple[type, object]]] = {
    "server": {
        "ssh_listen": (str, "0.0.0.0:2222"),
        "http_listen": (str, "127.0.0.1:8080"),
        "data_dir": (str, "./lockgate-data"),
        "node_name": (str, ""),
        "ssh_fastpath": (bool, True),
        "http_fastpath": (bool, True),
        "web_domain": (str, ""),
        "public_url": (str, ""),
        "require_strict_kex": (bool, False),
        "workers": (int, 0),
        "heartbeat_interval": (int, 5),
        "node_lost_after": (int, 30),
        "proxy_protocol": (bool, False),
        "trusted_proxies": (list, []),
    },
    "database": {"url": (str, None)},
    "vault": {"master_key": (str, None)},
    "recordings": {"path": (str, None)},
    "auth": {"max_failed_logins": (int, 5), "password_login_roles": (list, [])},
    "tickets": {"url": (str, ""), "timeout": (str, "5s"), "fail_closed": (bool, True)},
    "limits": {name: (int, value) for name, value in vars(Limits()).items()},
}
_LIST_SECTIONS = {"rules", "notifications"}
_NESTED = {"anomaly": {"rules"}, "audit": {"sinks"}}
_TABLE_LISTS = {"auth": {"oidc"}}  # [[auth.oidc]] inside the [auth] table


def parse_listen(value: str, where: str) -> Listen:
    host, sep, port_text = value.rpartition(":")
    if not sep or not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ConfigError(f"{where}: expected HOST:PORT, got {value!r}")
    return Listen(host.strip("[]"), int(port_text))


_DNS_NAME = re.compile(
    r"(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
)


def _web_domain(value: str, where: str) -> str:
    name = value.strip().lower().rstrip(".")
    if name and (len(name) > 253 or not _DNS_NAME.fullmatch(name)):
        raise ConfigError(f"{where}: expected a DNS name such as gw.example.com, got {value!r}")
    return name


def public_base(config: Config) -> str:
    """Where people reach the web UI: ``server.public_url``, else the HTTP listener."""
    if config.server.public_url:
        return config.server.public_url
    listen = config.server.http_listen
    host = "127.0.0.1" if listen.host in ("0.0.0.0", "::", "") else listen.host  # noqa: S104
    return f"http://{host}:{listen.port}"


def _public_url(value: str, where: str) -> str:
    if value and not re.match(r"^https?://[^/\s]+(/\S*)?$", value):
        raise ConfigError(f"{where}: expected an http:// or https:// URL, got {value!r}")
    return value.rstrip("/")


def _tickets(values: Mapping[str, object], source: str) -> TicketSettings:
    url, timeout = str(values["url"]), str(values["timeout"])
    if url and not re.match(r"^https?://\S+$", url):
        raise ConfigError(f"{source}: tickets.url: expected an http:// or https:// URL")
    try:
        wait = parse_duration(timeout)
    except PolicyError:
        raise ConfigError(f"{source}: tickets.timeout: expected a duration such as 5s") from None
    return TicketSettings(url=url, timeout=wait, fail_closed=bool(values["fail_closed"]))


def load_config(path: Path | None = None, *, environ: Mapping[str, str] | None = None) -> Config:
    """Load ``path`` (may be None: defaults only), apply environment overrides, validate."""
    env = os.environ if environ is None else environ
    raw: dict[str, Any] = {}
    source = "<defaults>"
    base = Path.cwd()
    if path is not None:
        source = str(path)
        base = path.resolve().parent
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(f"{path}: no such configuration file") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    _check_unknown(raw, source)
    values: dict[str, dict[str, object]] = {}
    for section, keys in _SCHEMA.items():
        table = raw.get(section, {})
        if not isinstance(table, dict):
            raise ConfigError(f"{source}: [{section}] must be a table")
        values[section] = {}
        for key, (kind, default) in keys.items():
            value = table.get(key, default)
            if kind is bool:
                if not isinstance(value, bool):
                    raise ConfigError(f"{source}: {section}.{key} must be true or false")
            elif value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
                raise ConfigError(f"{source}: {section}.{key} must be a {kind.__name__}")
            values[section][key] = value
    _apply_env(values, env)

    server = values["server"]
    data_dir = _resolve(base, str(server["data_dir"]))
    node = str(server["node_name"]) or socket.gethostname()
    db_url = values["database"]["url"] or f"sqlite+aiosqlite:///{data_dir / 'lockgate.db'}"
    db_url = _resolve_sqlite_url(base, str(db_url))
    master = values["vault"]["master_key"] or f"file:{data_dir / 'master.key'}"
    if str(master).startswith("file:"):
        master = "file:" + str(_resolve(base, str(master)[5:]))
    rec = values["recordings"]["path"]
    recordings = _resolve(base, str(rec)) if rec else data_dir / "recordings"
    max_failed = values["auth"]["max_failed_logins"]
    assert isinstance(max_failed, int)
    fastpath, http_fastpath = server["ssh_fastpath"], server["http_fastpath"]
    assert isinstance(fastpath, bool) and isinstance(http_fastpath, bool)
    if max_failed < 1:
        raise ConfigError(f"{source}: auth.max_failed_logins must be at least 1")
    password_roles = values["auth"]["password_login_roles"]
    assert isinstance(password_roles, list)
    if not all(isinstance(r, str) for r in password_roles):
        raise ConfigError(f"{source}: auth.password_login_roles must be a list of role names")
    auth_table = raw.get("auth", {})

    return Config(
        server=ServerConfig(
            ssh_listen=parse_listen(str(server["ssh_listen"]), f"{source}: server.ssh_listen"),
            http_listen=parse_listen(str(server["http_listen"]), f"{source}: server.http_listen"),
            data_dir=data_dir,
            node_name=node,
            ssh_fastpath=fastpath,
            http_fastpath=http_fastpath,
            web_domain=_web_domain(str(server["web_domain"]), f"{source}: server.web_domain"),
            public_url=_public_url(str(server["public_url"]), f"{source}: server.public_url"),
            require_strict_kex=bool(server["require_strict_kex"]),
            **_scale_out(server, source),
        ),
        database_url=db_url,
        master_key=str(master),
        recordings_path=recordings,
        max_failed_logins=max_failed,
        rules=_parse_list(raw.get("rules", []), "rules", source, parse_rule),
        anomaly_rules=_parse_list(
            raw.get("anomaly", {}).get("rules", []), "anomaly.rules", source, parse_anomaly_rule
        ),
        audit_sinks=_parse_list(
            raw.get("audit", {}).get("sinks", []),
            "audit.sinks",
            source,
            lambda item: parse_sink(item, lambda p: _resolve(base, p)),
        ),
        tickets=_tickets(values["tickets"], source),
        notifications=_parse_list(
            raw.get("notifications", []), "notifications", source, parse_channel
        ),
        source=source,
        oidc=_parse_list(auth_table.get("oidc", []), "auth.oidc", source, parse_provider),
        password_login_roles=frozenset(password_roles),
        limits=_limits(values["limits"], source),
    )


def _scale_out(server: Mapping[str, object], source: str) -> dict[str, Any]:
    """Workers, liveness and the trusted load balancers of ``[server]``."""
    workers, interval, lost = (
        server[k] for k in ("workers", "heartbeat_interval", "node_lost_after")
    )
    assert isinstance(workers, int) and isinstance(interval, int) and isinstance(lost, int)
    if workers < 0:
        raise ConfigError(f"{source}: server.workers must be 0 (one per core) or more")
    if interval < 1:
        raise ConfigError(f"{source}: server.heartbeat_interval must be at least 1")
    if lost < 3 * interval:
        raise ConfigError(
            f"{source}: server.node_lost_after must be at least 3 times server.heartbeat_interval"
        )
    proxies = server["trusted_proxies"]
    assert isinstance(proxies, list)
    try:
        trusted = tuple(ipaddress.ip_network(str(p), strict=False) for p in proxies)
    except ValueError:
        raise ConfigError(
            f'{source}: server.trusted_proxies must be addresses or CIDRs, e.g. "10.0.0.0/8"'
        ) from None
    if server["proxy_protocol"] and not trusted:
        raise ConfigError(
            f"{source}: server.proxy_protocol needs server.trusted_proxies (the balancers' "
            "addresses): a header from anyone else would let them choose their address"
        )
    return {
        "workers": workers or (os.cpu_count() or 1),
        "heartbeat_interval": interval,
        "node_lost_after": lost,
        "proxy_protocol": bool(server["proxy_protocol"]),
        "trusted_proxies": trusted,
    }


def _limits(values: Mapping[str, object], source: str) -> Limits:
    for name, value in values.items():
        assert isinstance(value, int)
        least = 1 if name in ("ssh_login_grace_time", "login_workers") else 0
        if value < least:
            raise ConfigError(f"{source}: limits.{name} must be at least {least}")
    return Limits(**values)  # type: ignore[arg-type]


def _check_unknown(raw: Mapping[str, Any], source: str) -> None:
    for section, table in raw.items():
        if section in _LIST_SECTIONS:
            continue
        if section in _NESTED:
            if not isinstance(table, dict):
                raise ConfigError(f"{source}: [{section}] must be a table")
            for key in table:
                if key not in _NESTED[section]:
                    raise ConfigError(f"{source}: unknown key {section}.{key}")
            continue
        if section not in _SCHEMA:
            raise ConfigError(f"{source}: unknown section [{section}]")
        if not isinstance(table, dict):
            raise ConfigError(f"{source}: [{section}] must be a table")
        for key in table:
            if key not in _SCHEMA[section] and key not in _TABLE_LISTS.get(section, ()):
                raise ConfigError(f"{source}: unknown key {section}.{key}")


def _apply_env(values: dict[str, dict[str, object]], env: Mapping[str, str]) -> None:
    """Apply ``LOCKGATE_<SECTION>_<KEY>`` for the sections of the file; see the module doc.

    Values are never echoed in errors: an override may carry a secret (a database URL)."""
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX):
            continue
        rest = name[len(ENV_PREFIX) :].lower()
        if any(rest.startswith(s + "_") for s in (*_LIST_SECTIONS, *_NESTED)):
            raise ConfigError(f"environment: {name}: tables and lists are set in the file only")
        section = next((s for s in _SCHEMA if rest.startswith(s + "_")), None)
        if section is None:
            continue  # not an override: the command line's or another program's variable
        key = rest[len(section) + 1 :]
        if key not in _SCHEMA[section]:
            raise ConfigError(f"environment: {name} names no key of [{section}]")
        values[section][key] = _parse_env_value(name, value, _SCHEMA[section][key][0])


def _parse_env_value(name: str, value: str, kind: type) -> object:
    if kind is bool:
        word = value.strip().lower()
        if word in _TRUE | _FALSE:
            return word in _TRUE
        raise ConfigError(f"environment: {name} must be true or false (or 1/0, yes/no)")
    if kind is list:
        raise ConfigError(f"environment: {name}: lists are set in the file only")
    if kind is int:
        try:
            return int(value)
        except ValueError:
            raise ConfigError(f"environment: {name} must be a whole number") from None
    return value


def _parse_list(items: object, name: str, source: str, parse: Any) -> tuple[Any, ...]:
    if not isinstance(items, list):
        raise ConfigError(f"{source}: [[{name}]] must be an array of tables")
    parsed = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise ConfigError(f"{source}: [[{name}]] entry {index + 1} must be a table")
        try:
            parsed.append(parse(item))
        except (PolicyError, RecorderError, ValueError) as exc:
            label = item.get("name", index + 1)
            raise ConfigError(f"{source}: [[{name}]] {label}: {exc}") from None
    names = [getattr(p, "name", None) for p in parsed]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise ConfigError(
            f"{source}: [[{name}]] names used twice: {', '.join(sorted(map(str, dupes)))}"
        )
    return tuple(parsed)


def _resolve(base: Path, value: str) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else (base / p).resolve()


def _resolve_sqlite_url(base: Path, url: str) -> str:
    prefix = "sqlite+aiosqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/"):
        rest = url[len(prefix) :]
        if rest and rest != ":memory:":
            return prefix + str(_resolve(base, rest))
    return url
