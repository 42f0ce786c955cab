"""The command line's grammar: every command, its arguments and their help.

A usage error is one ``lockgate:`` line with a "did you mean" for a mistyped command
(``Usage``, exit status 2). Each command names its handler as ``"module.function"`` in
``gateway.cli``, imported only when the command runs: ``--help``, a usage error and a
command sent through the API never import the database, SSH and web layers."""

from __future__ import annotations

import argparse
import difflib
import importlib.metadata
import re
from pathlib import Path
from typing import NoReturn

from gateway.cli.context import Usage


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise Usage(f"{_did_you_mean(self, message)} (see: {self.prog} --help)")


def _did_you_mean(parser: argparse.ArgumentParser, message: str) -> str:
    """A mistyped command named as such, with the nearest ones."""
    match = re.match(r"argument \w+: invalid choice: '([^']*)'", message)
    if match is None:
        return message
    word = match.group(1)
    choices = [
        name
        for action in parser._actions
        if isinstance(action, argparse._SubParsersAction)
        for name in action.choices
    ]
    close = difflib.get_close_matches(word, choices, n=3, cutoff=0.6)
    group = parser.prog.removeprefix("lockgate").strip()

    def named(w: str) -> str:
        return repr(f"{group} {w}" if group else w)

    text = f"no command {named(word)}"
    if close:
        text += "; did you mean " + " or ".join(named(c) for c in close) + "?"
    return text


def _common(p: argparse.ArgumentParser, top: bool = False) -> None:
    """The options every command takes; also before the command (``lockgate --config F
    grants``), where the command's own defaults must not override them."""
    default: dict[str, object] = {} if top else {"default": argparse.SUPPRESS}
    p.add_argument(
        "--config",
        type=Path,
        help="configuration file (default: $LOCKGATE_CONFIG or ./lockgate.toml)",
        **default,  # type: ignore[arg-type]
    )
    p.add_argument(
        "--as",
        dest="actor",
        metavar="USER",
        help="acting person (default: the built-in admin)",
        **default,  # type: ignore[arg-type]
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="machine-readable output",
        **default,  # type: ignore[arg-type]
    )


def _version() -> str:
    try:
        return importlib.metadata.version("lockgate")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _provision_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--provision",
        choices=["none", "ephemeral", "elevate"],
        help="accounts made per grant (ephemeral) or the mapped account elevated (elevate)",
    )
    p.add_argument("--uid-range", metavar="A-B", help="UIDs of ephemeral accounts")
    p.add_argument(
        "--home-archive", metavar="DIR", help='ephemeral homes moved here at removal ("" deletes)'
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="lockgate",
        description="Just-in-time privileged access gateway.",
        epilog="Durations read 90s, 15m, 1h, 2h30m, 1d. "
        "Exit status: 0 done, 1 refused (the reason on stderr), 2 bad usage, 130 interrupted.",
    )
    parser.add_argument("--version", action="version", version=f"lockgate {_version()}")
    _common(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def command(name: str, handler: str, help_text: str, **kw: object) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text, **kw)  # type: ignore[arg-type]
        _common(p)
        p.set_defaults(handler=handler)
        return p

    def group(name: str, help_text: str) -> argparse._SubParsersAction[_Parser]:
        p = sub.add_parser(name, help=help_text, description=help_text)
        _common(p)
        p.set_defaults(handler=None, help_of=p)  # no subcommand: this group's help
        g = p.add_subparsers(dest="subcommand", metavar="SUBCOMMAND", parser_class=_Parser)
        return g

    def subcommand(
        g: argparse._SubParsersAction[_Parser], name: str, handler: str, help_text: str
    ) -> argparse.ArgumentParser:
        p = g.add_parser(name, help=help_text, description=help_text)
        _common(p)
        p.set_defaults(handler=handler)
        return p

    p = command("init", "setup.init", "write the configuration, keys and database")
    p.add_argument("--data-dir", type=Path, help="data directory (default ./lockgate-data)")

    p = command("serve", "run.serve", "run the gateway (SSH and HTTP listeners)")
    # Given by the supervisor to its workers (gateway.cli.supervisor), not by people.
    p.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    p.add_argument("--listen-fds", help=argparse.SUPPRESS)
    p.add_argument("--after-crash", action="store_true", help=argparse.SUPPRESS)
    command("demo", "run.demo", "run the gateway with a built-in demo target and user")

    db = group("db", "database schema")
    subcommand(db, "upgrade", "setup.db_upgrade", "apply pending migrations")

    users = group("user", "manage users")
    p = subcommand(users, "add", "admin.user_add", "add a user")
    p.add_argument("name")
    p.add_argument("--role", action="append", default=[], help="role (repeatable)")
    p.add_argument(
        "--key", action="append", default=[], type=Path, help="OpenSSH public key file (repeatable)"
    )
    p.add_argument("--password-stdin", action="store_true", help="read a password from stdin")
    p.add_argument("--totp", action="store_true", help="enrol a TOTP second factor")
    subcommand(users, "list", "admin.user_list", "list users")
    p = subcommand(users, "show", "admin.user_show", "show one user")
    p.add_argument("name")
    p = subcommand(users, "disable", "admin.user_disable", "disable a user")
    p.add_argument("name")
    p = subcommand(users, "set", "admin.user_set", "change a user (what is not named stays)")
    p.add_argument("name")
    p.add_argument("--password-stdin", action="store_true", help="read a new password from stdin")
    p.add_argument("--totp", action="store_true", help="enrol a (new) TOTP second factor")
    p.add_argument(
        "--add-key", action="append", default=[], type=Path, metavar="FILE", help="(repeatable)"
    )
    p.add_argument(
        "--remove-key",
        action="append",
        default=[],
        metavar="FP",
        help="SHA256:... fingerprint or key line (repeatable)",
    )
    p.add_argument(
        "--role", action="append", default=None, help="the user's roles, all of them (repeatable)"
    )
    p.add_argument("--enable", action="store_true", help="enable a disabled user")

    targets = group("target", "manage targets")
    p = subcommand(
        targets, "add", "admin.target_add", "add an SSH target (--host) or a web target (--url)"
    )
    p.add_argument("name")
    p.add_argument("--host")
    p.add_argument("--port", type=int, default=22)
    p.add_argument("--url")
    p.add_argument("--account", action="append", default=[])
    p.add_argument("--default-account")
    p.add_argument("--label", action="append", default=[], metavar="K=V")
    keys = p.add_mutually_exclusive_group()
    keys.add_argument("--host-key", help='pinned host key, "TYPE BASE64"')
    keys.add_argument(
        "--scan", action="store_true", help="fetch the host key and ask to confirm it"
    )
    trust = p.add_mutually_exclusive_group()
    trust.add_argument("--tls-ca", type=Path, metavar="FILE", help="web: PEM CA bundle to trust")
    trust.add_argument("--tls-fingerprint", metavar="SHA256", help="web: pin the certificate")
    trust.add_argument(
        "--tls-insecure", action="store_true", help="web: do not verify the certificate (unsafe)"
    )
    p.add_argument("--preserve-host", action="store_true", help="web: send the client's Host")
    p.add_argument(
        "--sensitive-param",
        action="append",
        default=[],
        metavar="NAME",
        help="web: query parameter masked in recordings (repeatable)",
    )
    p.add_argument(
        "--record-bodies",
        type=int,
        default=0,
        metavar="BYTES",
        help="web: record up to BYTES of non-GET request bodies (default 0: off)",
    )
    _provision_args(p)
    p = subcommand(targets, "set", "provision.target_set", "change an SSH target's provisioning")
    p.add_argument("name")
    _provision_args(p)
    subcommand(targets, "list", "admin.target_list", "list targets")
    p = subcommand(targets, "show", "admin.target_show", "show one target")
    p.add_argument("name")

    creds = group("credential", "vaulted credentials (write-only)")
    p = subcommand(creds, "set", "admin.credential_set", "store the credential for TARGET ACCOUNT")
    p.add_argument("target", nargs="?")
    p.add_argument("account", nargs="?", help="with --provisioner: its login (default lockgate)")
    p.add_argument(
        "--provisioner",
        action="store_true",
        help="with --private-key: the key that creates and removes accounts on TARGET",
    )
    kinds = p.add_mutually_exclusive_group(required=True)
    kinds.add_argument(
        "--oidc", metavar="PROVIDER", help="the client secret of [[auth.oidc]] PROVIDER, from stdin"
    )
    kinds.add_argument("--password-stdin", action="store_true")
    kinds.add_argument("--private-key", type=Path, metavar="FILE")
    kinds.add_argument("--ssh-ca", action="store_true")
    kinds.add_argument("--header", metavar="NAME")
    kinds.add_argument(
        "--basic-stdin", action="store_true", help="web: read USER:PASSWORD for HTTP Basic"
    )
    p.add_argument("--value-stdin", action="store_true", help="with --header: read the value")
    p.add_argument(
        "--passphrase-stdin",
        action="store_true",
        help="with --private-key: read the key's passphrase from stdin",
    )
    subcommand(creds, "list", "admin.credential_list", "list credentials (never their values)")
    p = command("provisioned", "provision.provisioned", "ephemeral accounts and elevations")
    p.add_argument("--target")
    p.add_argument("--live", action="store_true", help="only those not yet removed")
    command("nodes", "provision.nodes", "the cluster's nodes: sessions, last heartbeat, state")

    p = command("request", "access.request", "ask for access to a target")
    p.add_argument("target")
    p.add_argument("--account")
    p.add_argument("--for", dest="duration", metavar="DURATION")
    p.add_argument("--reason", default="")
    p.add_argument("--ticket", default="")
    p.add_argument(
        "--wait", action="store_true", help="wait for the decision (Ctrl-C stops waiting)"
    )
    p = command("requests", "access.requests", "list access requests")
    p.add_argument("--pending", action="store_true")
    p = command("approve", "access.approve", "approve a request")
    p.add_argument("request_id", metavar="REQUEST")
    p.add_argument("--comment", default="")
    p = command("deny", "access.deny", "deny a request")
    p.add_argument("request_id", metavar="REQUEST")
    p.add_argument("--comment", required=True)
    p = command("cancel", "access.cancel", "cancel your pending request")
    p.add_argument("request_id", metavar="REQUEST")
    p = command("grants", "access.grants", "list grants")
    p.add_argument("--active", action="store_true")
    p = command("revoke", "access.revoke", "revoke a grant")
    p.add_argument("grant_id", metavar="GRANT")
    p.add_argument("--reason", required=True)
    p = command("extend", "access.extend", "ask to extend a grant")
    p.add_argument("grant_id", metavar="GRANT")
    p.add_argument("--for", dest="duration", required=True, metavar="DURATION")
    p.add_argument("--reason", required=True)
    p = command("lock", "access.lock", "lock a user or a target")
    p.add_argument("kind", choices=["user", "target"])
    p.add_argument("name")
    p.add_argument("--reason", required=True)
    p.add_argument("--for", dest="duration", metavar="DURATION")
    p = command("unlock", "access.unlock", "lift a lock")
    p.add_argument("kind", choices=["user", "target"])
    p.add_argument("name")
    p = command("locks", "access.locks", "list active locks")

    p = command("sessions", "access.sessions", "list sessions")
    p.add_argument("--active", action="store_true")
    p = command("terminate", "access.terminate", "end a live session, on whichever node holds it")
    p.add_argument("session_id", metavar="SESSION")
    p.add_argument("--reason", required=True)

    audit = sub.add_parser("audit", help="the audit log")
    _common(audit)
    audit.add_argument("--since", metavar="DURATION")
    audit.add_argument(
        "action",
        nargs="?",
        choices=["verify", "streams"],
        help="verify: check the hash chain; streams: where each SIEM sink stands",
    )
    audit.set_defaults(handler="access.audit")

    recs = group("recordings", "session recordings")
    p = subcommand(recs, "search", "recordings.search", "find recordings by text or command")
    p.add_argument("text")
    p.add_argument("--session", help="search within one recording")
    p = subcommand(recs, "export", "recordings.export", "write a recording as asciicast v2")
    p.add_argument("session_id", metavar="SESSION")
    p.add_argument("--format", choices=["asciicast"], default="asciicast")
    p = subcommand(recs, "verify", "recordings.verify", "check recordings against their seals")
    p.add_argument("session_id", metavar="SESSION", nargs="?")
    p = command("play", "recordings.play", "replay a recording in this terminal")
    p.add_argument("session_id", metavar="SESSION")
    p.add_argument("--speed", type=float, default=1.0)
    p.add_argument("--idle-limit", type=float, default=2.0, help="longest pause, in seconds")

    vault = group("vault", "the credential vault")
    subcommand(vault, "rotate", "setup.vault_rotate", "new master key; re-wrap every data key")

    signals = group("signals", "SIEM signals (POST /api/v1/signals)")
    p = subcommand(
        signals, "secret", "admin.signal_secret", "store the HMAC secret that signs signals"
    )
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--value-stdin", action="store_true", help="read the secret from stdin")
    how.add_argument(
        "--generate", action="store_true", help="generate one and print it once, on stdout"
    )

    p = command("report", "report.report", "the compliance report: grants, approvals, sessions")
    p.add_argument("--since", required=True, metavar="DURATION", help="e.g. 7d or 30d")
    p.add_argument("--target", help="one target only")
    p.add_argument("--user", help="one person only")
    p.add_argument("--format", choices=["csv", "json", "html"], help="default json")
    p.add_argument("--output", type=Path, metavar="FILE", help="write here, not to stdout")

    notes = group("notifications", "outgoing notifications: the outbox and dead letters")
    p = subcommand(notes, "list", "events.notifications_list", "list notifications")
    p.add_argument("--state", choices=["pending", "sent", "dead"], help="dead: the dead letters")
    p.add_argument("--channel", help="one channel's notifications")
    p = subcommand(notes, "retry", "events.notifications_retry", "queue a dead letter again")
    p.add_argument("id", type=int, metavar="ID")
    p = subcommand(
        notes,
        "secret",
        "events.notifications_secret",
        "store a webhook's signing secret, a chat webhook URL or an SMTP password",
    )
    p.add_argument("name", metavar="CHANNEL")
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--value-stdin", action="store_true", help="read it from stdin")
    how.add_argument(
        "--generate", action="store_true", help="webhook: generate one, print it once on stdout"
    )

    auth_group = group("auth", "identity providers ([[auth.oidc]])")
    p = subcommand(
        auth_group,
        "test-mapping",
        "auth.test_mapping",
        "print the user and roles a set of claims would sign in with (changes nothing)",
    )
    p.add_argument("--provider", required=True, metavar="P")
    p.add_argument("--claims", required=True, type=Path, metavar="FILE", help="JSON object")

    tokens = group("token", "API tokens")
    p = subcommand(tokens, "create", "admin.token_create", "create an API token for USER")
    p.add_argument("user")
    p.add_argument("--for", dest="duration", metavar="DURATION")
    return parser
