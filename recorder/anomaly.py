"""Anomaly rules: regular expressions over commands, screen output or web requests, and what
they do.

A shell line check is a guard, not a sandbox: it sees the line as the gateway reconstructs
it from keystrokes, so aliases, scripts, shell expansion, pasted heredocs or commands built
at run time are not seen. It stops the obvious mistake and the careless; the recording and
the audit trail are what hold people accountable.

An ``http`` rule sees ``"METHOD path"``: the method upper-cased, the path without its query
(query values may be secrets and a hit's text goes to the audit log). A path is checked as sent
and as a server may read it (percent-decoded, ``.``/``..`` and repeated ``/`` resolved, ``;``
parameters dropped, ``\\`` as ``/``): ``/%61dmin//x/../users`` cannot slip past a rule on
``/admin/users``. Checking both can only add hits: the decision fails closed.
"""

from __future__ import annotations

import codecs
import re
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from recorder.errors import InvalidRule

Match = Literal["command", "output", "http"]
Action = Literal["alert", "block", "kill", "kill_and_lock"]
_KEYS = {"name", "match", "pattern", "action"}
ACTIONS = ("alert", "block", "kill", "kill_and_lock")
MATCHES = ("command", "output", "http")
# CSI, OSC (ended by BEL or ST), and two-byte escapes: what colours and moves the cursor,
# not what a person reads on the screen.
_ESCAPES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[ -Z\\^-~]")
_LINE_END = re.compile(r"[\r\n]+")
MAX_LINE = 4096  # characters; a longer run without a newline is checked in pieces


@dataclass(frozen=True)
class AnomalyRule:
    name: str
    match: Match
    pattern: re.Pattern[str]
    action: Action


@dataclass(frozen=True)
class AnomalyHit:
    rule: str
    action: Action
    text: str  # the command line, output line or "METHOD path" that matched


def parse_anomaly_rule(raw: Mapping[str, Any]) -> AnomalyRule:
    """Validate one ``[[anomaly.rules]]`` table; errors name the offending key."""
    unknown = sorted(set(raw) - _KEYS)
    if unknown:
        raise InvalidRule(f"unknown key {unknown[0]}")
    name = raw.get("name")
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", name):
        raise InvalidRule("name must be 1-64 letters, digits, '.', '_' or '-'")
    match = raw.get("match", "command")
    if match not in MATCHES:
        raise InvalidRule("match must be 'command', 'output' or 'http'")
    action = raw.get("action", "alert")
    if action not in ACTIONS:
        raise InvalidRule(f"action must be one of {', '.join(ACTIONS)}")
    if action == "block" and match == "output":
        raise InvalidRule(
            "action 'block' needs match = 'command' or 'http' (output cannot be un-shown)"
        )
    pattern = raw.get("pattern")
    if not isinstance(pattern, str) or not pattern:
        raise InvalidRule("pattern must be a non-empty regular expression")
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise InvalidRule(f"pattern does not compile: {exc}") from None
    return AnomalyRule(name, match, compiled, action)


class AnomalyEngine:
    """Checks text against the configured rules. Pure; cheap enough for the command path."""

    def __init__(self, rules: Sequence[AnomalyRule]) -> None:
        self.commands = tuple(r for r in rules if r.match == "command")
        self.outputs = tuple(r for r in rules if r.match == "output")
        self.http = tuple(r for r in rules if r.match == "http")

    def check_command(self, line: str) -> list[AnomalyHit]:
        return [AnomalyHit(r.name, r.action, line) for r in self.commands if r.pattern.search(line)]

    def check_output(self, line: str) -> list[AnomalyHit]:
        return [AnomalyHit(r.name, r.action, line) for r in self.outputs if r.pattern.search(line)]

    def check_http(self, method: str, path: str) -> list[AnomalyHit]:
        """The ``http`` rules that match a request, before it goes upstream (``block``: the
        proxy answers 403). A query or fragment in ``path`` is cut off, never matched or
        reported."""
        if not self.http:
            return []
        method = method.strip().upper()
        path = path.split("#", 1)[0].split("?", 1)[0]
        text = f"{method} {path}"
        normal = f"{method} {_server_path(path)}"
        return [
            AnomalyHit(r.name, r.action, text)
            for r in self.http
            if r.pattern.search(text) or r.pattern.search(normal)
        ]


def _server_path(path: str) -> str:
    """``path`` as a lenient server may resolve it (see the module docstring)."""
    decoded = urllib.parse.unquote(path, errors="replace").replace("\\", "/")
    segments: list[str] = []
    for raw in decoded.split("/"):
        segment = raw.split(";", 1)[0]
        if segment == "..":
            if segments:
                segments.pop()
        elif segment not in ("", "."):
            segments.append(segment)
    trailing = "/" if segments and decoded.endswith("/") else ""
    return "/" + "/".join(segments) + trailing


class OutputWatcher:
    """Feeds one session's output stream to the output rules a line at a time.

    Output arrives in arbitrary pieces: a line, a UTF-8 character or an escape sequence may
    be split between two of them, so the unfinished end is carried over to the next piece.
    Escape sequences are removed so that a colour change in the middle of a word does not
    hide it from a rule.
    """

    def __init__(self, engine: AnomalyEngine) -> None:
        self.engine = engine
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._tail = ""

    def feed(self, data: bytes) -> list[AnomalyHit]:
        text = self._tail + self._decoder.decode(data)
        # Hold back an escape sequence that may still be incomplete.
        cut = text.rfind("\x1b")
        if cut != -1 and len(text) - cut < 64 and not _ESCAPES.match(text, cut):
            text, held = text[:cut], text[cut:]
        else:
            held = ""
        parts = _LINE_END.split(_ESCAPES.sub("", text))
        rest = parts.pop()
        if len(rest) > MAX_LINE:
            parts.append(rest)
            rest = ""
        self._tail = rest + held
        return [hit for line in parts if line for hit in self.engine.check_output(line)]
